#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md: installs what is missing, then measures the paths three times:
# with the app and the sidecars in the benchmark's process (the cost of the sidecars' own work);
# with each in its own process, as deployed (that plus the process hops), the sidecars on one
# core as they run by default; and the same with the sidecars on two cores (-procs 2). Extra
# arguments go to all three.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/tools.sh >/dev/null
go run ./cmd/bench "$@"
echo
go run ./cmd/bench -processes "$@"
echo
go run ./cmd/bench -processes -sidecar-procs 2 "$@"
