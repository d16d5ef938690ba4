package durable

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestCallSpan: a durable call's client span is a child of the caller's trace context, and
// its own context, not the caller's, is what the ingress receives.
func TestCallSpan(t *testing.T) {
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	caller := "00-" + callerTrace + "-" + callerSpan + "-01"
	tests := []struct {
		name      string
		md        []string
		notFound  bool // the ingress answers 404
		wantAttrs map[string]string
		wantError bool
	}{
		{name: "call", md: []string{"traceparent", caller, "idempotency-key", "k1"},
			wantAttrs: map[string]string{"rpc.system": "grpc", "rpc.service": "rgtest.v1.Echo", "rpc.method": "Call", "rpc.grpc.status_code": "0",
				"restate_grpc.route": "rgtest.v1.Echo/*", "restate_grpc.mode": "call", "restate_grpc.target.kind": "service",
				"restate.service": "rgtest.v1.Echo", "restate.handler": "Call", "restate.invocation.id": "inv_test",
				"restate_grpc.idempotency_key.present": "true"}},
		{name: "send", md: []string{"traceparent", caller, "restate-mode", "send"},
			wantAttrs: map[string]string{"restate_grpc.mode": "send", "restate.invocation.id": "inv_sent", "restate_grpc.idempotency_key.present": "false"}},
		{name: "refused by restate", md: []string{"traceparent", caller}, notFound: true,
			wantAttrs: map[string]string{"rpc.grpc.status_code": "12", "restate.invocation.id": ""}, wantError: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ingress := newFake(t, echoIngress)
			if tc.notFound {
				ingress.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusNotFound)
					io.WriteString(w, `{"code":404,"message":"service not found","source":"ingress"}`)
				})
			}
			exp := tracetest.NewInMemoryExporter()
			o := startTraced(t, ingress, sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
			o.echo.Call(metadata.AppendToOutgoingContext(context.Background(), tc.md...), &testpb.Req{Text: "x"})
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("got %d spans, want 1", len(spans))
			}
			s := spans[0]
			if got := s.Parent.SpanID().String(); got != callerSpan {
				t.Errorf("parent %s, want the caller's span %s", got, callerSpan)
			}
			got := map[string]string{}
			for _, kv := range s.Attributes {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			for k, want := range tc.wantAttrs {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
			if gotErr := s.Status.Code.String() == "Error"; gotErr != tc.wantError {
				t.Errorf("error status %v, want %v", gotErr, tc.wantError)
			}
			reqs := ingress.requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d ingress requests, want 1", len(reqs))
			}
			want := "00-" + callerTrace + "-" + s.SpanContext.SpanID().String() + "-01"
			if got := reqs[0].Header.Values("Traceparent"); len(got) != 1 || got[0] != want {
				t.Errorf("ingress got traceparent %q, want only %q (the span's)", got, want)
			}
		})
	}
}

// TestCallSpanOff: without tracing the caller's trace context reaches the ingress as it came.
func TestCallSpanOff(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startTraced(t, ingress, nil)
	caller := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := o.echo.Call(metadata.AppendToOutgoingContext(context.Background(), "traceparent", caller), &testpb.Req{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	if got := ingress.requests()[0].Header.Values("Traceparent"); strings.Join(got, ",") != caller {
		t.Errorf("ingress got traceparent %q, want %q", got, caller)
	}
}

func startTraced(t *testing.T, ingress *fake, tp *sdktrace.TracerProvider) *outbound {
	t.Helper()
	c, err := config.Parse([]byte("outbound:\n  ingress: " + ingress.srv.URL + "\n" + routesYAML))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := restatehttp.NewClient(ingress.srv.URL, restatehttp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Config: c.Outbound, Ingress: cl, Logger: slog.New(slog.DiscardHandler)}
	if tp != nil {
		o.Tracing = tp
	}
	return serve(t, o)
}
