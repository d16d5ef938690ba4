// Package intercept is the outbound listener's interception layer: a net.Listener in front of
// the relay that serves every interception mode on one port and learns where each connection
// was going.
//
// Each accepted connection is sniffed once: its first bytes are read, waiting at most
// Options.DetectTimeout, and never more than a small bounded prefix is held. Then:
//
//   - The HTTP/2 client preface: an h2c connection. Accept returns it (a *Conn, its sniffed
//     bytes replayed) with its Destination: the original destination (SO_ORIGINAL_DST) when
//     iptables redirected it, else empty (explicit mode: the app dialed the listener).
//   - `CONNECT host:port HTTP/1.1` on a connection that was not redirected (proxy-env mode:
//     grpc_proxy, https_proxy, http_proxy; a redirected one is going to a proxy of its own): the
//     target is checked (a malformed request is answered 400; the sidecar's own listeners and,
//     when an allow-list is set, targets outside it are answered 403; each with a reason), then
//     answered 200 and the tunnel is sniffed again as a fresh connection: h2c is returned by
//     Accept with the CONNECT target, as sent (a name stays unresolved), as its Destination;
//     anything else is relayed opaque to the target, which the sidecar dials.
//   - Anything else, or nothing within the timeout (server-first protocols such as SMTP or
//     MySQL): a redirected connection is relayed opaque, byte for byte both ways with
//     half-close, to its original destination; any other is closed.
//
// Only h2c connections leave through Accept. The rest the Listener serves itself, on
// goroutines it owns: at most Options.MaxConns at once (being sniffed, in a CONNECT handshake,
// or relayed), past which new connections are closed; each opaque tunnel holds two fixed
// buffers. Close ends them all.
//
// Opaque and CONNECT destinations are dialed by the sidecar itself. In a pod, iptables mode's
// rules exclude the sidecar's uid, so these dials are not captured again.
package intercept
