package interceptors

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// echo is a unary Echo service whose Call panics on text "panic" and blocks on "block" until
// release is closed.
type echo struct {
	testpb.UnimplementedEchoServer
	entered chan struct{}
	release chan struct{}
}

func (e *echo) Call(ctx context.Context, req *testpb.Req) (*testpb.Resp, error) {
	switch req.Text {
	case "panic":
		panic("boom")
	case "block":
		e.entered <- struct{}{}
		select {
		case <-e.release:
		case <-ctx.Done():
		}
	}
	return &testpb.Resp{Text: "echo " + req.Text}, nil
}

// stream is the durable server's way of serving: every unknown method by one stream
// handler, with the same panics and blocking as Call.
func (e *echo) stream(_ any, ss grpc.ServerStream) error {
	var req testpb.Req
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	resp, err := e.Call(ss.Context(), &req)
	if err != nil {
		return err
	}
	return ss.SendMsg(resp)
}

// serve runs a grpc.Server with opts on loopback: Echo registered (unary), and every other
// method served by the raw stream handler, as the durable server does.
func serve(t *testing.T, opts ...grpc.ServerOption) (*echo, *grpc.ClientConn) {
	t.Helper()
	e := &echo{entered: make(chan struct{}, 16), release: make(chan struct{})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, grpc.UnknownServiceHandler(e.stream))
	s := grpc.NewServer(opts...)
	testpb.RegisterEchoServer(s, e)
	go s.Serve(l)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
	})
	return e, conn
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// unary calls the registered Echo/Call; stream calls the same method under an unregistered
// service, which the raw stream handler serves.
func unary(ctx context.Context, conn *grpc.ClientConn, text string, opts ...grpc.CallOption) (string, error) {
	var resp testpb.Resp
	err := conn.Invoke(ctx, "/rgtest.v1.Echo/Call", &testpb.Req{Text: text}, &resp, opts...)
	return resp.Text, err
}

func stream(ctx context.Context, conn *grpc.ClientConn, text string, opts ...grpc.CallOption) (string, error) {
	var resp testpb.Resp
	err := conn.Invoke(ctx, "/other.v1.Echo/Call", &testpb.Req{Text: text}, &resp, opts...)
	return resp.Text, err
}

// jsonCodec is a client codec of content-subtype json.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)   { return protojson.Marshal(v.(proto.Message)) }
func (jsonCodec) Unmarshal(b []byte, v any) error { return protojson.Unmarshal(b, v.(proto.Message)) }
func (jsonCodec) Name() string                    { return "json" }

// TestProtoOnly: calls in the proto codec (application/grpc, application/grpc+proto) are
// served; any other content-subtype is refused with INVALID_ARGUMENT before the handler runs.
func TestProtoOnly(t *testing.T) {
	_, conn := serve(t, grpc.ChainStreamInterceptor(ProtoOnly()))
	tests := []struct {
		name string
		opts []grpc.CallOption
		code codes.Code
		msg  string
	}{
		{"application/grpc", nil, codes.OK, ""},
		{"application/grpc+proto", []grpc.CallOption{grpc.CallContentSubtype("proto")}, codes.OK, ""},
		{"application/grpc+json", []grpc.CallOption{grpc.ForceCodec(jsonCodec{})}, codes.InvalidArgument,
			`/other.v1.Echo/Call: content-type "application/grpc+json": durable calls take protobuf only (application/grpc or application/grpc+proto)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := stream(ctx(t), conn, "hi", tc.opts...)
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if tc.code == codes.OK && got != "echo hi" {
				t.Errorf("answer %q, want echo hi", got)
			}
		})
	}
}

// TestRecovery: a panic in one call is INTERNAL for that call, with the method in the message,
// and the server serves on, unary and streaming alike.
func TestRecovery(t *testing.T) {
	u, s := Recovery(slog.New(slog.DiscardHandler))
	_, conn := serve(t, grpc.ChainUnaryInterceptor(u), grpc.ChainStreamInterceptor(s))
	for _, tc := range []struct {
		name   string
		call   func(context.Context, *grpc.ClientConn, string, ...grpc.CallOption) (string, error)
		method string
	}{{"unary", unary, "/rgtest.v1.Echo/Call"}, {"stream", stream, "/other.v1.Echo/Call"}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.call(ctx(t), conn, "panic")
			want := "the sidecar failed serving " + tc.method + ": boom"
			if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != want {
				t.Fatalf("panicking call: got %v %q, want INTERNAL %q", st.Code(), st.Message(), want)
			}
			if got, err := tc.call(ctx(t), conn, "after"); err != nil || got != "echo after" {
				t.Fatalf("the call after the panic: %q, %v; want echo after", got, err)
			}
		})
	}
}

// TestClientRecovery: a panic below a client (here in an interceptor after it, where a codec
// or a stats handler would panic) fails that call with INTERNAL; the client calls on.
func TestClientRecovery(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterEchoServer(s, &echo{entered: make(chan struct{}, 16), release: make(chan struct{})})
	go s.Serve(l)
	t.Cleanup(s.Stop)
	panicky := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if req.(*testpb.Req).Text == "panic" {
			panic("boom")
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(ClientRecovery(slog.New(slog.DiscardHandler)), panicky))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = unary(ctx(t), conn, "panic")
	want := "the sidecar failed calling /rgtest.v1.Echo/Call: boom"
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != want {
		t.Fatalf("panicking call: got %v %q, want INTERNAL %q", st.Code(), st.Message(), want)
	}
	if got, err := unary(ctx(t), conn, "after"); err != nil || got != "echo after" {
		t.Fatalf("the call after the panic: %q, %v; want echo after", got, err)
	}
}

// TestInFlight: with max calls running, the next fails at once with RESOURCE_EXHAUSTED and a
// message naming the limit; once one ends, calls are served again.
func TestInFlight(t *testing.T) {
	const max = 2
	u, s := InFlight(max, "durable calls")
	for _, tc := range []struct {
		name   string
		call   func(context.Context, *grpc.ClientConn, string, ...grpc.CallOption) (string, error)
		method string
	}{{"unary", unary, "/rgtest.v1.Echo/Call"}, {"stream", stream, "/other.v1.Echo/Call"}} {
		t.Run(tc.name, func(t *testing.T) {
			e, conn := serve(t, grpc.ChainUnaryInterceptor(u), grpc.ChainStreamInterceptor(s))
			errs := make(chan error, max)
			for range max {
				go func() { _, err := tc.call(ctx(t), conn, "block"); errs <- err }()
			}
			for range max {
				<-e.entered
			}
			start := time.Now()
			_, err := tc.call(ctx(t), conn, "one too many")
			want := tc.method + ": the sidecar already runs 2 durable calls, its limit; retry later or raise the limit"
			if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != want {
				t.Fatalf("call past the bound: got %v %q, want RESOURCE_EXHAUSTED %q", st.Code(), st.Message(), want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the refusal took %v; it must not wait for a slot", d)
			}
			close(e.release)
			for range max {
				if err := <-errs; err != nil {
					t.Errorf("a call within the bound failed: %v", err)
				}
			}
			if got, err := tc.call(ctx(t), conn, "later"); err != nil || got != "echo later" {
				t.Errorf("a call after the others ended: %q, %v", got, err)
			}
		})
	}
}
