package interceptors

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ProtoOnly returns a stream server interceptor that refuses calls whose content-subtype is
// not protobuf (application/grpc or application/grpc+proto) with INVALID_ARGUMENT. The
// sidecar moves request bytes without decoding them, and the app behind Restate reads them as
// protobuf: a JSON body would reach it as garbage.
func ProtoOnly() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := checkProto(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func checkProto(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	ct := ""
	if v := md.Get("content-type"); len(v) > 0 {
		ct = v[len(v)-1]
	}
	sub, _ := strings.CutPrefix(ct, "application/grpc")
	sub, _, _ = strings.Cut(sub, ";")
	switch sub {
	case "", "+proto":
		return nil
	}
	return status.Errorf(codes.InvalidArgument, "%s: content-type %q: durable calls take protobuf only (application/grpc or application/grpc+proto), since the sidecar passes the bytes on to an app that reads protobuf; call with the proto codec", method, ct)
}
