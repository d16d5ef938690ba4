package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/internal/testservice"
	"github.com/restate-grpc/restate-grpc/proxy"
)

// upstream serves grpc-go's interop TestService on loopback, plus a raw handler for any other
// method that the test supplies.
func upstream(t *testing.T, other grpc.StreamHandler) (addr string, srv *grpc.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.ServerOption{}
	if other != nil {
		opts = append(opts, grpc.UnknownServiceHandler(other))
	}
	srv = grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(srv, interop.NewTestServer())
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String(), srv
}

// relay serves a proxy.Server with director on loopback and returns a client of it.
func relay(t *testing.T, director func(*proxy.Request) proxy.Decision, local *grpc.Server) (*grpc.ClientConn, *proxy.Server) {
	cc, r, _ := relayLogged(t, director, local, nil)
	return cc, r
}

// logs is a log sink for the relay that tests can read.
type logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// relayLogged is relay, and also returns what the relay logs.
// configure, when not nil, sets more of the Server before it serves.
func relayLogged(t *testing.T, director func(*proxy.Request) proxy.Decision, local *grpc.Server, configure func(*proxy.Server)) (*grpc.ClientConn, *proxy.Server, *logs) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lg := &logs{}
	r := &proxy.Server{Director: director, Logger: slog.New(slog.NewTextHandler(lg, nil))}
	if configure != nil {
		configure(r)
	}
	if local != nil {
		p := proxy.NewPipe()
		go local.Serve(p)
		t.Cleanup(local.Stop)
		r.Local = p.Dial
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(l) }()
	t.Cleanup(func() {
		r.Close()
		if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, r, lg
}

func to(addr string) func(*proxy.Request) proxy.Decision {
	return func(*proxy.Request) proxy.Decision { return proxy.Decision{Upstream: addr} }
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestInterop runs every grpc-go interop client case through the relay. The cases fail the
// test binary (grpclog.Fatal) on any mismatch.
func TestInterop(t *testing.T) {
	addr, _ := upstream(t, nil)
	cc, _ := relay(t, to(addr), nil)
	tc := testpb.NewTestServiceClient(cc)
	for _, c := range testservice.InteropCases {
		t.Run(c.Name, func(t *testing.T) { c.Run(testCtx(t), tc) })
	}
	t.Run("unimplemented_method", func(t *testing.T) { interop.DoUnimplementedMethod(testCtx(t), cc) })
	t.Run("unimplemented_service", func(t *testing.T) {
		interop.DoUnimplementedService(testCtx(t), testpb.NewUnimplementedServiceClient(cc))
	})
}

// TestFlowControl moves far more than every window in both directions at once, on many
// streams, and checks every byte.
func TestFlowControl(t *testing.T) {
	addr, _ := upstream(t, nil)
	cc, _ := relay(t, to(addr), nil)
	tc := testpb.NewTestServiceClient(cc)
	const streams, msgs, size = 8, 8, 1 << 20 // 64 MiB each way, 16 connection windows; 1 MiB messages
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- fullDuplex(testCtx(t), tc, i, msgs, size)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// fullDuplex sends msgs requests of size bytes, each asking for a response of size bytes,
// and reads the responses while it sends.
func fullDuplex(ctx context.Context, tc testpb.TestServiceClient, i, msgs, size int) error {
	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	recvd := make(chan error, 1)
	go func() {
		for j := range msgs {
			r, err := s.Recv()
			if err != nil {
				recvd <- fmt.Errorf("stream %d: response %d: %v", i, j, err)
				return
			}
			if got := len(r.GetPayload().GetBody()); got != size {
				recvd <- fmt.Errorf("stream %d: response %d has %d bytes, want %d", i, j, got, size)
				return
			}
		}
		_, err := s.Recv()
		if err != io.EOF {
			recvd <- fmt.Errorf("stream %d: after the last response got %v, want EOF", i, err)
			return
		}
		recvd <- nil
	}()
	body := bytes.Repeat([]byte{byte(i)}, size)
	for j := range msgs {
		if err := s.Send(&testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: int32(size)}},
			Payload:            &testpb.Payload{Body: body},
		}); err != nil {
			return fmt.Errorf("stream %d: request %d: %v", i, j, err)
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return <-recvd
}

// TestConcurrentUnary runs many unary calls at once over one connection.
func TestConcurrentUnary(t *testing.T) {
	addr, _ := upstream(t, nil)
	cc, _ := relay(t, to(addr), nil)
	tc := testpb.NewTestServiceClient(cc)
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := (i * 7919) % 70000
			r, err := tc.UnaryCall(testCtx(t), &testpb.SimpleRequest{ResponseSize: int32(size), Payload: &testpb.Payload{Body: make([]byte, size)}})
			if err != nil {
				errs <- err
			} else if len(r.GetPayload().GetBody()) != size {
				errs <- fmt.Errorf("call %d: got %d bytes, want %d", i, len(r.GetPayload().GetBody()), size)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestDecisions: each way a Director can send a stream.
func TestDecisions(t *testing.T) {
	addr, _ := upstream(t, nil)
	local := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		return status.Errorf(codes.FailedPrecondition, "local answer, x-added=%v", md.Get("x-added"))
	}))
	cc, _ := relay(t, func(r *proxy.Request) proxy.Decision {
		switch {
		case strings.HasSuffix(r.Method, "/UnaryCall"):
			return proxy.Decision{Upstream: addr, MaxRequestMessage: 1000}
		case strings.HasSuffix(r.Method, "/EmptyCall"):
			if v, _ := r.Get("x-refuse"); v != "" {
				return proxy.Decision{Status: status.New(codes.PermissionDenied, v+": 100% \u00fcber")}
			}
			return proxy.Decision{Upstream: addr, Header: []hpack.HeaderField{{Name: "x-added", Value: "1"}}}
		}
		return proxy.Decision{Local: true, Header: []hpack.HeaderField{{Name: "x-added", Value: "yes"}}}
	}, local)
	tc := testpb.NewTestServiceClient(cc)
	tests := []struct {
		name    string
		call    func(ctx context.Context) error
		code    codes.Code
		message string
	}{
		{"relayed", func(ctx context.Context) error {
			_, err := tc.EmptyCall(ctx, &testpb.Empty{})
			return err
		}, codes.OK, ""},
		{"refused, message percent-encoded on the wire", func(ctx context.Context) error {
			_, err := tc.EmptyCall(metadata.AppendToOutgoingContext(ctx, "x-refuse", "nein"), &testpb.Empty{})
			return err
		}, codes.PermissionDenied, "nein: 100% \u00fcber"},
		{"local, with the added header", func(ctx context.Context) error {
			_, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
			if err == nil {
				_, err = recvAll(ctx, tc)
			}
			return err
		}, codes.FailedPrecondition, "local answer, x-added=[yes]"},
		{"request under the limit", func(ctx context.Context) error {
			_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 900)}})
			return err
		}, codes.OK, ""},
		{"request over the limit", func(ctx context.Context) error {
			_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 5000)}})
			return err
		}, codes.ResourceExhausted, "grpc: received message larger than max (500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(testCtx(t))
			if st := status.Convert(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.message) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.message)
			}
		})
	}
}

func recvAll(ctx context.Context, tc testpb.TestServiceClient) (int, error) {
	s, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		if _, err := s.Recv(); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, err
		}
		n++
	}
}

// TestUpstreamFailures: an upstream that is not there, one that dies mid-call, and one that
// goes away gracefully while a call runs.
func TestUpstreamFailures(t *testing.T) {
	t.Run("nothing listening", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		cc, _, lg := relayLogged(t, to(addr), nil, nil)
		_, err := testpb.NewTestServiceClient(cc).EmptyCall(testCtx(t), &testpb.Empty{})
		want := "upstream " + addr + ": dial tcp " + addr
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), want) {
			t.Errorf("got %v %q, want Unavailable containing %q", st.Code(), st.Message(), want)
		}
		if got := lg.String(); !strings.Contains(got, "cannot connect to upstream") || !strings.Contains(got, addr) {
			t.Errorf("log %q, want a warning naming %s", got, addr)
		}
	})
	t.Run("dies mid-call", func(t *testing.T) {
		started := make(chan struct{})
		addr, srv := upstream(t, func(_ any, s grpc.ServerStream) error {
			close(started)
			<-s.Context().Done()
			return nil
		})
		cc, _, lg := relayLogged(t, to(addr), nil, nil)
		errc := make(chan error, 1)
		go func() {
			errc <- cc.Invoke(testCtx(t), "/x.Y/Hang", &testpb.Empty{}, &testpb.Empty{})
		}()
		<-started
		srv.Stop()
		err := <-errc
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "upstream "+addr) {
			t.Errorf("got %v %q, want Unavailable from upstream %s", st.Code(), st.Message(), addr)
		}
		if got := lg.String(); !strings.Contains(got, "upstream connection ended with calls in flight") {
			t.Errorf("log %q, want a warning about the calls in flight", got)
		}
	})
	t.Run("graceful stop, then a new upstream", func(t *testing.T) {
		release := make(chan struct{})
		started := make(chan struct{}, 1)
		h := func(_ any, s grpc.ServerStream) error {
			started <- struct{}{}
			<-release
			return status.Error(codes.Aborted, "released")
		}
		addr, srv := upstream(t, h)
		cc, _ := relay(t, to(addr), nil)
		errc := make(chan error, 1)
		go func() { errc <- cc.Invoke(testCtx(t), "/x.Y/Wait", &testpb.Empty{}, &testpb.Empty{}) }()
		<-started
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		time.Sleep(100 * time.Millisecond) // GOAWAY reaches the relay
		close(release)
		if st := status.Convert(<-errc); st.Code() != codes.Aborted || st.Message() != "released" {
			t.Errorf("call in flight during GOAWAY: got %v, want Aborted released", st)
		}
		<-stopped
		// A new server on the same address: the relay dials it for the next call.
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv2 := grpc.NewServer()
		testpb.RegisterTestServiceServer(srv2, interop.NewTestServer())
		go srv2.Serve(l)
		defer srv2.Stop()
		if _, err := testpb.NewTestServiceClient(cc).EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
			t.Errorf("call after the upstream restarted: %v", err)
		}
	})
}

// TestCancelReachesUpstream: a caller's cancel ends the upstream's call.
func TestCancelReachesUpstream(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	addr, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		close(started)
		<-s.Context().Done()
		ended <- s.Context().Err()
		return nil
	})
	cc, _ := relay(t, to(addr), nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	go cc.Invoke(ctx, "/x.Y/Hang", &testpb.Empty{}, &testpb.Empty{})
	<-started
	cancel()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("upstream call ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream call did not end after the caller cancelled")
	}
}

// TestShutdown: a call in flight finishes; new connections are refused.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	addr, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		close(started)
		<-release
		return s.SendMsg(&testpb.Empty{})
	})
	cc, r := relay(t, to(addr), nil)
	errc := make(chan error, 1)
	go func() { errc <- cc.Invoke(testCtx(t), "/x.Y/Wait", &testpb.Empty{}, &testpb.Empty{}) }()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- r.Shutdown(testCtx(t)) }()
	// The caller leaves READY when the relay's GOAWAY reaches it: Shutdown is draining.
	for ctx := testCtx(t); cc.GetState() == connectivity.Ready; {
		if !cc.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatal("no GOAWAY reached the caller")
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a call was in flight", err)
	default:
	}
	close(release)
	if err := <-errc; err != nil {
		t.Errorf("call in flight during Shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestUpstreamStreamLimit: an upstream that takes 2 streams per connection still serves 20
// concurrent calls that arrive on one downstream connection.
func TestUpstreamStreamLimit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxConcurrentStreams(2), grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
		time.Sleep(100 * time.Millisecond)
		return s.SendMsg(&testpb.Empty{})
	}))
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	cc, _ := relay(t, to(l.Addr().String()), nil)
	// The first call lets the relay learn the limit from the upstream's SETTINGS.
	if err := cc.Invoke(testCtx(t), "/x.Y/Slow", &testpb.Empty{}, &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if err := cc.Invoke(testCtx(t), "/x.Y/Slow", &testpb.Empty{}, &testpb.Empty{}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStuckUpstream: an upstream that gives a huge window and then stops reading holds up the
// downstream connection for at most WriteTimeout; its call fails, and the connection serves
// other calls again.
func TestStuckUpstream(t *testing.T) {
	stuck, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stuck.Close() })
	go func() {
		c, err := stuck.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		io.ReadFull(c, make([]byte, len(http2.ClientPreface)))
		fr := http2.NewFramer(c, c)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		fr.WriteWindowUpdate(0, 1<<31-1-65535)
		// and never reads again
	}()
	healthy, _ := upstream(t, nil)
	cc, _, lg := relayLogged(t, func(r *proxy.Request) proxy.Decision {
		if strings.HasPrefix(r.Method, "/stuck.") {
			return proxy.Decision{Upstream: stuck.Addr().String()}
		}
		return proxy.Decision{Upstream: healthy}
	}, nil, func(r *proxy.Server) { r.WriteTimeout = 300 * time.Millisecond })

	s, err := cc.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: true}, "/stuck.S/Upload", grpc.ForceCodecV2(rawcodec.Codec))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := 0; i < 256; i++ { // far more than the socket buffers hold
		if err := s.SendMsg(&chunk); err != nil {
			break
		}
	}
	var out []byte
	err = s.RecvMsg(&out)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "upstream "+stuck.Addr().String()) {
		t.Errorf("call to the stuck upstream: got %v, want Unavailable from it", err)
	}
	if !strings.Contains(lg.String(), "closing a connection that stopped reading") {
		t.Errorf("log %q, want a warning about the connection that stopped reading", lg.String())
	}
	if _, err := testpb.NewTestServiceClient(cc).EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("a call on the same connection afterwards: %v", err)
	}
}
