package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/soak"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// faultRig is a whole path of processes: caller (this test) -> outbound sidecar -> Restate ->
// inbound sidecar -> test app, each of which a test may kill and restart. The app appends every
// execution to a journal file, so executions are counted across its restarts.
type faultRig struct {
	restate             *testenv.Restate
	app                 *proc
	journal             string
	inbound, outbound   *proc
	inHealth, outHealth string
	conn                *grpc.ClientConn
}

func newFaultRig(t *testing.T) *faultRig {
	dir := t.TempDir()
	rs, err := testenv.StartRestate(dir, testenv.RestateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Stop)
	r := &faultRig{restate: rs, journal: filepath.Join(dir, "executions")}
	addrs := freeAddrs(t, 5)
	appAddr, inAddr, outAddr := addrs[0], addrs[1], addrs[2]
	r.inHealth, r.outHealth = addrs[3], addrs[4]
	r.app = startProc(t, "app", "testapp", "-listen", appAddr, "-journal", r.journal)
	r.inbound = startSidecarProc(t, "inbound", fmt.Sprintf(`
inbound:
  app: %s
  listen: %s
  register: {admin: %s, uri: "http://%[2]s"}
  services: [{name: rgtest.v1.Echo, handlers: {Call: ""}}]
`, appAddr, inAddr, rs.Admin), r.inHealth)
	r.outbound = startSidecarProc(t, "outbound", fmt.Sprintf(`
outbound:
  listen: %s
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call}]
`, outAddr, rs.Ingress), r.outHealth)
	r.conn, err = grpc.NewClient(outAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	return r
}

func freeAddrs(t *testing.T, n int) []string {
	var ls []net.Listener
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// loadStats are the figures of one load run.
type loadStats struct {
	calls, completed, lost, unclean int
	callerRetries                   int64
	retryCodes                      map[codes.Code]int
	ids                             map[string]string // idempotency key -> invocation id
	idMismatch                      int               // keys answered with two different ids
}

// load makes n calls from 16 callers, each with its own idempotency key, and triggers fault
// once a third of them has completed. A caller retries a clean retryable status (UNAVAILABLE,
// DEADLINE_EXCEEDED) with the same key, as a gRPC client with a retry policy would.
func (r *faultRig) load(t *testing.T, prefix string, n int, send bool, fault func()) loadStats {
	st := loadStats{calls: n, retryCodes: map[codes.Code]int{}, ids: map[string]string{}}
	var mu sync.Mutex
	var done atomic.Int64
	var faultOnce sync.Once
	faultDone := make(chan struct{})
	work := make(chan int)
	go func() {
		for i := range n {
			work <- i
		}
		close(work)
	}()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				key := fmt.Sprintf("%s-%04d", prefix, i)
				md := []string{"idempotency-key", key}
				if send {
					md = append(md, "restate-mode", "send")
				}
				deadline := time.Now().Add(2 * time.Minute)
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					resp, hdr, err := invoke(ctx, r.conn, echoCall, &testpb.Req{Text: key, SleepMs: 40}, md...)
					cancel()
					code := status.Code(err)
					mu.Lock()
					switch {
					case err == nil:
						id := header(hdr, idHeader)
						if prev, ok := st.ids[key]; ok && prev != id {
							st.idMismatch++
						}
						st.ids[key] = id
						if !send && resp.GetText() != key {
							st.unclean++
							t.Errorf("%s answered %q", key, resp.GetText())
						}
						st.completed++
					case code == codes.Unavailable || code == codes.DeadlineExceeded:
						st.callerRetries++
						st.retryCodes[code]++
					default:
						st.unclean++
						t.Errorf("%s: unclean status %v", key, err)
					}
					mu.Unlock()
					if err == nil || (code != codes.Unavailable && code != codes.DeadlineExceeded) {
						break
					}
					if time.Now().After(deadline) {
						mu.Lock()
						st.lost++
						mu.Unlock()
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if done.Add(1) == int64(n/3) {
					faultOnce.Do(func() { go func() { fault(); close(faultDone) }() })
				}
			}
		})
	}
	wg.Wait()
	faultOnce.Do(func() { close(faultDone) })
	<-faultDone
	return st
}

// executions reads the app's journal: for every key of prefix, the invocation ids it ran with.
func (r *faultRig) executions(t *testing.T, prefix string) map[string][]string {
	out, err := soak.ReadJournal(r.journal, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// check asserts the figures: every call completed with one invocation id, nothing lost, every
// key executed, and every repeated execution carried the caller's invocation id. It prints them.
func (r *faultRig) check(t *testing.T, prefix string, st loadStats, send bool) {
	t.Helper()
	var execs map[string][]string
	if send {
		eventually(t, 90*time.Second, "every send executed", func() bool {
			execs = r.executions(t, prefix)
			return len(execs) == st.calls
		})
	} else {
		execs = r.executions(t, prefix)
	}
	total, repeats, foreign := 0, 0, 0
	for key, ids := range execs {
		total += len(ids)
		repeats += len(ids) - 1
		for _, id := range ids {
			if id != st.ids[key] {
				foreign++
			}
		}
	}
	t.Logf("%s: %d calls, %d completed, %d lost, %d unclean; %d caller retries %v; %d executions of %d keys, %d repeats (at-least-once), %d with another invocation id; %d keys with two ids",
		t.Name(), st.calls, st.completed, st.lost, st.unclean, st.callerRetries, st.retryCodes, total, len(execs), repeats, foreign, st.idMismatch)
	if st.completed != st.calls || st.lost != 0 || st.unclean != 0 {
		t.Errorf("completed %d of %d calls (%d lost, %d unclean)", st.completed, st.calls, st.lost, st.unclean)
	}
	if len(execs) != st.calls {
		t.Errorf("%d keys executed, want all %d", len(execs), st.calls)
	}
	if foreign != 0 || st.idMismatch != 0 {
		t.Errorf("%d executions ran under another invocation id, %d keys got two ids: a result was committed twice", foreign, st.idMismatch)
	}
}

func TestFaultRestateKilled(t *testing.T) {
	r := newFaultRig(t)
	prefix := uniq(t, "rk")
	st := r.load(t, prefix, 300, false, func() {
		r.restate.Kill()
		time.Sleep(time.Second)
		if err := r.restate.Restart(); err != nil {
			t.Errorf("restarting restate: %v", err)
		}
	})
	r.check(t, prefix, st, false)
	reattached := r.outboundReattached()
	t.Logf("%s: the outbound sidecar re-attached %d times", t.Name(), reattached)
	if st.callerRetries == 0 && reattached == 0 {
		t.Errorf("no call noticed the restart: the fault hit nothing")
	}
}

func TestFaultAppKilled(t *testing.T) {
	for _, send := range []bool{false, true} {
		t.Run(map[bool]string{false: "call", true: "send"}[send], func(t *testing.T) {
			r := newFaultRig(t)
			prefix := uniq(t, "ak")
			st := r.load(t, prefix, 300, send, func() {
				// Kill it while it executes: sends are accepted faster than they run.
				eventually(t, 30*time.Second, "executions under way", func() bool { return len(r.executions(t, prefix)) >= 50 })
				r.app.kill()
				time.Sleep(time.Second)
				r.app.restart()
			})
			r.check(t, prefix, st, send)
		})
	}
}

func TestFaultOutboundKilled(t *testing.T) {
	r := newFaultRig(t)
	prefix := uniq(t, "ok")
	st := r.load(t, prefix, 300, false, func() {
		r.outbound.kill()
		time.Sleep(500 * time.Millisecond)
		r.outbound.restart()
		waitReady(t, r.outHealth)
	})
	r.check(t, prefix, st, false)
	if st.callerRetries == 0 {
		t.Errorf("no caller saw the outbound sidecar die: the fault hit nothing")
	}
}

func TestFaultInboundKilled(t *testing.T) {
	r := newFaultRig(t)
	prefix := uniq(t, "ik")
	st := r.load(t, prefix, 300, false, func() {
		r.inbound.kill()
		time.Sleep(time.Second)
		r.inbound.restart()
		waitReady(t, r.inHealth)
	})
	r.check(t, prefix, st, false)
}

// outboundReattached counts the re-attaches the outbound sidecar logged.
func (r *faultRig) outboundReattached() int {
	b, _ := os.ReadFile(r.outbound.logPath())
	return strings.Count(string(b), "re-attaching")
}
