package e2e

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestGzipCallerToSidecarProcess: a grpc-go caller that compresses (grpc.UseCompressor(gzip))
// gets its answer from a durable route of the sidecar binary, in its own process, so that only
// the sidecar's own imports decide what it decodes (in this test process the client's import
// registers gzip for everyone).
func TestGzipCallerToSidecarProcess(t *testing.T) {
	addrs := freeAddrs(t, 2)
	startSidecarProc(t, "outbound", fmt.Sprintf(`
outbound:
  listen: %s
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call}]
`, addrs[0], env.restate.Ingress), addrs[1])
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	text := uniq(t, "gzip")
	resp, err := testpb.NewEchoClient(conn).Call(testCtx(t), &testpb.Req{Text: text}, grpc.UseCompressor(gzip.Name))
	if err != nil {
		t.Fatalf("gzip caller: %v", err)
	}
	if !strings.Contains(resp.GetText(), text) {
		t.Errorf("answer %q, want the callee's echo of %q", resp.GetText(), text)
	}
}
