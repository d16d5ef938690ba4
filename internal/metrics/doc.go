// Package metrics holds the sidecar's metrics and serves them in Prometheus's text format
// (OpenTelemetry's SDK behind OpenTelemetry's Prometheus exporter, on the sidecar's own
// registry, so a scrape shows the sidecar's numbers and nothing of the process that embeds it).
//
// Three groups:
//   - grpc-go's own OpenTelemetry instrumentation (gRFC A66) on the durable path's local
//     grpc.Server (ServerOption) and on the inbound client to the app (DialOption):
//     grpc.server.call.* and grpc.client.attempt.* / grpc.client.call.duration.
//   - The relay's passthrough streams (Stream) under the same names and labels as grpc-go's
//     server side, grpc.server.call.*, recorded from the relay's stream observer: the outbound
//     listener's grpc.server.call.duration covers every call the app made through it. These
//     are client_golang's counters and histograms, merged into grpc-go's families at each
//     scrape, because the relay records every stream and the SDK's records cost too much.
//   - The sidecar's own, restate_grpc_*: durable calls by route, mode, target kind and code,
//     calls in flight, sends accepted, re-attaches, connection errors to the ingress and the
//     app, the state of each readiness check (registration among them), and the streams and
//     connections the relay refused or closed for what a peer did.
//
// The others are OpenTelemetry instruments under one MeterProvider. Recording costs no allocation once a label set has been seen: every label set of the
// sidecar's own metrics is bound when the sidecar starts (per route, mode and code; per HTTP/2
// error code), and a passthrough method's sets are bound on its first stream and kept, up to
// maxMethods methods, past which methods are labelled "other" (as grpc-go labels methods it
// does not know) so that no caller can grow the label space without bound. Nothing records
// with the call's context: a sampled span in it would make the SDK keep exemplars.
//
// A nil *Registry records nothing; its methods are no-ops, so the call paths need no checks.
package metrics
