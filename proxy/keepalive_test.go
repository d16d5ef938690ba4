package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/proxy"
)

func init() { roles["upstream"] = serveInherited }

// serveInherited is an upstream in a process of its own: grpc-go's interop TestService on the
// listener its parent passed as fd 3, until it is killed.
func serveInherited() error {
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, interop.NewTestServer())
	return srv.Serve(l)
}

// processUpstream starts serveInherited in a child process and returns its address and the
// process, which the test may stop (SIGSTOP: a node that is gone without a FIN).
func processUpstream(t *testing.T) (string, *os.Process) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // the child has its own descriptor of it
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := child("upstream")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	return l.Addr().String(), cmd.Process
}

// tap dials upstreams for the relay and records the connections it made and, in order, the
// PINGs, GOAWAYs and closes the relay wrote to them.
type tap struct {
	mu     sync.Mutex
	dials  int
	events []string
}

func (tp *tap) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tp.mu.Lock()
	tp.dials++
	tp.mu.Unlock()
	return &tapConn{Conn: c, tp: tp}, nil
}

func (tp *tap) note(e string) {
	tp.mu.Lock()
	tp.events = append(tp.events, e)
	tp.mu.Unlock()
}

// seen returns the number of dials and the events so far.
func (tp *tap) seen() (int, []string) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.dials, slices.Clone(tp.events)
}

func (tp *tap) count(event string) int {
	_, events := tp.seen()
	n := 0
	for _, e := range events {
		if e == event {
			n++
		}
	}
	return n
}

type tapConn struct {
	net.Conn
	tp     *tap
	closed sync.Once
}

// Write reads the frames in p: the relay writes whole frames.
func (c *tapConn) Write(p []byte) (int, error) {
	fr := http2.NewFramer(nil, bytes.NewReader(bytes.TrimPrefix(p, []byte(http2.ClientPreface))))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if !f.IsAck() {
				c.tp.note("PING")
			}
		case *http2.GoAwayFrame:
			c.tp.note("GOAWAY " + f.ErrCode.String())
		}
	}
	return c.Conn.Write(p)
}

func (c *tapConn) Close() error {
	c.closed.Do(func() { c.tp.note("close") })
	return c.Conn.Close()
}

// TestKeepaliveHalfOpen: an upstream that stops answering without closing (its process
// stopped) fails the calls it holds with UNAVAILABLE after one unanswered keepalive PING,
// and the next call takes a new connection.
func TestKeepaliveHalfOpen(t *testing.T) {
	const interval, timeout = 100 * time.Millisecond, 200 * time.Millisecond
	addr, proc := processUpstream(t)
	tp := &tap{}
	cc, _, _ := relayLogged(t, to(addr), nil, func(r *proxy.Server) {
		r.Dial = tp.dial
		r.Limits = proxy.Limits{KeepaliveInterval: interval, KeepaliveTimeout: timeout}
	})
	tc := testpb.NewTestServiceClient(cc)
	if _, err := tc.EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Fatalf("a call before the upstream stops: %v", err)
	}
	s, err := tc.FullDuplexCall(testCtx(t)) // waits for requests: a silent call
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	_, err = s.Recv()
	const bound = 2*interval + timeout + 2*time.Second
	if d := time.Since(stopped); d > bound {
		t.Errorf("the call failed %s after the upstream stopped, want within %s", d, bound)
	}
	want := fmt.Sprintf("upstream %s did not answer a keepalive ping within %s", addr, timeout)
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != want {
		t.Errorf("the call on the stopped upstream: got %v %q, want %v %q", st.Code(), st.Message(), codes.Unavailable, want)
	}
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("a call after the upstream went on: %v", err)
	}
	if dials, events := tp.seen(); dials != 2 || !slices.Contains(events, "close") {
		t.Errorf("%d connections, events %q; want 2, the first closed", dials, events)
	}
}

// TestKeepaliveGRPCEnforcement: keepalive PINGs stay within what a grpc-go server tolerates
// by default (keepalive.EnforcementPolicy: MinTime 5 minutes, GOAWAY "too_many_pings" at the
// third strike), on a call that stays silent for 40 intervals as on one that is not.
func TestKeepaliveGRPCEnforcement(t *testing.T) {
	const interval, call = 50 * time.Millisecond, 2 * time.Second
	tests := []struct {
		name  string
		every time.Duration // how often the upstream sends a message; 0: never
		pings func(n int) bool
		want  string
	}{
		{"silent", 0, func(n int) bool { return n == 2 }, "2, then none for 5 minutes"},
		{"a message every 3 intervals", 3 * interval, func(n int) bool { return n >= 4 }, "more than 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
				end := time.Now().Add(call)
				for tt.every > 0 && time.Now().Add(tt.every).Before(end) {
					time.Sleep(tt.every) // the call's own pace
					if err := s.SendMsg(&testpb.Empty{}); err != nil {
						return err
					}
				}
				time.Sleep(time.Until(end))
				return status.Error(codes.Aborted, "done")
			})
			tp := &tap{}
			cc, _, _ := relayLogged(t, to(addr), nil, func(r *proxy.Server) {
				r.Dial = tp.dial
				r.Limits = proxy.Limits{KeepaliveInterval: interval, KeepaliveTimeout: time.Second}
			})
			s, err := cc.NewStream(testCtx(t), &grpc.StreamDesc{ServerStreams: true}, "/x.Y/Paced", grpc.ForceCodecV2(rawcodec.Codec))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(&[]byte{}); err != nil {
				t.Fatal(err)
			}
			s.CloseSend()
			for err == nil {
				var msg []byte
				err = s.RecvMsg(&msg)
			}
			if st := status.Convert(err); st.Code() != codes.Aborted || st.Message() != "done" {
				t.Errorf("the call ended with %v %q, want Aborted done", st.Code(), st.Message())
			}
			if n := tp.count("PING"); !tt.pings(n) {
				t.Errorf("%d keepalive PINGs, want %s", n, tt.want)
			}
		})
	}
}

// TestUpstreamIdle: an upstream connection with no stream for UpstreamIdleTimeout is told
// GOAWAY and closed, and the next call dials again; one whose call lasts longer is kept.
func TestUpstreamIdle(t *testing.T) {
	const idle = 200 * time.Millisecond
	addr, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		time.Sleep(2 * idle) // a call longer than the idle timeout
		return s.SendMsg(&testpb.Empty{})
	})
	tp := &tap{}
	cc, _, _ := relayLogged(t, to(addr), nil, func(r *proxy.Server) {
		r.Dial = tp.dial
		r.Limits = proxy.Limits{UpstreamIdleTimeout: idle}
	})
	if err := cc.Invoke(testCtx(t), "/x.Y/Long", &[]byte{}, &[]byte{}, grpc.ForceCodecV2(rawcodec.Codec)); err != nil {
		t.Fatalf("a call longer than the idle timeout: %v", err)
	}
	ended := time.Now()
	if err := waitFor(10*time.Second, func() bool { return tp.count("close") == 1 }); err != nil {
		t.Fatalf("the idle upstream connection was not closed: %v", err)
	}
	if d := time.Since(ended); d < idle {
		t.Errorf("closed %s after its last call, want at least %s", d, idle)
	}
	if _, events := tp.seen(); !slices.Equal(events, []string{"GOAWAY NO_ERROR", "close"}) {
		t.Errorf("the relay wrote %q to the idle upstream, want GOAWAY NO_ERROR, close", events)
	}
	if _, err := testpb.NewTestServiceClient(cc).EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("a call after the close: %v", err)
	}
	if dials, _ := tp.seen(); dials != 2 {
		t.Errorf("%d upstream connections, want 2", dials)
	}
}
