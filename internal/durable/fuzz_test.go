package durable

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

// FuzzParseOverrides: restate- metadata is either refused with INVALID_ARGUMENT or read into
// values within their bounds; nothing panics.
func FuzzParseOverrides(f *testing.F) {
	f.Add("mode", "send")
	f.Add("delay", "PT5M")
	f.Add("delay", "-1s")
	f.Add("key", "a/b c")
	f.Add("attach", "inv_1abc")
	f.Add("attach", "workflow")
	f.Add("delya", "5s")
	f.Fuzz(func(t *testing.T, name, value string) {
		md := metadata.MD{"restate-" + strings.ToLower(name): {value}}
		o, err := parseOverrides(md)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v, want InvalidArgument", err)
			}
			return
		}
		if o.delay < 0 {
			t.Fatalf("negative delay %v accepted from %q", o.delay, value)
		}
		if o.mode != "" && o.mode != config.ModeCall && o.mode != config.ModeSend {
			t.Fatalf("mode %q accepted", o.mode)
		}
		if o.attach != "" && o.attach != AttachIdempotencyKey && o.attach != AttachWorkflow && !strings.HasPrefix(o.attach, "inv_") {
			t.Fatalf("attach %q accepted", o.attach)
		}
	})
}
