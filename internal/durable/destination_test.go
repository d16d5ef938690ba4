package durable_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/restate-grpc/restate-grpc/internal/intercept"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
)

// namedApp serves every method with an answer of its name.
func namedApp(t *testing.T, name string) string {
	return hopApp(t, func(_ any, s grpc.ServerStream) error {
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		return s.SendMsg(&[]byte{name[0]})
	})
}

// dialThrough returns a client whose connections reach the listener at addr through a
// CONNECT to target, as a client with https_proxy set makes them; with no target, it dials
// the listener itself (explicit mode).
func dialThrough(t *testing.T, addr, target string) *grpc.ClientConn {
	t.Helper()
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || target == "" {
			return c, err
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		// The listener sends nothing after its answer until the client's preface, so the
		// reader holds no byte of the tunnel.
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("CONNECT %s: %s", target, resp.Status)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	cc, err := grpc.NewClient("passthrough:///orders", grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawcodec.Codec)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestPassthroughDestination: an unmatched call goes to where its connection was going (the
// CONNECT target), unless upstreams names that destination; a service's upstream is for
// calls that came without a destination.
func TestPassthroughDestination(t *testing.T) {
	a, b := namedApp(t, "A"), namedApp(t, "B")
	tests := []struct {
		name, target string
		upstreams    map[string]string
		want         string
	}{
		{"the CONNECT target", a, nil, "A"},
		{"an upstream keyed by the destination", "orders.test:50051", map[string]string{"orders.test:50051": b}, "B"},
		{"the destination, not the service's upstream", a, map[string]string{"app.Svc": b}, "A"},
		{"explicit: the service's upstream", "", map[string]string{"app.Svc": b}, "B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := hopListen(t)
			hopSidecar(t, intercept.New(l, intercept.Options{}), l.Addr().String(), l.Addr().String(), tt.upstreams)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var got []byte
			if err := dialThrough(t, l.Addr().String(), tt.target).Invoke(ctx, "/app.Svc/Do", &[]byte{}, &got); err != nil {
				t.Fatalf("a call through CONNECT %q: %v", tt.target, err)
			}
			if string(got) != tt.want {
				t.Errorf("the call reached app %q, want %q", got, tt.want)
			}
		})
	}
}
