package tracing

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

// DefaultServiceName is service.name when neither the config nor OTEL_SERVICE_NAME names one.
const DefaultServiceName = "restate-grpc-sidecar"

// ShutdownTimeout bounds Shutdown's flush of the spans not yet exported: a collector that is
// down must not hold the pod's termination.
const ShutdownTimeout = 5 * time.Second

// Options configure Setup.
type Options struct {
	Config *config.Tracing // may be nil
	// Version is service.version, the sidecar's build.
	Version string
	// Getenv reads the environment; default os.Getenv. The SDK reads its own OTEL_* variables
	// from the process environment regardless.
	Getenv func(string) string
}

// Provider is the sidecar's tracing, on or off.
type Provider struct {
	tp *tracerProvider // nil when tracing is off
	// Endpoint and Protocol are where spans go, for the sidecar to log; empty when off.
	Endpoint, Protocol string
	recordKeys         bool
}

// RecordKeys says whether durable calls' spans carry their object key or workflow id
// (tracing.recordKeys); false when tracing is off.
func (p *Provider) RecordKeys() bool { return p != nil && p.tp != nil && p.recordKeys }

// TracerProvider is what the call paths make spans with; nil when tracing is off, so that they
// skip span making altogether rather than call a no-op tracer on every call.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil || p.tp == nil {
		return nil
	}
	return p.tp
}

// Shutdown exports the spans still batched, within ShutdownTimeout, and stops the exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.tp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ShutdownTimeout)
	defer cancel()
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flushing spans: %w", err)
	}
	return nil
}

// Endpoint returns where spans go and over which protocol, and false when tracing is off.
func Endpoint(c *config.Tracing, getenv func(string) string) (endpoint, protocol string, on bool) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if c == nil {
		c = &config.Tracing{}
	}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || getenv("OTEL_TRACES_EXPORTER") == "none" {
		return "", "", false
	}
	endpoint = first(c.OTLPEndpoint, getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	if endpoint == "" {
		return "", "", false
	}
	// grpc by default, as Restate's tracing-endpoint: one collector address serves both.
	protocol = first(c.Protocol, getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), config.ProtocolGRPC)
	return endpoint, protocol, true
}

// Setup starts the exporter, or returns a Provider that is off. The exporter connects lazily:
// a collector that is not up yet costs dropped spans, not a failed start.
func Setup(ctx context.Context, o Options) (*Provider, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	c := o.Config
	if c == nil {
		c = &config.Tracing{}
	}
	endpoint, protocol, on := Endpoint(c, getenv)
	if !on {
		return &Provider{}, nil
	}
	exp, err := exporter(ctx, c, protocol)
	if err != nil {
		return nil, err
	}
	res, err := newResource(ctx, c, o.Version, getenv)
	if err != nil {
		return nil, err
	}
	s, err := newSampler(c.SamplingRatio, getenv)
	if err != nil {
		return nil, err
	}
	return &Provider{tp: newTracerProvider(s, sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), Endpoint: endpoint, Protocol: protocol, recordKeys: c.RecordKeys}, nil
}

// exporter is the OTLP exporter of protocol; an endpoint the config leaves unset is the SDK's
// to read from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT.
func exporter(ctx context.Context, c *config.Tracing, protocol string) (*otlptrace.Exporter, error) {
	switch protocol {
	case config.ProtocolGRPC:
		// Sizing each export once, not three times: the exporter's own size check (its 64 MiB
		// bound is far past any collector's; a batch is 512 spans) and grpc's codec each walk
		// the whole request before proto.Marshal walks it again. The two walks were a sixth of
		// what an exported span cost (BenchmarkExportedSpan).
		opts := []otlptracegrpc.Option{otlptracegrpc.WithMaxRequestSize(0),
			otlptracegrpc.WithDialOption(grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawcodec.Codec)))}
		if c.OTLPEndpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(c.OTLPEndpoint))
		}
		return otlptracegrpc.New(ctx, opts...)
	case config.ProtocolHTTP:
		var opts []otlptracehttp.Option
		if c.OTLPEndpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(httpTracesURL(c.OTLPEndpoint)))
		}
		return otlptracehttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("tracing: OTLP protocol %q is not one of %s, %s (OTEL_EXPORTER_OTLP_PROTOCOL or tracing.protocol)", protocol, config.ProtocolGRPC, config.ProtocolHTTP)
}

// httpTracesURL adds OTLP/HTTP's traces path to a URL that has none, as the SDK does for
// OTEL_EXPORTER_OTLP_ENDPOINT (but not for an explicit URL, which it would post to "/").
func httpTracesURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return s
	}
	u.Path = "/v1/traces"
	return u.String()
}

// newResource describes the sidecar: later sources win, so the defaults come first, then the
// OTEL_* variables, then the config's explicit service name.
func newResource(ctx context.Context, c *config.Tracing, version string, getenv func(string) string) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(DefaultServiceName)}
	if version != "" {
		attrs = append(attrs, semconv.ServiceVersion(version))
	}
	// The injector's downward-API variables: which pod, since every sidecar shares the name.
	if v := getenv("POD_NAME"); v != "" {
		attrs = append(attrs, semconv.K8SPodName(v))
	}
	if v := getenv("POD_NAMESPACE"); v != "" {
		attrs = append(attrs, semconv.K8SNamespaceName(v))
	}
	opts := []resource.Option{resource.WithAttributes(attrs...), resource.WithFromEnv(), resource.WithTelemetrySDK()}
	if c.ServiceName != "" {
		opts = append(opts, resource.WithAttributes(semconv.ServiceName(c.ServiceName)))
	}
	res, err := resource.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	return res, nil
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
