package inbound

import (
	"encoding/json"
	"iter"
	"maps"
	"slices"
	"testing"

	restate "github.com/restatedev/sdk-go"

	"github.com/restate-grpc/restate-grpc/interceptors"
)

// headers is a restate.StringMap over a plain map, as sdk-go hands a handler the headers
// Restate stored for the invocation.
type headers map[string]string

func (h headers) Get(k string) string { return h[k] }
func (h headers) Iter() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, k := range slices.Sorted(maps.Keys(h)) {
			if !yield(k, h[k]) {
				return
			}
		}
	}
}
func (h headers) ToMap() map[string]string     { return maps.Clone(h) }
func (h headers) MarshalJSON() ([]byte, error) { return json.Marshal(map[string]string(h)) }

// TestAppMetadataCredentials: with the app connection's policy (interceptors.ForApp), the
// caller's credentials, renamed by the outbound side to pass Restate's ingress, reach the app
// under their own names; the ingress request's own Authorization (the outbound sidecar's
// bearer token) and Proxy-Authorization never do, nor the sidecars' x-restate- names.
func TestAppMetadataCredentials(t *testing.T) {
	r := &restate.Request{Headers: headers{
		"authorization":                      "Bearer sidecar-token",
		"proxy-authorization":                "Basic proxy",
		"x-restate-grpc-authorization":       "Bearer caller",
		"x-restate-grpc-cookie":              "c=1",
		"x-restate-grpc-proxy-authorization": "Basic caller",
		"x-restate-grpc-x-api-key":           "k1",
		"x-restate-grpc-route":               "3",
		"x-restate-ingress-path":             "/a.B/C",
		"x-tenant":                           "t1",
		"content-type":                       "application/proto",
	}}
	md := interceptors.ForApp(appMetadata(r))
	want := map[string][]string{
		"authorization":       {"Bearer caller"},
		"proxy-authorization": {"Basic caller"},
		"cookie":              {"c=1"},
		"x-api-key":           {"k1"},
		"x-tenant":            {"t1"},
	}
	if len(md) != len(want) {
		t.Errorf("the app gets %v, want exactly %v", md, want)
	}
	for k, v := range want {
		if got := md.Get(k); !slices.Equal(got, v) {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}
