// Command soak runs a fixed rate of durable calls through both sidecars against a 3-node
// Restate cluster on this machine, every part a real process, while it kills and restarts one
// part at a time at random (a Restate node, the callee app, either sidecar), and prints what
// the callers and the app saw: calls made, completed and lost, the callers' errors by code,
// executions per call, calls under more than one invocation id, the longest stall, and each
// sidecar's RSS and goroutines over time. It exits 1 when a keyed call was lost or any call ran
// under two invocation ids. `make soak` runs it; e2e's TestSoak runs the same for three minutes.
//
// Usage: go run ./cmd/soak [-duration 10m] [-rate 40] [-fault-every 20s] [-seed N] [-auto-key=false]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/soak"
)

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long calls are made (faults stop a quiet period before the end)")
	rate := flag.Float64("rate", 40, "calls started a second, keyed and unkeyed alternating")
	faultEvery := flag.Duration("fault-every", 20*time.Second, "mean time between two faults")
	sample := flag.Duration("sample", 10*time.Second, "time between two samples of the sidecars' RSS and goroutines")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the faults' order and timing")
	nodes := flag.Int("nodes", 3, "Restate nodes")
	autoKey := flag.Bool("auto-key", true, "the route's autoIdempotencyKey: calls without a key get one of the sidecar's; without it only keyed calls are made")
	keep := flag.Bool("keep", false, "keep the work directory (logs, journal) and print its path")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage of soak: a fault soak of both sidecars against a Restate cluster.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, *duration, *rate, *faultEvery, *sample, *seed, *nodes, *autoKey, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(ctx context.Context, duration time.Duration, rate float64, faultEvery, sample time.Duration, seed uint64, nodes int, autoKey, keep bool) (bool, error) {
	dir, err := os.MkdirTemp("", "rg-soak-")
	if err != nil {
		return false, err
	}
	if keep {
		fmt.Println("work directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := soak.Build(dir); err != nil {
		return false, err
	}
	rig, err := soak.Start(ctx, soak.Options{Dir: dir, Bin: dir, Nodes: nodes, AutoKey: autoKey})
	if err != nil {
		return false, err
	}
	defer rig.Stop()
	fmt.Printf("soak: %s at %.0f calls/s through both sidecars, %d Restate nodes, a fault every ~%s (seed %d)\n", duration, rate, nodes, faultEvery, seed)
	res, err := rig.Soak(ctx, soak.SoakOptions{Duration: duration, Rate: rate, FaultEvery: faultEvery, Sample: sample, Seed: seed, Unkeyed: autoKey, Log: os.Stdout})
	if err != nil {
		return false, err
	}
	fmt.Printf("\n%s\n\n%s", res.Report, res.UsageTable())
	problems := res.Problems()
	if n := res.Lost(true); n > 0 {
		problems = append(problems, fmt.Sprintf("%d keyed calls lost", n))
	}
	for _, p := range problems {
		fmt.Println("PROBLEM:", p)
	}
	return len(problems) == 0, nil
}
