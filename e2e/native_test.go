package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	restate "github.com/restatedev/sdk-go"
	"github.com/restatedev/sdk-go/server"
	"google.golang.org/grpc/codes"

	"github.com/restate-grpc/restate-grpc/internal/inbound"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// serveNative serves native sdk-go services and registers them with the test server.
func serveNative(t *testing.T, defs ...restate.ServiceDefinition) {
	t.Helper()
	srv := server.NewRestate().WithLogger(testLogger().Handler(), true)
	for _, d := range defs {
		srv = srv.Bind(d)
	}
	h, err := srv.Handler()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := inbound.NewHTTPServer(h)
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	admin, err := restatehttp.NewAdmin(env.restate.Admin, restatehttp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Register(testCtx(t), "http://"+l.Addr().String()); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyCallerReachesNativeService: a native sdk-go service built from the same .proto
// (restate.WithProto) answers a legacy gRPC caller through the outbound sidecar.
func TestLegacyCallerReachesNativeService(t *testing.T) {
	serveNative(t, restate.NewService("rgtest.v1.Native", restate.WithProto).
		Handler("Greet", restate.NewServiceHandler(func(ctx restate.Context, req *testpb.Req) (*testpb.Resp, error) {
			if req.GetFailCode() != 0 {
				return nil, restate.TerminalErrorf("native failure")
			}
			return &testpb.Resp{Text: "native:" + req.GetText(), InvocationId: ctx.Request().ID}, nil
		})))
	ctx := testCtx(t)
	resp, hdr, err := invoke(ctx, env.conn, "/rgtest.v1.Native/Greet", &testpb.Req{Text: "legacy"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetText(), "native:legacy"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := header(hdr, idHeader); got != resp.GetInvocationId() {
		t.Errorf("header id %q, native handler saw %q", got, resp.GetInvocationId())
	}
	// An empty message is zero bytes on the wire and must still be accepted.
	if _, _, err := invoke(ctx, env.conn, "/rgtest.v1.Native/Greet", &testpb.Req{}); err != nil {
		t.Errorf("empty message: %v", err)
	}
}

// driveResult is what the native orchestrator saw of the legacy app.
type driveResult struct {
	Called, ObjectKey, Attached string
	CancelledCode               int
	NotFoundCode                int
	NotFoundMetadata            map[string]string
}

// TestNativeHandlerReachesLegacyApp: a native handler written with the seed's calls (Request,
// Send with WithDelay and WithIdempotencyKey, AttachInvocation, CancelInvocation) reaches the
// legacy app behind the inbound sidecar.
func TestNativeHandlerReachesLegacyApp(t *testing.T) {
	serveNative(t, restate.NewService("rgtest.v1.Orchestrator").
		Handler("Drive", restate.NewServiceHandler(func(ctx restate.Context, id string) (driveResult, error) {
			var out driveResult
			r, err := restate.Service[*testpb.Resp](ctx, "rgtest.v1.Echo", "Call", restate.WithProto).Request(&testpb.Req{Text: id + "-request"})
			if err != nil {
				return out, err
			}
			out.Called = r.GetText()
			r, err = restate.Object[*testpb.Resp](ctx, "rgtest.v1.Counter", id, "Add", restate.WithProto).Request(&testpb.Req{Text: id + "-object"})
			if err != nil {
				return out, err
			}
			out.ObjectKey = r.GetKey()
			inv := restate.ServiceSend(ctx, "rgtest.v1.Echo", "Call", restate.WithProto).
				Send(&testpb.Req{Text: id + "-delayed"}, restate.WithDelay(500*time.Millisecond), restate.WithIdempotencyKey(id+"-idem"))
			r, err = restate.AttachInvocation[*testpb.Resp](ctx, inv.GetInvocationId(), restate.WithProto).Response()
			if err != nil {
				return out, err
			}
			out.Attached = r.GetText()
			late := restate.ServiceSend(ctx, "rgtest.v1.Echo", "Call", restate.WithProto).
				Send(&testpb.Req{Text: id + "-cancelled"}, restate.WithDelay(time.Hour), restate.WithIdempotencyKey(id+"-late"))
			// Attach first, so that the cancellation reaches a waiter.
			attached := restate.AttachInvocation[*testpb.Resp](ctx, late.GetInvocationId(), restate.WithProto)
			restate.CancelInvocation(ctx, late.GetInvocationId())
			_, err = attached.Response()
			if te := restate.AsTerminalError(err); te != nil {
				out.CancelledCode = int(te.Code())
			}
			_, err = restate.Service[*testpb.Resp](ctx, "rgtest.v1.Echo", "Call", restate.WithProto).
				Request(&testpb.Req{Text: id + "-fail", FailCode: int32(codes.NotFound), FailMessage: "no such order"})
			var te restate.TerminalError
			if errors.As(err, &te) {
				out.NotFoundCode = int(te.Code())
				out.NotFoundMetadata = te.Metadata().ToMap()
			}
			return out, nil
		})))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := uniq(t, "drive")
	c, err := restatehttp.NewClient(env.restate.Ingress, restatehttp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Invoke(ctx, restatehttp.Invocation{Target: restatehttp.Target{Service: "rgtest.v1.Orchestrator", Handler: "Drive"}, Body: []byte(fmt.Sprintf("%q", id)), ContentType: "application/json"})
	if err != nil {
		t.Fatal(err)
	}
	var got driveResult
	if err := json.Unmarshal(res.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Called != id+"-request" || got.ObjectKey != id || got.Attached != id+"-delayed" {
		t.Errorf("orchestrator saw %+v", got)
	}
	if got.CancelledCode != 409 {
		t.Errorf("attach to the cancelled send: code %d, want 409", got.CancelledCode)
	}
	if got.NotFoundCode != 404 || got.NotFoundMetadata["grpc-status"] != "5" || got.NotFoundMetadata["grpc-message"] != "no such order" {
		t.Errorf("legacy NotFound reached the native caller as code %d metadata %v, want 404 with grpc-status 5", got.NotFoundCode, got.NotFoundMetadata)
	}
	if n := len(env.app.CallsWithText(id + "-cancelled")); n != 0 {
		t.Errorf("the cancelled send ran %d times", n)
	}
	for _, text := range []string{"-request", "-object", "-delayed"} {
		if n := len(env.app.CallsWithText(id + text)); n != 1 {
			t.Errorf("legacy app ran %q %d times, want 1", id+text, n)
		}
	}
	delayed := env.app.CallsWithText(id + "-delayed")
	if len(delayed) == 1 {
		if md := delayed[0].Metadata; len(md.Get("restate-invocation-id")) == 0 {
			t.Errorf("legacy app got no invocation id: %v", md)
		}
	}
}
