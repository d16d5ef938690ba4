package interceptors

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InFlight returns server interceptors that let at most max calls run at once; a call past
// that fails at once with RESOURCE_EXHAUSTED instead of queueing, so that a flood of calls
// holds no more memory and goroutines than max of them. what names the calls in the message.
func InFlight(max int, what string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	slots := make(chan struct{}, max)
	acquire := func(method string) error {
		select {
		case slots <- struct{}{}:
			return nil
		default:
			return status.Errorf(codes.ResourceExhausted, "%s: the sidecar already runs %d %s, its limit; retry later or raise the limit", method, max, what)
		}
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := acquire(info.FullMethod); err != nil {
			return nil, err
		}
		defer func() { <-slots }()
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := acquire(info.FullMethod); err != nil {
			return err
		}
		defer func() { <-slots }()
		return handler(srv, ss)
	}
	return unary, stream
}
