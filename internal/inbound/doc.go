// Package inbound serves the app beside the sidecar to Restate as a deployment: an sdk-go
// endpoint whose services mirror the app's gRPC services, each handler forwarding the raw
// request bytes to the app as a unary gRPC call and returning the raw response bytes.
//
// The app's gRPC status decides the Restate outcome: a code listed as retryable (or a transport
// failure) is a retryable error, so Restate retries until the app answers; any other code is a
// terminal error whose metadata carries the status, which the outbound side rebuilds unchanged.
package inbound
