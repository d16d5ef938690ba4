package tracing

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Attribute keys: OpenTelemetry's RPC conventions, Restate's own names where Restate's spans
// have them (so a query finds both), and the sidecar's.
const (
	AttrRPCSystem      = semconv.RPCSystemKey
	AttrRPCService     = semconv.RPCServiceKey
	AttrRPCMethod      = semconv.RPCMethodKey
	AttrGRPCStatusCode = semconv.RPCGRPCStatusCodeKey

	AttrInvocationID     = attribute.Key("restate.invocation.id")
	AttrInvocationTarget = attribute.Key("restate.invocation.target")
	AttrInvocationKey    = attribute.Key("restate.invocation.key")
	// AttrInvocationAttempt is the attempt an inbound server span serves, 1 for the first:
	// Restate's retry count since the invocation's last journaled step, plus one. The sidecar's
	// one step is the app's answer, so this counts the attempts to get it. Restate does not
	// store the count: a restart of Restate starts it again.
	AttrInvocationAttempt = attribute.Key("restate.invocation.attempt")
	AttrRestateService    = attribute.Key("restate.service")
	AttrRestateHandler    = attribute.Key("restate.handler")

	AttrRoute          = attribute.Key("restate_grpc.route")
	AttrMode           = attribute.Key("restate_grpc.mode")
	AttrTargetKind     = attribute.Key("restate_grpc.target.kind")
	AttrIdempotencyKey = attribute.Key("restate_grpc.idempotency_key.present")
)

// Propagator is W3C trace context, what Restate's ingress and sdk-go speak.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// ScopeName names the sidecar's tracer.
const ScopeName = "github.com/restate-grpc/restate-grpc"

// Tracer is the sidecar's tracer from tp, nil when tp is (tracing off). Callers get it once:
// TracerProvider.Tracer takes a lock and a map lookup, too much for every span.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	switch tp := tp.(type) {
	case nil:
		return nil
	case *tracerProvider:
		return &tracer{tp.Tracer(ScopeName), tp.s, tp.q}
	}
	return tp.Tracer(ScopeName)
}

// Start starts a span of the gRPC call method (/pkg.Svc/Method) named as the RPC conventions
// name it, pkg.Svc/Method, with RPCAttributes and attrs. A span not sampled gets no
// attributes: most spans are not (parent-based ratio sampling), and building their attributes
// was most of what tracing cost a passthrough call.
func Start(ctx context.Context, tr trace.Tracer, kind trace.SpanKind, method string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx, span := tr.Start(ctx, spanName(method), trace.WithSpanKind(kind))
	if span.IsRecording() {
		span.SetAttributes(append(RPCAttributes(make([]attribute.KeyValue, 0, 3+len(attrs)), method), attrs...)...)
	}
	return ctx, span
}

func spanName(method string) string { return strings.TrimPrefix(method, "/") }

// RPCAttributes appends the RPC conventions' attributes of the gRPC call method to dst:
// rpc.system, rpc.service, rpc.method.
func RPCAttributes(dst []attribute.KeyValue, method string) []attribute.KeyValue {
	svc, m, _ := strings.Cut(spanName(method), "/")
	return append(dst, AttrRPCSystem.String("grpc"), AttrRPCService.String(svc), AttrRPCMethod.String(m))
}

// End records the call's gRPC code and ends span, as EndCode.
func End(span trace.Span, kind trace.SpanKind, err error) {
	st := status.Convert(err)
	EndCode(span, kind, st.Code(), st.Message())
}

// EndCode ends span with code, as setCode records it.
func EndCode(span trace.Span, kind trace.SpanKind, code codes.Code, msg string) {
	setCode(span, kind, code, msg)
	span.End()
}

// setCode records code with attrs, in one call (the SDK copies attributes on each), and marks
// the span an error as the RPC conventions have it: any code but OK on a client span; on a
// server span, only the codes that are the server's fault. attrs with room for one more take
// the code without a copy.
func setCode(span trace.Span, kind trace.SpanKind, code codes.Code, msg string, attrs ...attribute.KeyValue) {
	span.SetAttributes(append(attrs, AttrGRPCStatusCode.Int(int(code)))...)
	if code != codes.OK && (kind != trace.SpanKindServer || serverFault(code)) {
		desc := code.String()
		if msg != "" {
			desc += ": " + msg
		}
		span.SetStatus(otelcodes.Error, desc)
	}
}

func serverFault(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// InjectHeader puts ctx's trace context into h instead of any it had: the caller's metadata
// sits in h under lower-case names, which net/http would send besides the canonical ones.
func InjectHeader(ctx context.Context, h http.Header) {
	for _, k := range Propagator.Fields() {
		delete(h, k)
		delete(h, http.CanonicalHeaderKey(k))
	}
	Propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// MetadataCarrier carries trace context in gRPC metadata.
type MetadataCarrier metadata.MD

// Get returns the last value of key, as a repeated header's latest wins.
func (c MetadataCarrier) Get(key string) string {
	vs := metadata.MD(c).Get(key)
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// Set replaces key's values.
func (c MetadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

// Keys lists the keys.
func (c MetadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
