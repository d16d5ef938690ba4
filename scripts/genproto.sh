#!/usr/bin/env bash
# Regenerates the committed Go code of the repository's .proto files. Needs protoc
# (Debian: protobuf-compiler) and the Go plugins, which it installs into .tools/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOBIN=$PWD/.tools/bin PATH=$PWD/.tools/bin:$PATH
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
protoc --include_imports --descriptor_set_out=examples/orders/ordersv1/orders.binpb examples/orders/ordersv1/orders.proto
for f in api/invocationsv1/invocations.proto internal/testservice/testpb/test.proto examples/orders/ordersv1/orders.proto; do
  protoc --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative "$f"
done
