package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestTraceAcrossRestate: one trace from the caller to the callee app, every span under the
// one before it: the outbound sidecar's client span (OTLP/HTTP), Restate's ingress,
// invocation-start and one attempt span per attempt, and per attempt the inbound sidecar's
// server span and its client span (OTLP/gRPC), which is the app's parent. The app fails the
// first attempt with a retryable code, so the invocation has two attempts, and the server
// spans are numbered 1 and 2 (restate.invocation.attempt).
func TestTraceAcrossRestate(t *testing.T) {
	ctx := testCtx(t)
	rcv, err := testenv.StartOTLPReceiver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.Close)
	_, err = startInbound(ctx, fmt.Sprintf(`
inbound:
  app: %s
  listen: 127.0.0.1:%%d
  identityKeys: [%s]
  register: {admin: %s, uri: "http://127.0.0.1:%%d"}
  services: [{name: rgtest.v1.Echo, as: rgtest.v1.EchoTraced, handlers: {Call: ""}}]
tracing: {otlpEndpoint: "http://%s", serviceName: echo-sidecar}
`, env.appAddr, env.restate.IdentityKey, env.restate.Admin, rcv.GRPCAddr))
	if err != nil {
		t.Fatal(err)
	}
	out, err := startSidecar(ctx, fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call, service: rgtest.v1.EchoTraced}]
tracing: {otlpEndpoint: %q, protocol: http/protobuf, serviceName: shop-sidecar}
`, env.restate.Ingress, rcv.HTTPURL))
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(out)
	t.Cleanup(func() { conn.Close() })

	traceID, callerSpan := randHex(16), randHex(8)
	text := uniq(t, "traced")
	resp, hdr, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: text, FailCode: int32(codes.Unavailable), FailAttempts: 1},
		"traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	if err != nil {
		t.Fatal(err)
	}
	invocation := hdr.Get("restate-invocation-id")[0]

	// The trace is complete once Restate's two attempt spans and the sidecars' spans are in;
	// Restate exports in batches every few seconds, the sidecars every five.
	var tr trace
	eventually(t, 45*time.Second, "the whole trace exported", func() bool {
		tr = collect(traceID, rcv)
		return len(tr.named("invocation-attempt ")) == 2 && len(tr.kind("echo-sidecar", tracepb.Span_SPAN_KIND_CLIENT)) == 2 &&
			len(tr.kind("shop-sidecar", tracepb.Span_SPAN_KIND_CLIENT)) == 1 && len(tr.named("invocation-start ")) == 1
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range tr {
				t.Logf("%s %s parent=%s %s %v %v", s.Service, s.SpanID, s.Parent, s.Name, s.Kind, s.Attrs)
			}
		}
	})

	outbound := tr.kind("shop-sidecar", tracepb.Span_SPAN_KIND_CLIENT)[0]
	wantAttrs := map[string]string{"rpc.system": "grpc", "rpc.service": "rgtest.v1.Echo", "rpc.method": "Call", "rpc.grpc.status_code": "0",
		"restate_grpc.route": "rgtest.v1.Echo/Call", "restate_grpc.mode": "call", "restate_grpc.target.kind": "service",
		"restate.service": "rgtest.v1.EchoTraced", "restate.handler": "Call", "restate.invocation.id": invocation,
		"restate_grpc.idempotency_key.present": "false"}
	for k, want := range wantAttrs {
		if got := outbound.Attrs[k]; got != want {
			t.Errorf("outbound span: %s = %q, want %q", k, got, want)
		}
	}
	if got, want := outbound.Parent, callerSpan; got != want {
		t.Errorf("outbound span's parent %s, want the caller's span %s", got, want)
	}
	ingress := tr.one(t, "ingress rgtest.v1.EchoTraced/Call")
	if got, want := ingress.Parent, outbound.SpanID; got != want {
		t.Errorf("Restate's ingress span's parent %s, want the outbound sidecar's span %s", got, want)
	}
	start := tr.one(t, "invocation-start rgtest.v1.EchoTraced/Call")
	if got, want := start.Parent, ingress.SpanID; got != want {
		t.Errorf("invocation-start's parent %s, want the ingress span %s", got, want)
	}
	attempts := tr.named("invocation-attempt ")
	servers := tr.kind("echo-sidecar", tracepb.Span_SPAN_KIND_SERVER)
	clients := tr.kind("echo-sidecar", tracepb.Span_SPAN_KIND_CLIENT)
	if len(servers) != 2 {
		t.Fatalf("got %d inbound server spans, want 2 (one per attempt)", len(servers))
	}
	// What the app saw as its parent, per attempt.
	appParents := map[string]bool{}
	for _, c := range env.app.CallsWithText(text) {
		parts := strings.Split(strings.Join(c.Metadata.Get("traceparent"), ""), "-")
		if len(parts) != 4 || parts[1] != traceID {
			t.Fatalf("app saw traceparent %v, want trace %s", c.Metadata.Get("traceparent"), traceID)
		}
		appParents[parts[2]] = true
	}
	var codesSeen []string
	for i, a := range attempts {
		if a.Parent != start.SpanID {
			t.Errorf("attempt span %s's parent %s, want invocation-start %s", a.SpanID, a.Parent, start.SpanID)
		}
		srv := tr.childOf(a.SpanID, servers)
		if srv == nil {
			t.Errorf("attempt %d (span %s) has no inbound server span", i, a.SpanID)
			continue
		}
		if got := srv.Attrs["restate.invocation.id"]; got != invocation {
			t.Errorf("server span's invocation %q, want %q", got, invocation)
		}
		cl := tr.childOf(srv.SpanID, clients)
		if cl == nil {
			t.Errorf("server span %s has no client span to the app", srv.SpanID)
			continue
		}
		if !appParents[cl.SpanID] {
			t.Errorf("client span %s is not a parent the app saw (%v)", cl.SpanID, appParents)
		}
		codesSeen = append(codesSeen, srv.Attrs["restate.invocation.attempt"]+":"+cl.Attrs["rpc.grpc.status_code"]+"/"+srv.Attrs["rpc.grpc.status_code"])
	}
	// The attempts' order in the export is not the order they ran in: compare as a set.
	slices.Sort(codesSeen)
	if got, want := strings.Join(codesSeen, " "), "1:14/14 2:0/0"; got != want {
		t.Errorf("attempt:app call/attempt codes %q, want %q (attempt 1 failed, attempt 2 succeeded)", got, want)
	}
	if resp.GetMetadata()["traceparent"] == "" {
		t.Errorf("the app's answer has no traceparent")
	}
}

type trace []testenv.Span

// collect is the spans of trace id from the sidecars' receiver and Restate's exports.
func collect(id string, rcv *testenv.OTLPReceiver) trace {
	all := rcv.Spans()
	for _, b := range env.traces.exports() {
		var req coltrace.ExportTraceServiceRequest
		if proto.Unmarshal(b, &req) == nil {
			all = append(all, testenv.DecodeSpans(&req)...)
		}
	}
	var tr trace
	for _, s := range all {
		if s.TraceID == id {
			tr = append(tr, s)
		}
	}
	return tr
}

func (tr trace) named(prefix string) []testenv.Span {
	var out []testenv.Span
	for _, s := range tr {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s)
		}
	}
	return out
}

func (tr trace) kind(service string, k tracepb.Span_SpanKind) []testenv.Span {
	var out []testenv.Span
	for _, s := range tr {
		if s.Service == service && s.Kind == k {
			out = append(out, s)
		}
	}
	return out
}

func (tr trace) one(t *testing.T, name string) testenv.Span {
	t.Helper()
	var out []testenv.Span
	for _, s := range tr {
		if s.Name == name {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("got %d spans named %q, want 1", len(out), name)
	}
	return out[0]
}

func (trace) childOf(parent string, spans []testenv.Span) *testenv.Span {
	for i := range spans {
		if spans[i].Parent == parent {
			return &spans[i]
		}
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestTracingFromEnv: `sidecar run` takes its tracing from the standard OTEL_* variables and
// the pod's (no tracing section in its config), follows the caller's sampling decision, and
// flushes its spans as it stops on SIGTERM: here the batch is not due yet when it stops.
func TestTracingFromEnv(t *testing.T) {
	rcv, err := testenv.StartOTLPReceiver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.Close)
	for k, v := range map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + rcv.GRPCAddr, "OTEL_SERVICE_NAME": "env-sidecar",
		"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0", "OTEL_BSP_SCHEDULE_DELAY": "600000",
		"POD_NAME": "shop-7d4f", "POD_NAMESPACE": "shop"} {
		t.Setenv(k, v)
	}
	addrs := freeAddrs(t, 2)
	p := startSidecarProc(t, "sidecar", fmt.Sprintf("outbound: {listen: %s, upstreams: {rgtest.v1.Echo: %s}}\n", addrs[0], env.appAddr), addrs[1])
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	sampled, unsampled := randHex(16), randHex(16)
	for _, tp := range []string{"00-" + sampled + "-" + randHex(8) + "-01", "00-" + unsampled + "-" + randHex(8) + "-00"} {
		if _, _, err := invoke(testCtx(t), conn, echoCall, &testpb.Req{Text: uniq(t, "env")}, "traceparent", tp); err != nil {
			t.Fatal(err)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the sidecar did not stop within 30s of SIGTERM")
	}
	var traces []string
	var got testenv.Span
	for _, s := range rcv.Spans() {
		traces = append(traces, s.TraceID)
		got = s
	}
	if want := []string{sampled}; !slices.Equal(traces, want) {
		t.Fatalf("exported traces %v, want %v (the sampled caller's only)", traces, want)
	}
	wantRes := map[string]string{"service.name": "env-sidecar", "service.version": stampVersion + " (commit " + stampCommit + ")",
		"k8s.pod.name": "shop-7d4f", "k8s.namespace.name": "shop"}
	for k, want := range wantRes {
		if got.Resource[k] != want {
			t.Errorf("resource %s = %q, want %q", k, got.Resource[k], want)
		}
	}
	if got.Attrs["restate_grpc.mode"] != "passthrough" || got.Attrs["rpc.grpc.status_code"] != "0" {
		t.Errorf("span attributes %v, want a passthrough span with code 0", got.Attrs)
	}
}

// TestInboundSpanParent: when the caller's sidecar makes no span (its tracing is off), the
// inbound sidecar's server span is still a child of Restate's attempt span when Restate
// traces; when Restate does not trace (and sends no traceparent), a child of the caller's own
// span, from the headers Restate keeps with the invocation.
func TestInboundSpanParent(t *testing.T) {
	rcv, err := testenv.StartOTLPReceiver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rcv.Close)
	untraced, err := testenv.StartRestate(t.TempDir(), testenv.RestateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(untraced.Stop)
	for _, tc := range []struct {
		name, service string
		restate       *testenv.Restate
		traces        bool // Restate exports spans (to env.traces)
	}{
		{"restate traces", "rgtest.v1.EchoParentTraced", env.restate, true},
		{"restate does not trace", "rgtest.v1.EchoParentUntraced", untraced, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			keys := ""
			if tc.restate.IdentityKey != "" {
				keys = "identityKeys: [" + tc.restate.IdentityKey + "]"
			}
			if _, err := startInbound(ctx, fmt.Sprintf(`
inbound:
  app: %s
  listen: 127.0.0.1:%%d
  %s
  register: {admin: %s, uri: "http://127.0.0.1:%%d"}
  services: [{name: rgtest.v1.Echo, as: %s, handlers: {Call: ""}}]
tracing: {otlpEndpoint: "http://%s", serviceName: parent-sidecar}
`, env.appAddr, keys, tc.restate.Admin, tc.service, rcv.GRPCAddr)); err != nil {
				t.Fatal(err)
			}
			out, err := startSidecar(ctx, fmt.Sprintf("outbound: {listen: 127.0.0.1:0, ingress: %s, routes: [{match: rgtest.v1.Echo/Call, service: %s}]}\n",
				tc.restate.Ingress, tc.service))
			if err != nil {
				t.Fatal(err)
			}
			conn := dial(out)
			t.Cleanup(func() { conn.Close() })
			traceID, callerSpan := randHex(16), randHex(8)
			if _, _, err := invoke(ctx, conn, echoCall, &testpb.Req{Text: uniq(t, "parent")}, "traceparent", "00-"+traceID+"-"+callerSpan+"-01"); err != nil {
				t.Fatal(err)
			}
			var tr trace
			eventually(t, 45*time.Second, "the inbound sidecar's spans exported, and Restate's attempt span when it traces", func() bool {
				tr = collect(traceID, rcv)
				return len(tr.kind("parent-sidecar", tracepb.Span_SPAN_KIND_SERVER)) == 1 && (!tc.traces || len(tr.named("invocation-attempt ")) == 1)
			})
			srv := tr.kind("parent-sidecar", tracepb.Span_SPAN_KIND_SERVER)[0]
			want, what := callerSpan, "the caller's span"
			if tc.traces {
				want, what = tr.named("invocation-attempt ")[0].SpanID, "Restate's attempt span"
			}
			if srv.Parent != want {
				t.Errorf("inbound server span's parent %s, want %s %s", srv.Parent, what, want)
			}
			if got := srv.Attrs["restate.invocation.attempt"]; got != "1" {
				t.Errorf("restate.invocation.attempt = %q, want 1", got)
			}
		})
	}
}
