package soak

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestSoak is `make soak` for three minutes: a fixed rate of keyed and autoIdempotencyKey calls
// through both sidecars against a 3-node cluster, with a random fault (a node, the app, either
// sidecar) every 20s or so. No keyed call may be lost, and no call may run under two invocation
// ids. Calls without a key may be lost when the outbound sidecar dies with them in flight: the
// caller cannot retry them (a retry would be a second call), so they are counted, not failed.
func TestSoak(t *testing.T) {
	dir := t.TempDir()
	if err := Build(dir); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rig, err := Start(ctx, Options{Dir: dir, Bin: dir, AutoKey: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.Stop)
	seed := uint64(time.Now().UnixNano())
	var log strings.Builder
	res, err := rig.Soak(ctx, SoakOptions{Duration: 3 * time.Minute, Rate: 40, FaultEvery: 20 * time.Second, Seed: seed, Unkeyed: true, Log: &log})
	t.Logf("seed %d, faults:\n%s", seed, log.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", strings.ReplaceAll(res.Report.String(), "\n", "; "))
	t.Logf("sidecars over time:\n%s", res.UsageTable())
	if len(res.Faults) < 3 {
		t.Errorf("%d faults in three minutes, want at least 3", len(res.Faults))
	}
	if n := res.Lost(true); n != 0 {
		t.Errorf("lost %d keyed calls", n)
	}
	for _, p := range res.Problems() {
		t.Error(p)
	}
	if res.Completed[true] < 1000 {
		t.Errorf("only %d keyed calls completed in three minutes at 40 a second (half keyed): the rig fell far behind", res.Completed[true])
	}
}
