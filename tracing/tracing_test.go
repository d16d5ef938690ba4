package tracing_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/tracing"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestEndpoint(t *testing.T) {
	tests := []struct {
		name                   string
		cfg                    *config.Tracing
		env                    map[string]string
		wantEndpoint, wantProt string
		wantOn                 bool
	}{
		{name: "off", cfg: nil},
		{name: "section without endpoint", cfg: &config.Tracing{ServiceName: "x"}},
		{name: "config", cfg: &config.Tracing{OTLPEndpoint: "http://c:4317"}, wantEndpoint: "http://c:4317", wantProt: "grpc", wantOn: true},
		{name: "env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			wantEndpoint: "http://e:4318", wantProt: "http/protobuf", wantOn: true},
		{name: "traces env first", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317"},
			wantEndpoint: "http://t:4317", wantProt: "grpc", wantOn: true},
		{name: "config wins", cfg: &config.Tracing{OTLPEndpoint: "http://c:4318", Protocol: "http/protobuf"},
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantEndpoint: "http://c:4318", wantProt: "http/protobuf", wantOn: true},
		{name: "sdk disabled", cfg: &config.Tracing{OTLPEndpoint: "http://c:4317"}, env: map[string]string{"OTEL_SDK_DISABLED": "true"}},
		{name: "exporter none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4317", "OTEL_TRACES_EXPORTER": "none"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gotEndpoint, gotProt, gotOn := tracing.Endpoint(tc.cfg, envOf(tc.env))
			if gotEndpoint != tc.wantEndpoint || gotProt != tc.wantProt || gotOn != tc.wantOn {
				t.Errorf("got %q %q %v, want %q %q %v", gotEndpoint, gotProt, gotOn, tc.wantEndpoint, tc.wantProt, tc.wantOn)
			}
		})
	}
}

// TestOff: without an endpoint there is no provider, so the call paths make no spans.
func TestOff(t *testing.T) {
	p, err := tracing.Setup(context.Background(), tracing.Options{Config: &config.Tracing{ServiceName: "x", RecordKeys: true}, Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.TracerProvider(); got != nil {
		t.Errorf("got provider %T, want nil", got)
	}
	if p.RecordKeys() {
		t.Errorf("RecordKeys true with tracing off")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestExport: spans reach a collector over both protocols, with the sidecar's resource, when
// Shutdown flushes them.
func TestExport(t *testing.T) {
	rcv, err := testenv.StartOTLPReceiver()
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,service.name=from-attrs")
	ratio := 1.0
	tests := []struct {
		name        string
		cfg         config.Tracing
		env         map[string]string
		wantService string
	}{
		{name: "grpc", cfg: config.Tracing{OTLPEndpoint: "http://" + rcv.GRPCAddr, ServiceName: "shop", RecordKeys: true}, wantService: "shop"},
		{name: "http", cfg: config.Tracing{OTLPEndpoint: rcv.HTTPURL, Protocol: config.ProtocolHTTP, SamplingRatio: &ratio},
			env: map[string]string{"POD_NAME": "shop-1", "POD_NAMESPACE": "prod"}, wantService: "from-attrs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tracing.Setup(context.Background(), tracing.Options{Config: &tc.cfg, Version: "v1.2.3", Getenv: envOf(tc.env)})
			if err != nil {
				t.Fatal(err)
			}
			if got := p.RecordKeys(); got != tc.cfg.RecordKeys {
				t.Errorf("RecordKeys() = %v, want %v (tracing.recordKeys)", got, tc.cfg.RecordKeys)
			}
			_, span := tracing.Start(context.Background(), tracing.Tracer(p.TracerProvider()), trace.SpanKindClient, "/orders.v1.Orders/Get")
			want := span.SpanContext().SpanID().String()
			tracing.End(span, trace.SpanKindClient, status.Error(codes.NotFound, "no order"))
			if err := p.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got *testenv.Span
			for _, s := range rcv.Spans() {
				if s.SpanID == want {
					got = &s
				}
			}
			if got == nil {
				t.Fatalf("span %s not exported; got %+v", want, rcv.Spans())
			}
			wantAttrs := map[string]string{"rpc.system": "grpc", "rpc.service": "orders.v1.Orders", "rpc.method": "Get", "rpc.grpc.status_code": "5"}
			for k, v := range wantAttrs {
				if got.Attrs[k] != v {
					t.Errorf("attribute %s = %q, want %q", k, got.Attrs[k], v)
				}
			}
			if got.Name != "orders.v1.Orders/Get" || !got.Error {
				t.Errorf("got name %q error %v, want orders.v1.Orders/Get, error", got.Name, got.Error)
			}
			wantRes := map[string]string{"service.name": tc.wantService, "service.version": "v1.2.3", "deployment.environment.name": "test",
				"k8s.pod.name": tc.env["POD_NAME"], "k8s.namespace.name": tc.env["POD_NAMESPACE"]}
			for k, v := range wantRes {
				if got.Resource[k] != v {
					t.Errorf("resource %s = %q, want %q", k, got.Resource[k], v)
				}
			}
		})
	}
}

// TestShutdownBounded: a collector that never answers does not hold Shutdown past its bound.
func TestShutdownBounded(t *testing.T) {
	p, err := tracing.Setup(context.Background(), tracing.Options{Config: &config.Tracing{OTLPEndpoint: "http://127.0.0.1:1"}, Getenv: envOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tracing.Start(context.Background(), tracing.Tracer(p.TracerProvider()), trace.SpanKindClient, "/a.B/C")
	span.End()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p.Shutdown(ctx) // its error (the spans it could not export) is not what is tested
	if got, bound := time.Since(start), 3*time.Second; got > bound {
		t.Errorf("Shutdown took %s, want at most %s", got, bound)
	}
}

func TestInjectHeader(t *testing.T) {
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := tracing.Propagator.Extract(context.Background(), tracing.MetadataCarrier(metadata.Pairs("traceparent", tp, "tracestate", "v=1")))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("no span context from metadata")
	}
	// As ingressHeader copies metadata: lower-case names.
	h := http.Header{"traceparent": {"00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01"}, "tracestate": {"old=1"}, "x-a": {"1"}}
	tracing.InjectHeader(ctx, h)
	want := http.Header{"Traceparent": {tp}, "Tracestate": {"v=1"}, "x-a": {"1"}}
	if len(h) != len(want) || h.Get("Traceparent") != tp || h.Get("Tracestate") != "v=1" || h["x-a"][0] != "1" {
		t.Errorf("got %v, want %v", h, want)
	}
}
