// Package e2e holds the end-to-end tests: real grpc-go apps talking through two sidecars and a
// real Restate server that the tests start (see internal/testenv). The interception tests
// (interception_test.go) build a pod network of real namespaces instead, with unmodified
// clients in grpc-go, Python and Node (internal/testservice/client); they need root.
package e2e
