package durable_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/durable"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
)

func hopListen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// hopSidecar serves an outbound listener on l that passes the services in upstreams through.
// listen is its configured address; self, when not empty, the address it knows as its own.
func hopSidecar(t *testing.T, l net.Listener, listen, self string, upstreams map[string]string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"outbound": map[string]any{"listen": listen, "upstreams": upstreams}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := durable.New(durable.Options{Config: c.Outbound, Self: self, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s := durable.NewServer(h, nil, log)
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-served
	})
}

// hopApp serves handler for every method on loopback and returns its address.
func hopApp(t *testing.T, handler grpc.StreamHandler) string {
	t.Helper()
	l := hopListen(t)
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawcodec.Codec), grpc.UnknownServiceHandler(handler))
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func hopDial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawcodec.Codec)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func hopCall(ctx context.Context, cc *grpc.ClientConn, method string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return cc.Invoke(ctx, method, &[]byte{}, &[]byte{})
}

// TestPassthroughUnmarked: a passthrough call reaches its upstream with the caller's metadata
// and nothing the sidecar added, so an app that forwards its incoming metadata on its own
// calls through the sidecar is not taken for a loop.
func TestPassthroughUnmarked(t *testing.T) {
	var mu sync.Mutex
	var seen []string // the metadata names app.B saw
	b := hopApp(t, func(_ any, s grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		mu.Lock()
		for k := range md {
			seen = append(seen, k)
		}
		mu.Unlock()
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		return s.SendMsg(&req)
	})
	l := hopListen(t)
	sc := hopDial(t, l.Addr().String())
	a := hopApp(t, func(_ any, s grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		if err := hopCall(metadata.NewOutgoingContext(s.Context(), md), sc, "/app.B/Do"); err != nil {
			return err
		}
		return s.SendMsg(&req)
	})
	hopSidecar(t, l, l.Addr().String(), l.Addr().String(), map[string]string{"app.A": a, "app.B": b})

	if err := hopCall(metadata.AppendToOutgoingContext(context.Background(), "x-tenant", "t1"), sc, "/app.A/Do"); err != nil {
		t.Fatalf("a call through app.A, which forwards its metadata to app.B through the sidecar: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	var tenant bool
	for _, k := range seen {
		if strings.HasPrefix(k, "x-restate-") {
			t.Errorf("app.B saw metadata %q, which the sidecar added", k)
		}
		tenant = tenant || k == "x-tenant"
	}
	if !tenant {
		t.Errorf("app.B saw %q, want the caller's x-tenant among them", seen)
	}
}

// TestPassthroughLoop: a passthrough call whose upstream leads back to the sidecar is refused
// where it comes back, whether the sidecar does not know the address as its own or the loop
// goes through a second sidecar.
func TestPassthroughLoop(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (entry string)
	}{
		{"to itself, by an address it does not know as its own", func(t *testing.T) string {
			l := hopListen(t)
			hopSidecar(t, l, "127.0.0.1:0", "", map[string]string{"loop.Svc": l.Addr().String()})
			return l.Addr().String()
		}},
		{"through a second sidecar", func(t *testing.T) string {
			l1, l2 := hopListen(t), hopListen(t)
			hopSidecar(t, l1, l1.Addr().String(), "", map[string]string{"loop.Svc": l2.Addr().String()})
			hopSidecar(t, l2, l2.Addr().String(), "", map[string]string{"loop.Svc": l1.Addr().String()})
			return l1.Addr().String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := hopCall(context.Background(), hopDial(t, tt.setup(t)), "/loop.Svc/Do")
			const want = "/loop.Svc/Do came back to the relay it passed through"
			if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), want) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), codes.FailedPrecondition, want)
			}
		})
	}
}
