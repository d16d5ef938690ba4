package metrics

import (
	"fmt"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
	if r.Handler() != nil || len(r.DialOptions()) != 0 || r.ObserveChecks(nil) != nil {
		t.Error("a nil Registry has a handler, dial options or checks")
	}
}

// TestRelayNamesMatchGRPC: the relay's series land in the families grpc-go's own instruments
// export, under the same help and type, and a series both record is their sum.
func TestRelayNamesMatchGRPC(t *testing.T) {
	r := newRegistry(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(r.ServerOption())
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	const method = "/grpc.health.v1.Health/Check"
	r.Stream(method).End(proxy.StreamEnd{Code: codes.OK, HasCode: true, RequestBytes: 3, ResponseBytes: 4, Duration: time.Millisecond})
	r.Stream(method).End(proxy.StreamEnd{Code: codes.NotFound, HasCode: true})

	// What the exporter makes of grpc-go's instruments alone.
	grpcFams, err := r.gather.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range grpcFams {
		byName[f.GetName()] = f
	}
	for _, f := range []relayFamily{famStarted, famDuration, famSent, famRcvd} {
		g := byName[f.name]
		if g == nil {
			t.Errorf("grpc-go's instruments export no %s", f.name)
			continue
		}
		if g.GetHelp() != f.help || g.GetType() != f.typ {
			t.Errorf("%s: the relay's help %q and type %v, grpc-go's %q and %v", f.name, f.help, f.typ, g.GetHelp(), g.GetType())
		}
	}

	got := scrape(t, r)
	ok := map[string]string{"grpc_method": "grpc.health.v1.Health/Check", "grpc_status": "OK"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"grpc_server_call_started_total", map[string]string{"grpc_method": "grpc.health.v1.Health/Check"}, 3},
		{"grpc_server_call_duration_seconds_count", ok, 2},
		{"grpc_server_call_duration_seconds_count", map[string]string{"grpc_method": "grpc.health.v1.Health/Check", "grpc_status": "NOT_FOUND"}, 1},
		{"grpc_server_call_rcvd_total_compressed_message_size_bytes_count", ok, 2},
		{"grpc_server_call_sent_total_compressed_message_size_bytes_count", ok, 2},
	} {
		if v, found := Sum(got, c.name, c.labels); !found || v != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, v, found, c.want)
		}
	}
	// One series per label set: the relay's and grpc-go's are summed, not listed twice.
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
