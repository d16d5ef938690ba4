package inbound

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

func TestVersion(t *testing.T) {
	base := []service{{grpcName: "a.B", restateName: "a.B", kind: config.KindObject,
		methods: []method{{"Get", config.HandlerShared}, {"Put", config.HandlerExclusive}}}}
	changed := []service{{grpcName: "a.B", restateName: "a.B", kind: config.KindObject,
		methods: []method{{"Get", config.HandlerExclusive}, {"Put", config.HandlerExclusive}}}}
	renamed := []service{{grpcName: "a.B", restateName: "a.C", kind: config.KindObject,
		methods: base[0].methods}}
	v := version(base)
	if len(v) != len("rg-")+12 || !versionPrefix.MatchString("/"+v+"/discover") {
		t.Fatalf("version(base) = %q, not of the served form", v)
	}
	if got := version(base); got != v {
		t.Errorf("version is not stable: %q then %q", v, got)
	}
	for name, s := range map[string][]service{"a handler's kind": changed, "the Restate name": renamed} {
		if version(s) == v {
			t.Errorf("changing %s kept version %q: Restate would keep the old schema", name, v)
		}
	}
}

// TestServeHTTPVersionPrefix: requests under any version prefix reach sdk-go as if at the root,
// RequestURI included (sdk-go routes and checks identity on it).
func TestServeHTTPVersionPrefix(t *testing.T) {
	var gotPath, gotURI string
	e := &Endpoint{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotURI = r.URL.Path, r.RequestURI
	})}
	tests := []struct{ in, path, uri string }{
		{"/rg-0123456789ab/discover", "/discover", "/discover"},
		{"/rg-0123456789ab/invoke/a.B/Get?x=1", "/invoke/a.B/Get", "/invoke/a.B/Get?x=1"},
		{"/discover", "/discover", "/discover"},
		{"/rg-nothex/discover", "/rg-nothex/discover", "/rg-nothex/discover"},
	}
	for _, tc := range tests {
		req := httptest.NewRequest(http.MethodGet, tc.in, nil)
		e.ServeHTTP(httptest.NewRecorder(), req)
		if gotPath != tc.path || gotURI != tc.uri {
			t.Errorf("ServeHTTP(%s): path %q, RequestURI %q; want %q, %q", tc.in, gotPath, gotURI, tc.path, tc.uri)
		}
	}
}
