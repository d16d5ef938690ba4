# The two commands that matter: `make demo` and `make test`.
.PHONY: demo test tools bench soak proto vet build

# What `sidecar version` prints: the tag (or commit) and the commit this build is of.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS = -X main.version=$(VERSION) -X main.commit=$(COMMIT)

demo: ## install what is missing, build, run the end-to-end demo on a local Restate server
	bash scripts/demo.sh

test: ## install what is missing, then vet and run every test (unit and end-to-end, real Restate)
	bash scripts/test.sh

bench: ## the benchmark table of BENCHMARKS.md
	bash scripts/bench.sh

# How long `make soak` runs: make soak SOAK_DURATION=30m.
SOAK_DURATION ?= 10m

soak: ## random faults (a Restate node, the app, either sidecar) under load through both sidecars against a 3-node cluster; not part of CI
	bash scripts/tools.sh >/dev/null
	go run ./cmd/soak -duration $(SOAK_DURATION)

build: ## build bin/sidecar, stamped with its version and commit
	go build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/sidecar

tools: ## install the pinned Restate server and restatectl into .tools
	bash scripts/tools.sh

proto: ## regenerate the committed protobuf code
	bash scripts/genproto.sh
