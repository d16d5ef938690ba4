package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var hdr metadata.MD
	resp, err := testpb.NewEchoClient(env.conn).Call(ctx, &testpb.Req{Text: "hi"}, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	t.Logf("resp %v hdr %v", resp, hdr)
}
