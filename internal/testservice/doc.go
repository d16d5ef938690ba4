// Package testservice is the legacy gRPC app of the end-to-end tests: a real grpc-go server that
// records every call it executes (method, key, invocation id, metadata, start and end), so tests
// can count executions and check order, and that fails or stalls on request.
package testservice
