package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

var traceRatio = flag.Float64("trace-ratio", 0, "turn the sidecars' tracing on with this parent-based sampling ratio (0.1 is 10%), exporting over OTLP/gRPC to a receiver in this process; 0: tracing off. Sidecars built at -against REV get the same OTEL_* environment and ignore it if they predate tracing")

// startTracing sets the standard OTEL_* variables that the sidecars, in this process or
// started from it, read at their start, and returns a function that says how many spans
// arrived, so a run shows that its spans were really made and exported.
func startTracing(ratio float64) (spans func() string, stop func(), err error) {
	if ratio == 0 {
		return func() string { return "tracing off" }, func() {}, nil
	}
	if ratio < 0 || ratio > 1 {
		return nil, nil, fmt.Errorf("-trace-ratio %v: want a ratio from 0 to 1", ratio)
	}
	r, err := testenv.StartOTLPReceiver()
	if err != nil {
		return nil, nil, err
	}
	r.Discard()
	for k, v := range map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + r.GRPCAddr,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     strconv.FormatFloat(ratio, 'f', -1, 64),
	} {
		os.Setenv(k, v)
	}
	return func() string {
		return fmt.Sprintf("tracing on, %v sampled: %d spans received", ratio, r.Count())
	}, r.Close, nil
}
