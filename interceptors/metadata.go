package interceptors

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Credentials are the metadata that carry a caller's credentials. Restate journals every
// header of a call, so the outbound side withholds them from the ingress unless a route
// allows them (allowMetadata), and then carries them renamed with CarriedPrefix: the ingress
// request's own Authorization is the sidecar's bearer token, or a gateway's in front of
// Restate.
var Credentials = []string{"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}

// CarriedPrefix renames a credential on its way through Restate.
const CarriedPrefix = "x-restate-grpc-"

// hopCredentials authenticated a request to Restate's ingress (or a proxy in front of it),
// not the caller to the app.
var hopCredentials = []string{"authorization", "proxy-authorization"}

// AppMetadata returns the client interceptor of the inbound side's connection to the app,
// which applies ForApp to each call's metadata.
func AppMetadata() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if md, ok := metadata.FromOutgoingContext(ctx); ok {
			ctx = metadata.NewOutgoingContext(ctx, ForApp(md))
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// ForApp is the metadata the app gets of a call that crossed Restate: the caller's carried
// credentials under their own names; neither the credentials of the hop to Restate nor the
// sidecars' own x-restate- names.
func ForApp(md metadata.MD) metadata.MD {
	out := make(metadata.MD, len(md))
	for k, vs := range md {
		if c, ok := strings.CutPrefix(k, CarriedPrefix); ok && slices.Contains(Credentials, c) {
			out[c] = append(out[c], vs...)
			continue
		}
		if slices.Contains(hopCredentials, k) || strings.HasPrefix(k, "x-restate-") {
			continue
		}
		out[k] = append(out[k], vs...)
	}
	return out
}
