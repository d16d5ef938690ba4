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

// maxMethods bounds the methods labelled by name on each side (server, and each client
// connection); the callers choose the methods, and past this many new ones are labelled "other".
const maxMethods = 512

// otherMethod is grpc.method of the methods past maxMethods, as grpc-go names the methods
// it does not label.
const otherMethod = "other"

// family is one of gRFC A66's metrics as OpenTelemetry's Prometheus exporter writes it:
// TestNamesMatchGRPC holds these to what the exporter makes of grpc-go's own instruments.
type family struct {
	name, help string
	typ        dto.MetricType
}

// side is the families of one side of a call: started, and, by code, duration and the
// compressed bytes sent and received; a client's also the whole call's duration.
type side struct {
	started, duration, sent, rcvd, call family
}

var (
	serverSide = side{
		started:  family{"grpc_server_call_started_total", "Number of server calls started.", dto.MetricType_COUNTER},
		duration: family{"grpc_server_call_duration_seconds", "End-to-end time taken to complete a call from server transport's perspective.", dto.MetricType_HISTOGRAM},
		sent:     family{"grpc_server_call_sent_total_compressed_message_size_bytes", "Compressed message bytes sent per server call.", dto.MetricType_HISTOGRAM},
		rcvd:     family{"grpc_server_call_rcvd_total_compressed_message_size_bytes", "Compressed message bytes received per server call.", dto.MetricType_HISTOGRAM},
	}
	clientSide = side{
		started:  family{"grpc_client_attempt_started_total", "Number of client call attempts started.", dto.MetricType_COUNTER},
		duration: family{"grpc_client_attempt_duration_seconds", "End-to-end time taken to complete a client call attempt.", dto.MetricType_HISTOGRAM},
		sent:     family{"grpc_client_attempt_sent_total_compressed_message_size_bytes", "Compressed message bytes sent per client call attempt.", dto.MetricType_HISTOGRAM},
		rcvd:     family{"grpc_client_attempt_rcvd_total_compressed_message_size_bytes", "Compressed message bytes received per call attempt.", dto.MetricType_HISTOGRAM},
		call:     family{"grpc_client_call_duration_seconds", "Time taken by gRPC to complete an RPC from application's perspective.", dto.MetricType_HISTOGRAM},
	}
)

// Stream records the calls of one method on one side: the outbound listener's (passthrough
// streams and the local server's calls) or a client connection's. These are client_golang's
// lock-free counters and histograms rather than the OpenTelemetry SDK's instruments, whose every
// record resolves its attribute set anew: for the relay that cost as much CPU as relaying the
// stream, and grpc-go's instrumentation allocated some thirty times a call. The scrape reads
// them into gRFC A66's families (gather). A nil *Stream records nothing.
type Stream struct {
	side    *side
	labels  prometheus.Labels // grpc_method, and a client's grpc_target
	started prometheus.Counter
	ends    [numCodes]atomic.Pointer[streamEnd] // made on a code's first call
	// end is s.End, made once: handing the relay a method value would allocate per stream.
	end func(proxy.StreamEnd)
}

// streamEnd holds the histograms of one method's calls ended with one code.
type streamEnd struct {
	duration, sent, rcvd prometheus.Histogram
	call                 prometheus.Histogram // a client's whole call; nil on the server side
}

// methods holds each labelled method's Stream on one side.
type methods struct {
	side   *side
	target string   // a client connection's grpc_target; empty on the server side
	m      sync.Map // method (as on the wire, /pkg.Svc/Method) -> *Stream
	n      atomic.Int32
	other  atomic.Pointer[Stream]
}

// Stream counts a passthrough stream of method (/pkg.Svc/Method) started, and returns what
// records its end.
func (r *Registry) Stream(method string) *Stream {
	if r == nil {
		return nil
	}
	s := r.server.get(method)
	s.started.Inc()
	return s
}

// get returns method's Stream, made on its first call.
func (ms *methods) get(method string) *Stream {
	if v, ok := ms.m.Load(method); ok {
		return v.(*Stream)
	}
	if ms.n.Add(1) > maxMethods {
		ms.n.Add(-1)
		if s := ms.other.Load(); s != nil {
			return s
		}
		s := ms.newStream(otherMethod)
		if !ms.other.CompareAndSwap(nil, s) {
			return ms.other.Load()
		}
		return s
	}
	v, loaded := ms.m.LoadOrStore(method, ms.newStream(strings.TrimPrefix(method, "/")))
	if loaded {
		ms.n.Add(-1)
	}
	return v.(*Stream)
}

func (ms *methods) newStream(method string) *Stream {
	labels := prometheus.Labels{promMethod: method}
	if ms.target != "" {
		labels[promTarget] = ms.target
	}
	s := &Stream{side: ms.side, labels: labels, started: prometheus.NewCounter(prometheus.CounterOpts{
		Name: ms.side.started.name, Help: ms.side.started.help, ConstLabels: labels,
	})}
	s.end = s.End
	return s
}

// endsOf returns the histograms of s's calls ended with code index c.
func (s *Stream) endsOf(c int) *streamEnd {
	if e := s.ends[c].Load(); e != nil {
		return e
	}
	labels := prometheus.Labels{promStatus: statusName[c]}
	for k, v := range s.labels {
		labels[k] = v
	}
	hist := func(f family, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: f.name, Help: f.help, Buckets: buckets, ConstLabels: labels})
	}
	e := &streamEnd{
		duration: hist(s.side.duration, grpcotel.DefaultLatencyBounds),
		sent:     hist(s.side.sent, grpcotel.DefaultSizeBounds),
		rcvd:     hist(s.side.rcvd, grpcotel.DefaultSizeBounds),
	}
	if s.side.call.name != "" {
		e.call = hist(s.side.call, grpcotel.DefaultLatencyBounds)
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

// callFamilies reads the series of every side's calls, by family name.
func (r *Registry) callFamilies() map[string]*dto.MetricFamily {
	fams := map[string]*dto.MetricFamily{}
	add := func(f family, c prometheus.Metric) {
		if c == nil {
			return
		}
		mf := fams[f.name]
		if mf == nil {
			mf = &dto.MetricFamily{Name: &f.name, Help: &f.help, Type: f.typ.Enum()}
			fams[f.name] = mf
		}
		m := &dto.Metric{}
		if c.Write(m) == nil { // a counter or histogram of ours always writes
			mf.Metric = append(mf.Metric, m)
		}
	}
	read := func(s *Stream) {
		add(s.side.started, s.started)
		for c := range s.ends {
			if e := s.ends[c].Load(); e != nil {
				add(s.side.duration, e.duration)
				add(s.side.sent, e.sent)
				add(s.side.rcvd, e.rcvd)
				if e.call != nil {
					add(s.side.call, e.call)
				}
			}
		}
	}
	sides := []*methods{&r.server}
	r.mu.Lock()
	for _, ms := range r.clients {
		sides = append(sides, ms)
	}
	r.mu.Unlock()
	for _, ms := range sides {
		ms.m.Range(func(_, v any) bool {
			read(v.(*Stream))
			return true
		})
		if s := ms.other.Load(); s != nil {
			read(s)
		}
	}
	return fams
}

// gatherer is the sidecar's registry with the calls' families added.
type gatherer struct {
	reg *prometheus.Registry
	r   *Registry
}

// Gather adds the calls' families to the registry's, in its order (by name). No series is in
// both: the registry holds only the sidecar's own families and the Go and process collectors',
// and each label set of a call family has one Stream.
func (g gatherer) Gather() ([]*dto.MetricFamily, error) {
	fams, err := g.reg.Gather()
	for _, cf := range g.r.callFamilies() {
		slices.SortFunc(cf.Metric, func(a, b *dto.Metric) int { return cmp.Compare(labelKey(a), labelKey(b)) })
		i, _ := slices.BinarySearchFunc(fams, cf.GetName(), func(f *dto.MetricFamily, name string) int {
			return cmp.Compare(f.GetName(), name)
		})
		fams = slices.Insert(fams, i, cf)
	}
	return fams, err
}

// labelKey is a series' label pairs as one string, to order series by.
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
