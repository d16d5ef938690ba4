package durable

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/descriptors"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// call is one gRPC call of a test: which method, with what metadata.
type call struct {
	method string // Echo/Call, Counter/Add, Flow/Run, Flow/Status
	md     []string
}

func (o *outbound) do(ctx context.Context, c call, opts ...grpc.CallOption) (*testpb.Resp, metadata.MD, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, c.md...)
	var header metadata.MD
	opts = append(opts, grpc.Header(&header))
	req := &testpb.Req{Text: "hi"}
	var resp *testpb.Resp
	var err error
	switch c.method {
	case "Echo/Call":
		resp, err = o.echo.Call(ctx, req, opts...)
	case "Counter/Add":
		resp, err = o.counter.Add(ctx, req, opts...)
	case "Flow/Run":
		resp, err = o.flow.Run(ctx, req, opts...)
	case "Flow/Status":
		resp, err = o.flow.Status(ctx, req, opts...)
	default:
		panic("unknown method " + c.method)
	}
	return resp, header, err
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestDurableOverrides: each call reaches the ingress as the route and the per-call metadata
// say (path, query, idempotency key), or is refused before the ingress with a message that
// names the fix.
func TestDurableOverrides(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil)
	tests := []struct {
		name   string
		call   call
		path   string // of the one ingress request; "" when none is made
		query  string
		idem   string // the Idempotency-Key the ingress got
		text   string // the answer's text
		status string // restate-status of the answer
		code   codes.Code
		msg    string // part of the error message
	}{
		{name: "service call", call: call{"Echo/Call", nil}, path: "/rgtest.v1.Echo/Call", text: "echo hi", status: "Completed"},
		{name: "object key from metadata", call: call{"Counter/Add", []string{"k", "alice"}}, path: "/rgtest.v1.Counter/alice/Add", text: "echo hi", status: "Completed"},
		{name: "key escaped", call: call{"Counter/Add", []string{"k", "a/b c"}}, path: "/rgtest.v1.Counter/a%2Fb%20c/Add", text: "echo hi", status: "Completed"},
		{name: "restate-key overrides", call: call{"Counter/Add", []string{"k", "alice", "restate-key", "bob"}}, path: "/rgtest.v1.Counter/bob/Add", text: "echo hi", status: "Completed"},
		{name: "idempotency key", call: call{"Counter/Add", []string{"k", "alice", "idempotency-key", "add-1"}}, path: "/rgtest.v1.Counter/alice/Add", idem: "add-1", text: "echo hi", status: "Completed"},
		{name: "send", call: call{"Echo/Call", []string{"restate-mode", "send"}}, path: "/rgtest.v1.Echo/Call/send", status: "Accepted"},
		{name: "delayed send", call: call{"Echo/Call", []string{"restate-mode", "send", "restate-delay", "PT5M"}}, path: "/rgtest.v1.Echo/Call/send", query: "delay=300000ms", status: "Accepted"},
		{name: "workflow run takes no idempotency key", call: call{"Flow/Run", []string{"k", "wf-1", "idempotency-key", "x"}}, path: "/rgtest.v1.Flow/wf-1/Run", text: "echo hi", status: "Completed"},
		{name: "workflow shared handler keeps it", call: call{"Flow/Status", []string{"k", "wf-1", "idempotency-key", "x"}}, path: "/rgtest.v1.Flow/wf-1/Status", idem: "x", text: "echo hi", status: "Completed"},
		{name: "delay on a call", call: call{"Echo/Call", []string{"restate-delay", "5s"}}, code: codes.InvalidArgument, msg: "restate-delay is only for sends"},
		{name: "bad delay", call: call{"Echo/Call", []string{"restate-mode", "send", "restate-delay", "soon"}}, code: codes.InvalidArgument, msg: `restate-delay: bad duration "soon"`},
		{name: "bad mode", call: call{"Echo/Call", []string{"restate-mode", "later"}}, code: codes.InvalidArgument, msg: `restate-mode: "later" is not call or send`},
		{name: "unknown restate- metadata", call: call{"Echo/Call", []string{"restate-delya", "5s"}}, code: codes.InvalidArgument, msg: `unknown metadata "restate-delya"`},
		{name: "missing key", call: call{"Counter/Add", nil}, code: codes.InvalidArgument, msg: `needs an object key or workflow id: set metadata "k" or metadata restate-key`},
		{name: "empty key from metadata", call: call{"Counter/Add", []string{"k", ""}}, code: codes.InvalidArgument, msg: "needs an object key or workflow id"},
		{name: "empty restate-key", call: call{"Counter/Add", []string{"k", "alice", "restate-key", ""}}, code: codes.InvalidArgument, msg: "restate-key is empty: an object key or workflow id must not be empty"},
		{name: "empty workflow id", call: call{"Flow/Run", []string{"restate-key", ""}}, code: codes.InvalidArgument, msg: "restate-key is empty"},
		{name: "key on a service", call: call{"Echo/Call", []string{"restate-key", "x"}}, code: codes.InvalidArgument, msg: "targets a service, which has no key"},
		{name: "bad attach", call: call{"Echo/Call", []string{"restate-attach", "yesterday"}}, code: codes.InvalidArgument, msg: `restate-attach: "yesterday" is not an invocation id`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			resp, header, err := o.do(testCtx(t), tc.call)
			reqs := ingress.requests()[before:]
			if wantStatus(t, err, reqs, tc.code, tc.msg) {
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("the ingress got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.Path != tc.path || r.Query != tc.query {
				t.Errorf("ingress got %s %s?%s, want POST %s?%s", r.Method, r.Path, r.Query, tc.path, tc.query)
			}
			if got := r.Header.Get("Idempotency-Key"); got != tc.idem {
				t.Errorf("Idempotency-Key %q, want %q", got, tc.idem)
			}
			if got := r.Header.Get("Content-Type"); got != "application/proto" {
				t.Errorf("Content-Type %q, want application/proto", got)
			}
			if resp.GetText() != tc.text {
				t.Errorf("answer %q, want %q", resp.GetText(), tc.text)
			}
			if got := header.Get(MDStatus); len(got) != 1 || got[0] != tc.status {
				t.Errorf("%s = %v, want %s", MDStatus, got, tc.status)
			}
			if got := header.Get(MDInvocationID); len(got) != 1 || !strings.HasPrefix(got[0], "inv_") {
				t.Errorf("%s = %v, want an invocation id", MDInvocationID, got)
			}
		})
	}
}

// TestDurableHeaderPolicy: the caller's own metadata reaches the ingress; transport, gRPC,
// restate- and idempotency headers do not, nor credentials unless the route allows them;
// binary metadata travels base64-encoded.
func TestDurableHeaderPolicy(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil)
	md := []string{"k", "alice", "x-tenant", "t1", "trace-bin", "\x00\x01", "authorization", "Bearer caller",
		"cookie", "c=1", "x-api-key", "secret", "idempotency-key", "i-1", "restate-mode", "call", "x-restate-grpc-route", "0"}
	tests := []struct {
		name   string
		method string
		want   map[string]string // forwarded (canonical name -> value)
		absent []string
	}{
		{"object route allowing cookie and authorization", "Counter/Add", map[string]string{"X-Tenant": "t1", "Trace-Bin": "AAE", "X-Restate-Grpc-Cookie": "c=1", "X-Restate-Grpc-Authorization": "Bearer caller", "K": "alice"},
			[]string{"Authorization", "Cookie", "X-Api-Key", "X-Restate-Grpc-X-Api-Key", "Restate-Mode", "X-Restate-Grpc-Route", "Grpc-Timeout", "Te", "X-Restate-Grpc-Hop"}},
		{"service route", "Echo/Call", map[string]string{"X-Tenant": "t1"},
			[]string{"Authorization", "Cookie", "X-Api-Key", "Restate-Mode"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
			defer cancel()
			if _, _, err := o.do(ctx, call{tc.method, md}); err != nil {
				t.Fatal(err)
			}
			r := ingress.requests()[before]
			for k, v := range tc.want {
				if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			for _, k := range tc.absent {
				if got := r.Header.Values(k); len(got) != 0 {
					t.Errorf("header %s = %q reached the ingress", k, got)
				}
			}
			if got := r.Header.Get("Idempotency-Key"); got != "i-1" {
				t.Errorf("Idempotency-Key = %q, want i-1 (as the header Restate reads, once)", got)
			}
		})
	}
}

// TestDurableCredentials: with a bearer token of the sidecar's own and a route that allows the
// caller's authorization, the ingress gets one Authorization, the sidecar's, and the caller's
// travels renamed (the inbound side hands it to the app as authorization); a caller cannot
// forge the renamed header.
func TestDurableCredentials(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil, restatehttp.Options{BearerToken: "sidecar-token"})
	tests := []struct {
		name string
		md   []string
		want map[string][]string
	}{
		{"caller's authorization allowed", []string{"k", "a", "authorization", "Bearer caller", "cookie", "c=1"}, map[string][]string{
			"Authorization": {"Bearer sidecar-token"}, "X-Restate-Grpc-Authorization": {"Bearer caller"}, "X-Restate-Grpc-Cookie": {"c=1"}}},
		{"none from the caller", []string{"k", "a"}, map[string][]string{
			"Authorization": {"Bearer sidecar-token"}, "X-Restate-Grpc-Authorization": nil}},
		{"forged renamed header", []string{"k", "a", "x-restate-grpc-authorization", "Bearer forged"}, map[string][]string{
			"Authorization": {"Bearer sidecar-token"}, "X-Restate-Grpc-Authorization": nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			if _, _, err := o.do(testCtx(t), call{"Counter/Add", tc.md}); err != nil {
				t.Fatal(err)
			}
			r := ingress.requests()[before]
			for k, want := range tc.want {
				if got := r.Header.Values(k); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestDurableErrors: what the ingress answers becomes the status the caller sees.
func TestDurableErrors(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil)
	tests := []struct {
		name string
		http int
		body string
		code codes.Code
		msg  string
	}{
		{"unknown service", 404, `{"code":404,"message":"service 'rgtest.v1.Echo' not found, make sure to register the service before calling it.","source":"ingress"}`, codes.Unimplemented, "restate: service 'rgtest.v1.Echo' not found"},
		{"callee status", 500, `{"code":400,"message":"x","metadata":{"grpc-status":"3","grpc-message":"bad quantity"},"source":"invocation"}`, codes.InvalidArgument, "bad quantity"},
		{"cancelled", 409, `{"code":409,"message":"Cancelled","source":"invocation"}`, codes.Canceled, "cancelled"},
		{"unauthenticated", 401, `{"code":401,"message":"unauthorized","source":"ingress"}`, codes.Unauthenticated, "unauthorized"},
		{"overloaded", 429, `{"code":429,"message":"overloaded","source":"ingress"}`, codes.Unavailable, "overloaded"},
		{"not JSON", 502, `<html>bad gateway</html>`, codes.Unavailable, "HTTP 502"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ingress.setAnswer(func(w http.ResponseWriter, r *http.Request, body []byte) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.http)
				w.Write([]byte(tc.body))
			})
			_, _, err := o.do(testCtx(t), call{"Echo/Call", nil})
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("got %v %q, want %v with %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

// TestDurableReattach: when the connection to the ingress breaks, or Restate answers its own
// 503 routing error (as while a cluster fails over: "If the request has an 'idempotency-key',
// it can be safely retried"), a call with an idempotency key is repeated (Restate answers it
// from the invocation it has) and the caller sees nothing; a call without one fails
// UNAVAILABLE, since a repeat could run it twice.
func TestDurableReattach(t *testing.T) {
	broken := func(w http.ResponseWriter) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	}
	unroutable := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"code":503,"message":"internal routing error. If the request has an 'idempotency-key', it can be safely retried","source":"ingress"}`))
	}
	keyed, unkeyed := []string{"k", "alice", "idempotency-key", "add-1"}, []string{"k", "alice"}
	tests := []struct {
		name  string
		fail  func(http.ResponseWriter)
		md    []string
		code  codes.Code
		tries int
	}{
		{"connection broken, with idempotency key", broken, keyed, codes.OK, 3},
		{"connection broken, without", broken, unkeyed, codes.Unavailable, 1},
		{"routing error, with idempotency key", unroutable, keyed, codes.OK, 3},
		{"routing error, without", unroutable, unkeyed, codes.Unavailable, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ingress *fake
			ingress = newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
				if len(ingress.requests()) < 3 {
					tc.fail(w)
					return
				}
				echoIngress(w, r, body)
			})
			o := startOutbound(t, routesYAML, ingress, nil)
			resp, _, err := o.do(testCtx(t), call{"Counter/Add", tc.md})
			if got := status.Code(err); got != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if tc.code == codes.OK && resp.GetText() != "echo hi" {
				t.Errorf("answer %q, want echo hi", resp.GetText())
			}
			if n := len(ingress.requests()); n != tc.tries {
				t.Errorf("the ingress got %d requests, want %d", n, tc.tries)
			}
		})
	}
}

// TestDurableAttach: restate-attach answers the call from the invocation it names, typed as
// the method's response, with that invocation's id.
func TestDurableAttach(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil)
	tests := []struct {
		name string
		call call
		body string // of the one POST /restate/attach
		code codes.Code
		msg  string
	}{
		{name: "by idempotency key", call: call{"Counter/Add", []string{"k", "alice", "idempotency-key", "add-1", "restate-attach", "idempotency-key"}},
			body: `{"handler":"Add","idempotencyKey":"add-1","key":"alice","service":"rgtest.v1.Counter","target":"idempotentInvocation"}`},
		{name: "workflow", call: call{"Flow/Status", []string{"k", "wf-1", "restate-attach", "workflow"}},
			body: `{"target":"workflow","workflowKey":"wf-1","workflowName":"rgtest.v1.Flow"}`},
		{name: "idempotency key missing", call: call{"Counter/Add", []string{"k", "alice", "restate-attach", "idempotency-key"}},
			code: codes.InvalidArgument, msg: "needs the call's idempotency key"},
		{name: "workflow on an object route", call: call{"Counter/Add", []string{"k", "alice", "restate-attach", "workflow"}},
			code: codes.InvalidArgument, msg: "workflow needs a workflow route"},
		{name: "by id without an admin API", call: call{"Echo/Call", []string{"restate-attach", "inv_1abc"}},
			code: codes.FailedPrecondition, msg: "restate-attach: inv_1abc: attaching by invocation id needs outbound.admin (Restate's admin API), to check that the invocation is one of rgtest.v1.Echo/Call"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			resp, header, err := o.do(testCtx(t), tc.call)
			reqs := ingress.requests()[before:]
			if wantStatus(t, err, reqs, tc.code, tc.msg) {
				return
			}
			if len(reqs) != 1 || reqs[0].Path != "/restate/attach" || string(reqs[0].Body) != tc.body {
				t.Fatalf("ingress got %+v, want one POST /restate/attach with %s", reqs, tc.body)
			}
			if resp.GetText() != "attached" {
				t.Errorf("answer %q, want attached", resp.GetText())
			}
			if got := header.Get(MDInvocationID); len(got) != 1 || got[0] != "inv_attached" {
				t.Errorf("%s = %v, want inv_attached", MDInvocationID, got)
			}
		})
	}
}

// TestDurableCodecs: a caller in the proto codec is served; one in another codec than
// protobuf is refused before the ingress.
func TestDurableCodecs(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil)
	tests := []struct {
		name string
		opts []grpc.CallOption
		code codes.Code
		msg  string
	}{
		{"proto subtype", []grpc.CallOption{grpc.CallContentSubtype("proto")}, codes.OK, ""},
		{"json", []grpc.CallOption{grpc.ForceCodec(jsonCodec{})}, codes.InvalidArgument, `content-type "application/grpc+json": durable calls take protobuf only`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			resp, _, err := o.do(testCtx(t), call{"Echo/Call", nil}, tc.opts...)
			reqs := ingress.requests()[before:]
			if wantStatus(t, err, reqs, tc.code, tc.msg) {
				return
			}
			if resp.GetText() != "echo hi" || len(reqs) != 1 {
				t.Fatalf("answer %q after %d ingress requests, want echo hi after 1", resp.GetText(), len(reqs))
			}
			var req testpb.Req
			if err := proto.Unmarshal(reqs[0].Body, &req); err != nil || req.Text != "hi" {
				t.Errorf("the ingress got %q (%v), want the request's protobuf bytes", reqs[0].Body, err)
			}
		})
	}
}

// TestDurableGzip: a caller that compresses its request with gzip (grpc-encoding: gzip, as
// grpc-go's UseCompressor and grpc-java send it) is served: the ingress gets the decompressed
// protobuf bytes, and the answer comes back compressed as the caller accepts. The call is
// made by hand, so that only the sidecar's own import registers grpc-go's gzip.
func TestDurableGzip(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil)
	a := h2Call(t, o.conn.Target(), "/rgtest.v1.Echo/Call", map[string]string{"Grpc-Encoding": "gzip", "Grpc-Accept-Encoding": "gzip"}, &testpb.Req{Text: "zipped"}, true)
	if a.status != "0" {
		t.Fatalf("grpc-status %s %q, want 0", a.status, a.message)
	}
	reqs := ingress.requests()
	var req testpb.Req
	if len(reqs) != 1 || proto.Unmarshal(reqs[0].Body, &req) != nil || req.Text != "zipped" {
		t.Fatalf("the ingress got %+v, want one request with the decompressed message", reqs)
	}
	var resp testpb.Resp
	if len(a.messages) != 1 || proto.Unmarshal(a.messages[0], &resp) != nil || resp.Text != "echo zipped" {
		t.Errorf("answer %q, want one message echo zipped", a.messages)
	}
	if a.encoding != "gzip" {
		t.Errorf("answer's grpc-encoding %q, want gzip, as the caller sent", a.encoding)
	}
}

// jsonCodec is a client codec of content-subtype json.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)   { return protojson.Marshal(v.(proto.Message)) }
func (jsonCodec) Unmarshal(b []byte, v any) error { return protojson.Unmarshal(b, v.(proto.Message)) }
func (jsonCodec) Name() string                    { return "json" }

// TestDurableTimeoutClamped: a grpc-timeout too large for a time.Duration is clamped, as grpc-go
// clamps it, instead of overflowing into no deadline or one in the past; a small one bounds the
// call.
func TestDurableTimeoutClamped(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	ingress := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		var req testpb.Req
		proto.Unmarshal(body, &req)
		if req.Text == "block" {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		echoIngress(w, r, body)
	})
	o := startOutbound(t, routesYAML, ingress, nil)
	deadlines := make(chan time.Time, 1)
	o.handler.onCall = func(ctx context.Context) {
		d, ok := ctx.Deadline()
		if !ok {
			d = time.Time{}
		}
		deadlines <- d
	}
	addr := o.conn.Target()
	tests := []struct {
		name, timeout, text string
		status              string        // grpc-status, when it must be seen
		min, max            time.Duration // of the deadline the call had, from now
	}{
		{"hours overflowing", "99999999H", "hi", "0", 100 * 365 * 24 * time.Hour, time.Duration(math.MaxInt64)},
		{"largest hours", "2562047H", "hi", "0", 2562046 * time.Hour, time.Duration(math.MaxInt64)},
		{"milliseconds", "200m", "block", "", 200 * time.Millisecond, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			a := h2Call(t, addr, "/rgtest.v1.Echo/Call", map[string]string{"Grpc-Timeout": tc.timeout}, &testpb.Req{Text: tc.text}, false)
			if tc.status != "" && a.status != tc.status {
				t.Errorf("grpc-status %s (%s), want %s", a.status, a.message, tc.status)
			}
			d := <-deadlines
			if d.IsZero() {
				t.Fatalf("grpc-timeout %s: the call had no deadline", tc.timeout)
			}
			if left := d.Sub(start); left < tc.min || left > tc.max {
				t.Errorf("grpc-timeout %s: deadline %v from the call's start, want within [%v, %v]", tc.timeout, left, tc.min, tc.max)
			}
		})
	}
}

// h2Answer is what a hand-made gRPC call got back.
type h2Answer struct {
	status, message string   // grpc-status and grpc-message; status "reset" if the stream was
	encoding        string   // grpc-encoding of the answer
	messages        [][]byte // the answer's messages, decompressed
}

// h2Call makes a unary gRPC call over h2c by hand, with header, so that grpc-timeout and
// grpc-encoding take any value; with gzipped the message is sent compressed (flag 1), with
// nothing of grpc-go's own compressors in the test.
func h2Call(t *testing.T, addr, method string, header map[string]string, req proto.Message, gzipped bool) h2Answer {
	t.Helper()
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, a string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}}
	defer tr.CloseIdleConnections()
	b, _ := proto.Marshal(req)
	flag := byte(0)
	if gzipped {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		b, flag = buf.Bytes(), 1
	}
	frame := append([]byte{flag, 0, 0, 0, 0}, b...)
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	hr, _ := http.NewRequestWithContext(testCtx(t), http.MethodPost, "http://"+addr+method, bytes.NewReader(frame))
	hr.Header.Set("Content-Type", "application/grpc")
	hr.Header.Set("Te", "trailers")
	for k, v := range header {
		hr.Header.Set(k, v)
	}
	resp, err := tr.RoundTrip(hr)
	if err != nil {
		// grpc-go resets a stream whose deadline passed, which may beat its trailers here.
		return h2Answer{status: "reset", message: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := h2Answer{encoding: resp.Header.Get("Grpc-Encoding")}
	for len(body) >= 5 {
		n := int(binary.BigEndian.Uint32(body[1:5]))
		if len(body) < 5+n {
			break
		}
		m := body[5 : 5+n]
		if body[0] == 1 {
			zr, err := gzip.NewReader(bytes.NewReader(m))
			if err != nil {
				t.Fatalf("a compressed answer that is not gzip: %v", err)
			}
			m, _ = io.ReadAll(zr)
		}
		a.messages = append(a.messages, m)
		body = body[5+n:]
	}
	a.status, a.message = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message") // trailers-only
	if a.status == "" {
		a.status, a.message = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	}
	return a
}

// TestDurableHeaderLimits: a call whose metadata would make a header block Restate's ingress
// refuses (past 100 fields, or about 400 KiB) is refused with RESOURCE_EXHAUSTED naming the
// limit, before the ingress is asked.
func TestDurableHeaderLimits(t *testing.T) {
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML+"  limits: {maxHeaderListBytes: 1048576}\n", ingress, nil)
	many := func(n, size int) []string {
		var md []string
		for i := range n {
			md = append(md, fmt.Sprintf("x-h%d", i), strings.Repeat("a", size))
		}
		return md
	}
	tests := []struct {
		name string
		md   []string
		code codes.Code
		msg  string
	}{
		// With the sidecar's own five (Host, User-Agent, Content-Length, Accept-Encoding, Content-Type).
		{"95 entries", many(95, 1), codes.OK, ""},
		{"96 entries", many(96, 1), codes.ResourceExhausted, "the call's 96 metadata entries and the sidecar's own 5 header fields make 101 on the request to Restate's ingress, which takes at most 100"},
		{"95 entries and an idempotency key", append(many(95, 1), "idempotency-key", "k"), codes.ResourceExhausted, "takes at most 100"},
		{"50 entries of 8000 bytes", many(50, 8000), codes.OK, ""},
		{"50 entries of 8500 bytes", many(50, 8500), codes.ResourceExhausted, "which takes at most 409600: send less metadata"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			_, _, err := o.do(testCtx(t), call{"Echo/Call", tc.md})
			reqs := ingress.requests()[before:]
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.code == codes.OK]; len(reqs) != want {
				t.Errorf("the ingress got %d requests, want %d", len(reqs), want)
			}
		})
	}
}

// TestDurableAttachByID: restate-attach with an invocation id answers the call only from an
// invocation of the called method's target (service, handler, key), which the admin API
// tells; any other is refused with whose it is, before the ingress is asked.
func TestDurableAttachByID(t *testing.T) {
	targets := map[string]string{ // id -> the sys_invocation row
		"inv_echo":     `{"target_service_name":"rgtest.v1.Echo","target_handler_name":"Call","target_service_ty":"service"}`,
		"inv_alice":    `{"target_service_name":"rgtest.v1.Counter","target_handler_name":"Add","target_service_key":"alice","target_service_ty":"virtual_object"}`,
		"inv_aliceGet": `{"target_service_name":"rgtest.v1.Counter","target_handler_name":"Get","target_service_key":"alice","target_service_ty":"virtual_object"}`,
		"inv_flow":     `{"target_service_name":"rgtest.v1.Flow","target_handler_name":"Run","target_service_key":"wf-1","target_service_ty":"workflow"}`,
	}
	admin := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.URL.Path != "/query" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if strings.Contains(string(body), "inv_1bogus") { // as Restate 1.7 answers an id that does not decode
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"message":"Datafusion error: External error: non valid invocation id"}`)
			return
		}
		for id, row := range targets {
			if strings.Contains(string(body), "WHERE id = '"+id+"'") {
				io.WriteString(w, `{"rows":[`+row+`]}`)
				return
			}
		}
		io.WriteString(w, `{"rows":[]}`)
	})
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, admin)
	tests := []struct {
		name string
		call call
		code codes.Code
		msg  string
	}{
		{"the method's own", call{"Echo/Call", []string{"restate-attach", "inv_echo"}}, codes.OK, ""},
		{"the object's own", call{"Counter/Add", []string{"k", "alice", "restate-attach", "inv_alice"}}, codes.OK, ""},
		{"the workflow's own", call{"Flow/Run", []string{"k", "wf-1", "restate-attach", "inv_flow"}}, codes.OK, ""},
		{"another service's", call{"Echo/Call", []string{"restate-attach", "inv_alice"}}, codes.InvalidArgument,
			"restate-attach: invocation inv_alice is one of rgtest.v1.Counter/alice/Add, not of rgtest.v1.Echo/Call"},
		{"another key's", call{"Counter/Add", []string{"k", "bob", "restate-attach", "inv_alice"}}, codes.InvalidArgument,
			"invocation inv_alice is one of rgtest.v1.Counter/alice/Add, not of rgtest.v1.Counter/bob/Add"},
		{"another handler's", call{"Counter/Add", []string{"k", "alice", "restate-attach", "inv_aliceGet"}}, codes.InvalidArgument,
			"invocation inv_aliceGet is one of rgtest.v1.Counter/alice/Get, not of rgtest.v1.Counter/alice/Add"},
		{"another workflow's", call{"Flow/Run", []string{"k", "wf-2", "restate-attach", "inv_flow"}}, codes.InvalidArgument,
			"is one of rgtest.v1.Flow/wf-1/Run, not of rgtest.v1.Flow/wf-2/Run"},
		{"unknown", call{"Echo/Call", []string{"restate-attach", "inv_nope"}}, codes.NotFound, "restate has no invocation inv_nope"},
		{"not an id", call{"Echo/Call", []string{"restate-attach", "inv_x' OR '1'='1"}}, codes.InvalidArgument, "is not an invocation id"},
		{"an id that does not decode", call{"Echo/Call", []string{"restate-attach", "inv_1bogusbogus"}}, codes.InvalidArgument, `"inv_1bogusbogus" is not a valid invocation id`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			resp, _, err := o.do(testCtx(t), tc.call)
			reqs := ingress.requests()[before:]
			if wantStatus(t, err, reqs, tc.code, tc.msg) {
				return
			}
			if len(reqs) != 1 || reqs[0].Path != "/restate/attach" || !strings.Contains(string(reqs[0].Body), `"target":"invocation"`) {
				t.Fatalf("ingress got %+v, want one attach by id", reqs)
			}
			if resp.GetText() != "attached" {
				t.Errorf("answer %q, want attached", resp.GetText())
			}
		})
	}
}

// TestDurableFieldKey: a key read from a request field; a field that is absent, or present
// and empty on the wire, is refused like a missing key.
func TestDurableFieldKey(t *testing.T) {
	ingress := newFake(t, echoIngress)
	c, err := config.Parse([]byte("outbound:\n  ingress: " + ingress.srv.URL + "\n  routes: [{match: rgtest.v1.Flow/*, target: workflow, key: 'field:key'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := restatehttp.NewClient(ingress.srv.URL, restatehttp.Options{})
	o := serve(t, Options{Config: c.Outbound, Ingress: cl, Descriptors: descriptors.FromRegistry(protoregistry.GlobalFiles), Logger: slog.New(slog.DiscardHandler)})
	tests := []struct {
		name string
		raw  []byte // the request message
		path string
		code codes.Code
	}{
		{"set", []byte("\x0a\x04wf-1\x12\x02hi"), "/rgtest.v1.Flow/wf-1/Run", codes.OK},
		{"absent", []byte("\x12\x02hi"), "", codes.InvalidArgument},
		{"empty on the wire", []byte("\x0a\x00\x12\x02hi"), "", codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ingress.requests())
			var out []byte
			err := o.conn.Invoke(testCtx(t), "/rgtest.v1.Flow/Run", &tc.raw, &out, grpc.ForceCodecV2(rawcodec.Codec))
			reqs := ingress.requests()[before:]
			if st := status.Convert(err); st.Code() != tc.code {
				t.Fatalf("got %v, want %v", st, tc.code)
			}
			if tc.code != codes.OK {
				if msg := status.Convert(err).Message(); !strings.Contains(msg, `needs an object key or workflow id: set field "key" of the request`) || len(reqs) != 0 {
					t.Errorf("message %q after %d ingress requests, want the missing key's, before the ingress", msg, len(reqs))
				}
				return
			}
			if len(reqs) != 1 || reqs[0].Path != tc.path {
				t.Errorf("ingress got %+v, want %s", reqs, tc.path)
			}
		})
	}
}

// TestDurableCancelWhenCallerGone: on a route with onCallerGone: cancel, a caller that goes
// away has its invocation cancelled through the admin API: its id computed from the
// idempotency key (lookup), or else the call made as a send and then attached to.
func TestDurableCancelWhenCallerGone(t *testing.T) {
	tests := []struct {
		name    string
		md      []string
		id      string   // the invocation cancelled
		ingress []string // the ingress paths asked, in order
	}{
		{"with idempotency key", []string{"idempotency-key", "i-1"}, "inv_looked_up", []string{"/restate/lookup", "/rgtest.v1.Echo/Call"}},
		{"without", nil, "inv_sent", []string{"/rgtest.v1.Echo/Call/send", "/restate/attach"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			waiting := make(chan struct{}, 1)
			ingress := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
				if r.URL.Path == "/restate/lookup" || strings.HasSuffix(r.URL.Path, "/send") {
					echoIngress(w, r, body)
					return
				}
				waiting <- struct{}{} // the call waits for its answer...
				<-r.Context().Done()  // ...until its caller is gone
			})
			cancelled := make(chan string, 1)
			admin := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
				if r.Method == http.MethodPatch {
					cancelled <- r.URL.Path
				}
				w.WriteHeader(http.StatusAccepted)
			})
			o := startOutbound(t, "  routes: [{match: rgtest.v1.Echo/*, onCallerGone: cancel}]\n", ingress, admin)
			ctx, cancel := context.WithCancel(testCtx(t))
			errc := make(chan error, 1)
			go func() { _, _, err := o.do(ctx, call{"Echo/Call", tc.md}); errc <- err }()
			<-waiting
			cancel()
			if got, want := <-cancelled, "/invocations/"+tc.id+"/cancel"; got != want {
				t.Errorf("admin got PATCH %s, want %s", got, want)
			}
			if err := <-errc; status.Code(err) != codes.Canceled {
				t.Errorf("the caller got %v, want CANCELLED", err)
			}
			var paths []string
			for _, r := range ingress.requests() {
				paths = append(paths, r.Path)
			}
			if !slices.Equal(paths, tc.ingress) {
				t.Errorf("the ingress was asked %q, want %q", paths, tc.ingress)
			}
		})
	}
}
