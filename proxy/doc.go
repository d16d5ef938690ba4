// Package proxy is the sidecar's outbound listener: it accepts the app's gRPC calls and either
// turns them into Restate invocations (calls that match a route rule) or forwards them unchanged
// to their original destination (passthrough, streaming included).
//
// Payloads are never decoded: the listener's codec hands every message over as raw bytes, which
// go to the Restate ingress as application/proto, or to the upstream as they came. Only a route
// that takes its key from a message field reads that one field off the wire.
//
// All of it is one grpc.StreamHandler installed as the server's unknown-service handler, so
// services registered on the same server (the management API) keep working beside it.
package proxy
