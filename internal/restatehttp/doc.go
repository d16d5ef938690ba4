// Package restatehttp is the sidecar's client of Restate's HTTP ingress and admin API: it turns a call
// into an invocation (call or send, delayed, with idempotency key and object key or workflow id),
// registers deployments, and maps every Restate error to the gRPC status a caller should see.
//
// Of a Restate cluster it knows every node (nodes.go): a list of URLs, or a name that resolves
// to several addresses, looked up again now and then. Requests go round the nodes in service; a
// node whose connection fails is taken out and probed back with a bounded backoff, a node that
// does not know a service another serves is skipped, and a request that may be sent twice
// (reads, admin requests, calls with an idempotency key) goes to the next node when its
// connection breaks mid-way.
//
// It speaks HTTP by hand rather than through sdk-go's ingress client, because the sidecar needs
// what that client hides: URL-escaped keys, the x-restate-id response header, raw bodies with a
// chosen content type, and the admin API.
package restatehttp
