// Package restatehttp is the sidecar's client of Restate's HTTP ingress and admin API: it turns a call
// into an invocation (call or send, delayed, with idempotency key and object key or workflow id),
// registers deployments, and maps every Restate error to the gRPC status a caller should see.
//
// It speaks HTTP by hand rather than through sdk-go's ingress client, because the sidecar needs
// what that client hides: URL-escaped keys, the x-restate-id response header, raw bodies with a
// chosen content type, and the admin API.
package restatehttp
