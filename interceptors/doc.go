// Package interceptors holds the grpc-go interceptors the sidecar puts on its own gRPC servers
// (durable calls and the management API on the outbound side) and on the inbound side's client
// to the app, and the metadata policy they share.
//
// Recovery and ClientRecovery turn a panic in one call into INTERNAL for that call instead of
// a crash of the sidecar; InFlight bounds the calls a server runs at once and refuses the rest
// at once with RESOURCE_EXHAUSTED; ProtoOnly refuses calls in any codec but protobuf, since the
// sidecar hands request bytes on without decoding them; AppMetadata gives the app the caller's
// credentials that crossed Restate (Credentials, CarriedPrefix) and none of the hop's.
package interceptors
