// Package soak runs durable calls through both sidecars against a Restate cluster, with every
// part a real process it can kill and restart, and counts what the callers and the app saw:
// calls made, completed and lost, the callers' errors by code, executions at the app per call,
// calls answered under more than one invocation id, the longest stall, and the sidecars' memory
// and goroutines over time. The cluster tests of e2e and cmd/soak (`make soak`) share it.
package soak
