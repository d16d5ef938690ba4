package inbound

import (
	"context"
	"sync/atomic"

	restate "github.com/restatedev/sdk-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/tracing"
)

// attempt is the server span of one Restate attempt; nil when tracing is off, and then every
// method is a no-op.
type attempt struct {
	span trace.Span
	// app is the app's answer, once it answered: the span's code. The attempt's own error
	// says only retry or not, and a replayed attempt does not ask the app at all. Atomic, as
	// sdk-go may run a Run's function on a goroutine of its own.
	app atomic.Pointer[status.Status]
}

type attemptKey struct{}

// startAttempt starts the span under Restate's attempt span, whose traceparent sdk-go put in
// ctx; without one (Restate's tracing is off) under the caller's own trace context, which
// Restate keeps with the invocation's headers. Its attempt number is Restate's retry count
// plus one.
func (f forwarder) startAttempt(ctx restate.Context, path string) *attempt {
	if f.tracer == nil {
		return nil
	}
	parent := context.Context(ctx)
	if !trace.SpanContextFromContext(ctx).IsValid() {
		parent = tracing.Propagator.Extract(ctx, invocationHeaders{ctx.Request()})
	}
	attrs := []attribute.KeyValue{tracing.AttrInvocationID.String(ctx.Request().ID), tracing.AttrRestateService.String(f.s.restateName)}
	if c, ok := retryCount(ctx); ok {
		attrs = append(attrs, tracing.AttrInvocationAttempt.Int64(int64(c)+1))
	}
	_, span := tracing.Start(parent, f.tracer, trace.SpanKindServer, path, attrs...)
	return &attempt{span: span}
}

// context is ctx (the handler's or a Run's: its cancellation stays) with the attempt's span,
// and the attempt, for the app call's answer.
func (a *attempt) context(ctx context.Context) context.Context {
	if a == nil {
		return ctx
	}
	return context.WithValue(trace.ContextWithSpan(ctx, a.span), attemptKey{}, a)
}

func (a *attempt) end(err error) {
	if a == nil {
		return
	}
	if st := a.app.Load(); st != nil {
		err = st.Err()
	}
	tracing.End(a.span, trace.SpanKindServer, err)
}

// startAppCall starts the client span of the call to the app, whose trace context md then
// carries instead of the attempt's; end records the app's answer.
func (f forwarder) startAppCall(ctx context.Context, path string, md metadata.MD) (context.Context, func(error)) {
	if f.tracer == nil {
		return ctx, func(error) {}
	}
	ctx, span := tracing.Start(ctx, f.tracer, trace.SpanKindClient, path)
	tracing.Propagator.Inject(ctx, tracing.MetadataCarrier(md))
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	return ctx, func(err error) {
		if a != nil {
			a.app.Store(status.Convert(err))
		}
		tracing.End(span, trace.SpanKindClient, err)
	}
}

// invocationHeaders reads the trace context of the headers Restate stored with the invocation.
type invocationHeaders struct{ r *restate.Request }

func (h invocationHeaders) Get(k string) string { return h.r.Headers.Get(k) }
func (h invocationHeaders) Set(string, string)  {}
func (h invocationHeaders) Keys() []string      { return tracing.Propagator.Fields() }

var _ propagation.TextMapCarrier = invocationHeaders{}
