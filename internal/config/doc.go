// Package config is the sidecar's configuration schema: one schema for the config file and for
// the pod annotations (YAML or JSON), its defaults, and its validation. Every validation error
// names the field and says what would be accepted, so a user can fix the file without the docs.
//
// It imports neither grpc nor Kubernetes: the proxy, the inbound endpoint and the injector all
// read the same types.
package config
