// Package testenv starts the real parts the tests run against: a Restate server (the pinned npm
// build, installed by scripts/tools.sh) on free loopback ports with a fresh base dir, and the
// helpers to reach it; a Restate cluster (StartCluster: three nodes on loopback ports,
// replication 2, each node killed and restarted on its own, the metadata and partition leaders
// from the pinned restatectl); a pod network of real network namespaces (PodNet), with processes
// run inside its pods as a given uid; a Kubernetes API server (kube-apiserver on its own etcd,
// from scripts/kube.sh; no controllers, scheduler or kubelet) with a helper that registers a
// webhook configuration from the manifests against a test's own handler; and a kubelet
// emulator (RunPod) that runs a pod, as the API server stored it, in one of those namespaces:
// its containers' commands as processes with the volumes, environment, users, capabilities,
// hooks and probes its spec gives them. It never mocks Restate or the API server; when a part
// is missing it fails and says how to install it.
package testenv
