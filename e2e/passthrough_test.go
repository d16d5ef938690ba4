package e2e

import (
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/testservice"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestPassthrough: calls no route matches reach the app unchanged, unary and all three
// streaming kinds, with header, trailer and status.
func TestPassthrough(t *testing.T) {
	echo := testpb.NewEchoClient(env.connPlain)
	t.Run("unary", func(t *testing.T) {
		ctx := testCtx(t)
		text := uniq(t, "pt")
		var hdr metadata.MD
		resp, err := echo.Call(metadata.AppendToOutgoingContext(ctx, "x-custom", "v1"), &testpb.Req{Text: text}, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetText() != text || resp.GetInvocationId() != "" {
			t.Errorf("got %v, want the text back and no invocation id (not durable)", resp)
		}
		if got := resp.GetMetadata()["x-custom"]; got != "v1" {
			t.Errorf("callee saw x-custom=%q, want v1", got)
		}
		if len(hdr.Get("restate-invocation-id")) != 0 {
			t.Errorf("passthrough answer has restate headers: %v", hdr)
		}
		_, err = echo.Call(ctx, &testpb.Req{FailCode: int32(codes.NotFound), FailMessage: "nope"})
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "nope" {
			t.Errorf("status = %v, want NotFound nope", st)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		s, err := echo.ServerStream(testCtx(t), &testpb.Req{Text: "s"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			r, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r.GetText())
		}
		if want := []string{"s-0", "s-1", "s-2"}; !equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		// The strict sidecar has no route for it... the plain one routes ClientStream durably, so
		// use the main sidecar, where it is unmatched and passes through.
		s, err := testpb.NewEchoClient(env.conn).ClientStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []string{"c", "a", "b"} {
			if err := s.Send(&testpb.Req{Text: x}); err != nil {
				t.Fatal(err)
			}
		}
		r, err := s.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetText() != "a,b,c" || r.GetSeq() != 3 {
			t.Errorf("got %v, want a,b,c from 3 messages", r)
		}
	})
	t.Run("bidi", func(t *testing.T) {
		s, err := echo.Bidi(metadata.AppendToOutgoingContext(testCtx(t), "x-echo", "hello"))
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []string{"1", "2"} {
			if err := s.Send(&testpb.Req{Text: x}); err != nil {
				t.Fatal(err)
			}
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.GetText() != "echo:"+x {
				t.Errorf("got %q, want echo:%s", r.GetText(), x)
			}
		}
		hdr, err := s.Header()
		if err != nil || hdr.Get("x-echo")[0] != "hello" {
			t.Errorf("header %v (%v), want x-echo: hello", hdr, err)
		}
		if err := s.Send(&testpb.Req{FailCode: int32(codes.Aborted), FailMessage: "stop"}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		if st := status.Convert(err); st.Code() != codes.Aborted || st.Message() != "stop" {
			t.Errorf("status = %v, want Aborted stop", st)
		}
		if got := s.Trailer().Get("x-trailer"); len(got) != 1 || got[0] != "bye" {
			t.Errorf("trailer %v, want x-trailer: bye", s.Trailer())
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestInteropPassthrough runs grpc-go's interop client cases through a sidecar that passes
// the TestService through. The cases fail the test binary (grpclog.Fatal) on any mismatch.
func TestInteropPassthrough(t *testing.T) {
	ctx := testCtx(t)
	tc := testgrpc.NewTestServiceClient(env.connPlain)
	for _, c := range testservice.InteropCases {
		t.Run(c.Name, func(t *testing.T) { c.Run(ctx, tc) })
	}
	t.Run("unimplemented_method", func(t *testing.T) { interop.DoUnimplementedMethod(ctx, env.connPlain) })
}

// TestInteropDurable runs the interop TestService's unary cases through Restate: EmptyCall,
// UnaryCall and UnimplementedCall are durable routes of the main sidecar (the streaming parts
// of the status cases pass through). Response header and trailer metadata of the callee do not
// cross Restate, so custom_metadata runs in passthrough only.
func TestInteropDurable(t *testing.T) {
	ctx := testCtx(t)
	tc := testgrpc.NewTestServiceClient(env.conn)
	for _, c := range testservice.InteropCases {
		if !c.Durable {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			var hdr metadata.MD
			c.Run(ctx, tc, grpc.Header(&hdr))
			if c.Name == "empty_unary" || c.Name == "large_unary" {
				if len(hdr.Get("restate-invocation-id")) == 0 {
					t.Errorf("no restate-invocation-id header: the call was not durable (header %v)", hdr)
				}
			}
		})
	}
	t.Run("unimplemented_method", func(t *testing.T) { interop.DoUnimplementedMethod(ctx, env.conn) })
}
