package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestLogsAppDown: while the app is down and Restate retries a call, the inbound sidecar logs
// no ERROR, one WARN that the app went down and one INFO that it is back; sdk-go's lines of
// each attempt are at debug only.
func TestLogsAppDown(t *testing.T) {
	r := newFaultRig(t)
	r.app.kill()
	eventually(t, 10*time.Second, "the app probed down", func() bool { return r.inboundLogCount("app not answering") > 0 })
	key := uniq(t, "down")
	done := make(chan codes.Code, 1)
	go func() { done <- drainCall(r.conn, key, 0) }()
	eventually(t, 30*time.Second, "attempts failing", func() bool { return r.inboundLogCount("Invocation panicked") >= 3 })
	r.app.restart()
	if c := <-done; c != codes.OK {
		t.Fatalf("call made while the app was down: %v, want OK once it is back", c)
	}
	eventually(t, 10*time.Second, "the app probed back", func() bool { return r.inboundLogCount("app answering again") > 0 })
	for _, tc := range []struct {
		what string
		want int
	}{
		{"level=ERROR", 0},
		{`level=WARN msg="app not answering; Restate retries its calls"`, 1},
		{`level=INFO msg="app answering again"`, 1},
		// every one of sdk-go's lines of a failed attempt, and there were some: at debug
		{`level=DEBUG msg="Invocation panicked, returning error to Restate"`, r.inboundLogCount("Invocation panicked")},
	} {
		if got := r.inboundLogCount(tc.what); got != tc.want {
			t.Errorf("inbound log lines with %s: got %d, want %d", tc.what, got, tc.want)
		}
	}
}

// inboundLogCount counts the inbound sidecar's log lines holding s.
func (r *faultRig) inboundLogCount(s string) int {
	b, _ := os.ReadFile(r.inbound.logPath())
	return strings.Count(string(b), s)
}

// TestLogsFailedCall: a call the app refuses for good logs one INFO line on each side, with
// the route and the invocation: the outbound sidecar's `durable call failed` and the inbound
// sidecar's `inbound call failed`, and nothing about the call above INFO.
func TestLogsFailedCall(t *testing.T) {
	r := newFaultRig(t)
	prefix := uniq(t, "refused")
	key := prefix + "-0"
	ctx := testCtx(t)
	_, _, err := invoke(ctx, r.conn, echoCall, &testpb.Req{Text: key, FailCode: int32(codes.NotFound)})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("got %v, want NOT_FOUND", err)
	}
	ids := r.executions(t, prefix)[key]
	if len(ids) != 1 {
		t.Fatalf("the app ran the call %d times, want once", len(ids))
	}
	id := ids[0]
	for _, tc := range []struct {
		p    *proc
		want string
	}{
		{r.outbound, `level=INFO msg="durable call failed" method=/rgtest.v1.Echo/Call route=rgtest.v1.Echo/Call invocation=` + id + ` code=NotFound`},
		{r.inbound, `level=INFO msg="inbound call failed" method=/rgtest.v1.Echo/Call route=rgtest.v1.Echo/Call invocation=` + id + ` code=NotFound`},
	} {
		var log string
		eventually(t, 5*time.Second, tc.p.label+" logged the failure", func() bool {
			b, _ := os.ReadFile(tc.p.logPath())
			log = string(b)
			return strings.Contains(log, tc.want)
		})
		if n := strings.Count(log, "call failed"); n != 1 {
			t.Errorf("%s logged %d failed-call lines, want 1", tc.p.label, n)
		}
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, id) && (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) {
				t.Errorf("%s logged above INFO for the call: %s", tc.p.label, line)
			}
		}
	}
}
