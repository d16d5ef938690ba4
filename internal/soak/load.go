package soak

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// Load is what the callers do.
type Load struct {
	// Prefix names this load's calls (its calls are Prefix-0, Prefix-1, ...): loads on one rig
	// need distinct prefixes.
	Prefix string
	// Callers is the number of concurrent callers; default 16.
	Callers int
	// Rate is the calls started a second, over all callers; 0 has every caller call again as
	// soon as it is answered. When every caller is busy the rate falls behind.
	Rate float64
	// Duration is how long new calls are started; Run then waits for those under way.
	Duration time.Duration
	// Keyed and Unkeyed choose the calls: with both, every other call has an idempotency key.
	Keyed, Unkeyed bool
	// Attempt is each attempt's deadline; default 20s.
	Attempt time.Duration
	// Budget is how long a keyed call is retried with its key after UNAVAILABLE or
	// DEADLINE_EXCEEDED, as a gRPC client with a retry policy would; default 2m. A call without
	// a key is not retried: a second attempt would be a second call.
	Budget time.Duration
	// Work is the app's time per execution.
	Work time.Duration
}

// Stats are the callers' figures of one Run.
type Stats struct {
	Made, Completed map[bool]int // by keyed
	// Errors are the callers' errors by keyed and code (a keyed call's retried attempts each count).
	Errors map[bool]map[codes.Code]int
	// SlowestError is the longest an attempt took to fail: with a deadline, at most about it.
	SlowestError time.Duration
	// SlowestCall is the longest a completed call took, retries included.
	SlowestCall time.Duration
	// Stall is the longest time no call completed while calls were being made.
	Stall time.Duration
	// ids are the invocation ids the callers were answered with, per call.
	ids  map[string][]string
	done []time.Time // completion times
	from time.Time
	keys map[string]bool // call -> keyed
}

// Lost is the calls made that never completed, by keyed.
func (s *Stats) Lost(keyed bool) int { return s.Made[keyed] - s.Completed[keyed] }

// Run makes the load's calls through the rig and waits until every call started has completed
// or given up. It returns early, with what it has, when ctx ends.
func (r *Rig) Run(ctx context.Context, l Load) *Stats {
	l.Callers = cmp.Or(l.Callers, 16)
	l.Attempt = cmp.Or(l.Attempt, 20*time.Second)
	l.Budget = cmp.Or(l.Budget, 2*time.Minute)
	s := &Stats{Made: map[bool]int{}, Completed: map[bool]int{}, Errors: map[bool]map[codes.Code]int{false: {}, true: {}},
		ids: map[string][]string{}, keys: map[string]bool{}, from: time.Now()}
	var mu sync.Mutex
	work := make(chan int)
	// The generator is work's owner: it closes work when the duration is over.
	go func() {
		defer close(work)
		end := time.After(l.Duration)
		var tick <-chan time.Time
		if l.Rate > 0 {
			t := time.NewTicker(time.Duration(float64(time.Second) / l.Rate))
			defer t.Stop()
			tick = t.C
		}
		for i := 0; ; i++ {
			if tick != nil {
				select {
				case <-tick:
				case <-end:
					return
				case <-ctx.Done():
					return
				}
			}
			select {
			case work <- i:
			case <-end:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range l.Callers {
		wg.Go(func() {
			for i := range work {
				keyed := l.Keyed && (!l.Unkeyed || i%2 == 0)
				name := fmt.Sprintf("%s-%d", l.Prefix, i)
				mu.Lock()
				s.Made[keyed]++
				s.keys[name] = keyed
				mu.Unlock()
				r.call(ctx, l, s, &mu, name, keyed)
			}
		})
	}
	wg.Wait()
	s.done = append(s.done, time.Now())
	slices.SortFunc(s.done, func(a, b time.Time) int { return a.Compare(b) })
	last := s.from
	for _, t := range s.done {
		s.Stall = max(s.Stall, t.Sub(last))
		last = t
	}
	return s
}

// call makes one call, and for a keyed one retries it with its key within the budget.
func (r *Rig) call(ctx context.Context, l Load, s *Stats, mu *sync.Mutex, name string, keyed bool) {
	var md []string
	if keyed {
		md = []string{"idempotency-key", name}
	}
	start := time.Now()
	for {
		actx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, md...), l.Attempt)
		t0 := time.Now()
		var hdr metadata.MD
		resp := &testpb.Resp{}
		err := r.Conn.Invoke(actx, echoCall, &testpb.Req{Text: name, SleepMs: int32(l.Work / time.Millisecond)}, resp, grpc.Header(&hdr))
		cancel()
		code := status.Code(err)
		mu.Lock()
		if err == nil {
			s.Completed[keyed]++
			s.done = append(s.done, time.Now())
			s.SlowestCall = max(s.SlowestCall, time.Since(start))
			id := resp.GetInvocationId()
			if v := hdr.Get("restate-invocation-id"); len(v) > 0 {
				id = v[0]
			}
			s.ids[name] = append(s.ids[name], id)
		} else if ctx.Err() == nil {
			s.Errors[keyed][code]++
			s.SlowestError = max(s.SlowestError, time.Since(t0))
		}
		mu.Unlock()
		retry := keyed && (code == codes.Unavailable || code == codes.DeadlineExceeded)
		if err == nil || !retry || ctx.Err() != nil || time.Since(start) > l.Budget {
			return
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

// Report is a Run's figures with the app's: what the callers saw and what the app executed.
type Report struct {
	*Stats
	// Executions counts the calls by how often the app executed them (0, 1, 2, ...).
	Executions map[int]int
	// TwoIDs is the calls the app executed, or the callers were answered, under more than one
	// invocation id: a call that ran as two invocations.
	TwoIDs []string
	// Unexecuted is the completed calls the app has no execution of.
	Unexecuted []string
}

// Report reads the app's journal for the calls of s.
func (r *Rig) Report(s *Stats, prefix string) (*Report, error) {
	execs, err := r.executions(prefix)
	if err != nil {
		return nil, err
	}
	rep := &Report{Stats: s, Executions: map[int]int{}}
	for _, name := range slices.Sorted(maps.Keys(s.keys)) {
		rep.Executions[len(execs[name])]++
		ids := map[string]bool{}
		for _, id := range append(execs[name], s.ids[name]...) {
			ids[id] = true
		}
		if len(ids) > 1 {
			rep.TwoIDs = append(rep.TwoIDs, name)
		}
		if len(s.ids[name]) > 0 && len(execs[name]) == 0 {
			rep.Unexecuted = append(rep.Unexecuted, name)
		}
	}
	return rep, nil
}

// executions reads the app's journal for the calls of prefix.
func (r *Rig) executions(prefix string) (map[string][]string, error) {
	return ReadJournal(r.journal, prefix)
}

// ReadJournal reads a testapp -journal file: for every request text starting with prefix+"-",
// the invocation ids it was executed with, one per execution.
func ReadJournal(path, prefix string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && strings.HasPrefix(fields[2], prefix+"-") {
			out[fields[2]] = append(out[fields[2]], fields[1])
		}
	}
	return out, sc.Err()
}

func (rep *Report) String() string {
	var b strings.Builder
	kind := map[bool]string{true: "keyed", false: "unkeyed"}
	for _, keyed := range []bool{true, false} {
		if rep.Made[keyed] == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s: %d made, %d completed, %d lost; caller errors %s\n", kind[keyed],
			rep.Made[keyed], rep.Completed[keyed], rep.Lost(keyed), codeCounts(rep.Errors[keyed]))
	}
	fmt.Fprintf(&b, "executions at the app per call:")
	for _, n := range slices.Sorted(maps.Keys(rep.Executions)) {
		fmt.Fprintf(&b, " %dx %d", n, rep.Executions[n])
	}
	fmt.Fprintf(&b, "\ncalls under more than one invocation id: %d %s\n", len(rep.TwoIDs), firstFew(rep.TwoIDs))
	fmt.Fprintf(&b, "completed without an execution at the app: %d %s\n", len(rep.Unexecuted), firstFew(rep.Unexecuted))
	fmt.Fprintf(&b, "longest stall (no call completed): %s; slowest call: %s; slowest error: %s",
		rep.Stall.Round(time.Millisecond), rep.SlowestCall.Round(time.Millisecond), rep.SlowestError.Round(time.Millisecond))
	return b.String()
}

// Problems are what must not happen in any run: calls under two invocation ids, and answers
// without an execution.
func (rep *Report) Problems() []string {
	var p []string
	if len(rep.TwoIDs) > 0 {
		p = append(p, fmt.Sprintf("%d calls ran under more than one invocation id (%s)", len(rep.TwoIDs), firstFew(rep.TwoIDs)))
	}
	if len(rep.Unexecuted) > 0 {
		p = append(p, fmt.Sprintf("%d calls were answered without an execution at the app (%s)", len(rep.Unexecuted), firstFew(rep.Unexecuted)))
	}
	return p
}

func codeCounts(m map[codes.Code]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", c, m[c]))
	}
	return strings.Join(parts, ", ")
}

func firstFew(names []string) string {
	if len(names) > 5 {
		return fmt.Sprint(names[:5], "...")
	}
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprint(names)
}
