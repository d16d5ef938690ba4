package tracing

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
)

func TestNewSampler(t *testing.T) {
	tenth := 0.1
	tests := []struct {
		name        string
		ratio       *float64
		env         map[string]string
		wantSDK     sdktrace.Sampler
		parentBased bool
		wantRatio   float64
		wantErr     string
	}{
		{name: "default", wantSDK: sdktrace.ParentBased(sdktrace.AlwaysSample()), parentBased: true, wantRatio: 1},
		{name: "config wins", ratio: &tenth, env: map[string]string{"OTEL_TRACES_SAMPLER": "always_off"},
			wantSDK: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1)), parentBased: true, wantRatio: 0.1},
		{name: "parentbased_traceidratio", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			wantSDK: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.25)), parentBased: true, wantRatio: 0.25},
		{name: "ratio without its argument", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"},
			wantSDK: sdktrace.ParentBased(sdktrace.AlwaysSample()), parentBased: true, wantRatio: 1},
		{name: "traceidratio", env: map[string]string{"OTEL_TRACES_SAMPLER": " TraceIDRatio ", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
			wantSDK: sdktrace.TraceIDRatioBased(0.5), wantRatio: 0.5},
		{name: "always_on", env: map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}, wantSDK: sdktrace.AlwaysSample(), wantRatio: 1},
		{name: "always_off", env: map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, wantSDK: sdktrace.NeverSample()},
		{name: "parentbased_always_off", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_off"},
			wantSDK: sdktrace.ParentBased(sdktrace.NeverSample()), parentBased: true},
		{name: "unknown sampler", env: map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, wantErr: `OTEL_TRACES_SAMPLER="jaeger_remote": want one of always_on,`},
		{name: "ratio over 1", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "10"}, wantErr: `OTEL_TRACES_SAMPLER_ARG="10": want a ratio from 0 to 1`},
		{name: "ratio not a number", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "ten%"}, wantErr: `OTEL_TRACES_SAMPLER_ARG="ten%"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSampler(tc.ratio, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := s.Description(), tc.wantSDK.Description(); got != want {
				t.Errorf("sampler %s, want %s", got, want)
			}
			if s.parentBased != tc.parentBased || s.ratio != tc.wantRatio {
				t.Errorf("parent-based %v, ratio %v; want %v, %v", s.parentBased, s.ratio, tc.parentBased, tc.wantRatio)
			}
		})
	}
}

func remoteParent(sampled bool) context.Context {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, Remote: true,
	})
	if sampled {
		sc = sc.WithTraceFlags(trace.FlagsSampled)
	}
	return trace.ContextWithRemoteSpanContext(context.Background(), sc)
}

// TestRelaySampling: a relayed stream's span is recorded only when it is sampled, in the
// share the sampler says, and a parent's decision is kept.
func TestRelaySampling(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := newTracerProvider(ratioSampler(true, 0.25), sdktrace.WithSpanProcessor(rec))
	tr := Tracer(tp)
	const n = 4000
	sampled := 0
	for range n {
		if r := StartRelay(context.Background(), tr, "/a.B/C", "x:1"); r != nil {
			sampled++
			r.End(codes.OK)
		}
	}
	// 1000 expected; the binomial's standard deviation is 27.
	if sampled < 850 || sampled > 1150 {
		t.Errorf("%d of %d root spans sampled at 0.25, want about %d", sampled, n, n/4)
	}
	for _, parentSampled := range []bool{true, false} {
		for range 50 {
			r := StartRelay(remoteParent(parentSampled), tr, "/a.B/C", "x:1")
			if (r != nil) != parentSampled {
				t.Fatalf("parent sampled %v: span sampled %v, want the parent's decision", parentSampled, r != nil)
			}
			if r != nil {
				r.End(codes.OK)
			}
		}
	}
	tp.Shutdown(context.Background())
	if got, want := len(rec.Ended()), sampled+50; got != want {
		t.Errorf("%d spans made, want the %d sampled", got, want)
	}
}

// TestRelayOtherTracer: with a tracer StartRelay does not know, the SDK decides.
func TestRelayOtherTracer(t *testing.T) {
	for _, s := range []sdktrace.Sampler{sdktrace.AlwaysSample(), sdktrace.NeverSample()} {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s))
		r := StartRelay(context.Background(), Tracer(tp), "/a.B/C", "x:1")
		if got, want := r != nil, s == sdktrace.AlwaysSample(); got != want {
			t.Errorf("%s: sampled %v, want %v", s.Description(), got, want)
		}
		tp.Shutdown(context.Background())
	}
}

// BenchmarkStartRelay is a passthrough stream's span at 10% sampling, on the relay's
// goroutine: with the sidecar's tracer, the decision first and a record of the span; with
// the SDK's, a span made and dropped, or made at once.
func BenchmarkStartRelay(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	s := ratioSampler(true, 0.1)
	own := newTracerProvider(s, sdktrace.WithSpanProcessor(rec))
	defer own.Shutdown(context.Background())
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithSpanProcessor(rec))
	defer sdk.Shutdown(context.Background())
	for _, c := range []struct {
		name string
		tr   trace.Tracer
	}{{"sidecar's", Tracer(own)}, {"sdk's", sdk.Tracer(ScopeName)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r := StartRelay(context.Background(), c.tr, "/a.B/C", "127.0.0.1:9000"); r != nil {
					r.End(codes.OK)
				}
			}
		})
	}
}
