// Package manifests holds the Kubernetes manifests (kustomize) and, in its tests, what keeps them
// honest: every kustomization is built with kustomize's library, every object decoded strictly
// into the k8s.io/api types and applied to a real API server (internal/testenv), and the fields
// the injector's contract depends on are checked. The directories:
//
//   - injector: the injector (namespace restate-grpc-system) with RBAC, Service, Deployment,
//     PodDisruptionBudget, its config and the MutatingWebhookConfiguration, making its own
//     certificates; the objects are in injector/base.
//   - injector/cert-manager: the same with its serving certificate from cert-manager, signed by a
//     CA of its own that cert-manager keeps.
//   - restate: a single-node Restate server, and the headless Service restate-nodes that the
//     injector's defaults name.
//   - restate-cluster: restate made a 3-node cluster (replication 2, a PodDisruptionBudget of
//     one); its pod start script is run by the tests for each ordinal.
//   - examples: the demo's two apps (examples/orders), annotated for injection.
//   - monitoring: the sidecars' Prometheus alerting rules (alerts.yaml, a plain rules file,
//     checked and unit-tested with promtool) as a ConfigMap for a Prometheus to mount.
package manifests
