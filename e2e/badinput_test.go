package e2e

import (
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestBadInput sends one bad call per row and checks its status and message, then that the
// sidecar still serves a good call.
func TestBadInput(t *testing.T) {
	big := make([]byte, 5<<20)
	tests := []struct {
		name    string
		conn    func() *grpc.ClientConn
		method  string
		req     *testpb.Req
		raw     []byte // sent instead of req, through the raw codec
		md      []string
		code    codes.Code
		message string // substring of the status message
	}{
		{name: "bad delay", method: echoCall, md: []string{"restate-mode", "send", "restate-delay", "soon"},
			code: codes.InvalidArgument, message: `restate-delay: bad duration "soon"`},
		{name: "negative delay", method: echoCall, md: []string{"restate-mode", "send", "restate-delay", "-5s"},
			code: codes.InvalidArgument, message: "must not be negative"},
		{name: "delay on a call", method: echoCall, md: []string{"restate-delay", "5s"},
			code: codes.InvalidArgument, message: "restate-delay is only for sends"},
		{name: "bad mode", method: echoCall, md: []string{"restate-mode", "later"},
			code: codes.InvalidArgument, message: `restate-mode: "later" is not call or send`},
		{name: "unknown restate metadata", method: echoCall, md: []string{"restate-delya", "5s"},
			code: codes.InvalidArgument, message: `unknown metadata "restate-delya"`},
		{name: "key on a service route", method: echoCall, md: []string{"restate-key", "k"},
			code: codes.InvalidArgument, message: "targets a service, which has no key"},
		{name: "missing object key", method: counterAdd,
			code: codes.InvalidArgument, message: `needs an object key or workflow id: set metadata "counter-id"`},
		{name: "empty object key", method: counterAdd, md: []string{"counter-id", "c-1", "restate-key", ""},
			code: codes.InvalidArgument, message: "restate-key is empty"},
		{name: "empty object key from metadata", method: counterAdd, md: []string{"counter-id", ""},
			code: codes.InvalidArgument, message: `needs an object key or workflow id: set metadata "counter-id"`},
		{name: "more metadata than the ingress takes", method: echoCall, md: manyEntries(96),
			code: codes.ResourceExhausted, message: "the call's 96 metadata entries and the sidecar's own 5 header fields make 101 on the request to Restate's ingress, which takes at most 100"},
		{name: "missing workflow id field", method: flowRun, req: &testpb.Req{Text: "no key"},
			code: codes.InvalidArgument, message: `set field "key" of the request`},
		{name: "malformed message for a field key", method: flowRun, raw: []byte{0x0a, 0xff},
			code: codes.InvalidArgument, message: "malformed request message"},
		{name: "field key without descriptors", conn: plain, method: flowRun, req: &testpb.Req{Key: "k"},
			code: codes.FailedPrecondition, message: "needs descriptors: set outbound.descriptors"},
		{name: "reserved service name", conn: strict, method: "/restatedemo.v1.Svc/Do",
			code: codes.InvalidArgument, message: "is reserved by Restate"},
		{name: "unknown service", conn: strict, method: "/rgtest.v1.Missing/Do",
			code: codes.Unimplemented, message: "service 'rgtest.v1.Missing' not found"},
		{name: "unknown handler", method: "/rgtest.v1.Counter/Nope", md: []string{"counter-id", "k"},
			code: codes.Unimplemented, message: "the handler 'Nope' was not found"},
		{name: "streaming method on a durable route (descriptors)", conn: strict, method: "/rgtest.v1.Echo/ServerStream",
			code: codes.Unimplemented, message: "is a streaming method"},
		{name: "oversized message", method: echoCall, req: &testpb.Req{Blob: big},
			code: codes.ResourceExhausted, message: "larger than max"},
		{name: "oversized message, configured limit, passthrough", conn: plain, method: "/rgtest.v1.Echo/Call", req: &testpb.Req{Blob: big[:2<<20]},
			code: codes.ResourceExhausted, message: "larger than max (2097"},
		{name: "unmatched call under reject", conn: strict, method: "/rgtest.v1.Flow/Run", req: &testpb.Req{Key: "k"},
			code: codes.Unimplemented, message: "matches no route and unmatched calls are rejected"},
		{name: "passthrough without upstream", conn: plain, method: counterAdd,
			code: codes.Unavailable, message: `no upstream for /rgtest.v1.Counter/Add: add outbound.upstreams["rgtest.v1.Counter"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			conn := env.conn
			if tc.conn != nil {
				conn = tc.conn()
			}
			var err error
			if tc.raw != nil {
				var out []byte
				err = conn.Invoke(ctxWith(ctx, tc.md), tc.method, &tc.raw, &out, grpc.ForceCodecV2(rawcodec.Codec))
			} else {
				req := tc.req
				if req == nil {
					req = &testpb.Req{}
				}
				_, _, err = invoke(ctx, conn, tc.method, req, tc.md...)
			}
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.message) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.message)
			}
			if _, _, err := invoke(ctx, conn, "/rgtest.v1.Echo/Call", &testpb.Req{Text: "still serving"}); err != nil {
				t.Errorf("the sidecar no longer serves: %v", err)
			}
		})
	}
	t.Run("streaming call on a durable route (no descriptors)", func(t *testing.T) {
		s, err := testpb.NewEchoClient(env.connPlain).ClientStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&testpb.Req{Text: "a"})
		s.Send(&testpb.Req{Text: "b"})
		_, err = s.CloseAndRecv()
		if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "sent more than one request message") {
			t.Errorf("got %v, want Unimplemented: more than one request message", st)
		}
	})
	t.Run("durable call without a request message", func(t *testing.T) {
		s, err := testpb.NewEchoClient(env.connPlain).ClientStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.CloseAndRecv()
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "sent no request message") {
			t.Errorf("got %v, want InvalidArgument: sent no request message", st)
		}
	})
	for _, junk := range []struct{ name, bytes string }{
		{"non-gRPC bytes", "\x00\x01garbage\xff\xfe not a preface\r\n\r\n"},
		{"HTTP/1.1 request", "GET /rgtest.v1.Echo/Call HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(junk.name, func(t *testing.T) {
			c, err := net.Dial("tcp", env.out.OutboundAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(junk.bytes)); err != nil {
				t.Fatal(err)
			}
			// The server answers with an HTTP/2 GOAWAY or an HTTP/1.1 error, then closes
			// (EOF or reset); only a timeout means it kept the junk connection open.
			if _, err := io.ReadAll(c); err != nil && os.IsTimeout(err) {
				t.Errorf("connection not closed by the sidecar: %v", err)
			}
			if _, _, err := invoke(testCtx(t), env.conn, echoCall, &testpb.Req{Text: "after junk"}); err != nil {
				t.Errorf("the sidecar no longer serves: %v", err)
			}
		})
	}
}

func strict() *grpc.ClientConn { return env.connStrict }
func plain() *grpc.ClientConn  { return env.connPlain }

func manyEntries(n int) []string {
	var md []string
	for i := range n {
		md = append(md, "x-entry-"+strconv.Itoa(i), "v")
	}
	return md
}

// TestIngressHeaderLimit: the sidecar's bound on header fields is Restate's own: a call whose
// metadata makes exactly 100 fields on the ingress request is served by the real ingress (101
// would be refused with 431, or a broken connection, by it).
func TestIngressHeaderLimit(t *testing.T) {
	resp, _, err := invoke(testCtx(t), env.conn, echoCall, &testpb.Req{Text: uniq(t, "many")}, manyEntries(95)...)
	if err != nil {
		t.Fatalf("95 metadata entries: %v", err)
	}
	if got := resp.GetMetadata()["x-entry-94"]; got != "v" {
		t.Errorf("the callee got x-entry-94 %q, want v", got)
	}
}
