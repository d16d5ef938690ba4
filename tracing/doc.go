// Package tracing sets up the sidecar's OpenTelemetry spans and holds what its call paths share:
// the W3C trace-context propagation over gRPC metadata and HTTP headers, and the span names and
// attributes of OpenTelemetry's RPC semantic conventions.
//
// Setup reads the config's tracing section and the standard OTEL_* environment. Config fields
// win over the environment where both are set, as an SDK's explicit options win over its
// variables; what the config leaves unset is read by the SDK itself (OTEL_EXPORTER_OTLP_*,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), so the variables behave as they do for any
// OpenTelemetry program. The sampler (OTEL_TRACES_SAMPLER and _ARG) is read here, as the SDK
// reads it, so that the relay can decide a stream's sampling before it makes a span
// (StartRelay); a value the SDK would log and ignore fails Setup, saying what to fix. Without
// an endpoint from either, tracing is off: the Provider's TracerProvider is nil and the call
// paths make no spans at all, while the trace context still flows from the caller to the
// callee as it arrived.
//
// The spans of one durable call, caller to callee (Restate's own are its tracing-endpoint's):
//
//	outbound sidecar  CLIENT  pkg.Svc/Method   the durable call; its context goes to the ingress
//	Restate           ingress, invocation-start, invocation-attempt (one per attempt)
//	inbound sidecar   SERVER  pkg.Svc/Method   one per attempt, child of Restate's attempt span
//	inbound sidecar   CLIENT  pkg.Svc/Method   the call to the app, whose traceparent it is
//
// A passthrough call has one CLIENT span on the outbound sidecar, whose context the upstream
// gets. The relay only records it (Relay): the SDK's span is made off the relay's goroutines,
// in batches, with the ids the upstream was sent. The server spans carry the invocation id and
// the attempt number (restate.invocation.attempt, 1 for the first), which Restate sends only in
// the protocol's StartMessage: the inbound endpoint reads it there, when tracing is on, before
// sdk-go does.
package tracing
