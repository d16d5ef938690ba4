package metrics

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"

	"github.com/restate-grpc/restate-grpc/proxy"
)

// maxMethods bounds the passthrough methods labelled by name; the callers choose the
// methods, and past this many new ones are labelled "other".
const maxMethods = 512

// otherMethod is grpc.method of the methods past maxMethods, as grpc-go names the methods
// it does not label.
const otherMethod = "other"

// relayInstruments are grpc-go's server instruments (gRFC A66), made from the same meter
// with the same names, units, descriptions and bounds as its ServerOption makes them, so the
// SDK hands out the very instruments it uses: one grpc.server.call.duration for both paths.
type relayInstruments struct {
	started    metric.Int64Counter
	duration   metric.Float64Histogram
	sent, rcvd metric.Int64Histogram
}

func (ri *relayInstruments) init(mp metric.MeterProvider) error {
	m := mp.Meter("grpc-go", metric.WithInstrumentationVersion(grpc.Version))
	var errs [4]error
	ri.started, errs[0] = m.Int64Counter(grpcotel.ServerCallStartedMetricName, metric.WithUnit("{call}"), metric.WithDescription("Number of server calls started."))
	ri.sent, errs[1] = m.Int64Histogram(grpcotel.ServerCallSentCompressedTotalMessageSizeMetricName, metric.WithUnit("By"), metric.WithDescription("Compressed message bytes sent per server call."), metric.WithExplicitBucketBoundaries(grpcotel.DefaultSizeBounds...))
	ri.rcvd, errs[2] = m.Int64Histogram(grpcotel.ServerCallRcvdCompressedTotalMessageSizeMetricName, metric.WithUnit("By"), metric.WithDescription("Compressed message bytes received per server call."), metric.WithExplicitBucketBoundaries(grpcotel.DefaultSizeBounds...))
	ri.duration, errs[3] = m.Float64Histogram(grpcotel.ServerCallDurationMetricName, metric.WithUnit("s"), metric.WithDescription("End-to-end time taken to complete a call from server transport's perspective."), metric.WithExplicitBucketBoundaries(grpcotel.DefaultLatencyBounds...))
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// Stream records the passthrough streams of one method, its label sets bound on its first
// stream. A nil *Stream records nothing.
type Stream struct {
	r       *Registry
	started []metric.AddOption
	ends    [numCodes][]metric.RecordOption
	// end is s.End, made once: handing the relay a method value would allocate per stream.
	end func(proxy.StreamEnd)
}

// methods holds each labelled method's Stream.
type methods struct {
	m     sync.Map // method (as on the wire, /pkg.Svc/Method) -> *Stream
	n     atomic.Int32
	other atomic.Pointer[Stream]
}

// Stream counts a passthrough stream of method (/pkg.Svc/Method) started, and returns what
// records its end.
func (r *Registry) Stream(method string) *Stream {
	if r == nil {
		return nil
	}
	s := r.stream(method)
	s.r.relay.started.Add(context.Background(), 1, s.started...)
	return s
}

func (r *Registry) stream(method string) *Stream {
	if v, ok := r.methods.m.Load(method); ok {
		return v.(*Stream)
	}
	if r.methods.n.Add(1) > maxMethods {
		r.methods.n.Add(-1)
		if s := r.methods.other.Load(); s != nil {
			return s
		}
		s := r.newStream(otherMethod)
		if !r.methods.other.CompareAndSwap(nil, s) {
			return r.methods.other.Load()
		}
		return s
	}
	v, loaded := r.methods.m.LoadOrStore(method, r.newStream(strings.TrimPrefix(method, "/")))
	if loaded {
		r.methods.n.Add(-1)
	}
	return v.(*Stream)
}

func (r *Registry) newStream(method string) *Stream {
	m := LabelMethod.String(method)
	s := &Stream{r: r, started: addSet(m)}
	for c := range numCodes {
		s.ends[c] = recordSet(m, LabelStatus.String(statusName[c]))
	}
	s.end = s.End
	return s
}

// EndFunc is s.End as one func value for every stream of s; nil for a nil s.
func (s *Stream) EndFunc() func(proxy.StreamEnd) {
	if s == nil {
		return nil
	}
	return s.end
}

// End records how a stream ended: its gRPC status, or, for a stream reset without one, the
// status a gRPC client makes of the reset.
func (s *Stream) End(e proxy.StreamEnd) {
	if s == nil {
		return
	}
	code := e.Code
	if !e.HasCode {
		code = resetCode(e.ResetCode)
	}
	ctx := context.Background()
	opts := s.ends[codeIndex(code)]
	ri := &s.r.relay
	ri.duration.Record(ctx, e.Duration.Seconds(), opts...)
	ri.rcvd.Record(ctx, e.RequestBytes, opts...)
	ri.sent.Record(ctx, e.ResponseBytes, opts...)
}

// resetCode is the status grpc-go's client gives a call its stream's RST_STREAM ended.
func resetCode(c http2.ErrCode) codes.Code {
	switch c {
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	}
	return codes.Internal
}
