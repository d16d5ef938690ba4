package metrics

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/proxy"
)

// call is one call's (or client attempt's) record, carried in its context from TagRPC to
// HandleRPC: the context's one allocation per call, its label sets bound before.
type call struct {
	context.Context
	s       *Stream
	in, out atomic.Int64 // compressed message bytes received and sent; a stream's may race
}

type callKey struct{}

func (c *call) Value(k any) any {
	if k == (callKey{}) {
		return c
	}
	return c.Context.Value(k)
}

// handle records one of a call's events.
func handle(ctx context.Context, rs stats.RPCStats) {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		return
	}
	switch st := rs.(type) {
	case *stats.InPayload:
		c.in.Add(int64(st.CompressedLength))
	case *stats.OutPayload:
		c.out.Add(int64(st.CompressedLength))
	case *stats.End:
		// RequestBytes are recorded as received, ResponseBytes as sent: on either side.
		c.s.End(proxy.StreamEnd{Code: status.Code(st.Error), HasCode: true, RequestBytes: c.in.Load(), ResponseBytes: c.out.Load(), Duration: st.EndTime.Sub(st.BeginTime)})
	}
}

// callStats is a stats handler recording gRFC A66's per-call metrics of one side, labelled by
// method (up to maxMethods): a grpc.Server's grpc.server.call.*, in the series the relay's
// streams share, or a client connection's grpc.client.attempt.* (clientStats).
type callStats struct{ ms *methods }

func (h callStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	s := h.ms.get(info.FullMethodName)
	s.started.Inc()
	return &call{Context: ctx, s: s}
}

func (callStats) HandleRPC(ctx context.Context, rs stats.RPCStats)                  { handle(ctx, rs) }
func (callStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (callStats) HandleConn(context.Context, stats.ConnStats)                       {}

// ServerOption instruments a grpc.Server with gRFC A66's server metrics. Unlike grpc-go's
// own instrumentation, which labels every method it has no registered service of "other", it
// labels the methods of an unknown-service handler too (the durable calls), as the relay does.
func (r *Registry) ServerOption() grpc.ServerOption {
	if r == nil {
		return grpc.EmptyServerOption{}
	}
	return grpc.StatsHandler(callStats{&r.server})
}

// clientStats is a client connection's stats handler, for grpc.client.attempt.* per attempt,
// and its interceptors, for grpc.client.call.duration per call, labelled by method and the
// connection's target.
type clientStats struct{ callStats }

// callDone records a whole call of method, from start, ended with err.
func (h clientStats) callDone(method string, start time.Time, err error) {
	h.ms.get(method).endsOf(codeIndex(status.Code(err))).call.Observe(time.Since(start).Seconds())
}

func (h clientStats) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	h.callDone(method, start, err)
	return err
}

func (h clientStats) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	start := time.Now()
	return streamer(ctx, desc, cc, method, append(opts, grpc.OnFinish(func(err error) { h.callDone(method, start, err) }))...)
}

// DialOptions instrument a client connection to target (its grpc_target label, as the caller
// names it) with gRFC A66's client metrics.
func (r *Registry) DialOptions(target string) []grpc.DialOption {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	ms := r.clients[target]
	if ms == nil {
		ms = &methods{side: &clientSide, target: target}
		if r.clients == nil {
			r.clients = map[string]*methods{}
		}
		r.clients[target] = ms
	}
	r.mu.Unlock()
	h := clientStats{callStats{ms}}
	return []grpc.DialOption{grpc.WithStatsHandler(h), grpc.WithChainUnaryInterceptor(h.unary), grpc.WithChainStreamInterceptor(h.stream)}
}
