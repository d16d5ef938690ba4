package proxy

import (
	"context"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// hopHeader marks calls the sidecar forwarded, so that a call routed back to the sidecar
// itself fails instead of looping.
const hopHeader = "x-restate-grpc-hop"

// passthrough forwards a call of any kind unchanged to its original destination.
func (h *Handler) passthrough(stream grpc.ServerStream, method string) error {
	ctx := stream.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get(hopHeader)) > 0 {
		return status.Errorf(codes.FailedPrecondition, "%s came back to the sidecar it passed through: its upstream is the sidecar itself", method)
	}
	conn, err := h.upstream(method, md)
	if err != nil {
		return err
	}
	out := metadata.MD{}
	for k, vs := range md {
		if k[0] != ':' && k != "content-type" && k != "user-agent" && k != "te" {
			out[k] = vs
		}
	}
	out.Set(hopHeader, "1")
	// The upstream call lives exactly as long as this handler: cancelling it on every return
	// stops the client-to-upstream pump below.
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method,
		grpc.MaxCallRecvMsgSize(h.cfg.MaxMessageBytes), grpc.MaxCallSendMsgSize(h.cfg.MaxMessageBytes))
	if err != nil {
		return err
	}
	// Buffered, so the pump never blocks on an error nobody reads once this handler returns.
	c2s := make(chan error, 1)
	go func() { c2s <- pumpToUpstream(stream, cs) }()

	headerSent := false
	for {
		var msg []byte
		err := cs.RecvMsg(&msg)
		if !headerSent {
			// The upstream's header goes out with the first message, or with the status
			// when the upstream answers with an error and no message.
			if hdr, herr := cs.Header(); herr == nil && len(hdr) > 0 {
				if serr := stream.SetHeader(hdr); serr != nil {
					return serr
				}
			}
			headerSent = true
		}
		if err != nil {
			stream.SetTrailer(cs.Trailer())
			if err == io.EOF {
				return nil
			}
			return err // the upstream's status, unchanged
		}
		if err := stream.SendMsg(&msg); err != nil {
			return err
		}
		select {
		case err := <-c2s:
			if err != nil {
				return err
			}
			c2s = nil // half-closed; keep relaying the upstream's messages
		default:
		}
	}
}

// pumpToUpstream relays the caller's messages and half-closes when the caller does.
func pumpToUpstream(stream grpc.ServerStream, cs grpc.ClientStream) error {
	for {
		var msg []byte
		if err := stream.RecvMsg(&msg); err != nil {
			if err == io.EOF {
				return cs.CloseSend()
			}
			return err
		}
		if err := cs.SendMsg(&msg); err != nil {
			if err == io.EOF {
				return nil // the upstream finished; its status comes from RecvMsg
			}
			return err
		}
	}
}

// upstream returns the connection for a passthrough call: the upstream configured for its
// service, or else its :authority.
func (h *Handler) upstream(method string, md metadata.MD) (*grpc.ClientConn, error) {
	svc, _ := splitMethod(method)
	addr, ok := h.cfg.Upstreams[svc]
	if !ok {
		if a := md.Get(":authority"); len(a) > 0 {
			addr = a[0]
		}
	}
	if addr == "" || h.isSelf(addr) {
		return nil, status.Errorf(codes.Unavailable, "no upstream for %s: add outbound.upstreams[%q], or dial the sidecar with grpc.WithAuthority(\"host:port of the service\")", method, svc)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.conns[addr]; ok {
		return c, nil
	}
	c, err := DialPlaintext(addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "dialing upstream %s for %s: %v", addr, method, err)
	}
	h.conns[addr] = c
	return c, nil
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
