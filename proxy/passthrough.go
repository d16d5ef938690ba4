package proxy

import (
	"net"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/grpcrelay"
)

// hopHeader marks calls the sidecar forwarded, so that a call routed back to the sidecar
// itself fails instead of looping.
const hopHeader = "x-restate-grpc-hop"

var hop = []hpack.HeaderField{{Name: hopHeader, Value: "1"}}

// direct decides each call on the outbound listener from its headers. Durable routes run in
// Handle; the local server takes the sidecar's own services (own) and anything that is not
// gRPC (which grpc-go answers as it should); every other call passes through unchanged to its
// upstream, or is refused.
func (h *Handler) direct(own map[string]bool) func(*grpcrelay.Request) grpcrelay.Decision {
	return func(r *grpcrelay.Request) grpcrelay.Decision {
		svc, _ := splitMethod(r.Method)
		switch {
		case !r.IsGRPC() || own[svc]:
			return grpcrelay.Decision{Local: true}
		case h.routes.match(r.Method) != nil:
			return grpcrelay.Decision{Handler: h.Handle, Unary: true, MaxRequestMessage: h.cfg.MaxMessageBytes}
		}
		if h.cfg.Unmatched == config.UnmatchedReject {
			return refuse(codes.Unimplemented, "%s matches no route and unmatched calls are rejected (outbound.unmatched: reject)", r.Method)
		}
		if _, looped := r.Get(hopHeader); looped {
			return refuse(codes.FailedPrecondition, "%s came back to the sidecar it passed through: its upstream is the sidecar itself", r.Method)
		}
		addr, ok := h.cfg.Upstreams[svc]
		if !ok {
			addr = r.Authority
		}
		if addr == "" || h.isSelf(addr) {
			return refuse(codes.Unavailable, "no upstream for %s: add outbound.upstreams[%q], or dial the sidecar with grpc.WithAuthority(\"host:port of the service\")", r.Method, svc)
		}
		return grpcrelay.Decision{Upstream: addr, Header: hop, MaxRequestMessage: h.cfg.MaxMessageBytes}
	}
}

func refuse(c codes.Code, format string, a ...any) grpcrelay.Decision {
	return grpcrelay.Decision{Status: status.Newf(c, format, a...)}
}

// isSelf reports whether addr is the sidecar's own listener.
func (h *Handler) isSelf(addr string) bool {
	if addr == h.self {
		return true
	}
	_, port, err := net.SplitHostPort(addr)
	_, lport, lerr := net.SplitHostPort(h.self)
	if err != nil || lerr != nil || port != lport {
		return false
	}
	host, _, _ := net.SplitHostPort(addr)
	return host == "localhost" || net.ParseIP(host).IsLoopback()
}
