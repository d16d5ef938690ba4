#!/usr/bin/env bash
# Installs what the Kubernetes tests need: a kube-apiserver built from the Go module (no package
# ships one; the build takes about 5 minutes the first time) and Debian's etcd. The binaries are
# cached outside the clone, in $RESTATE_GRPC_KUBE_ASSETS (default ~/.cache/restate-grpc/kube-VERSION),
# so a fresh clone reuses them. Safe to run again: it only installs what is missing.
set -euo pipefail

KUBE_VERSION=1.37.2
assets=${RESTATE_GRPC_KUBE_ASSETS:-${XDG_CACHE_HOME:-$HOME/.cache}/restate-grpc/kube-$KUBE_VERSION}
need() { command -v "$1" >/dev/null 2>&1; }

if ! [ -x "$assets/etcd" ]; then
  if ! need etcd && ! [ -x /usr/bin/etcd ]; then
    if [ "$(id -u)" -eq 0 ] && need apt-get; then
      echo "kube: installing etcd-server" >&2
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
    else
      echo "kube: etcd is missing (the Kubernetes tests run a real API server on it);" \
        "on Debian: apt-get install -y etcd-server" >&2
      exit 1
    fi
  fi
  mkdir -p "$assets"
  ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$assets/etcd"
fi

if ! "$assets/kube-apiserver" --version 2>/dev/null | grep -q "v$KUBE_VERSION\$"; then
  echo "kube: building kube-apiserver v$KUBE_VERSION into $assets (about 5 minutes, once)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  # k8s.io/kubernetes replaces its staging modules with local paths: require them at their tags.
  gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    printf 'module kapibuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$KUBE_VERSION"
    grep -E '=> \./staging/src/' "$gomod" | awk -v v="v0.${KUBE_VERSION#1.}" '{print "\t"$1" => "$1" "v}'
    printf ')\n'
  } >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n' >tools.go
  GOFLAGS=-mod=mod go mod tidy >&2
  mkdir -p "$assets"
  go build -ldflags "-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION" \
    -o "$assets/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$assets/kube-apiserver.tmp" "$assets/kube-apiserver"
fi
"$assets/kube-apiserver" --version >&2
