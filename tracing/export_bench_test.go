package tracing_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/tracing"
)

// cpuTime is the process's CPU time: a span's cost includes its export, on the exporter's
// goroutine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discard is an OTLP/gRPC receiver that reads each export's bytes and decodes nothing.
func discard(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawcodec.Codec), grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
		var m []byte
		if err := s.RecvMsg(&m); err != nil {
			return err
		}
		return s.SendMsg(&[]byte{})
	}))
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	return "http://" + l.Addr().String()
}

// BenchmarkExportedSpan is a passthrough stream's sampled span, from its start to its
// export over OTLP/gRPC: cpu-ns/span counts the exporter's goroutine too.
func BenchmarkExportedSpan(b *testing.B) {
	one := 1.0
	p, err := tracing.Setup(context.Background(), tracing.Options{Config: &config.Tracing{OTLPEndpoint: discard(b), SamplingRatio: &one}, Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	tr := tracing.Tracer(p.TracerProvider())
	flush := p.TracerProvider().(interface{ ForceFlush(context.Context) error })
	b.ReportAllocs()
	start := cpuTime()
	n := 0
	for b.Loop() {
		tracing.StartRelay(context.Background(), tr, "/bench.v1.Echo/Call", "127.0.0.1:9000").End(codes.OK)
		if n++; n%500 == 0 {
			flush.ForceFlush(context.Background())
		}
	}
	flush.ForceFlush(context.Background())
	b.ReportMetric(float64(cpuTime()-start)/float64(n), "cpu-ns/span")
}
