// Package injector puts the sidecar into Kubernetes pods: the mutation itself (Inject), the
// mutating admission webhook that applies it to pods as the API server creates them, and the
// same for manifests on disk (InjectYAML), for manual injection and GitOps. A pod's
// restate-grpc.io/ annotations are checked with the sidecar's own config schema before
// anything is injected, so a pod never gets a sidecar that would refuse its config.
package injector
