package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
	"github.com/restate-grpc/restate-grpc/internal/testlog"
	"github.com/restate-grpc/restate-grpc/internal/testservice"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// closedAddr is an address nothing listens on: connections to it are refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	l := listen(t)
	l.Close()
	return l.Addr().String()
}

// probeHealth asks path and sums up the answer as "CODE STATUS name:ok name:fail ..." for a
// JSON report ("unprobed" for a probe that has not run yet), "CODE BODY" for any other answer.
func probeHealth(health, path string) string {
	resp, err := http.Get("http://" + health + path)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/json" {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprint(resp.StatusCode, " ", strings.TrimSpace(string(b)))
	}
	var r sidecar.Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "body: " + err.Error()
	}
	out := []string{fmt.Sprint(resp.StatusCode), r.Status}
	for _, c := range r.Checks {
		state := "fail"
		switch {
		case c.OK:
			state = "ok"
		case c.Detail == "not probed yet": // a fail that says nothing of the app or the ingress
			state = "unprobed"
		}
		out = append(out, c.Name+":"+state)
	}
	return strings.Join(out, " ")
}

// eventuallyHealth polls path until it sums up as want, for at most 20s (the inbound side
// retries reading the app's services with a backoff of up to 5s), and returns what it saw last.
func eventuallyHealth(health, path, want string) string {
	var got string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = probeHealth(health, path); got == want {
			break
		}
	}
	return got
}

// fakeAdmin is a Restate admin API that registers any deployment.
func fakeAdmin(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/deployments/dp_test" {
			fmt.Fprint(w, `{"id": "dp_test"}`) // still registered
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != "/deployments" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id": "dp_test", "services": [{"name": "`+testpb.Echo_ServiceDesc.ServiceName+`"}]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestReadinessApp: an inbound sidecar is ready only while its app answers and its
// deployment is registered; an unreachable ingress shows, but does not make it unready by
// default. The app goes down, comes up, and goes down again on one address.
func TestReadinessApp(t *testing.T) {
	app := closedAddr(t)
	_, health := start(t, fmt.Sprintf(`
health: {checkInterval: 100ms}
outbound: {listen: 127.0.0.1:0, ingress: http://%s}
inbound:
  app: %s
  listen: 127.0.0.1:0
  services: [{name: %s}]
  register: {admin: %s, uri: http://127.0.0.1:9080}
`, closedAddr(t), app, testpb.Echo_ServiceDesc.ServiceName, fakeAdmin(t)))
	var srv interface{ Stop() }
	for _, tc := range []struct {
		name string
		step func(t *testing.T)
		path string
		want string
	}{
		{"app not started", func(*testing.T) {}, "/readyz",
			"503 unready outbound:ok ingress:fail inbound:fail registered:fail app:fail"},
		{"liveness while unready", func(*testing.T) {}, "/healthz",
			"200 alive outbound:ok ingress:fail inbound:fail registered:fail app:fail"},
		{"outbound while unready", func(*testing.T) {}, "/readyz/outbound", "200 ready"},
		{"app up", func(t *testing.T) {
			l, err := net.Listen("tcp", app)
			if err != nil {
				t.Fatal(err)
			}
			srv = testservice.NewApp().Serve(l)
		}, "/readyz", "200 ready outbound:ok ingress:fail inbound:ok registered:ok app:ok"},
		{"app down again", func(*testing.T) { srv.Stop() }, "/readyz",
			"503 unready outbound:ok ingress:fail inbound:ok registered:ok app:fail"},
	} {
		tc.step(t)
		if got := eventuallyHealth(health, tc.path, tc.want); got != tc.want {
			t.Errorf("%s: GET %s = %q, want %q", tc.name, tc.path, got, tc.want)
		}
	}
}

// TestReadinessIngress: health.requireIngress decides whether an unreachable ingress makes
// an outbound sidecar unready; the check shows either way.
func TestReadinessIngress(t *testing.T) {
	restate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/restate/health" {
			http.NotFound(w, r)
		}
	}))
	defer restate.Close()
	for _, tc := range []struct {
		name    string
		require bool
		ingress string
		want    string
	}{
		{"unreachable, not required", false, "http://" + closedAddr(t), "200 ready outbound:ok ingress:fail"},
		{"unreachable, required", true, "http://" + closedAddr(t), "503 unready outbound:ok ingress:fail"},
		{"reachable, required", true, restate.URL, "200 ready outbound:ok ingress:ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, health := start(t, fmt.Sprintf(`
health: {checkInterval: 100ms, requireIngress: %t}
outbound: {listen: 127.0.0.1:0, ingress: %s}
`, tc.require, tc.ingress))
			if got := eventuallyHealth(health, "/readyz", tc.want); got != tc.want {
				t.Errorf("GET /readyz = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDrainingUnready: once its context ends, a sidecar answers /readyz 503 "draining" while a
// call in flight finishes, and stops cleanly after it.
func TestDrainingUnready(t *testing.T) {
	appL := listen(t)
	app := testservice.NewApp()
	srv := app.Serve(appL)
	defer srv.Stop()
	c, err := config.Parse(fmt.Appendf(nil, "outbound: {listen: 127.0.0.1:0, upstreams: {%s: %s}}", testpb.Echo_ServiceDesc.ServiceName, appL.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	healthL := listen(t)
	s, err := sidecar.Start(ctx, sidecar.Options{Config: c, Listeners: sidecar.Listeners{Outbound: listen(t), Health: healthL},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	health := healthL.Addr().String()
	cc, err := grpc.NewClient(s.OutboundAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	called := make(chan error, 1)
	go func() {
		_, err := testpb.NewEchoClient(cc).Call(context.Background(), &testpb.Req{Text: "slow", SleepMs: 1500})
		called <- err
	}()
	for !app.Running("slow") { // in flight when the drain starts
		time.Sleep(10 * time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		step func()
		want string
	}{
		{"serving", func() {}, "200 ready outbound:ok"},
		{"draining", cancel, "503 unready outbound:fail"},
	} {
		tc.step()
		if got := eventuallyHealth(health, "/readyz", tc.want); got != tc.want {
			t.Errorf("%s: GET /readyz = %q, want %q", tc.name, got, tc.want)
		}
	}
	if err := <-called; err != nil {
		t.Errorf("call in flight while draining: %v, want it answered", err)
	}
	if err := s.Wait(); err != nil {
		t.Errorf("Wait after a clean drain: %v, want nil", err)
	}
}

// TestAppStateLogs: an app that goes down logs one WARN, and one INFO when it is back, however
// many probes see it down.
func TestAppStateLogs(t *testing.T) {
	l := listen(t)
	app := l.Addr().String()
	srv := testservice.NewApp().Serve(l)
	c, err := config.Parse(fmt.Appendf(nil, `
health: {checkInterval: 100ms}
inbound: {app: %s, listen: 127.0.0.1:0, services: [{name: %s}]}
`, app, testpb.Echo_ServiceDesc.ServiceName))
	if err != nil {
		t.Fatal(err)
	}
	var buf testlog.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	healthL := listen(t)
	s, err := sidecar.Start(ctx, sidecar.Options{Config: c, Listeners: sidecar.Listeners{Health: healthL},
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn - 4})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); s.Wait() }()
	health := healthL.Addr().String()
	for _, tc := range []struct {
		name string
		step func()
		want string
	}{
		{"up", func() {}, "200 ready inbound:ok app:ok"},
		{"down", srv.Stop, "503 unready inbound:ok app:fail"},
		{"back", func() {
			l, err := net.Listen("tcp", app)
			if err != nil {
				t.Fatal(err)
			}
			srv = testservice.NewApp().Serve(l)
		}, "200 ready inbound:ok app:ok"},
	} {
		tc.step()
		if got := eventuallyHealth(health, "/readyz", tc.want); got != tc.want {
			t.Errorf("%s: GET /readyz = %q, want %q", tc.name, got, tc.want)
		}
		time.Sleep(500 * time.Millisecond) // five more probes, which must log nothing more
	}
	srv.Stop()
	var got []string
	for line := range strings.Lines(buf.String()) {
		if level, msg := fieldOf(line, "level"), fieldOf(line, "msg"); strings.Contains(msg, "app ") || level == "ERROR" {
			got = append(got, level+" "+msg)
		}
	}
	want := []string{`WARN app not answering; Restate retries its calls`, `INFO app answering again`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// fieldOf is the value of key in a text log line, unquoted.
func fieldOf(line, key string) string {
	_, v, _ := strings.Cut(line, " "+key+"=")
	if q, ok := strings.CutPrefix(v, `"`); ok {
		v, _, _ = strings.Cut(q, `"`)
		return v
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

// TestConfigEndpoint: /config serves the effective config, defaults filled in, with the bearer
// tokens redacted and the config the sidecar runs on left as it was.
func TestConfigEndpoint(t *testing.T) {
	yaml := fmt.Sprintf(`
outbound: {listen: 127.0.0.1:0, ingress: http://%s, access: {bearerToken: out-secret}}
inbound:
  app: %s
  listen: 127.0.0.1:0
  register: {admin: http://%s, uri: "http://127.0.0.1:1", access: {bearerToken: in-secret}}
  services: [{name: rgtest.v1.Echo}]
`, closedAddr(t), closedAddr(t), closedAddr(t))
	_, health := start(t, yaml)
	resp, err := http.Get("http://" + health + "/config")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /config: %s %s %s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if strings.Contains(string(body), "secret") {
		t.Errorf("/config shows a token: %s", body)
	}
	var got config.Config
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"outbound.access.bearerToken", got.Outbound.Access.BearerToken, "REDACTED"},
		{"inbound.register.access.bearerToken", got.Inbound.Register.Access.BearerToken, "REDACTED"},
		{"outbound.unmatched, a default", got.Outbound.Unmatched, config.UnmatchedPassthrough},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	orig, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if r := sidecar.Redacted(orig); orig.Outbound.Access.BearerToken != "out-secret" || orig.Inbound.Register.Access.BearerToken != "in-secret" || r == orig {
		t.Error("Redacted changed the config it was given")
	}
}

// TestMetricsEndpoint: /metrics shows the checks, and an unreachable ingress as connection
// errors.
func TestMetricsEndpoint(t *testing.T) {
	_, health := start(t, fmt.Sprintf("health: {checkInterval: 100ms}\noutbound: {listen: 127.0.0.1:0, ingress: http://%s}\n", closedAddr(t)))
	var samples []metrics.Sample
	value := func(name, label, v string) float64 {
		if got, found := metrics.Sum(samples, name, map[string]string{label: v}); found {
			return got
		}
		return -1 // none
	}
	var errs float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + health + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		samples, err = metrics.ReadText(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if errs = value(metrics.NameConnErrors, "peer", "ingress"); errs >= 2 {
			break
		}
	}
	if errs < 2 {
		t.Errorf("%s{peer=ingress} = %v after 10s of probes of a closed port, want at least 2", metrics.NameConnErrors, errs)
	}
	for _, c := range []struct {
		check string
		want  float64
	}{{"outbound", 1}, {"ingress", 0}} {
		if got := value(metrics.NameCheckOK, "check", c.check); got != c.want {
			t.Errorf("%s{check=%s} = %v, want %v", metrics.NameCheckOK, c.check, got, c.want)
		}
	}
}
