//go:build !race

// The race detector's sync.Pool drops items at random, so allocation counts under it vary from
// run to run: scripts/test.sh runs this file's tests without it.

package metrics

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// TestInstrumentationAllocs: recording allocates once a call on each side (the call's record in
// its context), where grpc-go's instrumentation allocates some thirty times. Against a stats
// handler that does nothing: with any handler, grpc-go makes its events (stats.Begin,
// InPayload, ...).
func TestInstrumentationAllocs(t *testing.T) {
	_, so, do := grpcInstrumentation(t)
	grpcAllocs := healthCall(t, so, do)
	r := newRegistry(t)
	ours := healthCall(t, []grpc.ServerOption{r.ServerOption()}, r.DialOptions("target"))
	noop := healthCall(t, []grpc.ServerOption{grpc.StatsHandler(noopStats{})}, []grpc.DialOption{grpc.WithStatsHandler(noopStats{})})
	if got, want := ours-noop, 2.0; got > want {
		t.Errorf("the sidecar's instrumentation allocates %v times a call (grpc-go's %v), want at most %v", got, grpcAllocs-noop, want)
	}
	t.Logf("allocations per call, both sides: a handler doing nothing %v, the sidecar's %v, grpc-go's %v", noop, ours, grpcAllocs)
}

// noopStats is a stats handler that records nothing.
type noopStats struct{}

func (noopStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (noopStats) HandleRPC(context.Context, stats.RPCStats)                         {}
func (noopStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (noopStats) HandleConn(context.Context, stats.ConnStats)                       {}
