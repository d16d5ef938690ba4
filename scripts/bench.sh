#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md: installs what is missing, then measures the paths twice: with
# the app and the sidecars in the benchmark's process (the cost of the sidecars' own work), and
# with each in its own process, as deployed (that plus the process hops). Extra arguments go to both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/tools.sh >/dev/null
go run ./cmd/bench "$@"
echo
go run ./cmd/bench -processes "$@"
