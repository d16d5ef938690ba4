#!/usr/bin/env bash
# The demo: two unmodified gRPC apps (shop -> orders) talk durably through Restate, each beside
# a sidecar. Installs what is missing, builds, starts a local Restate server, the orders app and
# both sidecars, walks through every feature, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/tools.sh >/dev/null
RESTATE=$PWD/.tools/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server
echo "==> Building the sidecar and the two example apps"
mkdir -p bin
go build -ldflags "-X main.version=$(git describe --tags --always --dirty 2>/dev/null || echo devel) -X main.commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -o bin/ ./cmd/sidecar ./examples/orders/cmd/orders ./examples/orders/cmd/shop

for port in 28080 29070 25122 50051 9080 15001 15021 15022; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "demo: port $port is in use; stop what listens there and run again" >&2
    exit 1
  fi
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_http() { # url what
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "demo: $2 did not come up ($1); logs in $work" >&2
  exit 1
}

echo "==> Starting Restate $("$RESTATE" --version | head -1 | cut -d' ' -f2) (ingress :28080, admin :29070; log $work/restate.log)"
cat > "$work/restate.toml" <<TOML
cluster-name = "demo"
bind-address = "127.0.0.1:25122"
advertised-address = "http://127.0.0.1:25122/"
[admin]
bind-address = "127.0.0.1:29070"
[ingress]
bind-address = "127.0.0.1:28080"
TOML
"$RESTATE" --no-logo --base-dir "$work/restate" -c "$work/restate.toml" >"$work/restate.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:28080/restate/health "Restate"

start_orders() {
  bin/orders -listen 127.0.0.1:50051 &
  orders_pid=$!
  pids+=($orders_pid)
}
echo "==> Starting the orders app (:50051) and its inbound sidecar (:9080, registers with Restate)"
start_orders
bin/sidecar run -config examples/orders/orders-sidecar.yaml -health 127.0.0.1:15022 2>"$work/orders-sidecar.log" &
pids+=($!)
wait_http http://127.0.0.1:15022/readyz "the orders sidecar"

echo "==> Starting the shop's outbound sidecar (:15001)"
bin/sidecar run -config examples/orders/shop-sidecar.yaml -health 127.0.0.1:15021 2>"$work/shop-sidecar.log" &
pids+=($!)
wait_http http://127.0.0.1:15021/healthz "the shop sidecar"

bin/shop tour | tee "$work/tour.log"

echo
echo "==> Managing invocations from a shell: the checkout workflow of the first order"
wf=$(grep -o 'order-[0-9]*' "$work/tour.log" | head -1)
bin/sidecar invocations lookup -addr 127.0.0.1:15001 -workflow orders.v1.Checkout -workflow-id "$wf" | sed 's/^/    /'
bin/sidecar invocations output -addr 127.0.0.1:15001 -workflow orders.v1.Checkout -workflow-id "$wf" | sed 's/^/    /'

echo
echo "==> Durability: the orders app goes down, the shop calls anyway"
kill "$orders_pid"; wait "$orders_pid" 2>/dev/null || true
bin/shop outage &
outage=$!
sleep 3
echo "    [demo] restarting the orders app"
start_orders
wait "$outage"

echo
echo "==> Done. Everything the demo started is stopped now."
