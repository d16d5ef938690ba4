#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md: installs what is missing, then measures the four paths (and a
# native reference) on this machine and prints the table and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/tools.sh >/dev/null
go run ./cmd/bench "$@"
