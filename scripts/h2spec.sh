#!/usr/bin/env bash
# Installs h2spec (github.com/summerwind/h2spec, the HTTP/2 conformance suite the relay's tests
# run) into ./.tools/bin, built from source through the Go module proxy at the versions pinned
# in scripts/h2spec/go.mod and go.sum: h2spec has no go.mod of its own, so a bare
# `go install ...@version` would build it against whatever its dependencies' latest are.
# Safe to run again: it rebuilds only when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$PWD/.tools/bin
stamp=$bin/h2spec.sum
want=$(cat scripts/h2spec/go.mod scripts/h2spec/go.sum | sha256sum | cut -d' ' -f1)

if [ -x "$bin/h2spec" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "tools: building h2spec into .tools/bin (pinned in scripts/h2spec/go.mod)"
mkdir -p "$bin"
(cd scripts/h2spec && GOBIN="$bin" GOFLAGS="-mod=readonly -buildvcs=false" go install tool)
echo "$want" >"$stamp"
