package e2e

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/restate-grpc/restate-grpc/internal/testservice"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestStatusFidelity: the callee's status (code, message, details) reaches the caller
// unchanged, and a terminal failure is not retried.
func TestStatusFidelity(t *testing.T) {
	tests := []struct {
		code    codes.Code
		msg     string
		details bool
	}{
		{codes.InvalidArgument, "quantity must be positive", true},
		{codes.NotFound, "order 42 not found", true},
		{codes.AlreadyExists, "order 42 exists", true},
		{codes.PermissionDenied, "not yours", false},
		{codes.FailedPrecondition, "order is closed\nline two ☺", true},
		{codes.Internal, "boom", false},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			ctx := testCtx(t)
			text := uniq(t, "fail")
			_, _, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: text, FailCode: int32(tc.code), FailMessage: tc.msg, FailDetails: tc.details})
			st := status.Convert(err)
			if st.Code() != tc.code || st.Message() != tc.msg {
				t.Fatalf("got status %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			var want []any
			if tc.details {
				want = []any{&errdetails.ErrorInfo{Reason: "TEST_FAILURE", Domain: "rgtest.v1", Metadata: map[string]string{"key": ""}}}
			}
			if diff := cmp.Diff(want, st.Details(), protocmp.Transform(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("details differ (-want +got):\n%s", diff)
			}
			if got := len(env.app.CallsWithText(text)); got != 1 {
				t.Errorf("callee ran %d times, want 1 (terminal errors are not retried)", got)
			}
		})
	}
}

// TestRetryableFailures: codes listed as retryable, and a callee that is down, are retried by
// Restate until the callee answers; the caller just waits.
func TestRetryableFailures(t *testing.T) {
	t.Run("retryable code", func(t *testing.T) {
		ctx := testCtx(t)
		text := uniq(t, "flaky")
		resp, _, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: text, FailCode: int32(codes.Unavailable), FailAttempts: 2})
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		calls := env.app.CallsWithText(text)
		if len(calls) != 3 {
			t.Fatalf("callee ran %d times, want 3 (2 failures, then success)", len(calls))
		}
		for _, c := range calls {
			if c.InvocationID != resp.GetInvocationId() {
				t.Errorf("attempt with invocation id %q, want %q: retries keep the id", c.InvocationID, resp.GetInvocationId())
			}
		}
	})
	t.Run("callee down then up", func(t *testing.T) {
		ctx := testCtx(t)
		appAddr, listen := downAddr(t)
		// A second inbound sidecar for an app that is not running yet; its handlers are listed,
		// since there is no reflection to ask.
		if _, err := startInbound(ctx, fmt.Sprintf(`
inbound:
  app: %s
  listen: 127.0.0.1:%%d
  register: {admin: %s, uri: "http://127.0.0.1:%%d"}
  services:
    - name: rgtest.v1.Echo
      as: rgtest.v1.EchoLate
      handlers: {Call: ""}
`, appAddr, env.restate.Admin)); err != nil {
			t.Fatal(err)
		}
		out, err := startSidecar(ctx, fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call, service: rgtest.v1.EchoLate}]
`, env.restate.Ingress))
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			resp *testpb.Resp
			err  error
		}
		done := make(chan result, 1)
		go func() {
			resp, _, err := invoke(ctx, dial(out), echoCall, &testpb.Req{Text: "late"})
			done <- result{resp, err}
		}()
		// The app starts once an attempt has failed for want of it.
		eventually(t, 20*time.Second, "an attempt failed with the app down", func() bool {
			var rows []struct{ ID string }
			env.adminQuery(t, "SELECT id FROM sys_invocation WHERE target = 'rgtest.v1.EchoLate/Call' AND last_failure IS NOT NULL", &rows)
			return len(rows) == 1
		})
		late := testservice.NewApp()
		t.Cleanup(late.Serve(listen()).Stop)
		r := <-done
		if r.err != nil {
			t.Fatalf("call while the callee was down: %v", r.err)
		}
		if r.resp.GetText() != "late" {
			t.Errorf("got %v, want the late app's answer", r.resp)
		}
		if got := len(late.Calls("Echo/Call")); got != 1 {
			t.Errorf("late app ran %d times, want 1", got)
		}
	})
}

// downAddr is a loopback address with nothing listening, as for an app that is down: its port
// is bound but not listened on, so connections are refused and nobody else can bind it. listen
// makes it a listener, for the app coming up.
func downAddr(t *testing.T) (addr string, listen func() net.Listener) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "down")
	t.Cleanup(func() { f.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	return addr, func() net.Listener {
		if err := syscall.Listen(fd, syscall.SOMAXCONN); err != nil {
			t.Fatal(err)
		}
		l, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
}
