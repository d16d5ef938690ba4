package descriptors

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

func TestResponseJSON(t *testing.T) {
	payload, err := proto.Marshal(&testpb.Resp{Text: "hello", Metadata: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	r := FromRegistry(protoregistry.GlobalFiles)
	tests := []struct {
		name, method string
		payload      []byte
		want         string // JSON with spaces removed, or the error's start
		wantType     string
		wantErr      bool
	}{
		{name: "response", method: "/rgtest.v1.Echo/Call", payload: payload, want: `{"text":"hello","metadata":{"a":"b"}}`, wantType: "rgtest.v1.Resp"},
		{name: "empty", method: "/rgtest.v1.Echo/Call", payload: nil, want: `{}`, wantType: "rgtest.v1.Resp"},
		{name: "unknown service", method: "/rgtest.v1.Nope/Call", payload: payload, want: "service rgtest.v1.Nope is not in the descriptor set", wantErr: true},
		{name: "unknown method", method: "/rgtest.v1.Echo/Nope", payload: payload, want: "service rgtest.v1.Echo has no method Nope", wantErr: true},
		{name: "not the type", method: "/rgtest.v1.Echo/Call", payload: []byte{0xff, 0xff}, want: "the payload is not a rgtest.v1.Resp", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, typ, err := ResponseJSON(context.Background(), r, tc.method, tc.payload, true)
			if tc.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Errorf("got error %v, want one starting %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := strings.NewReplacer(" ", "", "\n", "").Replace(string(b))
			if got != tc.want || typ != tc.wantType {
				t.Errorf("got %s (%s), want %s (%s)", got, typ, tc.want, tc.wantType)
			}
		})
	}
}
