// Package proxy is the sidecar's outbound listener: it accepts the app's gRPC calls and either
// turns them into Restate invocations (calls that match a route rule) or forwards them unchanged
// to their original destination (passthrough, streaming included).
//
// A Server relays each HTTP/2 stream at the frame level (internal/grpcrelay) and decides it
// from its headers alone: a passthrough call goes to its upstream frame by frame, so it costs
// about what a TCP relay costs; a durable call runs in Handle, with the relay as its gRPC
// server; the sidecar's own services (the management API) go over an in-memory connection to
// a local grpc.Server.
//
// Payloads are never decoded: durable calls reach the Handler as raw bytes, which go to the
// Restate ingress as application/proto; passthrough calls are not even split into messages.
// Only a route that takes its key from a message field reads that one field off the wire.
package durable
