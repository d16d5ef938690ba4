package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	var n atomic.Int64
	srv := countingCollector(&n)
	go srv.Serve(l)
	for k, v := range map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + l.Addr().String(),
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     strconv.FormatFloat(ratio, 'f', -1, 64),
	} {
		os.Setenv(k, v)
	}
	return func() string {
		return fmt.Sprintf("tracing on, %v sampled: %d spans received", ratio, n.Load())
	}, srv.Stop, nil
}

// countingCollector is an OTLP/gRPC trace collector that counts the spans of each export off
// the wire and keeps nothing. A collector runs on other machines, as a rule; here it shares the
// benchmark's two cores, so it must cost next to nothing, or the sidecar's tracing would be
// charged with the collector's work (decoding every span cost more than making it).
func countingCollector(n *atomic.Int64) *grpc.Server {
	return grpc.NewServer(grpc.ForceServerCodecV2(rawcodec.Codec), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var req []byte
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		n.Add(int64(countSpans(req)))
		return stream.SendMsg(&[]byte{}) // an ExportTraceServiceResponse with no fields
	}))
}

// countSpans counts the spans of an ExportTraceServiceRequest: resource_spans (1) ->
// scope_spans (2) -> spans (2).
func countSpans(b []byte) int {
	n := 0
	for rs := range fields(b, 1) {
		for ss := range fields(rs, 2) {
			for range fields(ss, 2) {
				n++
			}
		}
	}
	return n
}

// fields yields the length-delimited fields numbered num of the message b.
func fields(b []byte, num protowire.Number) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			f, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return
			}
			b = b[n:]
			if typ == protowire.BytesType && f == num {
				v, m := protowire.ConsumeBytes(b)
				if m < 0 || !yield(v) {
					return
				}
				b = b[m:]
				continue
			}
			if m := protowire.ConsumeFieldValue(f, typ, b); m >= 0 {
				b = b[m:]
			} else {
				return
			}
		}
	}
}
