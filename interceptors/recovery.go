package interceptors

import (
	"context"
	"log/slog"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Recovery returns server interceptors that answer a call whose handler panics with INTERNAL
// and log the panic with its stack; the sidecar and its other calls go on.
func Recovery(log *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	recovered := func(method string, err *error) {
		if p := recover(); p != nil {
			log.Error("panic in a call; answered INTERNAL", "method", method, "panic", p, "stack", string(debug.Stack()))
			*err = status.Errorf(codes.Internal, "the sidecar failed serving %s: %v", method, p)
		}
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (_ any, err error) {
		defer recovered(info.FullMethod, &err)
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer recovered(info.FullMethod, &err)
		return handler(srv, ss)
	}
	return unary, stream
}

// ClientRecovery is Recovery for the calls a client makes: a panic below the client (in
// another interceptor or a codec) fails that call with INTERNAL.
func ClientRecovery(log *slog.Logger) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) (err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in a call to the app; answered INTERNAL", "method", method, "panic", p, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "the sidecar failed calling %s: %v", method, p)
			}
		}()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
