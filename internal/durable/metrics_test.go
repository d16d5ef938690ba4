package durable

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestDurableMetrics: the outbound path records each durable call by route and code, the
// re-attaches and the broken ingress connections under them, and the calls the relay itself
// answers under grpc-go's server metric names.
func TestDurableMetrics(t *testing.T) {
	tests := []struct {
		name   string
		md     []string
		code   codes.Code
		breaks int // connections the ingress breaks before it answers
		want   map[string]float64
	}{
		{"re-attached twice", []string{"k", "alice", "idempotency-key", "add-1"}, codes.OK, 2, map[string]float64{
			metrics.NameReattaches: 2, metrics.NameConnErrors: 2, "calls OK": 1, "calls UNAVAILABLE": 0}},
		{"no key, no re-attach", []string{"k", "alice"}, codes.Unavailable, 1, map[string]float64{
			metrics.NameReattaches: 0, metrics.NameConnErrors: 1, "calls OK": 0, "calls UNAVAILABLE": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ingress *fake
			ingress = newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
				if len(ingress.requests()) <= tc.breaks {
					conn, _, _ := w.(http.Hijacker).Hijack()
					conn.(*net.TCPConn).SetLinger(0)
					conn.Close()
					return
				}
				echoIngress(w, r, body)
			})
			reg, err := metrics.New()
			if err != nil {
				t.Fatal(err)
			}
			o := outboundOptions(t, routesYAML+"  unmatched: reject\n", ingress, nil)
			o.Metrics = reg
			out := serve(t, o)
			if _, _, err := out.do(testCtx(t), call{"Counter/Add", tc.md}); status.Code(err) != tc.code {
				t.Fatalf("call: got %v, want %v", err, tc.code)
			}
			// Not routed and unmatched calls rejected: the relay answers it.
			if _, err := testpb.NewNativeClient(out.conn).Greet(testCtx(t), &testpb.Req{}); status.Code(err) != codes.Unimplemented {
				t.Fatalf("unrouted call: got %v, want Unimplemented", err)
			}
			// The relay tells its observer of a stream's end after it has written the answer:
			// the rejected call's series may come a moment after the caller has its answer.
			rejected := map[string]string{"grpc_method": "rgtest.v1.Native/Greet", "grpc_status": "UNIMPLEMENTED"}
			var samples []metrics.Sample
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				w := httptest.NewRecorder()
				reg.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
				var err error
				if samples, err = metrics.ReadText(w.Body); err != nil {
					t.Fatal(err)
				}
				if v, _ := metrics.Sum(samples, "grpc_server_call_duration_seconds_count", rejected); v > 0 || time.Now().After(deadline) {
					break
				}
			}
			sum := func(name string, labels map[string]string) float64 {
				v, _ := metrics.Sum(samples, name, labels)
				return v
			}
			route := map[string]string{"restate_grpc_route": "rgtest.v1.Counter/*", "restate_grpc_target_kind": "object", "restate_grpc_mode": "call"}
			with := func(k, v string) map[string]string {
				m := map[string]string{k: v}
				for k, v := range route {
					m[k] = v
				}
				return m
			}
			got := map[string]float64{
				metrics.NameReattaches: sum(metrics.NameReattaches, nil),
				metrics.NameConnErrors: sum(metrics.NameConnErrors, map[string]string{"peer": "ingress"}),
				"calls OK":             sum(metrics.NameDurableCalls, with("grpc_status", "OK")),
				"calls UNAVAILABLE":    sum(metrics.NameDurableCalls, with("grpc_status", "UNAVAILABLE")),
			}
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s = %v, want %v", k, got[k], want)
				}
			}
			if v := sum(metrics.NameInFlight, map[string]string{"restate_grpc_route": "rgtest.v1.Counter/*"}); v != 0 {
				t.Errorf("in flight after the call = %v, want 0", v)
			}
			if v := sum("grpc_server_call_duration_seconds_count", rejected); v != 1 {
				t.Errorf("grpc_server_call_duration_seconds_count%v = %v, want 1", rejected, v)
			}
			// The local server's calls (gRFC A66) are labelled by method, the durable one too.
			if v := sum("grpc_server_call_started_total", map[string]string{"grpc_method": "rgtest.v1.Counter/Add"}); v != 1 {
				t.Errorf(`grpc_server_call_started_total{grpc_method="rgtest.v1.Counter/Add"} = %v, want 1`, v)
			}
		})
	}
}

// TestPassthroughMetricsCost: recording a passthrough call's metrics allocates nothing: a
// call through a relay with metrics allocates, in the whole process (caller, relay, upstream),
// no more than one without (AllocsPerRun rounds down: the background's few allocations over
// 500 calls do not count).
func TestPassthroughMetricsCost(t *testing.T) {
	_, pc, _ := passthroughApp(t)
	reg, err := metrics.New()
	if err != nil {
		t.Fatal(err)
	}
	allocs := map[bool]float64{}
	for _, on := range []bool{false, true} {
		o := Options{Config: pc, Logger: slog.New(slog.DiscardHandler)}
		if on {
			o.Metrics = reg
		}
		out := serve(t, o)
		ctx := context.Background()
		req := &testpb.Req{Text: "cost"}
		call := func() {
			if _, err := out.echo.Call(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
		for range 50 {
			call() // connections up, the label set seen
		}
		allocs[on] = testing.AllocsPerRun(500, call)
	}
	t.Logf("allocations per passthrough call, whole process: %v without metrics, %v with", allocs[false], allocs[true])
	if allocs[true] > allocs[false] {
		t.Errorf("a passthrough call allocates %v times with metrics, %v without: recording allocates", allocs[true], allocs[false])
	}
	w := httptest.NewRecorder()
	reg.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	samples, err := metrics.ReadText(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := metrics.Sum(samples, "grpc_server_call_duration_seconds_count", map[string]string{"grpc_method": "rgtest.v1.Echo/Call", "grpc_status": "OK"}); v < 550 {
		t.Errorf("the relay recorded %v calls, want at least 550", v)
	}
}
