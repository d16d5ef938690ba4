# The two commands that matter: `make demo` and `make test`.
.PHONY: demo test tools bench proto vet

demo: ## install what is missing, build, run the end-to-end demo on a local Restate server
	bash scripts/demo.sh

test: ## install what is missing, then vet and run every test (unit and end-to-end, real Restate)
	bash scripts/test.sh

bench: ## the benchmark table of BENCHMARKS.md
	bash scripts/bench.sh

tools: ## install the pinned Restate server into .tools
	bash scripts/tools.sh

proto: ## regenerate the committed protobuf code
	bash scripts/genproto.sh
