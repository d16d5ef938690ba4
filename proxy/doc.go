// Package grpcrelay relays gRPC calls at the HTTP/2 frame level. It serves a listener; for each
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
package proxy
