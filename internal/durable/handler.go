package durable

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/descriptors"
	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/internal/rawsock"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/tracing"
)

// Invoker runs Restate invocations and attaches to them; *restatehttp.Client is the real one.
type Invoker interface {
	Invoke(ctx context.Context, inv restatehttp.Invocation) (*restatehttp.Result, error)
	Attach(ctx context.Context, r restatehttp.Ref) (*restatehttp.Result, error)
	Lookup(ctx context.Context, r restatehttp.Ref) (string, error)
}

// Admin is what the durable path asks Restate's admin API: to cancel an invocation, and whose
// an invocation is; *restatehttp.Admin is the real one.
type Admin interface {
	Cancel(ctx context.Context, id string) error
	// InvocationTarget returns the target of invocation id, and false if Restate has none.
	InvocationTarget(ctx context.Context, id string) (restatehttp.Target, bool, error)
}

// Options configure a Handler.
type Options struct {
	Config *config.Outbound
	// Ingress runs durable calls. Required when Config has routes.
	Ingress Invoker
	// Admin cancels invocations whose caller went away (onCallerGone: cancel) and checks that
	// an invocation attached to by id is one of the called method (restate-attach: inv_...).
	// May be nil: those then fail, saying that they need outbound.admin.
	Admin Admin
	// Descriptors resolves request types; needed only by field keys and to refuse streaming
	// methods on durable routes before reading them. May be nil.
	Descriptors descriptors.Resolver
	// Self is the listener's actual address, so that a passthrough call to the sidecar itself
	// is refused with a useful message. Default Config.Listen.
	Self   string
	Logger *slog.Logger
	// Tracing makes a client span per durable call; nil makes none (tracing off).
	Tracing trace.TracerProvider
	// TraceKeys puts each call's object key or workflow id on its span (tracing.recordKeys).
	TraceKeys bool
	// Metrics records the calls, the relay's streams and the listener's refusals; nil
	// records nothing.
	Metrics *metrics.Registry
}

// Handler serves the outbound listener.
type Handler struct {
	cfg    *config.Outbound
	routes routes
	ingr   Invoker
	admin  Admin
	desc   descriptors.Resolver
	log    *slog.Logger
	self   string
	paths  sync.Map     // method+"|"+field path -> *descriptors.FieldPath
	tracer trace.Tracer // nil when tracing is off
	// traceKeys is Options.TraceKeys.
	traceKeys bool
	// relayed holds the span of each passthrough stream from its decision to its observation.
	relayed sync.Map // *proxy.Request -> *tracing.Relay
	metrics *metrics.Registry
	// routeMetrics records each route's calls, in the order of routes (nils without metrics).
	routeMetrics []*metrics.Route

	// onCall, when set (by tests), sees each durable call's context as Handle gets it.
	onCall func(context.Context)
}

// New returns a handler for o.
func New(o Options) (*Handler, error) {
	if o.Config == nil {
		return nil, errors.New("proxy: no outbound config")
	}
	if len(o.Config.Routes) > 0 && o.Ingress == nil {
		return nil, errors.New("proxy: routes need an ingress client")
	}
	h := &Handler{
		cfg:    o.Config,
		routes: routes(o.Config.Routes),
		ingr:   o.Ingress,
		admin:  o.Admin,
		desc:   o.Descriptors,
		log:    o.Logger,
		self:   o.Self,
		tracer: tracing.Tracer(o.Tracing),

		traceKeys:    o.TraceKeys,
		metrics:      o.Metrics,
		routeMetrics: o.Metrics.Routes(o.Config.Routes),
	}
	if h.self == "" {
		h.self = o.Config.Listen
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	return h, nil
}

// DialPlaintext opens a plaintext (h2c) client connection that moves raw bytes. It does not
// retry: a proxied call is the caller's to retry, and Restate retries durable ones.
func DialPlaintext(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+target, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialRaw),
		grpc.WithDisableRetry(),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawcodec.Codec))}, opts...)...)
}

// dialRaw connects with rawsock's connections, which spare an idle sidecar the runtime's
// monitor thread. Unlike grpc-go's own dialer it ignores HTTPS_PROXY and the like: the app,
// the upstreams and the reflection source are the sidecar's neighbours.
func dialRaw(ctx context.Context, addr string) (net.Conn, error) {
	var d rawsock.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// Handle serves a durable call, its messages as *[]byte: the local server's handler for every
// method it has no service of. The Director names the call's route in routeHeader; a call
// without one (not gRPC, or a method of the sidecar's own services it does not have) is
// answered as grpc-go answers an unknown service.
func (h *Handler) Handle(_ any, stream grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(stream)
	if !ok {
		return status.Error(codes.Internal, "proxy: no method on the stream")
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	v, _ := last(md, routeHeader)
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 || i >= len(h.routes) {
		svc, _ := splitMethod(method)
		return status.Errorf(codes.Unimplemented, "unknown service %s", svc)
	}
	if h.onCall != nil {
		h.onCall(stream.Context())
	}
	err = h.durable(stream, method, &h.routes[i], h.routeMetrics[i])
	logFailed(h.log, method, h.routes[i].Match, err)
	return err
}

// invocation builds the Restate invocation of one call.
func (h *Handler) invocation(ctx context.Context, method string, r *config.Route, md metadata.MD, ov overrides, req []byte, mdesc protoreflect.MethodDescriptor) (restatehttp.Invocation, error) {
	svc, handler := splitMethod(method)
	name := svc
	if r.Service != "" {
		name = r.Service
	}
	if err := config.CheckServiceName(name); err != nil {
		return restatehttp.Invocation{}, status.Errorf(codes.InvalidArgument, "%s: %v; map it to another name with the route's service:", method, err)
	}
	inv := restatehttp.Invocation{
		Target: restatehttp.Target{Service: name, Handler: handler},
		Send:   r.Mode == config.ModeSend,
		Header: ingressHeader(md, r),
		Body:   req,
	}
	if ov.mode != "" {
		inv.Send = ov.mode == config.ModeSend
	}
	switch {
	case ov.hasDelay && !inv.Send:
		return inv, status.Errorf(codes.InvalidArgument, "%s is only for sends: add metadata %s: send or use a send route", MDDelay, MDMode)
	case ov.hasDelay:
		inv.Delay = ov.delay
	case inv.Send:
		inv.Delay = r.Delay.Std()
	}
	if r.Target != config.KindService {
		inv.Target.Keyed = true
		key, ok := ov.key, ov.hasKey
		if !ok {
			var err error
			if key, ok, err = h.value(ctx, method, r.Key, md, req, mdesc); err != nil {
				return inv, err
			}
		}
		if !ok {
			return inv, missing("key", r.Key, r.Match)
		}
		inv.Target.Key = key
	} else if ov.hasKey {
		return inv, status.Errorf(codes.InvalidArgument, "%s: route %q targets a service, which has no key; drop %s", method, r.Match, MDKey)
	}
	if !(r.Target == config.KindWorkflow && handler == r.Run) {
		key, _, err := h.value(ctx, method, r.IdempotencyKey, md, req, mdesc)
		if err != nil {
			return inv, err
		}
		inv.IdempotencyKey = key
		if key == "" && r.AutoKey() && ov.attach == "" {
			inv.IdempotencyKey = autoKeyPrefix + rand.Text()
		}
	}
	return inv, nil
}

// autoKeyPrefix starts the idempotency keys the sidecar makes (route autoIdempotencyKey): a
// random one per call, never derived from the payload, or two equal calls would be one.
const autoKeyPrefix = "restate-grpc-"

// value reads a source of a call: a metadata header, or a field of the request message.
func (h *Handler) value(ctx context.Context, method string, src config.Source, md metadata.MD, req []byte, mdesc protoreflect.MethodDescriptor) (string, bool, error) {
	switch {
	case src.Metadata != "":
		v, ok := last(md, src.Metadata)
		return v, ok && v != "", nil
	case src.Field == "":
		return "", false, nil
	}
	fp, err := h.fieldPath(ctx, method, src.Field, mdesc)
	if err != nil {
		return "", false, err
	}
	v, ok, err := fp.Value(req)
	if err != nil {
		return "", false, status.Errorf(codes.InvalidArgument, "%s: reading field %q: %v", method, src.Field, err)
	}
	// An empty value counts as none: an empty key would name one object shared by every
	// caller that left it unset.
	return v, ok && v != "", nil
}

func (h *Handler) fieldPath(ctx context.Context, method, field string, mdesc protoreflect.MethodDescriptor) (*descriptors.FieldPath, error) {
	k := method + "|" + field
	if fp, ok := h.paths.Load(k); ok {
		return fp.(*descriptors.FieldPath), nil
	}
	if mdesc == nil {
		if h.desc == nil {
			return nil, status.Errorf(codes.FailedPrecondition, "%s: the route reads field %q, which needs descriptors: set outbound.descriptors", method, field)
		}
		var err error
		if mdesc, err = descriptors.Method(ctx, h.desc, method); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "%s: the route reads field %q but its type is unknown: %v", method, field, err)
		}
	}
	fp, err := descriptors.CompilePath(mdesc.Input(), field)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s: %v", method, err)
	}
	h.paths.Store(k, fp)
	return fp, nil
}

// logFailed logs a failed durable call, one line with its route, status and invocation (when
// Restate named one): a successful call logs nothing above debug, so failures stand out.
func logFailed(log *slog.Logger, method, route string, err error) {
	if err == nil {
		return
	}
	var ce *restatehttp.CallError
	id := ""
	if errors.As(err, &ce) {
		id = ce.InvocationID
	}
	st := status.Convert(err)
	log.Info("durable call failed", "method", method, "route", route, "invocation", id, "code", st.Code().String(), "message", st.Message())
}
