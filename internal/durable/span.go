package durable

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/tracing"
)

// callSpan is the client span of one durable call; nil when tracing is off, and then every
// method is a no-op, so the call path makes no span and no trace-context copy.
type callSpan struct{ trace.Span }

// startSpan starts the call's span, a child of the trace context the caller sent.
func (h *Handler) startSpan(ctx context.Context, method string, r *config.Route) (context.Context, *callSpan) {
	if h.tp == nil {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	parent := tracing.Propagator.Extract(ctx, tracing.MetadataCarrier(md))
	// The returned context still holds the caller's metadata: it derives from ctx.
	sctx, span := tracing.Start(parent, h.tp, trace.SpanKindClient, method,
		tracing.AttrRoute.String(r.Match), tracing.AttrTargetKind.String(r.Target))
	return sctx, &callSpan{span}
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
	s.SetAttributes(tracing.AttrMode.String(mode), tracing.AttrRestateService.String(inv.Target.Service),
		tracing.AttrRestateHandler.String(inv.Target.Handler), tracing.AttrInvocationTarget.String(inv.Target.String()),
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
