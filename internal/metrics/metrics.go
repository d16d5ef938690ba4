package metrics

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"golang.org/x/net/http2"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"

	"github.com/restate-grpc/restate-grpc/tracing"
)

// ScopeName names the meter of the sidecar's own metrics.
const ScopeName = "github.com/restate-grpc/restate-grpc"

// Label keys. The sidecar's own metrics share the route, mode and target kind keys with its
// spans, and the code key with grpc-go's metrics (gRFC A66).
const (
	LabelRoute      = tracing.AttrRoute
	LabelMode       = tracing.AttrMode
	LabelTargetKind = tracing.AttrTargetKind
	LabelStatus     = attribute.Key("grpc.status")
	LabelMethod     = attribute.Key("grpc.method")
	LabelPeer       = attribute.Key("peer")
	LabelReason     = attribute.Key("reason")
	LabelCheck      = attribute.Key("check")
)

// Values of LabelPeer.
const (
	PeerIngress    = "ingress"    // the Restate ingress (connection errors)
	PeerApp        = "app"        // the app behind the inbound side (connection errors)
	PeerDownstream = "downstream" // the app's connection to the relay (peer closes)
	PeerUpstream   = "upstream"   // the relay's connection to an upstream (peer closes)
)

// Registry holds the sidecar's instruments and their Prometheus handler.
type Registry struct {
	mp      *sdkmetric.MeterProvider
	gather  gatherer
	handler http.Handler

	durableCalls    metric.Int64Counter
	durableDuration metric.Float64Histogram
	inFlight        metric.Int64UpDownCounter
	sendsAccepted   metric.Int64Counter
	reattaches      metric.Int64Counter
	connErrors      metric.Int64Counter
	refused         metric.Int64Counter
	peerCloses      metric.Int64Counter

	ingressErr, appErr []metric.AddOption
	// refusedBy and closedBy are the label sets of each HTTP/2 error code; closedBy is
	// indexed by upstream (0 downstream, 1 upstream) first.
	refusedBy [numH2Codes][]metric.AddOption
	closedBy  [2][numH2Codes][]metric.AddOption
	// server is the outbound listener's calls: the relay's streams and the local server's.
	server  methods
	mu      sync.Mutex
	clients map[string]*methods // by target: connections to one target share its series
}

// numH2Codes bounds the HTTP/2 error codes labelled by name (RFC 9113 7 has 14); any other
// code a peer sends is labelled as the last, unknown.
const numH2Codes = 15

// New returns a Registry whose Handler serves every metric it records.
func New() (*Registry, error) {
	reg := prometheus.NewRegistry()
	// The Go runtime's and the process's own series (go_goroutines, process_resident_memory_bytes,
	// ...), as every Go exporter serves them: what a leak shows in first.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// No otel_scope_* labels: no two scopes share a metric name (the relay's grpc.server.*
	// instruments are grpc-go's own, from its scope), so they would only lengthen every series.
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("metrics: prometheus exporter: %w", err)
	}
	r := &Registry{mp: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)), server: methods{side: &serverSide}}
	r.gather = gatherer{reg, r}
	r.handler = promhttp.HandlerFor(r.gather, promhttp.HandlerOpts{})
	m := r.mp.Meter(ScopeName)
	latency := metric.WithExplicitBucketBoundaries(grpcotel.DefaultLatencyBounds...)
	var errs [8]error
	r.durableCalls, errs[0] = m.Int64Counter("restate_grpc.durable.calls", metric.WithUnit("{call}"),
		metric.WithDescription("Durable calls answered, by route, mode, target kind and gRPC status."))
	r.durableDuration, errs[1] = m.Float64Histogram("restate_grpc.durable.call.duration", metric.WithUnit("s"), latency,
		metric.WithDescription("Time from a durable call's request to its answer, by route, mode, target kind and gRPC status."))
	r.inFlight, errs[2] = m.Int64UpDownCounter("restate_grpc.durable.calls.in_flight", metric.WithUnit("{call}"),
		metric.WithDescription("Durable calls not yet answered, by route."))
	r.sendsAccepted, errs[3] = m.Int64Counter("restate_grpc.durable.sends.accepted", metric.WithUnit("{call}"),
		metric.WithDescription("Sends (mode send) Restate accepted, by route."))
	r.reattaches, errs[4] = m.Int64Counter("restate_grpc.durable.reattaches", metric.WithUnit("{call}"),
		metric.WithDescription("Re-attaches to an invocation after the connection to the ingress broke."))
	r.connErrors, errs[5] = m.Int64Counter("restate_grpc.connection.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Calls and probes that could not reach the Restate ingress (peer ingress) or the app (peer app)."))
	r.refused, errs[6] = m.Int64Counter("restate_grpc.relay.refused_streams", metric.WithUnit("{stream}"),
		metric.WithDescription("Streams the outbound listener refused before deciding them, by the RST_STREAM code: REFUSED_STREAM past maxConcurrentStreams or while draining, FRAME_SIZE_ERROR for a header list over maxHeaderListBytes."))
	r.peerCloses, errs[7] = m.Int64Counter("restate_grpc.relay.peer_closes", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections the relay closed because the peer broke HTTP/2 or a limit (ENHANCE_YOUR_CALM: a reset or empty-frame flood), by peer and GOAWAY code."))
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	r.ingressErr = addSet(LabelPeer.String(PeerIngress))
	r.appErr = addSet(LabelPeer.String(PeerApp))
	for c := range numH2Codes {
		reason := LabelReason.String(h2CodeName(http2.ErrCode(c)))
		r.refusedBy[c] = addSet(reason)
		r.closedBy[0][c] = addSet(LabelPeer.String(PeerDownstream), reason)
		r.closedBy[1][c] = addSet(LabelPeer.String(PeerUpstream), reason)
	}
	return r, nil
}

// h2CodeName is the name of an HTTP/2 error code, "UNKNOWN" past the known ones.
func h2CodeName(c http2.ErrCode) string {
	if c >= numH2Codes-1 {
		return "UNKNOWN"
	}
	return c.String()
}

func h2Index(c http2.ErrCode) int { return int(min(c, numH2Codes-1)) }

// addSet binds one label set for Add.
func addSet(kv ...attribute.KeyValue) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}

// recordSet binds one label set for Record.
func recordSet(kv ...attribute.KeyValue) []metric.RecordOption {
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}

// Handler serves the metrics in Prometheus's exposition formats; nil without a Registry.
func (r *Registry) Handler() http.Handler {
	if r == nil {
		return nil
	}
	return r.handler
}

// Shutdown stops the MeterProvider; nothing records after it.
func (r *Registry) Shutdown(ctx context.Context) error {
	if r == nil {
		return nil
	}
	return r.mp.Shutdown(ctx)
}

// Reattach counts a re-attach after the connection to the ingress broke.
func (r *Registry) Reattach() {
	if r != nil {
		r.reattaches.Add(context.Background(), 1)
	}
}

// IngressError counts a call or probe that could not reach the Restate ingress.
func (r *Registry) IngressError() {
	if r != nil {
		r.connErrors.Add(context.Background(), 1, r.ingressErr...)
	}
}

// AppError counts a call or probe that could not reach the app.
func (r *Registry) AppError() {
	if r != nil {
		r.connErrors.Add(context.Background(), 1, r.appErr...)
	}
}

// RefusedStream counts a stream the relay refused before deciding it, with its RST_STREAM
// code; it fits proxy.Server.Refused.
func (r *Registry) RefusedStream(code http2.ErrCode) {
	if r != nil {
		r.refused.Add(context.Background(), 1, r.refusedBy[h2Index(code)]...)
	}
}

// PeerClosed counts a connection the relay closed for what its peer did, with the GOAWAY's
// code; it fits proxy.Server.Broke.
func (r *Registry) PeerClosed(upstream bool, code http2.ErrCode) {
	if r == nil {
		return
	}
	side := 0
	if upstream {
		side = 1
	}
	r.peerCloses.Add(context.Background(), 1, r.closedBy[side][h2Index(code)]...)
}

// Check is the state of one readiness check.
type Check struct {
	Name string
	OK   bool
}

// ObserveChecks publishes restate_grpc_check_ok{check}, 1 or 0, for each check checks
// returns, read at each scrape: the inbound deployment's registration is check "registered".
func (r *Registry) ObserveChecks(checks func() []Check) error {
	if r == nil {
		return nil
	}
	_, err := r.mp.Meter(ScopeName).Int64ObservableGauge("restate_grpc.check.ok",
		metric.WithDescription("1 while a readiness check passes, else 0, by check (outbound, inbound, registered, app, ingress)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for _, c := range checks() {
				v := int64(0)
				if c.OK {
					v = 1
				}
				o.Observe(v, metric.WithAttributes(LabelCheck.String(c.Name)))
			}
			return nil
		}))
	return err
}
