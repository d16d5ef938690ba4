package inbound

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	restate "github.com/restatedev/sdk-go"
	"github.com/restatedev/sdk-go/server"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/descriptors"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/tracing"
)

// Metadata the app receives besides the caller's own.
const (
	MDInvocationID = "restate-invocation-id"
	MDKey          = "restate-key"
)

// Options configure an Endpoint.
type Options struct {
	Config *config.Inbound
	// App is the connection to the app. Calls on it use the raw codec.
	App grpc.ClientConnInterface
	// Descriptors lists the methods of services configured without handlers (usually the app's
	// reflection). May be nil when every service lists its handlers.
	Descriptors descriptors.Resolver
	Logger      *slog.Logger
	// Tracing makes a server span per attempt and a client span per call to the app; nil
	// makes none (tracing off).
	Tracing trace.TracerProvider
}

// Endpoint is the Restate deployment endpoint, an http.Handler to serve over h2c.
type Endpoint struct {
	services []service
	version  string
	handler  http.Handler
	log      *slog.Logger
	// attempts reads each attempt's retry count for its span: only when tracing is on.
	attempts bool
}

type service struct {
	grpcName, restateName, kind string
	methods                     []method
	retryable                   []codes.Code
	attemptTimeout              time.Duration
	fastPath                    bool
}

type method struct{ name, kind string }

// New resolves the services' methods and builds the endpoint.
func New(ctx context.Context, o Options) (*Endpoint, error) {
	e := &Endpoint{log: o.Logger, attempts: o.Tracing != nil}
	if e.log == nil {
		e.log = slog.Default()
	}
	for _, sc := range o.Config.Services {
		s, err := resolve(ctx, sc, o.Descriptors, e.log)
		if err != nil {
			return nil, err
		}
		e.services = append(e.services, s)
	}
	e.version = version(e.services)
	srv := server.NewRestate().WithLogger(sdkHandler{e.log.Handler()}, true)
	if len(o.Config.IdentityKeys) > 0 {
		srv = srv.WithIdentityV1(o.Config.IdentityKeys...)
	}
	for _, s := range e.services {
		srv = srv.Bind(definition(s, forwarder{s: s, app: o.App, tracer: tracing.Tracer(o.Tracing), log: e.log}))
	}
	h, err := srv.Handler()
	if err != nil {
		return nil, fmt.Errorf("inbound endpoint: %w", err)
	}
	e.handler = h
	return e, nil
}

// resolve lists the methods of one configured service, from its handlers or the descriptors.
func resolve(ctx context.Context, sc config.InboundService, d descriptors.Resolver, log *slog.Logger) (service, error) {
	s := service{grpcName: sc.Name, restateName: sc.RestateName(), kind: sc.Kind, attemptTimeout: sc.AttemptTimeout.Std(), fastPath: sc.FastPath}
	for _, name := range sc.RetryableCodes {
		c, _ := config.CodeByName(name)
		s.retryable = append(s.retryable, codes.Code(c))
	}
	if len(sc.Handlers) > 0 {
		for m, k := range sc.Handlers {
			s.methods = append(s.methods, method{name: m, kind: handlerKind(sc.Kind, m, k)})
		}
	} else {
		if d == nil {
			return s, fmt.Errorf("inbound service %s lists no handlers and there are no descriptors: list its handlers or enable the app's server reflection", sc.Name)
		}
		sd, err := d.Service(ctx, sc.Name)
		if err != nil {
			return s, fmt.Errorf("inbound service %s lists no handlers and the app's reflection does not describe it: %w", sc.Name, err)
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				log.Warn("streaming method not exposed to Restate (invocations are unary)", "method", md.FullName())
				continue
			}
			s.methods = append(s.methods, method{name: string(md.Name()), kind: handlerKind(sc.Kind, string(md.Name()), "")})
		}
	}
	sort.Slice(s.methods, func(i, j int) bool { return s.methods[i].name < s.methods[j].name })
	if s.kind == config.KindWorkflow && !slices.ContainsFunc(s.methods, func(m method) bool { return m.kind == config.HandlerRun }) {
		return s, fmt.Errorf("inbound workflow %s has no run handler: name one in handlers (e.g. {Run: run})", sc.Name)
	}
	if len(s.methods) == 0 {
		return s, fmt.Errorf("inbound service %s has no unary methods to expose", sc.Name)
	}
	return s, nil
}

// handlerKind applies the defaults: objects' handlers are exclusive, and a workflow's method
// named Run is its run handler.
func handlerKind(kind, name, k string) string {
	switch {
	case k != "":
		return k
	case kind == config.KindObject:
		return config.HandlerExclusive
	case kind == config.KindWorkflow && name == "Run":
		return config.HandlerRun
	case kind == config.KindWorkflow:
		return config.HandlerShared
	}
	return ""
}

// version names the schema: a new one gets a new deployment URI, since Restate keeps the old
// schema of a URI it knows.
func version(services []service) string {
	h := sha256.New()
	for _, s := range services {
		fmt.Fprintf(h, "%s=%s:%s;", s.restateName, s.grpcName, s.kind)
		for _, m := range s.methods {
			fmt.Fprintf(h, "%s:%s,", m.name, m.kind)
		}
	}
	return "rg-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// Version is the schema version, the last segment of the registered URI.
func (e *Endpoint) Version() string { return e.version }

var versionPrefix = regexp.MustCompile(`^/rg-[0-9a-f]{12}(/|$)`)

// ServeHTTP serves Restate, under any version prefix: invocations pinned to an older
// deployment still reach the app. sdk-go routes on RequestURI, so that is rewritten too.
func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if loc := versionPrefix.FindStringIndex(r.URL.Path); loc != nil {
		p := "/" + r.URL.Path[loc[1]:]
		r.URL.Path, r.URL.RawPath = p, ""
		r.RequestURI = r.URL.RequestURI()
	}
	if e.attempts && r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/invoke/") {
		r = withRetryCount(r)
	}
	e.handler.ServeHTTP(w, r)
}

// NewHTTPServer returns the server for the endpoint: HTTP/1.1 and h2c, as Restate dials
// deployments with HTTP/2 prior knowledge.
func NewHTTPServer(h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: h, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
}

// Register registers the endpoint, reachable at uri, with the admin API, retrying until it
// succeeds or ctx ends. Registering the same schema again changes nothing.
func (e *Endpoint) Register(ctx context.Context, admin *restatehttp.Admin, uri string) (*restatehttp.Deployment, error) {
	full := strings.TrimSuffix(uri, "/") + "/" + e.version
	backoff := 100 * time.Millisecond
	for {
		d, err := admin.Register(ctx, full)
		if err == nil {
			e.log.Info("registered with restate", "deployment", d.ID, "uri", full, "created", d.Created, "services", len(d.Services))
			return d, nil
		}
		e.log.Warn("registration failed; retrying", "uri", full, "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("registering %s: %w (last error: %v)", full, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// definition builds the sdk-go definition of s, every handler forwarding to the app with f.
func definition(s service, f forwarder) restate.ServiceDefinition {
	codec := restate.WithCodec(Codec)
	switch s.kind {
	case config.KindObject:
		def := restate.NewObject(s.restateName)
		for _, m := range s.methods {
			path := "/" + s.grpcName + "/" + m.name
			if m.kind == config.HandlerShared {
				def = def.Handler(m.name, restate.NewObjectSharedHandler(func(ctx restate.ObjectSharedContext, in []byte) ([]byte, error) {
					return f.forward(ctx, path, restate.Key(ctx), in)
				}, codec))
			} else {
				def = def.Handler(m.name, restate.NewObjectHandler(func(ctx restate.ObjectContext, in []byte) ([]byte, error) {
					return f.forward(ctx, path, restate.Key(ctx), in)
				}, codec))
			}
		}
		return def
	case config.KindWorkflow:
		def := restate.NewWorkflow(s.restateName)
		for _, m := range s.methods {
			path := "/" + s.grpcName + "/" + m.name
			if m.kind == config.HandlerRun {
				def = def.Handler(m.name, restate.NewWorkflowHandler(func(ctx restate.WorkflowContext, in []byte) ([]byte, error) {
					return f.forward(ctx, path, restate.Key(ctx), in)
				}, codec))
			} else {
				def = def.Handler(m.name, restate.NewWorkflowSharedHandler(func(ctx restate.WorkflowSharedContext, in []byte) ([]byte, error) {
					return f.forward(ctx, path, restate.Key(ctx), in)
				}, codec))
			}
		}
		return def
	}
	def := restate.NewService(s.restateName)
	for _, m := range s.methods {
		path := "/" + s.grpcName + "/" + m.name
		def = def.Handler(m.name, restate.NewServiceHandler(func(ctx restate.Context, in []byte) ([]byte, error) {
			return f.forward(ctx, path, "", in)
		}, codec))
	}
	return def
}

type forwarder struct {
	s      service
	app    grpc.ClientConnInterface
	tracer trace.Tracer // nil when tracing is off
	log    *slog.Logger
}

// forward calls the app once. Each Restate attempt calls it again with the same invocation id,
// so the app sees at-least-once delivery and can deduplicate on restate-invocation-id.
func (f forwarder) forward(ctx restate.Context, path, key string, in []byte) (_ []byte, err error) {
	a := f.startAttempt(ctx, path)
	defer func() { a.end(err) }()
	if f.s.fastPath {
		return f.call(a.context(ctx), ctx.Request(), path, key, in)
	}
	// The app's answer is journaled as a Run step before it becomes the result. A replay
	// (after Restate or this sidecar crashed) then returns the journaled answer rather than
	// asking the app again, whose new answer could differ and break the replay. And the Run
	// is awaited, which is where Restate's cancel signal reaches the handler: a cancel ends the
	// invocation at once, the app call with it.
	return restate.RunAsync(ctx, func(rc restate.RunContext) ([]byte, error) {
		return f.call(a.context(rc), ctx.Request(), path, key, in)
	}, restate.WithCodec(Codec), restate.WithName("grpc "+path)).Result()
}

// call calls the app and classifies its answer: retryable, or terminal with the status.
func (f forwarder) call(ctx context.Context, req *restate.Request, path, key string, in []byte) ([]byte, error) {
	md := appMetadata(req)
	md.Set(MDInvocationID, req.ID)
	if f.s.kind != config.KindService {
		if printableASCII(key) {
			md.Set(MDKey, key)
		} else {
			// gRPC metadata values are printable ASCII; other keys travel as binary metadata.
			md.Set(MDKey+"-bin", key)
		}
	}
	ctx, end := f.startAppCall(ctx, path, md)
	cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), f.s.attemptTimeout)
	defer cancel()
	var out []byte
	err := f.app.Invoke(cctx, path, &in, &out, grpc.ForceCodecV2(rawcodec.Codec))
	end(err)
	if err == nil {
		return out, nil
	}
	st := status.Convert(err)
	if ctx.Err() != nil || slices.Contains(f.s.retryable, st.Code()) {
		// Retryable: Restate retries with its policy, the caller keeps waiting.
		return nil, fmt.Errorf("app answered %s: %s", st.Code(), st.Message())
	}
	f.logFailed(req.ID, path, st)
	return nil, restate.ToTerminalError(errors.New(st.Message()),
		restate.WithErrorCode(restate.Code(httpCode(st.Code()))),
		restate.WithMetadataMap(restatehttp.StatusMetadata(st)))
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// dropped are ingress headers that are not the caller's metadata.
var dropped = []string{"content-type", "content-length", "accept", "accept-encoding", "user-agent", "host",
	"connection", "te", "transfer-encoding", "upgrade", "keep-alive", "traceparent", "tracestate"}

// appMetadata is the caller's metadata as Restate stored it, plus the trace context of this
// attempt (Restate's attempt span when its tracing is on, else the caller's own). The app's
// connection applies the credentials policy (interceptors.AppMetadata) on top.
func appMetadata(r *restate.Request) metadata.MD {
	md := metadata.MD{}
	for k, v := range r.Headers.Iter() {
		k = strings.ToLower(k)
		if slices.Contains(dropped, k) || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") {
			continue
		}
		if strings.HasSuffix(k, "-bin") {
			b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
			if err != nil {
				continue
			}
			v = string(b)
		}
		md.Append(k, v)
	}
	for _, k := range []string{"traceparent", "tracestate"} {
		if vs := r.AttemptHeaders[http.CanonicalHeaderKey(k)]; len(vs) > 0 && vs[0] != "" {
			md.Set(k, vs[0])
		} else if v := r.Headers.Get(k); v != "" {
			md.Set(k, v)
		}
	}
	return md
}

// httpCode is the HTTP status closest to a gRPC code, the error code Restate records and a
// native Restate caller sees (the exact gRPC status travels in the metadata).
func httpCode(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Canceled:
		return 499
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
