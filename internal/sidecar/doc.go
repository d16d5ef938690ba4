// Package sidecar wires the sidecar's parts from a config: the outbound listener, the inbound
// Restate endpoint with its registration, and the health port: /healthz, /readyz, the
// metrics (/metrics) and the effective config with its secrets redacted (/config). It owns every goroutine it
// starts; all of them end when the context given to Start ends, and Wait returns after that.
package sidecar
