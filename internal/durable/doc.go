// Package durable is the sidecar's outbound policy: which of the app's calls become Restate
// invocations, and how.
//
// Its Director (passthrough.go) decides each stream the relay (package proxy) accepts, from
// the headers alone, matching the routes once: a call on a durable route, or to the sidecar's
// own services, goes over an in-memory connection to a local grpc.Server, behind the
// interceptors of package interceptors; any other gRPC call passes through to its upstream
// frame by frame, or is refused. On the local server, Handle runs a durable call: it reads the
// per-call overrides (restate-* metadata), selects the headers Restate may journal, and runs
// the invocation through the ingress (call, send, delayed send, attach), re-attaching, on
// another node of a cluster if need be, when the connection to Restate breaks; a route may give
// calls without an idempotency key one of the sidecar's own (autoIdempotencyKey) for that.
//
// Payloads are never decoded: durable calls reach Handle as raw bytes, which go to the Restate
// ingress as application/proto. Only a route that takes its key from a message field reads
// that one field off the wire.
package durable
