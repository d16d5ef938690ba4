package metrics

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcotel "google.golang.org/grpc/stats/opentelemetry"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/proxy"
)

var testRoutes = []config.Route{
	{Match: "greet.Greeter/*", Target: config.KindService, Mode: config.ModeCall},
	{Match: "cart.Cart/*", Target: config.KindObject, Mode: config.ModeSend},
}

func newRegistry(t *testing.T) *Registry {
	t.Helper()
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func scrape(t *testing.T, r *Registry) []Sample {
	t.Helper()
	w := httptest.NewRecorder()
	r.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	s, err := ReadText(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestExposition records through every path and reads the numbers back in Prometheus's
// format, under the names and labels README documents.
func TestExposition(t *testing.T) {
	r := newRegistry(t)
	routes := r.Routes(testRoutes)
	for range 3 {
		routes[0].Start().End(false, nil)
	}
	routes[0].Start().End(false, status.Error(codes.NotFound, "no such greeting"))
	routes[1].Start().End(true, nil)
	routes[1].Start().End(false, nil) // a call on a send route, its mode overridden
	routes[1].Start()                 // still in flight
	r.Reattach()
	r.IngressError()
	r.AppError()
	r.AppError()
	r.RefusedStream(http2.ErrCodeRefusedStream)
	r.PeerClosed(false, http2.ErrCodeEnhanceYourCalm)
	r.PeerClosed(true, http2.ErrCode(99))
	s := r.Stream("/echo.Echo/Say")
	s.EndFunc()(proxy.StreamEnd{Code: codes.OK, HasCode: true, RequestBytes: 10, ResponseBytes: 20, Duration: time.Millisecond})
	r.Stream("/echo.Echo/Say").End(proxy.StreamEnd{Reset: true, ResetCode: http2.ErrCodeCancel})
	if err := r.ObserveChecks(func() []Check { return []Check{{"registered", true}, {"app", false}} }); err != nil {
		t.Fatal(err)
	}

	got := scrape(t, r)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{NameDurableCalls, map[string]string{promRoute: "greet.Greeter/*", promMode: "call", promTargetKind: "service", promStatus: "OK"}, 3},
		{NameDurableCalls, map[string]string{promRoute: "greet.Greeter/*", promStatus: "NOT_FOUND"}, 1},
		{NameDurableCalls, map[string]string{promRoute: "cart.Cart/*", promMode: "send", promTargetKind: "object", promStatus: "OK"}, 1},
		{NameDurableCalls, map[string]string{promRoute: "cart.Cart/*", promMode: "call"}, 1},
		{NameDurableDuration + "_count", map[string]string{promRoute: "greet.Greeter/*"}, 4},
		{NameInFlight, map[string]string{promRoute: "cart.Cart/*"}, 1},
		{NameInFlight, map[string]string{promRoute: "greet.Greeter/*"}, 0},
		{NameSendsAccepted, map[string]string{promRoute: "cart.Cart/*"}, 1},
		{NameReattaches, nil, 1},
		{NameConnErrors, map[string]string{"peer": "ingress"}, 1},
		{NameConnErrors, map[string]string{"peer": "app"}, 2},
		{NameRefusedStreams, map[string]string{"reason": "REFUSED_STREAM"}, 1},
		{NamePeerCloses, map[string]string{"peer": "downstream", "reason": "ENHANCE_YOUR_CALM"}, 1},
		{NamePeerCloses, map[string]string{"peer": "upstream", "reason": "UNKNOWN"}, 1},
		{NameCheckOK, map[string]string{"check": "registered"}, 1},
		{NameCheckOK, map[string]string{"check": "app"}, 0},
		{"grpc_server_call_started_total", map[string]string{"grpc_method": "echo.Echo/Say"}, 2},
		{"grpc_server_call_duration_seconds_count", map[string]string{"grpc_method": "echo.Echo/Say", "grpc_status": "OK"}, 1},
		{"grpc_server_call_duration_seconds_count", map[string]string{"grpc_method": "echo.Echo/Say", "grpc_status": "CANCELLED"}, 1},
		{"grpc_server_call_rcvd_total_compressed_message_size_bytes_sum", map[string]string{"grpc_method": "echo.Echo/Say"}, 10},
		{"grpc_server_call_sent_total_compressed_message_size_bytes_sum", map[string]string{"grpc_method": "echo.Echo/Say"}, 20},
		{"go_goroutines", nil, -1}, // -1: present, any value above 0
		{"process_resident_memory_bytes", nil, -1},
	} {
		v, found := Sum(got, c.name, c.labels)
		if c.want < 0 {
			if !found || v <= 0 {
				t.Errorf("%s = %v (found %v), want a value above 0", c.name, v, found)
			}
			continue
		}
		if !found || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, found, c.want)
		}
	}
	if t.Failed() {
		for _, s := range got {
			t.Logf("%s %v %v", s.Name, s.Labels, s.Value)
		}
	}
}

// TestMethodsBounded: callers choose passthrough methods, so past maxMethods the new ones
// share one label set, "other".
func TestMethodsBounded(t *testing.T) {
	r := newRegistry(t)
	for i := range maxMethods + 10 {
		r.Stream("/svc.S/M" + string(rune('a'+i%26)) + time.Duration(i).String()).End(proxy.StreamEnd{HasCode: true})
	}
	r.Stream("/svc.S/Ma0s").End(proxy.StreamEnd{HasCode: true}) // the first method stays labelled
	got := scrape(t, r)
	methods := map[string]bool{}
	for _, s := range got {
		if s.Name == "grpc_server_call_started_total" {
			methods[s.Labels["grpc_method"]] = true
		}
	}
	if n := len(methods); n != maxMethods+1 {
		t.Errorf("%d methods labelled, want %d (maxMethods and other)", n, maxMethods+1)
	}
	if v, _ := Sum(got, "grpc_server_call_started_total", map[string]string{"grpc_method": otherMethod}); v != 10 {
		t.Errorf("streams labelled other = %v, want 10", v)
	}
}

// TestRecordingAllocs: once a label set has been seen, recording allocates nothing.
func TestRecordingAllocs(t *testing.T) {
	r := newRegistry(t)
	routes := r.Routes(testRoutes)
	notFound := status.Error(codes.NotFound, "no")
	end := proxy.StreamEnd{Code: codes.Unavailable, HasCode: true, RequestBytes: 5, ResponseBytes: 7, Duration: time.Millisecond}
	for _, c := range []struct {
		name string
		fn   func()
	}{
		{"durable call OK", func() { routes[0].Start().End(false, nil) }},
		{"durable call failed", func() { routes[0].Start().End(false, notFound) }},
		{"send accepted", func() { routes[1].Start().End(true, nil) }},
		{"passthrough stream", func() { r.Stream("/echo.Echo/Say").EndFunc()(end) }},
		{"passthrough stream reset", func() { r.Stream("/echo.Echo/Say").End(proxy.StreamEnd{Reset: true, ResetCode: http2.ErrCodeCancel}) }},
		{"refused stream", func() { r.RefusedStream(http2.ErrCodeRefusedStream) }},
		{"peer closed", func() { r.PeerClosed(true, http2.ErrCodeProtocol) }},
		{"re-attach", r.Reattach},
		{"ingress error", r.IngressError},
		{"app error", r.AppError},
	} {
		c.fn() // the label set is seen
		if got := testing.AllocsPerRun(100, c.fn); got != 0 {
			t.Errorf("%s: %v allocations per call, want 0", c.name, got)
		}
	}
}

// TestNilRegistry: without a Registry every path records nothing and does not fail.
func TestNilRegistry(t *testing.T) {
	var r *Registry
	routes := r.Routes(testRoutes)
	if len(routes) != len(testRoutes) || routes[0] != nil {
		t.Fatalf("a nil Registry's routes: %v, want %d nils", routes, len(testRoutes))
	}
	routes[0].Start().End(true, nil)
	r.Stream("/a.B/C").End(proxy.StreamEnd{})
	if f := r.Stream("/a.B/C").EndFunc(); f != nil {
		t.Error("a nil Registry's stream has an end func")
	}
	r.Reattach()
	r.RefusedStream(0)
	r.PeerClosed(false, 0)
	if r.Handler() != nil || len(r.DialOptions("app:1")) != 0 || r.ObserveChecks(nil) != nil {
		t.Error("a nil Registry has a handler, dial options or checks")
	}
}

// healthCall serves grpc-go's health service with so and calls it once through a connection
// with do; it returns the allocations of a call like it, on both sides.
func healthCall(t *testing.T, so []grpc.ServerOption, do []grpc.DialOption) float64 {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(so...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), append(do, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	// The server records a call's end after it has answered: GracefulStop waits for that.
	defer srv.GracefulStop()
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	call := func() {
		// An unknown service: NOT_FOUND, with a request of a few bytes.
		if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "svc"}); status.Code(err) != codes.NotFound {
			t.Fatalf("health check: %v, want NOT_FOUND", err)
		}
	}
	call()
	return testing.AllocsPerRun(50, call) // the first call's series are kept apart below
}

// TestNamesMatchGRPC: the server's and the client's series are gRFC A66's, with the names,
// help, types and numbers grpc-go's own OpenTelemetry instrumentation exports for the same call.
func TestNamesMatchGRPC(t *testing.T) {
	reg, so, do := grpcInstrumentation(t)
	healthCall(t, so, do)
	want, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}

	r := newRegistry(t)
	healthCall(t, []grpc.ServerOption{r.ServerOption()}, r.DialOptions("target"))
	got, err := r.gather.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := func(fams []*dto.MetricFamily) map[string]*dto.MetricFamily {
		m := map[string]*dto.MetricFamily{}
		for _, f := range fams {
			m[f.GetName()] = f
		}
		return m
	}
	w, g := byName(want), byName(got)
	// grpc-go labels the method by name on the server only for a registered service, and its
	// target as the channel's canonical one; the numbers are the same.
	sum := func(f *dto.MetricFamily) (n uint64, bytes float64) {
		for _, m := range f.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				n, bytes = n+h.GetSampleCount(), bytes+h.GetSampleSum()
			} else {
				n += uint64(m.GetCounter().GetValue())
			}
		}
		return n, bytes
	}
	for _, sd := range []side{serverSide, clientSide} {
		for _, f := range []family{sd.started, sd.duration, sd.sent, sd.rcvd, sd.call} {
			if f.name == "" {
				continue
			}
			wf, gf := w[f.name], g[f.name]
			if wf == nil || gf == nil {
				t.Errorf("%s: grpc-go exports %v, the sidecar %v; want both", f.name, wf != nil, gf != nil)
				continue
			}
			if gf.GetHelp() != wf.GetHelp() || gf.GetType() != wf.GetType() {
				t.Errorf("%s: help %q, type %v; grpc-go's %q, %v", f.name, gf.GetHelp(), gf.GetType(), wf.GetHelp(), wf.GetType())
			}
			wn, wb := sum(wf)
			gn, gb := sum(gf)
			if f.typ == dto.MetricType_HISTOGRAM && f != sd.duration && f != sd.call && gb != wb || gn != wn {
				t.Errorf("%s: %d samples, %v bytes; grpc-go's %d, %v", f.name, gn, gb, wn, wb)
			}
		}
	}
	labels := map[string]string{}
	for _, l := range g[clientSide.duration.name].GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if wantLabels := map[string]string{"grpc_method": "grpc.health.v1.Health/Check", "grpc_target": "target", "grpc_status": "NOT_FOUND"}; !maps.Equal(labels, wantLabels) {
		t.Errorf("client attempt labels %v, want %v", labels, wantLabels)
	}
}

// grpcInstrumentation is grpc-go's own OpenTelemetry instrumentation, exported as the sidecar
// exports its metrics: the registry it exports to and its server and dial options.
func grpcInstrumentation(t *testing.T) (*prometheus.Registry, []grpc.ServerOption, []grpc.DialOption) {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo())
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	opts := grpcotel.Options{MetricsOptions: grpcotel.MetricsOptions{MeterProvider: mp}}
	return reg, []grpc.ServerOption{grpcotel.ServerOption(opts)},
		[]grpc.DialOption{grpcotel.DialOption(opts), grpc.WithDefaultCallOptions(grpc.StaticMethod())}
}

// TestRelayShares: the relay's streams and the local server's calls of one method share its
// series.
func TestRelayShares(t *testing.T) {
	r := newRegistry(t)
	healthCall(t, []grpc.ServerOption{r.ServerOption()}, nil)
	const method = "/grpc.health.v1.Health/Check"
	r.Stream(method).End(proxy.StreamEnd{Code: codes.NotFound, HasCode: true})
	got := scrape(t, r)
	key := map[string]string{"grpc_method": "grpc.health.v1.Health/Check"}
	// healthCall's first call, AllocsPerRun's warm-up and its 50, and the relayed stream.
	if v, _ := Sum(got, "grpc_server_call_started_total", key); v != 53 {
		t.Errorf("calls started %v, want 53 (52 served, 1 relayed)", v)
	}
	// Two connections to one target record into one set of series.
	r.DialOptions("app:1")
	r.DialOptions("app:1")
	if n := len(r.clients); n != 1 {
		t.Errorf("two connections to one target made %d client series sets, want 1", n)
	}
	seen := map[string]bool{}
	for _, s := range got {
		k := fmt.Sprint(s.Name, s.Labels)
		if seen[k] {
			t.Errorf("series %s listed twice", k)
		}
		seen[k] = true
	}
}

// BenchmarkStream is what the relay's observer records per passthrough stream.
func BenchmarkStream(b *testing.B) {
	r, err := New()
	if err != nil {
		b.Fatal(err)
	}
	end := proxy.StreamEnd{Code: codes.OK, HasCode: true, RequestBytes: 5, ResponseBytes: 7, Duration: time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		r.Stream("/echo.Echo/Say").EndFunc()(end)
	}
}
