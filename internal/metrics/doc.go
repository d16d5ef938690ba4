// Package metrics holds the sidecar's metrics and serves them in Prometheus's text format, on
// the sidecar's own registry, so a scrape shows the sidecar's numbers and nothing of the
// process that embeds it.
//
// Two groups:
//   - gRFC A66's per-call gRPC metrics, under the names, labels, units and buckets grpc-go's
//     own OpenTelemetry instrumentation exports: grpc.server.call.* for every call the outbound
//     listener serves, from the relay's stream observer (Stream) and from the local
//     grpc.Server's stats handler (ServerOption), and grpc.client.attempt.* and
//     grpc.client.call.duration for the inbound client to the app (DialOptions). Every call
//     records these, so they are client_golang's lock-free counters and histograms, read into
//     their families at each scrape (gather): OpenTelemetry's SDK resolves a record's label set
//     anew each time, which cost the relay as much CPU as relaying the stream, and grpc-go's
//     instrumentation allocated some thirty times a call.
//   - The sidecar's own, restate_grpc_* (OpenTelemetry's SDK behind its Prometheus exporter):
//     durable calls by route, mode, target kind and code, calls in flight, sends accepted,
//     re-attaches, connection errors to the ingress and the app, the state of each readiness
//     check (registration among them), and the streams and connections the relay refused or
//     closed for what a peer did.
//
// Recording costs no allocation once a label set has been seen (a stats handler's one
// allocation a call is the call's record in its context): every label set of the sidecar's
// own metrics is bound when the sidecar starts (per route, mode and code; per HTTP/2 error
// code), and a method's on its first call and kept, up to maxMethods methods a side, past
// which methods are labelled "other" so that no caller can grow the label space without
// bound. Nothing records with the call's context: a sampled span in it would make the SDK
// keep exemplars.
//
// A nil *Registry records nothing; its methods are no-ops, so the call paths need no checks.
package metrics
