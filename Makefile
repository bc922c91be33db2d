# gpt-oss server. `make run` builds and starts the coordinator; `make test`
# sets up what the tests need and runs them all. Targets carry ## help.
SHELL := /bin/bash
GO ?= go
PYTHON ?= python3
VENV ?= .venv
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# go-nvml's cgo header marks many NVML calls deprecated; the warnings drown
# the build output.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

# make run: the tiny gpt-oss checkpoint on two CPU worker processes in
# tensor parallelism. make run-mock: the original test plan's command (the
# mock engine unless the 20b weights are in the Hugging Face cache).
RUN_ARGS ?= --model models/tiny --tp 2 --profile latency_first --port 8000

.PHONY: help run run-mock build test test-go test-e2e vet fmt bench bench-cpu tiny golden clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/coordinator, bin/worker and bin/bench
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/coordinator ./coordinator
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/worker ./worker
	$(GO) build -o $(BIN)/bench ./scripts/bench

run: build tiny ## start the server on :8000: coordinator, embedded NATS, two CPU workers (tiny model, tp 2)
	$(BIN)/coordinator $(RUN_ARGS)

run-mock: build ## the original test plan's command: gpt-oss-20b (mock engine without its weights)
	$(BIN)/coordinator --model 20b --profile latency_first --port 8000

test: vet test-go test-e2e ## vet, Go tests (race detector) and the openai-SDK end-to-end tests

vet: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test-go: ## Go unit and integration tests
	$(GO) test -race -count=1 ./...

$(VENV)/.ok: scripts/requirements-e2e.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-e2e.txt
	touch $@

test-e2e: build tiny $(VENV)/.ok ## end-to-end tests with the official openai Python SDK
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" COORDINATOR_BIN="$(CURDIR)/$(BIN)/coordinator" \
	  $(VENV)/bin/python -m pytest -q scripts/e2e

bench: build ## streaming overhead in mock mode at 1, 64 and 512 concurrent streams
	scripts/bench-stream.sh

bench-cpu: ## CPU forward-pass benchmarks: one full-size 20b layer, the unembedding, memory bandwidth
	$(GO) test -run XXX -bench 'MemoryRead|Unembed|DecodeLayer' -benchtime 5x ./worker/engine

tiny: ## write the deterministic tiny gpt-oss checkpoint to models/tiny
	$(GO) run ./scripts/tinymodel -out models/tiny

golden: ## regenerate golden data (needs Python venvs: see each script's docstring)
	@echo "tokenizer: scripts/golden_tokenizer.py; Harmony: scripts/golden_harmony.py; model: scripts/golden_model.py"

fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build outputs and the test virtualenv
	rm -rf $(BIN) $(VENV)
