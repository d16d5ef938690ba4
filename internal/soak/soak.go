package soak

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// SoakOptions configure a soak run.
type SoakOptions struct {
	// Duration is how long calls are made; faults stop a quiet period before its end, so the
	// run ends with every part up.
	Duration time.Duration
	// Rate is the calls started a second; default 40.
	Rate float64
	// FaultEvery is the mean time between faults; default 20s.
	FaultEvery time.Duration
	// Sample is the time between two samples of the sidecars' memory and goroutines; default 10s.
	Sample time.Duration
	// Seed makes the faults' order and timing repeatable.
	Seed uint64
	// Unkeyed adds calls without a key (every other call): set it when the rig's route has
	// autoIdempotencyKey, else such calls may fail or run twice where a keyed one would not.
	Unkeyed bool
	// Log gets a line per fault as it happens.
	Log io.Writer
}

// SoakResult is what a soak run saw.
type SoakResult struct {
	*Report
	Faults []string
	Usage  []Usage
}

// Soak runs a fixed rate of calls (keyed, and unkeyed when asked) through the rig while it
// kills and restarts, at random, one part at a time: a Restate node, the app, either sidecar.
// The caller owns the rig; Soak leaves every part running.
func (r *Rig) Soak(ctx context.Context, o SoakOptions) (*SoakResult, error) {
	o.Rate = cmp.Or(o.Rate, 40)
	o.FaultEvery = cmp.Or(o.FaultEvery, 20*time.Second)
	o.Sample = cmp.Or(o.Sample, 10*time.Second)
	if o.Log == nil {
		o.Log = io.Discard
	}
	res := &SoakResult{}
	start := time.Now()
	prefix := fmt.Sprintf("soak-%d", start.UnixNano())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	var mu sync.Mutex
	res.Usage = append(res.Usage, r.Usage(0)...)
	// The sampler and the fault injector end with the load (cancel) or ctx.
	wg.Go(func() {
		t := time.NewTicker(o.Sample)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				u := r.Usage(time.Since(start))
				mu.Lock()
				res.Usage = append(res.Usage, u...)
				mu.Unlock()
			}
		}
	})
	var faultErr error
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(o.Seed, 13))
		quiet := min(30*time.Second, o.Duration/4)
		for {
			wait := time.Duration(float64(o.FaultEvery) * (0.5 + rng.Float64()))
			if time.Since(start)+wait > o.Duration-quiet {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			line, err := r.fault(rng, time.Since(start))
			mu.Lock()
			res.Faults = append(res.Faults, line)
			mu.Unlock()
			fmt.Fprintln(o.Log, line)
			if err != nil {
				faultErr = err
				return
			}
		}
	})
	stats := r.Run(ctx, Load{Prefix: prefix, Rate: o.Rate, Duration: o.Duration, Keyed: true, Unkeyed: o.Unkeyed, Work: 20 * time.Millisecond})
	cancel()
	wg.Wait()
	// The last sample, unless the sampler just took one.
	if at := time.Since(start); len(res.Usage) == 0 || at-res.Usage[len(res.Usage)-1].At > time.Second {
		res.Usage = append(res.Usage, r.Usage(at)...)
	}
	if faultErr != nil {
		return res, faultErr
	}
	rep, err := r.Report(stats, prefix)
	res.Report = rep
	return res, err
}

// fault kills one part at random, waits 1-4s and starts it again, and says what it did.
func (r *Rig) fault(rng *rand.Rand, at time.Duration) (string, error) {
	down := time.Second + time.Duration(rng.Int64N(int64(3*time.Second)))
	n := len(r.Cluster.Nodes)
	what := rng.IntN(n + 3)
	var name string
	var kill func()
	var restart func() error
	switch {
	case what < n:
		node := r.Cluster.Nodes[what]
		name, kill, restart = "restate node "+node.Name, node.Kill, node.Restart
	case what == n:
		name, kill, restart = "the app", r.App.Kill, r.App.Start
	case what == n+1:
		name, kill, restart = "the inbound sidecar", r.Inbound.Kill, r.Inbound.Restart
	default:
		name, kill, restart = "the outbound sidecar", r.Outbound.Kill, r.Outbound.Restart
	}
	kill()
	time.Sleep(down)
	t0 := time.Now()
	err := restart()
	line := fmt.Sprintf("%7.1fs  killed %s, restarted it %s later (back in %s)", at.Seconds(), name, down.Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond))
	if err != nil {
		return line + ": " + err.Error(), fmt.Errorf("restarting %s: %w", name, err)
	}
	return line, nil
}

// UsageTable prints the samples, a row per time, a column pair per sidecar.
func (res *SoakResult) UsageTable() string {
	var b strings.Builder
	src := "?"
	for _, u := range res.Usage {
		src = u.Source
	}
	fmt.Fprintf(&b, "%8s  %-26s %-26s   (goroutines: %s)\n", "t", "outbound RSS / goroutines", "inbound RSS / goroutines", src)
	rows := map[time.Duration]map[string]Usage{}
	var order []time.Duration
	for _, u := range res.Usage {
		if rows[u.At] == nil {
			rows[u.At] = map[string]Usage{}
			order = append(order, u.At)
		}
		rows[u.At][u.Sidecar] = u
	}
	cell := func(u Usage, ok bool) string {
		if !ok {
			return "down"
		}
		return fmt.Sprintf("%.1f MiB / %d", float64(u.RSS)/(1<<20), u.Goroutines)
	}
	for _, at := range order {
		o, okO := rows[at]["outbound"]
		i, okI := rows[at]["inbound"]
		fmt.Fprintf(&b, "%7.0fs  %-26s %-26s\n", at.Seconds(), cell(o, okO), cell(i, okI))
	}
	return b.String()
}
