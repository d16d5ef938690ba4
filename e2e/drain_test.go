package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// drainCall makes one durable call of key that the app runs for sleep, and returns its code;
// an answer that is not the key's is reported as INTERNAL.
func drainCall(conn *grpc.ClientConn, key string, sleep time.Duration) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: key, SleepMs: int32(sleep.Milliseconds())}, "idempotency-key", key)
	if err == nil && resp.GetText() != key {
		return codes.Internal
	}
	return status.Code(err)
}

// waitExit waits for p, signalled at sent, to exit within that of it, and returns its exit
// code and how long after sent it exited.
func waitExit(t *testing.T, p *proc, sent time.Time, within time.Duration) (int, time.Duration) {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), time.Since(sent)
	case <-time.After(time.Until(sent.Add(within))):
		t.Fatalf("%s still running %s after SIGTERM", p.label, within)
		return 0, 0
	}
}

// drainLoad is the load of a drain test: durable calls through r, each with its key, and their
// codes.
type drainLoad struct {
	r   *faultRig
	mu  sync.Mutex
	got map[string]codes.Code
	wg  sync.WaitGroup // the calls
}

// startDrain makes inFlight calls of prefix-aNNN that the app runs for 2s each, waits until
// all of them run in the app (the sidecars accepted them all), and sends p SIGTERM; it returns
// the load and when the signal went.
func startDrain(t *testing.T, r *faultRig, p *proc, prefix string, inFlight int) (*drainLoad, time.Time) {
	l := &drainLoad{r: r, got: map[string]codes.Code{}}
	for i := range inFlight {
		l.wg.Go(func() { l.call(fmt.Sprintf("%s-a%03d", prefix, i), 2*time.Second) })
	}
	eventually(t, 30*time.Second, "every call running", func() bool { return len(r.executions(t, prefix)) >= inFlight })
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return l, sent
}

// call makes one call (drainCall) and records its code.
func (l *drainLoad) call(key string, sleep time.Duration) codes.Code {
	code := drainCall(l.r.conn, key, sleep)
	l.mu.Lock()
	l.got[key] = code
	l.mu.Unlock()
	return code
}

// TestDrainOutbound: SIGTERM to an outbound sidecar under load lets every call it accepted
// finish, refuses the ones that come after as UNAVAILABLE before they reach Restate (gRPC
// clients retry that), and exits 0.
func TestDrainOutbound(t *testing.T) {
	r := newFaultRig(t)
	prefix := uniq(t, "drain")
	l, sent := startDrain(t, r, r.outbound, prefix, 64)
	// More callers keep calling while it drains, until it has exited.
	exited := make(chan struct{})
	var late sync.WaitGroup
	for c := range 8 {
		late.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-exited:
					return
				default:
				}
				if l.call(fmt.Sprintf("%s-b%d-%03d", prefix, c, i), 100*time.Millisecond) == codes.Unavailable {
					time.Sleep(20 * time.Millisecond) // as a client's retry backoff
				}
			}
		})
	}
	code, took := waitExit(t, r.outbound, sent, 30*time.Second)
	close(exited)
	l.wg.Wait()
	late.Wait()
	if code != 0 {
		t.Errorf("exit code %d after %s, want 0", code, took)
	}
	// A refused call must not have started anything: wait for what Restate might still run.
	time.Sleep(2 * time.Second)
	execs := r.executions(t, prefix)
	counts := map[string]int{}
	for key, c := range l.got {
		counts[c.String()]++
		_, ran := execs[key]
		switch {
		case key < prefix+"-b" && c != codes.OK: // accepted before the SIGTERM
			t.Errorf("%s, in flight at the SIGTERM: got %v, want OK", key, c)
		case c != codes.OK && c != codes.Unavailable:
			t.Errorf("%s, made while draining: got %v, want OK or UNAVAILABLE", key, c)
		case c == codes.Unavailable && ran:
			t.Errorf("%s was refused UNAVAILABLE but ran: half done", key)
		}
	}
	t.Logf("exit %d after %s; %d calls by code: %v", code, took, len(l.got), counts)
	if counts["Unavailable"] == 0 {
		t.Errorf("no call was refused while draining: the late callers hit nothing")
	}
}

// TestDrainCut: a second SIGTERM, or the end of shutdown.grace, ends a draining outbound
// sidecar at once with exit code 1; its calls in flight end UNAVAILABLE, a status callers retry
// (with their idempotency key, the retry attaches to the invocation, which Restate completes).
func TestDrainCut(t *testing.T) {
	r := newFaultRig(t)
	for _, tc := range []struct {
		name    string
		grace   string
		signals int
		within  time.Duration
	}{
		{"second SIGTERM", "1m", 2, 3 * time.Second},
		{"grace ends", "1s", 1, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs := freeAddrs(t, 2)
			p := startSidecarProc(t, "outbound", fmt.Sprintf(`
shutdown: {grace: %s}
outbound:
  listen: %s
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call}]
`, tc.grace, addrs[0], r.restate.Ingress), addrs[1])
			conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			prefix := uniq(t, "cut")
			const inFlight = 16
			codesc := make(chan codes.Code, inFlight)
			for i := range inFlight {
				go func() { codesc <- drainCall(conn, fmt.Sprintf("%s-%03d", prefix, i), 30*time.Second) }()
			}
			eventually(t, 30*time.Second, "every call running", func() bool { return len(r.executions(t, prefix)) >= inFlight })
			sent := time.Now()
			for range tc.signals {
				if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			code, took := waitExit(t, p, sent, tc.within)
			if code != 1 {
				t.Errorf("exit code %d after %s, want 1", code, took)
			}
			for range inFlight {
				if c := <-codesc; c != codes.Unavailable {
					t.Errorf("a call in flight when the sidecar was ended: got %v, want UNAVAILABLE", c)
				}
			}
			t.Logf("exit %d after %s", code, took)
		})
	}
}

// TestDrainInbound: SIGTERM to an inbound sidecar under load lets every call Restate delivered
// to it finish in the app and reach Restate once, and exits 0; the invocations that come while it
// drains and after it exits are Restate's to retry, and complete once a sidecar serves again.
// No call is lost, and none that ran when the SIGTERM came runs twice.
func TestDrainInbound(t *testing.T) {
	r := newFaultRig(t)
	prefix := uniq(t, "drain")
	l, sent := startDrain(t, r, r.inbound, prefix, 32)
	// New invocations while it drains: each caller waits on its own until Restate has it run.
	exited := make(chan struct{})
	var late sync.WaitGroup
	var lateCalls atomic.Int64
	for c := range 4 {
		late.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-exited:
					return
				case <-time.After(50 * time.Millisecond):
				}
				lateCalls.Add(1)
				l.wg.Go(func() { l.call(fmt.Sprintf("%s-b%d-%03d", prefix, c, i), 100*time.Millisecond) })
			}
		})
	}
	code, took := waitExit(t, r.inbound, sent, 30*time.Second)
	close(exited)
	late.Wait()
	if code != 0 {
		t.Errorf("exit code %d after %s, want 0", code, took)
	}
	// The calls it drained were answered through it: none of them is run again.
	for key, ids := range r.executions(t, prefix) {
		if key < prefix+"-b" && len(ids) != 1 {
			t.Errorf("%s, in flight at the SIGTERM, ran %d times, want once (its answer reached Restate)", key, len(ids))
		}
	}
	r.inbound.restart()
	waitReady(t, r.inHealth)
	l.wg.Wait()
	execs := r.executions(t, prefix)
	counts := map[string]int{}
	for key, c := range l.got {
		counts[c.String()]++
		if c != codes.OK {
			t.Errorf("%s: got %v, want OK (Restate retries an attempt the sidecar did not take)", key, c)
		}
		if _, ran := execs[key]; !ran {
			t.Errorf("%s answered but never ran in the app", key)
		}
	}
	t.Logf("exit %d after %s; %d calls (%d made while it drained) by code: %v", code, took, len(l.got), lateCalls.Load(), counts)
	if lateCalls.Load() == 0 {
		t.Errorf("no call was made while the sidecar drained")
	}
}
