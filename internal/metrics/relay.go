package metrics

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/http2"
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

// relayFamily is one of grpc-go's server metrics (gRFC A66) as OpenTelemetry's Prometheus
// exporter writes it: TestRelayNamesMatchGRPC holds these to what the exporter makes of
// grpc-go's own instruments, which the durable path's grpc.Server records.
type relayFamily struct {
	name, help string
	typ        dto.MetricType
}

var (
	famStarted  = relayFamily{"grpc_server_call_started_total", "Number of server calls started.", dto.MetricType_COUNTER}
	famDuration = relayFamily{"grpc_server_call_duration_seconds", "End-to-end time taken to complete a call from server transport's perspective.", dto.MetricType_HISTOGRAM}
	famSent     = relayFamily{"grpc_server_call_sent_total_compressed_message_size_bytes", "Compressed message bytes sent per server call.", dto.MetricType_HISTOGRAM}
	famRcvd     = relayFamily{"grpc_server_call_rcvd_total_compressed_message_size_bytes", "Compressed message bytes received per server call.", dto.MetricType_HISTOGRAM}
)

// Stream records the passthrough streams of one method. The relay's observer records every
// stream, so these are client_golang's lock-free counters and histograms rather than the
// OpenTelemetry SDK's instruments, whose every record resolves its attribute set anew: that
// cost the relay as much CPU as relaying the stream. The scrape merges them into the
// families grpc-go's instruments export under the same names (gather). A nil *Stream
// records nothing.
type Stream struct {
	method  string
	started prometheus.Counter
	ends    [numCodes]atomic.Pointer[streamEnd] // made on a code's first stream
	// end is s.End, made once: handing the relay a method value would allocate per stream.
	end func(proxy.StreamEnd)
}

// streamEnd holds the histograms of one method's streams ended with one code.
type streamEnd struct {
	duration, sent, rcvd prometheus.Histogram
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
	s.started.Inc()
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
		s := newStream(otherMethod)
		if !r.methods.other.CompareAndSwap(nil, s) {
			return r.methods.other.Load()
		}
		return s
	}
	v, loaded := r.methods.m.LoadOrStore(method, newStream(strings.TrimPrefix(method, "/")))
	if loaded {
		r.methods.n.Add(-1)
	}
	return v.(*Stream)
}

func newStream(method string) *Stream {
	s := &Stream{method: method, started: prometheus.NewCounter(prometheus.CounterOpts{
		Name: famStarted.name, Help: famStarted.help, ConstLabels: prometheus.Labels{promMethod: method},
	})}
	s.end = s.End
	return s
}

// endsOf returns the histograms of s's streams ended with code index c.
func (s *Stream) endsOf(c int) *streamEnd {
	if e := s.ends[c].Load(); e != nil {
		return e
	}
	labels := prometheus.Labels{promMethod: s.method, promStatus: statusName[c]}
	hist := func(f relayFamily, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: f.name, Help: f.help, Buckets: buckets, ConstLabels: labels})
	}
	e := &streamEnd{
		duration: hist(famDuration, grpcotel.DefaultLatencyBounds),
		sent:     hist(famSent, grpcotel.DefaultSizeBounds),
		rcvd:     hist(famRcvd, grpcotel.DefaultSizeBounds),
	}
	if !s.ends[c].CompareAndSwap(nil, e) {
		return s.ends[c].Load()
	}
	return e
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
	h := s.endsOf(codeIndex(code))
	h.duration.Observe(e.Duration.Seconds())
	h.rcvd.Observe(float64(e.RequestBytes))
	h.sent.Observe(float64(e.ResponseBytes))
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

// relayFamilies reads every passthrough stream's series.
func (r *Registry) relayFamilies() []*dto.MetricFamily {
	fams := make([]*dto.MetricFamily, 4)
	for i, f := range []relayFamily{famStarted, famDuration, famSent, famRcvd} {
		fams[i] = &dto.MetricFamily{Name: &f.name, Help: &f.help, Type: f.typ.Enum()}
	}
	add := func(f *dto.MetricFamily, c prometheus.Metric) {
		m := &dto.Metric{}
		if c.Write(m) == nil { // a counter or histogram of ours always writes
			f.Metric = append(f.Metric, m)
		}
	}
	read := func(s *Stream) {
		add(fams[0], s.started)
		for c := range s.ends {
			if e := s.ends[c].Load(); e != nil {
				add(fams[1], e.duration)
				add(fams[2], e.sent)
				add(fams[3], e.rcvd)
			}
		}
	}
	r.methods.m.Range(func(_, v any) bool {
		read(v.(*Stream))
		return true
	})
	if s := r.methods.other.Load(); s != nil {
		read(s)
	}
	return fams
}

// gatherer is the sidecar's registry with the relay's series merged in.
type gatherer struct {
	reg *prometheus.Registry
	r   *Registry
}

// Gather merges the relay's series into the registry's families of the same names, where
// grpc-go's instruments export the durable path's calls. A series both have (grpc-go labels
// every method it does not serve itself "other", as the relay labels methods past
// maxMethods) is their sum: one grpc.server.call.duration for every call the app made.
func (g gatherer) Gather() ([]*dto.MetricFamily, error) {
	fams, err := g.reg.Gather()
	for _, rf := range g.r.relayFamilies() {
		if len(rf.Metric) == 0 {
			continue
		}
		i, found := slices.BinarySearchFunc(fams, rf.GetName(), func(f *dto.MetricFamily, name string) int {
			return cmp.Compare(f.GetName(), name)
		})
		if !found {
			sortMetrics(rf.Metric)
			fams = slices.Insert(fams, i, rf)
			continue
		}
		f := fams[i]
		for _, m := range rf.Metric {
			if j := slices.IndexFunc(f.Metric, func(o *dto.Metric) bool { return sameLabels(o, m) }); j >= 0 {
				addMetric(f.Metric[j], m)
			} else {
				f.Metric = append(f.Metric, m)
			}
		}
		sortMetrics(f.Metric)
	}
	return fams, err
}

func labelKey(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.GetLabel() {
		b.WriteString(l.GetName())
		b.WriteByte(0)
		b.WriteString(l.GetValue())
		b.WriteByte(0)
	}
	return b.String()
}

func sameLabels(a, b *dto.Metric) bool { return labelKey(a) == labelKey(b) }

func sortMetrics(ms []*dto.Metric) {
	slices.SortFunc(ms, func(a, b *dto.Metric) int { return cmp.Compare(labelKey(a), labelKey(b)) })
}

// addMetric adds m's counts to into, a series of the same family, labels and buckets.
func addMetric(into, m *dto.Metric) {
	if c := m.GetCounter(); c != nil && into.Counter != nil {
		into.Counter.Value = new(into.Counter.GetValue() + c.GetValue())
	}
	h, ih := m.GetHistogram(), into.GetHistogram()
	if h == nil || ih == nil {
		return
	}
	ih.SampleCount = new(ih.GetSampleCount() + h.GetSampleCount())
	ih.SampleSum = new(ih.GetSampleSum() + h.GetSampleSum())
	for i, b := range h.GetBucket() {
		if i < len(ih.Bucket) && ih.Bucket[i].GetUpperBound() == b.GetUpperBound() {
			ih.Bucket[i].CumulativeCount = new(ih.Bucket[i].GetCumulativeCount() + b.GetCumulativeCount())
		}
	}
}
