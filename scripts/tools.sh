#!/usr/bin/env bash
# Installs what the demo, the tests and the benchmark need and the machine may lack, into
# ./.tools (ignored by git). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

RESTATE_VERSION=1.7.12
tools=$PWD/.tools
bin=$tools/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server

need() { command -v "$1" >/dev/null 2>&1; }

if ! need go; then
  echo "tools: Go is missing; install Go 1.26 (https://go.dev/dl) and run again" >&2
  exit 1
fi

# The rawsock, iptables and interception tests make network namespaces (ip netns) and redirect
# connections with iptables inside them.
if [ "$(uname -s)" = Linux ] && ! (PATH=$PATH:/usr/sbin && need iptables && need ip6tables && need ip); then
  if [ "$(id -u)" -eq 0 ] && need apt-get; then
    echo "tools: installing iptables and iproute2"
    apt-get update -qq >&2 && apt-get install -y -qq iptables iproute2 >&2
  else
    echo "tools: iptables or ip is missing (the network namespace tests need them, as root);" \
      "on Debian: apt-get install -y iptables iproute2" >&2
  fi
fi

# The interception tests run unmodified gRPC clients in Python (Debian's python3-grpcio, gRPC
# C-core, imported by Debian's own /usr/bin/python3) and Node (@grpc/grpc-js, into .tools).
if [ "$(uname -s)" = Linux ] && ! /usr/bin/python3 -c 'import grpc' 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ] && need apt-get; then
    echo "tools: installing python3-grpcio"
    apt-get update -qq >&2 && apt-get install -y -qq python3-grpcio >&2
  else
    echo "tools: python3-grpcio is missing (the interception tests need it);" \
      "on Debian: apt-get install -y python3-grpcio" >&2
  fi
fi
GRPC_JS_VERSION=1.14.7
if ! grep -qs "\"version\": \"$GRPC_JS_VERSION\"" "$tools/node_modules/@grpc/grpc-js/package.json"; then
  if need npm; then
    echo "tools: installing @grpc/grpc-js@$GRPC_JS_VERSION into .tools"
    mkdir -p "$tools"
    npm install --silent --no-audit --no-fund --prefix "$tools" "@grpc/grpc-js@$GRPC_JS_VERSION" >&2
  else
    echo "tools: npm is missing (it installs @grpc/grpc-js for the interception tests);" \
      "on Debian: apt-get install -y nodejs npm" >&2
  fi
fi

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$RESTATE_VERSION"; then
  :
else
  if ! need npm; then
    echo "tools: npm is missing (it installs the pinned Restate server);" \
      "install Node.js and npm (Debian: apt-get install -y nodejs npm) and run again" >&2
    exit 1
  fi
  echo "tools: installing @restatedev/restate-server@$RESTATE_VERSION into .tools"
  mkdir -p "$tools"
  npm install --silent --no-audit --no-fund --prefix "$tools" "@restatedev/restate-server@$RESTATE_VERSION" >&2
fi
# The cluster tests ask restatectl (the same release) for the metadata and partition leaders.
ctl=$tools/node_modules/@restatedev/restatectl-linux-x64/bin/restatectl
if ! { [ -x "$ctl" ] && "$ctl" --version 2>/dev/null | grep -q "$RESTATE_VERSION"; }; then
  echo "tools: installing @restatedev/restatectl@$RESTATE_VERSION into .tools"
  npm install --silent --no-audit --no-fund --prefix "$tools" "@restatedev/restatectl@$RESTATE_VERSION" >&2
fi
"$bin" --version | head -1
