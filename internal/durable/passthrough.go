package durable

import (
	"net"
	"strconv"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/proxy"
)

// routeHeader tells the local server which route the Director matched, so that a durable call
// is matched once. The relay puts it in place of any the caller sent, and it never leaves the
// sidecar (ingressHeader drops x-restate- names).
const routeHeader = "x-restate-grpc-route"

var noRoute = []hpack.HeaderField{{Name: routeHeader, Value: "-1"}}

func routeField(i int) []hpack.HeaderField {
	return []hpack.HeaderField{{Name: routeHeader, Value: strconv.Itoa(i)}}
}

// direct decides each call on the outbound listener from its headers. Durable routes run in
// Handle; the local server takes the sidecar's own services (own) and anything that is not
// gRPC (which grpc-go answers as it should); every other call passes through unchanged to its
// upstream (upstream: where its connection was going, or where the config sends it), or is
// refused.
func (h *Handler) direct(own map[string]bool) func(*proxy.Request) proxy.Decision {
	return func(r *proxy.Request) proxy.Decision {
		svc, _ := splitMethod(r.Method)
		if !r.IsGRPC() || own[svc] {
			return proxy.Decision{Local: true, Header: noRoute}
		}
		if i := h.routes.index(r.Method); i >= 0 {
			return proxy.Decision{Local: true, Header: routeField(i), MaxRequestMessage: h.cfg.MaxMessageBytes}
		}
		if h.cfg.Unmatched == config.UnmatchedReject {
			return refuse(codes.Unimplemented, "%s matches no route and unmatched calls are rejected (outbound.unmatched: reject)", r.Method)
		}
		addr := h.upstream(svc, r)
		if addr == "" || h.isSelf(addr) {
			return refuse(codes.Unavailable, "no upstream for %s: add outbound.upstreams[%q], or dial the sidecar with grpc.WithAuthority(\"host:port of the service\")", r.Method, svc)
		}
		return proxy.Decision{Upstream: addr, MaxRequestMessage: h.cfg.MaxMessageBytes, Header: h.startRelaySpan(r, addr)}
	}
}

func refuse(c codes.Code, format string, a ...any) proxy.Decision {
	return proxy.Decision{Status: status.Newf(c, format, a...)}
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
