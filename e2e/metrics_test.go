package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// metricsConfig is an outbound sidecar of its own for TestPrometheus, so that its numbers are
// the test's calls alone: one durable route, and TestService passed through to the app. Its
// bearer token is there for `sidecar status` to redact.
func metricsConfig() string {
	return fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  access: {bearerToken: metrics-test-secret}
  upstreams: {grpc.testing.TestService: %s}
  routes:
    - match: rgtest.v1.Echo/Call
`, env.restate.Ingress, env.appAddr)
}

// TestPrometheus: a real Prometheus server scrapes an outbound sidecar and the inbound one
// while calls go through Restate, and its query API gives back the numbers of the calls made:
// the sidecar's own metrics by route, mode and code, grpc-go's (gRFC A66) on the durable
// path and the inbound client to the app, the relay's under the same names, and the checks.
// Then `sidecar status` shows the same counts, the checks and the config, token redacted.
func TestPrometheus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, err := config.Parse([]byte(metricsConfig()))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	s, err := sidecar.Start(sctx, sidecar.Options{Config: cfg, Health: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); s.Wait() })
	out, in := s.HealthAddr().String(), env.inbound.HealthAddr().String()
	prom := testenv.StartPrometheus(t, map[string]string{"outbound": out, "inbound": in})
	query := func(expr string) (float64, bool) {
		t.Helper()
		res, err := prom.Query(ctx, expr)
		if err != nil {
			t.Fatal(err)
		}
		v, ok := res[""] // every query below sums to one series without labels
		return v, ok
	}
	// eventually waits until expr is want, for the scrapes after the calls to come in.
	eventually := func(expr string, want float64) {
		t.Helper()
		var got float64
		var found bool
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(testenv.ScrapeInterval / 2) {
			if got, found = query(expr); found && got == want {
				return
			}
		}
		t.Errorf("%s = %v (found %v), want %v", expr, got, found, want)
	}
	eventually(`sum(up{job="outbound"}) + sum(up{job="inbound"})`, 2)
	eventually(`sum(restate_grpc_check_ok{job="outbound",check="ingress"})`, 1)

	// The inbound sidecar has served the other tests: its numbers are counted from here.
	inbound := func(code string) string {
		return fmt.Sprintf(`sum(grpc_client_attempt_duration_seconds_count{job="inbound",grpc_method="rgtest.v1.Echo/Call",grpc_status=%q})`, code)
	}
	inNotFound, _ := query(inbound("NOT_FOUND"))
	inOK, _ := query(inbound("OK"))

	conn := dial(s)
	defer conn.Close()
	const calls, fails, sends, passed = 5, 2, 3, 4
	for i := range calls {
		if _, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: uniq(t, fmt.Sprint("ok", i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range fails {
		_, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: uniq(t, fmt.Sprint("fail", i)), FailCode: int32(codes.NotFound), FailMessage: "no such thing"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("failing call: got %v, want NotFound", err)
		}
	}
	for i := range sends {
		if _, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: uniq(t, fmt.Sprint("send", i))}, "restate-mode", "send"); err != nil {
			t.Fatal(err)
		}
	}
	tc := testgrpc.NewTestServiceClient(conn)
	for range passed {
		if _, err := tc.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatal(err)
		}
	}

	route := `job="outbound",restate_grpc_route="rgtest.v1.Echo/Call",restate_grpc_target_kind="service"`
	routeOnly := `job="outbound",restate_grpc_route="rgtest.v1.Echo/Call"` // the series without mode and code
	for _, c := range []struct {
		expr string
		want float64
	}{
		{`sum(restate_grpc_durable_calls_total{` + route + `,restate_grpc_mode="call",grpc_status="OK"})`, calls},
		{`sum(restate_grpc_durable_calls_total{` + route + `,restate_grpc_mode="call",grpc_status="NOT_FOUND"})`, fails},
		{`sum(restate_grpc_durable_calls_total{` + route + `,restate_grpc_mode="send",grpc_status="OK"})`, sends},
		{`sum(restate_grpc_durable_call_duration_seconds_count{` + route + `})`, calls + fails + sends},
		{`sum(restate_grpc_durable_sends_accepted_total{` + routeOnly + `})`, sends},
		{`sum(restate_grpc_durable_calls_in_flight{` + routeOnly + `})`, 0},
		// gRFC A66's server metrics on the durable path, labelled by method.
		{`sum(grpc_server_call_started_total{job="outbound",grpc_method="rgtest.v1.Echo/Call"})`, calls + fails + sends},
		{`sum(grpc_server_call_duration_seconds_count{job="outbound",grpc_method="rgtest.v1.Echo/Call",grpc_status="NOT_FOUND"})`, fails},
		// The relay's passthrough calls, under the same names.
		{`sum(grpc_server_call_started_total{job="outbound",grpc_method="grpc.testing.TestService/EmptyCall"})`, passed},
		{`sum(grpc_server_call_duration_seconds_count{job="outbound",grpc_method="grpc.testing.TestService/EmptyCall",grpc_status="OK"})`, passed},
		// The inbound client to the app: one attempt per call, the failures' code with them.
		{inbound("NOT_FOUND"), inNotFound + fails},
		{`sum(restate_grpc_check_ok{job="inbound",check="registered"})`, 1},
		{`sum(restate_grpc_connection_errors_total{job="outbound"}) or vector(0)`, 0},
	} {
		eventually(c.expr, c.want)
	}
	// Restate runs the sends after answering them: at least the calls and the sends reach the
	// app, and the other tests' delayed sends may come in as well.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(testenv.ScrapeInterval / 2) {
		got, _ := query(inbound("OK"))
		if got >= inOK+calls+sends {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s = %v, want at least %v", inbound("OK"), got, inOK+calls+sends)
			break
		}
	}
	// The histogram's buckets give a p99 within the calls' time (over the whole run: a rate
	// would see nothing of series that appeared with all their calls between two scrapes).
	p99, found := query(`histogram_quantile(0.99, sum by (le) (restate_grpc_durable_call_duration_seconds_bucket{job="outbound"}))`)
	if !found || !(p99 > 0 && p99 < 30) {
		t.Errorf("durable p99 = %v (found %v), want between 0 and 30s", p99, found)
	}

	t.Run("sidecar status", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(env.bin, "sidecar"), "status", "--health", out)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("sidecar status: %v\n%s", err, stderr.String())
		}
		got := stdout.String()
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`^sidecar at ` + regexp.QuoteMeta(out) + `: ready\n`),
			regexp.MustCompile(`(?m)^  outbound +ok +required +serving at `),
			regexp.MustCompile(`(?m)^  ingress +ok +optional +answering at `),
			regexp.MustCompile(`"bearerToken": "REDACTED"`),
			regexp.MustCompile(`"match": "rgtest.v1.Echo/Call"`),
			regexp.MustCompile(`(?m)^  ROUTE +MODE +TARGET +STATUS +CALLS +IN FLIGHT$`),
			regexp.MustCompile(fmt.Sprintf(`(?m)^  rgtest.v1.Echo/Call +call +service +NOT_FOUND +%d +0$`, fails)),
			regexp.MustCompile(fmt.Sprintf(`(?m)^  rgtest.v1.Echo/Call +call +service +OK +%d +0$`, calls)),
			regexp.MustCompile(fmt.Sprintf(`(?m)^  rgtest.v1.Echo/Call +send +service +OK +%d +0$`, sends)),
		} {
			if !want.MatchString(got) {
				t.Errorf("output does not match %s:\n%s", want, got)
			}
		}
		if strings.Contains(got, "metrics-test-secret") {
			t.Errorf("the bearer token is shown:\n%s", got)
		}
	})
}
