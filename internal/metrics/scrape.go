package metrics

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Prometheus names of the sidecar's own metrics, as the exporter writes them.
const (
	NameDurableCalls    = "restate_grpc_durable_calls_total"
	NameDurableDuration = "restate_grpc_durable_call_duration_seconds"
	NameInFlight        = "restate_grpc_durable_calls_in_flight"
	NameSendsAccepted   = "restate_grpc_durable_sends_accepted_total"
	NameReattaches      = "restate_grpc_durable_reattaches_total"
	NameConnErrors      = "restate_grpc_connection_errors_total"
	NameRefusedStreams  = "restate_grpc_relay_refused_streams_total"
	NamePeerCloses      = "restate_grpc_relay_peer_closes_total"
	NameCheckOK         = "restate_grpc_check_ok"
)

// Sample is one series of a scrape: a counter's or gauge's value, or a histogram's count
// (Name ends in _count) or sum (_sum).
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ReadText reads a scrape in Prometheus's text format.
func ReadText(r io.Reader) ([]Sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	var out []Sample
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out = append(out, Sample{name, labels, m.GetCounter().GetValue()})
			case dto.MetricType_GAUGE:
				out = append(out, Sample{name, labels, m.GetGauge().GetValue()})
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out = append(out, Sample{name + "_count", labels, float64(h.GetSampleCount())}, Sample{name + "_sum", labels, h.GetSampleSum()})
			}
		}
	}
	return out, nil
}

// Sum adds up the series of name whose labels include labels; found says whether there was any.
func Sum(samples []Sample, name string, labels map[string]string) (v float64, found bool) {
next:
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		for k, want := range labels {
			if s.Labels[k] != want {
				continue next
			}
		}
		v, found = v+s.Value, true
	}
	return v, found
}

// RouteCounts are one route's durable calls by mode and status, as `sidecar status` shows them.
type RouteCounts struct {
	Route, Mode, TargetKind, Status string
	Calls                           float64
}

// Prometheus label names of the sidecar's own label keys.
const (
	promRoute      = "restate_grpc_route"
	promMode       = "restate_grpc_mode"
	promTargetKind = "restate_grpc_target_kind"
	promStatus     = "grpc_status"
	promMethod     = "grpc_method"
	promTarget     = "grpc_target"
)

// Routes returns the durable calls of a scrape by route, mode and status, ordered by route.
func Routes(samples []Sample) []RouteCounts {
	var out []RouteCounts
	for _, s := range samples {
		if s.Name != NameDurableCalls {
			continue
		}
		l := s.Labels
		out = append(out, RouteCounts{l[promRoute], l[promMode], l[promTargetKind], l[promStatus], s.Value})
	}
	slices.SortFunc(out, func(a, b RouteCounts) int {
		return cmp.Or(cmp.Compare(a.Route, b.Route), cmp.Compare(a.Mode, b.Mode), cmp.Compare(a.Status, b.Status))
	})
	return out
}

// InFlight returns the durable calls in flight of a scrape by route.
func InFlight(samples []Sample) map[string]float64 {
	out := map[string]float64{}
	for _, s := range samples {
		if s.Name == NameInFlight {
			out[s.Labels[promRoute]] += s.Value
		}
	}
	return out
}
