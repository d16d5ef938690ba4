package durable

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/metadata"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/proxy"
	"github.com/restate-grpc/restate-grpc/tracing"
)

// callSpan is the client span of one durable call; nil when tracing is off, and then every
// method is a no-op, so the call path makes no span and no trace-context copy.
type callSpan struct {
	trace.Span
	keys bool // record the key (tracing.recordKeys)
}

// startSpan starts the call's span, a child of the trace context the caller sent.
func (h *Handler) startSpan(ctx context.Context, method string, r *config.Route) (context.Context, *callSpan) {
	if h.tracer == nil {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	parent := tracing.Propagator.Extract(ctx, tracing.MetadataCarrier(md))
	// The returned context still holds the caller's metadata: it derives from ctx.
	sctx, span := tracing.Start(parent, h.tracer, trace.SpanKindClient, method,
		tracing.AttrRoute.String(r.Match), tracing.AttrTargetKind.String(r.Target))
	return sctx, &callSpan{span, h.traceKeys}
}

// invocation records what the call became and makes the span the parent of Restate's
// ingress span: its traceparent replaces the caller's among the forwarded headers.
func (s *callSpan) invocation(ctx context.Context, inv *restatehttp.Invocation) {
	if s == nil {
		return
	}
	mode := config.ModeCall
	if inv.Send {
		mode = config.ModeSend
	}
	// Without recordKeys the target is named without its key: Service/Handler.
	target := inv.Target.Service + "/" + inv.Target.Handler
	if s.keys && inv.Target.Keyed {
		target = inv.Target.String()
		s.SetAttributes(tracing.AttrInvocationKey.String(inv.Target.Key))
	}
	s.SetAttributes(tracing.AttrMode.String(mode), tracing.AttrRestateService.String(inv.Target.Service),
		tracing.AttrRestateHandler.String(inv.Target.Handler), tracing.AttrInvocationTarget.String(target),
		tracing.AttrIdempotencyKey.Bool(inv.IdempotencyKey != ""))
	tracing.InjectHeader(ctx, inv.Header)
}

func (s *callSpan) result(res *restatehttp.Result) {
	if s == nil || res.InvocationID == "" {
		return
	}
	s.SetAttributes(tracing.AttrInvocationID.String(res.InvocationID))
}

func (s *callSpan) end(err error) {
	if s == nil {
		return
	}
	tracing.End(s.Span, trace.SpanKindClient, err)
}

// startRelaySpan starts the client span of a passthrough stream to addr, a child of the
// caller's trace context, and returns the header fields that carry the span's context to the
// upstream in place of the caller's; nil when tracing is off or the span is not sampled.
// observe ends the span.
func (h *Handler) startRelaySpan(r *proxy.Request, addr string) []hpack.HeaderField {
	if h.tracer == nil {
		return nil
	}
	parent := tracing.Propagator.Extract(context.Background(), relayHeaders{r})
	span := tracing.StartRelay(parent, h.tracer, r.Method, addr)
	if span == nil {
		// Not sampled: the stream goes on with the trace context the caller sent, if any, as
		// without a sidecar; nothing is recorded, so nothing needs our span's context. Most
		// streams are not sampled, and rewriting their headers cost more than the span.
		return nil
	}
	h.relayed.Store(r, span)
	fields := make(headerFields, 0, 2) // traceparent, and tracestate when there is one
	tracing.Propagator.Inject(trace.ContextWithSpanContext(context.Background(), span.SpanContext()), &fields)
	return fields
}

// headerFields carries a span's trace context into a relayed stream's header fields. They are
// never indexed: a traceparent is new with every stream, so indexing it would only churn the
// HPACK tables of both ends.
type headerFields []hpack.HeaderField

func (h *headerFields) Set(k, v string) {
	*h = append(*h, hpack.HeaderField{Name: k, Value: v, Sensitive: true})
}
func (*headerFields) Get(string) string { return "" }
func (*headerFields) Keys() []string    { return nil }

// observe is the relay's stream observer: it records each passthrough stream's metrics and
// ends the span startRelaySpan started with how the stream ended. Nil when tracing and
// metrics are off, so the relay observes nothing. The local server's streams (durable calls,
// the sidecar's own services) are its own to record.
func (h *Handler) observe() func(*proxy.Request, proxy.Decision) func(proxy.StreamEnd) {
	if h.tracer == nil && h.metrics == nil {
		return nil
	}
	return func(r *proxy.Request, d proxy.Decision) func(proxy.StreamEnd) {
		var rec *metrics.Stream
		if !d.Local {
			rec = h.metrics.Stream(r.Method)
		}
		if d.Header == nil {
			// No span: startRelaySpan gives the upstream a trace context only for the span
			// it started. Nothing to look up or allocate per stream.
			return rec.EndFunc()
		}
		v, ok := h.relayed.LoadAndDelete(r)
		if !ok {
			return rec.EndFunc()
		}
		span := v.(*tracing.Relay)
		return func(e proxy.StreamEnd) {
			rec.End(e)
			if !e.HasCode {
				// No gRPC status: the stream was reset, by the caller, the upstream or the relay.
				span.Reset("stream reset: " + e.ResetCode.String())
				return
			}
			span.End(e.Code)
		}
	}
}

// relayHeaders reads a relayed request's trace context.
type relayHeaders struct{ r *proxy.Request }

func (h relayHeaders) Get(k string) string {
	v, _ := h.r.Get(k)
	return v
}
func (relayHeaders) Set(string, string) {}
func (relayHeaders) Keys() []string     { return tracing.Propagator.Fields() }
