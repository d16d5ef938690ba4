package durable

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

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

// TestCallSpanKey: an object call's span names its key only when tracing.recordKeys says so.
func TestCallSpanKey(t *testing.T) {
	tests := []struct {
		traceKeys           bool
		wantTarget, wantKey string // wantKey "": no key attribute
	}{
		{traceKeys: false, wantTarget: "rgtest.v1.Counter/Add"},
		{traceKeys: true, wantTarget: "rgtest.v1.Counter/order-7/Add", wantKey: "order-7"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("recordKeys=", tc.traceKeys), func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			o := startTraced(t, newFake(t, echoIngress), sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)), func(o *Options) { o.TraceKeys = tc.traceKeys })
			if _, err := o.counter.Add(metadata.AppendToOutgoingContext(context.Background(), "k", "order-7"), &testpb.Req{Text: "x"}); err != nil {
				t.Fatal(err)
			}
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("got %d spans, want 1", len(spans))
			}
			got := map[string]string{}
			for _, kv := range spans[0].Attributes {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			if got["restate.invocation.target"] != tc.wantTarget {
				t.Errorf("restate.invocation.target = %q, want %q", got["restate.invocation.target"], tc.wantTarget)
			}
			if key := got["restate.invocation.key"]; key != tc.wantKey {
				t.Errorf("restate.invocation.key = %q, want %q", key, tc.wantKey)
			}
		})
	}
}

// startTraced serves the test routes with tp (nil: tracing off), after opts change the options.
func startTraced(t *testing.T, ingress *fake, tp *sdktrace.TracerProvider, opts ...func(*Options)) *outbound {
	t.Helper()
	o := outboundOptions(t, routesYAML, ingress, nil)
	if tp != nil {
		o.Tracing = tp
	}
	for _, f := range opts {
		f(&o)
	}
	return serve(t, o)
}

// TestRelaySpan: a passthrough stream has a client span, a child of the caller's trace
// context, whose context the upstream receives; it ends with the upstream's code.
func TestRelaySpan(t *testing.T) {
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	app, pc, addr := passthroughApp(t)
	exp := tracetest.NewInMemoryExporter()
	o := serve(t, Options{Config: pc, Logger: slog.New(slog.DiscardHandler), Tracing: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))})
	tests := []struct {
		name      string
		req       *testpb.Req
		wantCode  string
		wantError bool
	}{
		{name: "ok", req: &testpb.Req{Text: "relay-ok"}, wantCode: "0"},
		{name: "failed", req: &testpb.Req{Text: "relay-failed", FailCode: int32(codes.NotFound)}, wantCode: "5", wantError: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp.Reset()
			ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
			o.echo.Call(ctx, tc.req)
			// The observer ends the span as the relay drops the stream, which may be just after
			// the caller has its answer.
			deadline := time.Now().Add(5 * time.Second)
			for len(exp.GetSpans()) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("got %d spans, want 1", len(spans))
			}
			s := spans[0]
			got := map[string]string{}
			for _, kv := range s.Attributes {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			want := map[string]string{"rpc.system": "grpc", "rpc.service": "rgtest.v1.Echo", "rpc.method": "Call",
				"rpc.grpc.status_code": tc.wantCode, "restate_grpc.mode": "passthrough", "server.address": addr}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if s.Parent.SpanID().String() != callerSpan || (s.Status.Code.String() == "Error") != tc.wantError {
				t.Errorf("parent %s, status %v; want parent %s, error %v", s.Parent.SpanID(), s.Status, callerSpan, tc.wantError)
			}
			calls := app.CallsWithText(tc.req.Text)
			if len(calls) != 1 {
				t.Fatalf("app got %d calls, want 1", len(calls))
			}
			wantTP := "00-" + callerTrace + "-" + s.SpanContext.SpanID().String() + "-01"
			if got := calls[0].Metadata.Get("traceparent"); len(got) != 1 || got[0] != wantTP {
				t.Errorf("app got traceparent %q, want only %q (the span's)", got, wantTP)
			}
		})
	}
	// A trace the caller did not sample: no span, and the app gets the caller's context as it
	// was sent, so the trace id and the decision not to record go on.
	t.Run("not sampled", func(t *testing.T) {
		exp.Reset()
		tp := "00-" + callerTrace + "-" + callerSpan + "-00"
		ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", tp)
		if _, err := o.echo.Call(ctx, &testpb.Req{Text: "relay-unsampled"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // an ended span would be exported by now (a syncer)
		if n := len(exp.GetSpans()); n != 0 {
			t.Errorf("got %d spans, want none", n)
		}
		calls := app.CallsWithText("relay-unsampled")
		if len(calls) != 1 {
			t.Fatalf("app got %d calls, want 1", len(calls))
		}
		if got := calls[0].Metadata.Get("traceparent"); len(got) != 1 || got[0] != tp {
			t.Errorf("app got traceparent %q, want only the caller's %q", got, tp)
		}
	})
}
