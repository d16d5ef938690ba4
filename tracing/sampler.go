package tracing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// sampler is the sidecar's sampler: the SDK's, as the config or OTEL_TRACES_SAMPLER(_ARG)
// chose it, and what StartRelay needs to decide a span's sampling before the span is made.
// The relay starts a span for every passthrough stream, and with 10% sampling, making the nine
// in ten spans that are dropped cost as much as the one that is kept.
type sampler struct {
	sdk         sdktrace.Sampler
	parentBased bool
	ratio       float64 // of the root spans sampled; of every span, when not parent-based
}

// decided marks the context of a Relay's span, which StartRelay decided to sample: its value
// is the *Relay, whose ids the span takes.
type decided struct{}

func (s *sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.ParentContext.Value(decided{}) != nil {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return s.sdk.ShouldSample(p)
}

func (s *sampler) Description() string { return s.sdk.Description() }

// sample decides, as the SDK's sampler would, whether a span whose parent is parent (not
// valid for a root) is sampled. A root's share is drawn at random rather than read from a
// trace id, which does not exist yet: the same share, and the decision travels in the
// traceparent's flags to every span after it, as with any root sampler.
func (s *sampler) sample(parent trace.SpanContext) bool {
	if s.parentBased && parent.IsValid() {
		return parent.IsSampled()
	}
	return s.ratio >= 1 || s.ratio > 0 && rand.Float64() < s.ratio
}

// Samplers OTEL_TRACES_SAMPLER names, as the SDK reads them.
var envSamplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// newSampler is parent-based ratio when the config sets a ratio, else what the environment
// names (OTEL_TRACES_SAMPLER and _ARG), else parentbased_always_on, as the SDK chooses. Where
// the SDK would log a variable it cannot read and go on with a default, this says what to fix.
func newSampler(ratio *float64, getenv func(string) string) (*sampler, error) {
	if ratio != nil {
		return ratioSampler(true, *ratio), nil
	}
	name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	r := 1.0
	if arg != "" && strings.HasSuffix(name, "traceidratio") {
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || v < 0 || v > 1 {
			return nil, fmt.Errorf("tracing: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
		}
		r = v
	}
	switch name {
	case "", "parentbased_always_on":
		return ratioSampler(true, 1), nil
	case "parentbased_always_off":
		return ratioSampler(true, 0), nil
	case "parentbased_traceidratio":
		return ratioSampler(true, r), nil
	case "always_on":
		return ratioSampler(false, 1), nil
	case "always_off":
		return ratioSampler(false, 0), nil
	case "traceidratio":
		return ratioSampler(false, r), nil
	}
	return nil, fmt.Errorf("tracing: OTEL_TRACES_SAMPLER=%q: want one of %s", name, strings.Join(envSamplers, ", "))
}

func ratioSampler(parentBased bool, ratio float64) *sampler {
	var root sdktrace.Sampler
	switch ratio {
	case 1:
		root = sdktrace.AlwaysSample()
	case 0:
		root = sdktrace.NeverSample()
	default:
		root = sdktrace.TraceIDRatioBased(ratio)
	}
	s := &sampler{sdk: root, parentBased: parentBased, ratio: ratio}
	if parentBased {
		s.sdk = sdktrace.ParentBased(root)
	}
	return s
}

// tracer is the sidecar's tracer, with its provider's sampler and relay queue.
type tracer struct {
	trace.Tracer
	s *sampler
	q *relayQueue
}

// tracerProvider is Setup's TracerProvider, with its sampler and the queue that makes the
// spans of ended Relays.
type tracerProvider struct {
	*sdktrace.TracerProvider
	s *sampler
	q *relayQueue
}

// newTracerProvider is the SDK's provider with opts, sampling with s, and its relay queue.
func newTracerProvider(s *sampler, opts ...sdktrace.TracerProviderOption) *tracerProvider {
	tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithSampler(s), sdktrace.WithIDGenerator(ids{}))...)
	return &tracerProvider{tp, s, newRelayQueue(tp.Tracer(ScopeName))}
}

// ForceFlush makes the spans of the Relays that ended, then exports every ended span.
func (tp *tracerProvider) ForceFlush(ctx context.Context) error {
	if err := tp.q.flush(ctx); err != nil {
		return err
	}
	return tp.TracerProvider.ForceFlush(ctx)
}

// Shutdown makes the spans of the Relays that ended, then flushes and stops the SDK's.
func (tp *tracerProvider) Shutdown(ctx context.Context) error {
	tp.q.close()
	return tp.TracerProvider.Shutdown(ctx)
}
