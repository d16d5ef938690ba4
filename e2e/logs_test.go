package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
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
