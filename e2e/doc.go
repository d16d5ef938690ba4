// Package e2e holds the end-to-end tests: real grpc-go apps talking through two sidecars and a
// real Restate server that the tests start (see internal/testenv).
package e2e
