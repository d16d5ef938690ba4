package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/durable"
	"github.com/restate-grpc/restate-grpc/internal/inbound"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestTraceContext: the caller's W3C trace context reaches the callee app through Restate; with
// Restate's tracing on (as in these tests), the callee's parent span is Restate's attempt span,
// which Restate exports.
func TestTraceContext(t *testing.T) {
	ctx := testCtx(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const callerSpan = "00f067aa0ba902b7"
	text := uniq(t, "traced")
	resp, _, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: text},
		"traceparent", "00-"+traceID+"-"+callerSpan+"-01", "tracestate", "vendor=abc")
	if err != nil {
		t.Fatal(err)
	}
	tp := resp.GetMetadata()["traceparent"]
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[1] != traceID {
		t.Fatalf("callee traceparent %q, want trace id %s", tp, traceID)
	}
	parent := parts[2]
	if parent == callerSpan {
		t.Errorf("callee's parent span is the caller's; want Restate's attempt span")
	}
	if got := resp.GetMetadata()["tracestate"]; got != "vendor=abc" {
		t.Errorf("callee tracestate %q, want vendor=abc", got)
	}
	// The parent span is one Restate exported (OTLP carries span ids as raw bytes).
	id, _ := hex.DecodeString(parent)
	eventually(t, 20*time.Second, "Restate exports the callee's parent span "+parent, func() bool {
		for _, b := range env.traces.exports() {
			if bytes.Contains(b, id) && bytes.Contains(b, []byte("invocation-attempt")) {
				return true
			}
		}
		return false
	})
}

// TestRegistration: registering the same schema again changes nothing; a changed schema is a
// new deployment that Restate uses at once.
func TestRegistration(t *testing.T) {
	ctx := testCtx(t)
	admin, err := restatehttp.NewAdmin(env.restate.Admin, restatehttp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(handlers string) *config.Inbound {
		c, err := config.Parse([]byte(fmt.Sprintf(`
inbound:
  app: %s
  services: [{name: rgtest.v1.Echo, as: rgtest.v1.EchoReg, handlers: {%s}}]
`, env.appAddr, handlers)))
		if err != nil {
			t.Fatal(err)
		}
		return c.Inbound
	}
	app, err := durable.DialPlaintext(env.appAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var current http.Handler
	hs := inbound.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.ServeHTTP(w, r) }))
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	uri := "http://" + l.Addr().String()

	v1, err := inbound.New(ctx, inbound.Options{Config: cfg(`Call: ""`), App: app, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	current = v1
	first, err := v1.Register(ctx, admin, uri)
	if err != nil {
		t.Fatal(err)
	}
	again, err := v1.Register(ctx, admin, uri)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Created || again.Created || again.ID != first.ID {
		t.Errorf("registrations: first %+v, again %+v; want created, then the same deployment unchanged", first, again)
	}
	c, _ := restatehttp.NewClient(env.restate.Ingress, restatehttp.Options{})
	call := func(handler string) error {
		_, err := c.Invoke(ctx, restatehttp.Invocation{Target: restatehttp.Target{Service: "rgtest.v1.EchoReg", Handler: handler}, Body: nil})
		return err
	}
	if err := call("Call"); err != nil {
		t.Fatalf("v1 Call: %v", err)
	}
	// Exposing another method changes the schema: a new deployment, used at once.
	v2, err := inbound.New(ctx, inbound.Options{Config: cfg(`Call: "", Bidi2: ""`), App: app, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if v2.Version() == v1.Version() {
		t.Fatalf("versions equal after a schema change: %s", v1.Version())
	}
	current = v2
	second, err := v2.Register(ctx, admin, uri)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Created || second.ID == first.ID {
		t.Errorf("changed schema registered as %+v, want a new deployment", second)
	}
	// Bidi2 is no method of the app: Restate now knows the handler and the app answers
	// Unimplemented, proof that the new schema is live.
	err = call("Bidi2")
	if err == nil || !strings.Contains(err.Error(), "Unimplemented") && !strings.Contains(err.Error(), "unknown method") {
		t.Errorf("v2 Bidi2: %v, want the app's Unimplemented (the handler exists in Restate)", err)
	}
}

// TestRegistrationRemoved: a deployment removed from Restate under a running inbound sidecar
// is registered again within a check interval, and its service answers again; until then the
// registered check fails.
func TestRegistrationRemoved(t *testing.T) {
	ctx := testCtx(t)
	sctx, stop := context.WithCancel(context.Background())
	s, err := startInbound(sctx, fmt.Sprintf(`
health: {checkInterval: 200ms}
inbound:
  app: %s
  listen: 127.0.0.1:%%d
  services: [{name: rgtest.v1.Echo, as: rgtest.v1.EchoRemoved, handlers: {Call: ""}}]
  register: {admin: %s, uri: "http://127.0.0.1:%%d"}
`, env.appAddr, env.restate.Admin))
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); s.Wait() })
	registered := func() (bool, string) {
		for _, c := range s.Checks() {
			if c.Name == "registered" {
				return c.OK, c.Detail
			}
		}
		return false, "no registered check"
	}
	_, detail := registered()
	id, ok := strings.CutPrefix(detail, "deployment ")
	if !ok {
		t.Fatalf("registered check says %q, want the deployment id", detail)
	}
	c, _ := restatehttp.NewClient(env.restate.Ingress, restatehttp.Options{})
	call := func() error {
		_, err := c.Invoke(ctx, restatehttp.Invocation{Target: restatehttp.Target{Service: "rgtest.v1.EchoRemoved", Handler: "Call"}})
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("before the removal: %v", err)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, env.restate.Admin+"/deployments/"+id+"?force=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE deployment %s: %s", id, resp.Status)
	}
	sawFail := false
	for {
		ok, detail := registered()
		if !ok {
			sawFail = true
		}
		if ok && sawFail {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("registered check after the removal: ok %v %q (failed meanwhile: %v); want it failed, then registered again", ok, detail, sawFail)
		}
		time.Sleep(time.Millisecond)
	}
	// Restate's schema reaches its ingress shortly after the admin API answers.
	for err := call(); err != nil; err = call() {
		if ctx.Err() != nil {
			t.Fatalf("after registering again: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIdentity: an endpoint with identity keys refuses unsigned requests, while Restate's signed
// ones pass (every durable test above goes through such an endpoint).
func TestIdentity(t *testing.T) {
	base := "http://" + env.inbound.InboundAddr().String()
	for _, path := range []string{"/discover", "/invoke/rgtest.v1.Echo/Call"} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+path, nil)
		if path == "/discover" {
			req.Method = http.MethodGet
		}
		req.Header.Set("Accept", "application/vnd.restate.endpointmanifest.v2+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("unsigned %s: HTTP %d, want 401", path, resp.StatusCode)
		}
	}
}
