package durable

import "github.com/restate-grpc/restate-grpc/proxy"

// upstream is where a passthrough call of gRPC service svc goes. A connection that told where
// it was going (a CONNECT target, an original address) goes there, or to the upstreams entry
// keyed by that destination; one that did not (explicit mode) goes to the entry of its
// service, or to its :authority.
func (h *Handler) upstream(svc string, r *proxy.Request) string {
	if d := r.Destination; d != "" {
		if addr, ok := h.cfg.Upstreams[d]; ok {
			return addr
		}
		return d
	}
	if addr, ok := h.cfg.Upstreams[svc]; ok {
		return addr
	}
	return r.Authority
}
