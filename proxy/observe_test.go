package proxy_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/restate-grpc/restate-grpc/proxy"
)

// observations records what Server.Observe is told, by the x-call header of each stream.
type observations struct {
	mu   sync.Mutex
	ends map[string]proxy.StreamEnd
	how  map[string]string // the Decision at the start
}

func (o *observations) observe(r *proxy.Request, d proxy.Decision) func(proxy.StreamEnd) {
	call, _ := r.Get("x-call")
	how := "upstream " + d.Upstream
	if d.Status != nil {
		how = "status " + d.Status.Code().String()
	}
	o.mu.Lock()
	o.how[call] = how
	o.mu.Unlock()
	return func(e proxy.StreamEnd) {
		o.mu.Lock()
		o.ends[call] = e
		o.mu.Unlock()
	}
}

func (o *observations) get(call string) (string, proxy.StreamEnd, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.ends[call]
	return o.how[call], e, ok
}

// TestObserve: the observer learns each stream's Decision, and how it ended: a relayed call
// with the upstream's status and its DATA bytes, a refused one, one the relay answered
// itself, and one the caller reset.
func TestObserve(t *testing.T) {
	hang := make(chan struct{})
	addr, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		close(hang)
		<-s.Context().Done()
		return nil
	})
	obs := &observations{ends: map[string]proxy.StreamEnd{}, how: map[string]string{}}
	cc, _, _ := relayLogged(t, func(r *proxy.Request) proxy.Decision {
		if v, _ := r.Get("x-call"); v == "refused" {
			return proxy.Decision{Status: status.New(codes.PermissionDenied, "no")}
		}
		return proxy.Decision{Upstream: addr, MaxRequestMessage: 1000}
	}, nil, func(r *proxy.Server) { r.Observe = obs.observe })
	tc := testpb.NewTestServiceClient(cc)

	req := &testpb.SimpleRequest{ResponseSize: 200, Payload: &testpb.Payload{Body: make([]byte, 100)}}
	resp := &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, 200)}}
	tests := []struct {
		call string
		run  func(ctx context.Context) error
		how  string
		want proxy.StreamEnd // Duration not compared
	}{
		{"relayed", func(ctx context.Context) error {
			_, err := tc.UnaryCall(ctx, req)
			return err
		}, "upstream " + addr, proxy.StreamEnd{Code: codes.OK, HasCode: true, RequestBytes: int64(5 + proto.Size(req)), ResponseBytes: int64(5 + proto.Size(resp))}},
		{"upstream status", func(ctx context.Context) error {
			_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted)}})
			return err
		}, "upstream " + addr, proxy.StreamEnd{Code: codes.Aborted, HasCode: true, RequestBytes: int64(5 + proto.Size(&testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted)}}))}},
		{"refused", func(ctx context.Context) error {
			_, err := tc.EmptyCall(ctx, &testpb.Empty{})
			return err
		}, "status PermissionDenied", proxy.StreamEnd{Code: codes.PermissionDenied, HasCode: true}},
		{"answered by the relay", func(ctx context.Context) error {
			_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 2000)}})
			return err
		}, "upstream " + addr, proxy.StreamEnd{Code: codes.ResourceExhausted, HasCode: true}},
		{"reset by the caller", func(ctx context.Context) error {
			ctx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() { errc <- cc.Invoke(ctx, "/x.Y/Hang", &testpb.Empty{}, &testpb.Empty{}) }()
			<-hang
			cancel()
			return <-errc
		}, "upstream " + addr, proxy.StreamEnd{Reset: true, ResetCode: http2.ErrCodeCancel, RequestBytes: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.call, func(t *testing.T) {
			start := time.Now()
			tt.run(metadata.AppendToOutgoingContext(testCtx(t), "x-call", tt.call))
			var how string
			var got proxy.StreamEnd
			if err := waitFor(5*time.Second, func() bool {
				var ok bool
				how, got, ok = obs.get(tt.call)
				return ok
			}); err != nil {
				t.Fatalf("no end observed: %v", err)
			}
			if how != tt.how {
				t.Errorf("observed decision %q, want %q", how, tt.how)
			}
			if got.Duration < 0 || got.Duration > time.Since(start) {
				t.Errorf("duration %s, want between 0 and %s", got.Duration, time.Since(start))
			}
			got.Duration = 0
			if got != tt.want {
				t.Errorf("observed end %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDestination: Server.Destination tells each connection's destination once, and every
// Request of the connection carries it; without it the Destination is empty.
func TestDestination(t *testing.T) {
	tests := []struct {
		name string
		hook func(net.Conn) string
		want func(client net.Addr) string
	}{
		{"none", nil, func(net.Addr) string { return "" }},
		{"hook", func(c net.Conn) string { return "to " + c.RemoteAddr().String() }, func(a net.Addr) string { return "to " + a.String() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			calls := 0
			r := &proxy.Server{Director: func(r *proxy.Request) proxy.Decision {
				mu.Lock()
				got = append(got, r.Destination)
				mu.Unlock()
				return proxy.Decision{Status: status.New(codes.Unavailable, "x")}
			}}
			if tt.hook != nil {
				r.Destination = func(c net.Conn) string {
					mu.Lock()
					calls++
					mu.Unlock()
					return tt.hook(c)
				}
			}
			l := listen(t)
			serveAt(t, r, l)
			var client net.Addr
			cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					var d net.Dialer
					c, err := d.DialContext(ctx, "tcp", addr)
					if err == nil {
						mu.Lock()
						client = c.LocalAddr()
						mu.Unlock()
					}
					return c, err
				}))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			for range 2 {
				testpb.NewTestServiceClient(cc).EmptyCall(testCtx(t), &testpb.Empty{})
			}
			mu.Lock()
			defer mu.Unlock()
			want := tt.want(client)
			if !slices.Equal(got, []string{want, want}) {
				t.Errorf("Request.Destination of two calls: %q, want %q twice", got, want)
			}
			if tt.hook != nil && calls != 1 {
				t.Errorf("Destination called %d times, want once", calls)
			}
		})
	}
}

// TestObserveAfterAnswer: a stream's end is observed after the relay has written the answer,
// so the observer's work does not hold it up: an observer that waits for the caller to have
// its answer gets it.
func TestObserveAfterAnswer(t *testing.T) {
	addr, _ := upstream(t, nil)
	answered := make(chan struct{})
	afterAnswer := make(chan bool, 1)
	cc, _, _ := relayLogged(t, func(*proxy.Request) proxy.Decision { return proxy.Decision{Upstream: addr} }, nil,
		func(r *proxy.Server) {
			r.Observe = func(*proxy.Request, proxy.Decision) func(proxy.StreamEnd) {
				return func(proxy.StreamEnd) {
					select {
					case <-answered:
						afterAnswer <- true
					case <-time.After(2 * time.Second):
						afterAnswer <- false
					}
				}
			}
		})
	if _, err := testpb.NewTestServiceClient(cc).EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	close(answered)
	if !<-afterAnswer {
		t.Error("the observer saw the stream end before the caller had its answer: observing held the answer up")
	}
}
