package proxy_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/proxy"
)

// serveAt serves r on l, until the test ends, and returns l's address.
func serveAt(t *testing.T, r *proxy.Server, l net.Listener) string {
	t.Helper()
	go r.Serve(l)
	t.Cleanup(r.Close)
	return l.Addr().String()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLoop: a call whose upstream is the relay it passed through, directly or through a
// second relay, is refused (FAILED_PRECONDITION) where it comes back, instead of going round.
func TestLoop(t *testing.T) {
	tests := []struct {
		name   string
		relays int // in the ring; the last forwards to the first
	}{
		{"to itself", 1},
		{"through a second relay", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := make([]net.Listener, tt.relays)
			for i := range ls {
				ls[i] = listen(t)
			}
			for i, l := range ls {
				next := ls[(i+1)%len(ls)].Addr().String()
				serveAt(t, &proxy.Server{Director: to(next)}, l)
			}
			cc, err := grpc.NewClient(ls[0].Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = cc.Invoke(ctx, "/x.Svc/Do", &[]byte{}, &[]byte{}, grpc.ForceCodecV2(rawcodec.Codec))
			want := "/x.Svc/Do came back to the relay it passed through"
			if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), want) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), codes.FailedPrecondition, want)
			}
		})
	}
}
