// Package proxy relays gRPC calls at the HTTP/2 frame level. It serves a listener; for each
// stream a Director chooses its fate from the request headers: relayed as it is to an upstream,
// handed to a local server (over an in-memory connection), or answered with a status.
//
// Relaying frames instead of ending each call in a gRPC server and starting it again in a
// client is what makes passthrough cheap: a frame read from one side is written to the other
// by the same goroutine, with no decode, no re-encode and no goroutine hand-off, so a call
// crosses the relay in about the time of the two socket operations.
//
// Streams keep their ids: each downstream connection has its own upstream connections, so the
// ids a connection uses on an upstream only grow. Headers are decoded (the Director reads them)
// and encoded again for the other side's HPACK state. Flow control is the relay's own on each
// side: it buffers what the other side's window does not admit yet and credits the sender only
// for what it has passed on, so a slow reader holds back its writer and memory stays bounded.
//
// # The Director
//
// Server.Director is called once for each stream a downstream connection opens, as its
// request headers arrive, before anything of the stream goes anywhere. It is not called for
// a stream the relay refuses first (REFUSED_STREAM, on a connection told GOAWAY), nor on a
// connection that is a loop (below).
//
// It runs on the connection's reading goroutine with the connection locked: every other
// frame of the connection, in both directions, waits for it. So it must be quick and must not
// block: no network or disk I/O, no waiting for anything that may wait on the relay. It is
// called concurrently for different connections. It may read the Request (Method, Authority,
// Header, Destination) and keep it, but must not change it: its Header is what the relay sends
// on.
//
// It answers with a Decision, of which exactly one of these is set (if several are, Status
// wins, then Local; a Decision with none fails the stream with UNAVAILABLE):
//   - Upstream, a host:port: the stream is relayed frame by frame to that upstream, on one of
//     the connections the downstream connection has to it, dialed at its first stream there
//     and more when the upstream's SETTINGS_MAX_CONCURRENT_STREAMS is reached. An upstream
//     that cannot be reached, fails or goes silent fails the stream with UNAVAILABLE.
//   - Local: the stream is handed to the server behind Server.Local, likewise.
//   - Status: the stream is answered with that status alone (trailers-only), and reset
//     (NO_ERROR) if the caller is still sending; nothing is dialed.
//
// and, for a relayed or local stream:
//   - Header is added to the request headers, in place of any fields of the same names the
//     caller sent, so that a caller cannot forge what the Director adds.
//   - MaxRequestMessage, above 0, bounds each request message: a larger one ends the call with
//     RESOURCE_EXHAUSTED before it is passed on, and the upstream's stream is cancelled.
//
// The route of a call is decided there, once: nothing downstream of the Director looks at the
// headers again.
//
// # Connections
//
// A downstream connection must send its preface and its SETTINGS within
// Limits.PrefaceTimeout, and is told GOAWAY (NO_ERROR) after Limits.IdleTimeout without a
// stream. An upstream connection that has been silent for Limits.KeepaliveInterval while it
// has streams is pinged, and its calls fail with UNAVAILABLE when nothing comes back within
// Limits.KeepaliveTimeout; it is closed after Limits.UpstreamIdleTimeout without a stream.
// A downstream connection that is an upstream connection of a relay of the same process come
// back (a call routed to the relay it passed through) has its streams refused with
// FAILED_PRECONDITION. Server.Destination, when set, tells where each accepted connection was
// going (a CONNECT target, or the original destination of a redirected connection), for the
// Director to read in Request.Destination.
//
// Server.Observe, when set, learns each decided stream's Request and Decision as it starts,
// as the Director does, with the connection locked, and how it ended (StreamEnd), after the
// relay has written the end, without the lock: the observer's work does not delay the answer.
// Observing allocates nothing of the relay's own: the record lives in the stream. Server.Refused
// learns each stream refused before the Director saw it (REFUSED_STREAM, FRAME_SIZE_ERROR), and
// Server.Broke each connection closed for what its peer did (the GOAWAY's code): the listener's
// metrics.
package proxy
