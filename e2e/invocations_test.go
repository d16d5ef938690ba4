package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/restate-grpc/restate-grpc/api/invocationsv1"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

func callTarget(svc, key, handler, idem string) *pb.Target {
	return &pb.Target{Target: &pb.Target_Call{Call: &pb.IdempotentCall{Service: svc, Key: key, Handler: handler, IdempotencyKey: idem}}}
}

func idTarget(id string) *pb.Target {
	return &pb.Target{Target: &pb.Target_InvocationId{InvocationId: id}}
}

// TestAttachMetadata: restate-attach answers the original method from an existing invocation,
// typed as the method's response: by id, by the call's idempotency key, by workflow id.
func TestAttachMetadata(t *testing.T) {
	ctx := testCtx(t)
	text := uniq(t, "sent")
	_, hdr, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: text, SleepMs: 300}, "restate-mode", "send")
	if err != nil {
		t.Fatal(err)
	}
	id := header(hdr, idHeader)
	idem := uniq(t, "idem")
	if _, _, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: idem, SleepMs: 300}, "restate-mode", "send", "idempotency-key", idem); err != nil {
		t.Fatal(err)
	}
	wf := uniq(t, "wf")
	if _, _, err := invoke(ctx, env.conn, flowRun, &testpb.Req{Key: wf, Text: wf, SleepMs: 300}, "restate-mode", "send"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		method string
		req    *testpb.Req
		md     []string
		want   string
	}{
		{"by invocation id", echoCall, &testpb.Req{}, []string{"restate-attach", id}, text},
		{"by idempotency key", echoCall, &testpb.Req{}, []string{"restate-attach", "idempotency-key", "idempotency-key", idem}, idem},
		{"by workflow id", flowRun, &testpb.Req{Key: wf}, []string{"restate-attach", "workflow"}, wf},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, hdr, err := invoke(ctx, env.conn, tc.method, tc.req, tc.md...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetText() != tc.want || header(hdr, idHeader) == "" || header(hdr, stateHeader) != "Completed" {
				t.Errorf("got %q (header %v), want the invocation's answer %q", resp.GetText(), hdr, tc.want)
			}
		})
	}
	if n := len(env.app.CallsWithText(text)); n != 1 {
		t.Errorf("attaching re-ran the invocation: %d executions", n)
	}
	_, _, err = invoke(ctx, env.conn, echoCall, &testpb.Req{}, "restate-attach", "inv_1bogusbogusbogusbogusbogusbogusbo")
	if st := status.Convert(err); st.Code() != codes.NotFound && st.Code() != codes.InvalidArgument {
		t.Errorf("attach to an unknown id: %v, want NotFound (or InvalidArgument for a malformed id)", st)
	}
	// Another method's invocation is refused, saying whose it is: its answer is not this
	// method's response type (the admin API's sys_invocation tells the target).
	_, _, err = invoke(ctx, env.conn, counterAdd, &testpb.Req{}, "counter-id", "c-1", "restate-attach", id)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "is one of rgtest.v1.Echo/Call, not of rgtest.v1.Counter/c-1/Add") {
		t.Errorf("attach to another service's invocation: %v, want InvalidArgument saying whose it is", st)
	}
	_, _, err = invoke(ctx, env.conn, flowRun, &testpb.Req{Key: wf + "-other"}, "restate-attach", id)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "is one of rgtest.v1.Echo/Call") {
		t.Errorf("attach to another workflow's invocation: %v, want InvalidArgument", st)
	}
	_, _, err = invoke(ctx, env.conn, echoCall, &testpb.Req{}, "restate-attach", "soon")
	if st := status.Convert(err); st.Code() != codes.InvalidArgument {
		t.Errorf("restate-attach: soon: %v, want InvalidArgument", st)
	}
}

// TestManagementAPI exercises the management service on the outbound listener.
func TestManagementAPI(t *testing.T) {
	ctx := testCtx(t)
	m := pb.NewInvocationsClient(env.conn)
	idem := uniq(t, "slow")
	want := callTarget("rgtest.v1.Echo", "", "Call", idem)
	looked, err := m.Lookup(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	_, hdr, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: idem, SleepMs: 1500}, "restate-mode", "send", "idempotency-key", idem)
	if err != nil {
		t.Fatal(err)
	}
	if got := header(hdr, idHeader); got != looked.GetInvocationId() {
		t.Errorf("lookup before the call = %s, the call's id = %s", looked.GetInvocationId(), got)
	}
	_, err = m.Output(ctx, want)
	if got := status.Code(err); got != codes.FailedPrecondition {
		t.Errorf("Output of a running invocation: %v, want FailedPrecondition", err)
	}
	res, err := m.Attach(ctx, idTarget(looked.GetInvocationId()))
	if err != nil {
		t.Fatal(err)
	}
	var resp testpb.Resp
	if err := proto.Unmarshal(res.GetPayload(), &resp); err != nil || resp.GetText() != idem {
		t.Errorf("Attach payload %v (%v), want the Echo answer %q", &resp, err, idem)
	}
	if res.GetInvocationId() != looked.GetInvocationId() {
		t.Errorf("Attach id %s, want %s", res.GetInvocationId(), looked.GetInvocationId())
	}
	// By id, the answer names the invocation's target, for a client to find the payload's type.
	if res.GetTarget() != "rgtest.v1.Echo/Call" {
		t.Errorf("Attach by id: target %q, want rgtest.v1.Echo/Call", res.GetTarget())
	}
	// By the call, the caller knows it already.
	out, err := m.Output(ctx, want)
	if byID := (&pb.Result{InvocationId: res.GetInvocationId(), Payload: res.GetPayload()}); err != nil || !proto.Equal(out, byID) {
		t.Errorf("Output after the end = %v, %v; want %v", out, err, byID)
	}
	wf := uniq(t, "wf")
	wfLook, err := m.Lookup(ctx, &pb.Target{Target: &pb.Target_Workflow{Workflow: &pb.Workflow{Name: "rgtest.v1.Flow", Id: wf}}})
	if err != nil {
		t.Fatal(err)
	}
	_, hdr, err = invoke(ctx, env.conn, flowRun, &testpb.Req{Key: wf})
	if err != nil || header(hdr, idHeader) != wfLook.GetInvocationId() {
		t.Errorf("workflow lookup %s, run's id %s (%v)", wfLook.GetInvocationId(), header(hdr, idHeader), err)
	}

	bad := []struct {
		name string
		t    *pb.Target
		code codes.Code
	}{
		{"unknown id", idTarget("inv_1dulJCO0YId82jI7FnElglZwS7eO9Mjr3e"), codes.NotFound},
		{"malformed id", idTarget("nope"), codes.InvalidArgument},
		{"empty target", &pb.Target{}, codes.InvalidArgument},
		{"call without idempotency key", callTarget("rgtest.v1.Echo", "", "Call", ""), codes.InvalidArgument},
	}
	for _, b := range bad {
		if _, err := m.Output(ctx, b.t); status.Code(err) != b.code {
			t.Errorf("Output(%s): %v, want %v", b.name, err, b.code)
		}
	}
}

// TestCancelAndKill: cancelling a running invocation returns CANCELLED to its blocked caller
// and its attachers at once; killing one returns ABORTED.
func TestCancelAndKill(t *testing.T) {
	for _, tc := range []struct {
		verb string
		code codes.Code
	}{{"cancel", codes.Canceled}, {"kill", codes.Aborted}} {
		t.Run(tc.verb, func(t *testing.T) {
			ctx := testCtx(t)
			conn, attaching := watchedSidecar(t)
			m := pb.NewInvocationsClient(conn)
			idem := uniq(t, "long")
			target := callTarget("rgtest.v1.Echo", "", "Call", idem)
			errs := make(chan error, 2)
			go func() {
				_, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: idem, SleepMs: 20000}, "idempotency-key", idem)
				errs <- err
			}()
			eventually(t, 10*time.Second, "the call runs in the app", func() bool { return env.app.Running(idem) })
			go func() { _, err := m.Attach(ctx, target); errs <- err }()
			select {
			case <-attaching:
			case <-ctx.Done():
				t.Fatal("the attach never reached the ingress")
			}
			start := time.Now()
			var err error
			if tc.verb == "cancel" {
				_, err = m.Cancel(ctx, target)
			} else {
				_, err = m.Kill(ctx, target)
			}
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := <-errs; status.Code(err) != tc.code {
					t.Errorf("caller or attacher got %v, want %v", err, tc.code)
				}
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("callers returned %s after the %s, want promptly", took, tc.verb)
			}
			_, err = m.Attach(ctx, target)
			if status.Code(err) != tc.code {
				t.Errorf("attach after the %s: %v, want %v", tc.verb, err, tc.code)
			}
		})
	}
}

// watchedSidecar is an outbound sidecar whose ingress is Restate's behind a proxy that reports
// each attach as it passes, so that a test knows an attacher is waiting.
func watchedSidecar(t *testing.T) (*grpc.ClientConn, <-chan struct{}) {
	t.Helper()
	ingress, err := url.Parse(env.restate.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(ingress)
	attaching := make(chan struct{}, 8)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/restate/attach" {
			select {
			case attaching <- struct{}{}:
			default:
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := startSidecar(ctx, fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  admin: %s
  routes: [{match: rgtest.v1.Echo/Call}]
`, ts.URL, env.restate.Admin))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	conn := dial(s)
	t.Cleanup(func() { conn.Close(); cancel(); s.Wait() })
	return conn, attaching
}

// TestCallerGone: with onCallerGone keep (default) an invocation outlives its caller's deadline
// and can be attached to later; with cancel it is cancelled.
func TestCallerGone(t *testing.T) {
	cancelling, err := startSidecar(context.Background(), fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  admin: %s
  routes: [{match: rgtest.v1.Echo/Call, onCallerGone: cancel}]
`, env.restate.Ingress, env.restate.Admin))
	if err != nil {
		t.Fatal(err)
	}
	cconn := dial(cancelling)
	m := pb.NewInvocationsClient(env.conn)
	t.Run("keep", func(t *testing.T) {
		idem := uniq(t, "keep")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, _, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: idem, SleepMs: 1000}, "idempotency-key", idem)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("caller with a 300ms deadline got %v, want DeadlineExceeded", err)
		}
		res, err := m.Attach(testCtx(t), callTarget("rgtest.v1.Echo", "", "Call", idem))
		if err != nil {
			t.Fatalf("attach after the caller left: %v", err)
		}
		var resp testpb.Resp
		proto.Unmarshal(res.GetPayload(), &resp)
		if resp.GetText() != idem {
			t.Errorf("attached answer %q, want %q", resp.GetText(), idem)
		}
	})
	for _, withKey := range []bool{true, false} {
		t.Run(fmt.Sprint("cancel, idempotency key ", withKey), func(t *testing.T) {
			text := uniq(t, "gone")
			md := []string{}
			if withKey {
				md = append(md, "idempotency-key", text)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			var hdr = make(chan string, 1)
			_, h, err := invoke(ctx, cconn, echoCall, &testpb.Req{Text: text, SleepMs: 20000}, md...)
			hdr <- header(h, idHeader)
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("caller got %v, want DeadlineExceeded", err)
			}
			// The invocation was cancelled: the app call was interrupted, and attaching says so.
			eventually(t, 5*time.Second, "the app call ends", func() bool { return !env.app.Running(text) })
			var rows []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			}
			eventually(t, 5*time.Second, "the invocation is completed", func() bool {
				env.adminQuery(t, "SELECT id, status FROM sys_invocation WHERE target = 'rgtest.v1.Echo/Call' ORDER BY created_at DESC LIMIT 1", &rows)
				return len(rows) == 1 && rows[0].Status == "completed"
			})
			_, err = m.Attach(testCtx(t), idTarget(rows[0].ID))
			if status.Code(err) != codes.Canceled {
				t.Errorf("attach to the abandoned invocation: %v, want Canceled", err)
			}
		})
	}
}

// TestDeadlineReachesApp: the app gets the attempt's deadline (attemptTimeout 7s for Echo).
func TestDeadlineReachesApp(t *testing.T) {
	resp, _, err := invoke(testCtx(t), env.conn, echoCall, &testpb.Req{Text: uniq(t, "deadline")})
	if err != nil {
		t.Fatal(err)
	}
	left, err := strconv.Atoi(resp.GetMetadata()["x-deadline-left-ms"])
	if err != nil || left <= 6000 || left > 7000 {
		t.Errorf("app saw %q ms left, want about 7000 (attemptTimeout)", resp.GetMetadata()["x-deadline-left-ms"])
	}
}

// TestReattachAfterIngressBreak: the connection between the sidecar and the ingress breaks
// during calls; those with an idempotency key re-attach and get the one result, without one
// the caller gets UNAVAILABLE (a repeat could run twice).
func TestReattachAfterIngressBreak(t *testing.T) {
	brk := newBreaker(t, env.restate.Ingress[len("http://"):])
	out, err := startSidecar(context.Background(), fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: http://%s
  routes: [{match: rgtest.v1.Echo/Call}]
`, brk.addr))
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(out)
	ctx := testCtx(t)
	text := uniq(t, "break")
	errs := make(chan error, 2)
	resps := make(chan *testpb.Resp, 1)
	go func() {
		r, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: text, SleepMs: 1500}, "idempotency-key", text)
		resps <- r
		errs <- err
	}()
	noKey := text + "-nokey"
	go func() {
		_, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: noKey, SleepMs: 1500})
		errs <- err
	}()
	eventually(t, 10*time.Second, "both calls run in the app", func() bool { return env.app.Running(text) && env.app.Running(noKey) })
	if n := brk.breakAll(); n < 2 {
		t.Fatalf("broke %d connections, want at least 2", n)
	}
	got := map[codes.Code]int{}
	for range 2 {
		got[status.Code(<-errs)]++
	}
	if got[codes.OK] != 1 || got[codes.Unavailable] != 1 {
		t.Errorf("results %v, want one OK (with key) and one Unavailable (without)", got)
	}
	if r := <-resps; r.GetText() != text {
		t.Errorf("re-attached answer %q, want %q", r.GetText(), text)
	}
	if n := len(env.app.CallsWithText(text)); n != 1 {
		t.Errorf("the app ran the call %d times, want 1", n)
	}
}

// breaker forwards TCP connections to a target and can cut all of them at once.
type breaker struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
}

func newBreaker(t *testing.T, target string) *breaker {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	b := &breaker{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c, up)
			b.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return b
}

// breakAll closes every open connection and returns how many client connections it cut.
func (b *breaker) breakAll() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
	n := len(b.conns) / 2
	b.conns = nil
	return n
}
