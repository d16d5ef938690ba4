package tracing

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
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

// ownTracer is the sidecar's tracer over s, recording every span it ends.
func ownTracer(t *testing.T, s *sampler) (trace.Tracer, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return Tracer(&tracerProvider{tp, s}), rec
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

// TestStartSampled: a span is made only when it is sampled, in the share the sampler says,
// and a sampled parent's decision is kept.
func TestStartSampled(t *testing.T) {
	tr, rec := ownTracer(t, ratioSampler(true, 0.25))
	const n = 4000
	sampled := 0
	for range n {
		ctx, span, ok := StartSampled(context.Background(), tr, trace.SpanKindClient, "/a.B/C")
		if !ok {
			if span != nil || trace.SpanContextFromContext(ctx).IsValid() {
				t.Fatal("a stream not sampled got a span")
			}
			continue
		}
		sampled++
		if !span.SpanContext().IsSampled() || trace.SpanFromContext(ctx) != span {
			t.Fatalf("sampled span %v is not sampled or not in its context", span.SpanContext())
		}
		if ctx.Value(decided{}) != nil {
			t.Fatal("the context StartSampled returns carries its decision on to the span's children")
		}
		span.End()
	}
	// 1000 expected; the binomial's standard deviation is 27.
	if sampled < 850 || sampled > 1150 {
		t.Errorf("%d of %d root spans sampled at 0.25, want about %d", sampled, n, n/4)
	}
	if got := len(rec.Ended()); got != sampled {
		t.Errorf("%d spans recorded, want the %d sampled", got, sampled)
	}

	for _, parentSampled := range []bool{true, false} {
		for range 50 {
			_, span, ok := StartSampled(remoteParent(parentSampled), tr, trace.SpanKindClient, "/a.B/C")
			if ok != parentSampled {
				t.Fatalf("parent sampled %v: span sampled %v, want the parent's decision", parentSampled, ok)
			}
			if ok && span.SpanContext().TraceID() != (trace.TraceID{1, 2, 3}) {
				t.Fatalf("span's trace %v, want its parent's", span.SpanContext().TraceID())
			}
		}
	}
}

// TestStartSampledOtherTracer: with a tracer StartSampled does not know, the SDK decides.
func TestStartSampledOtherTracer(t *testing.T) {
	for _, s := range []sdktrace.Sampler{sdktrace.AlwaysSample(), sdktrace.NeverSample()} {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s))
		_, span, ok := StartSampled(context.Background(), Tracer(tp), trace.SpanKindClient, "/a.B/C")
		if want := s == sdktrace.AlwaysSample(); ok != want || (span != nil) != want {
			t.Errorf("%s: sampled %v, span %v; want sampled %v", s.Description(), ok, span, want)
		}
		tp.Shutdown(context.Background())
	}
}

// BenchmarkStartSampled is a passthrough stream's span decision at 10% sampling.
func BenchmarkStartSampled(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	s := ratioSampler(true, 0.1)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	for _, c := range []struct {
		name string
		tr   trace.Tracer
	}{{"decided first", Tracer(&tracerProvider{tp, s})}, {"made and dropped", tp.Tracer(ScopeName)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, span, ok := StartSampled(context.Background(), c.tr, trace.SpanKindClient, "/a.B/C"); ok {
					span.End()
				}
			}
		})
	}
}
