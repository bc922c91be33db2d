# gpt-oss server. `make run` builds and starts the coordinator; `make test`
# sets up what the tests need and runs them all. Targets carry ## help.
SHELL := /bin/bash
GO ?= go
PYTHON ?= python3
VENV ?= .venv
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# llguidance, the structured-output engine, opened at run time by the
# coordinator (coordinator/guide): its C API from the pinned PyPI wheel
# (scripts/fetch-llguidance.sh says why a wheel).
LLG_DIR := build/llguidance
LLG_LIB := $(LLG_DIR)/libllguidance.so
# go-nvml's cgo header marks many NVML calls deprecated; the warnings drown
# the build output.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

# make run: gpt-oss-20b, downloaded into the Hugging Face cache on the
# first run (progress on the terminal), on GPU workers when go-nvml finds
# GPUs, on the CPU otherwise; when its weights cannot be had (offline, the
# Hub unreachable) the coordinator says so and serves the tiny checkpoint.
# make run-mock: the original test plan's command on the mock engine.
RUN_ARGS ?= --model 20b --fallback-model models/tiny --profile latency_first --port 8000
MODEL ?= 20b

.PHONY: help run run-mock download build test test-go test-e2e vet fmt bench bench-cpu tiny golden clean kernels gpu-check fuzz llguidance

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: $(LLG_LIB) ## build bin/coordinator, bin/worker and bin/bench (and fetch llguidance)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/coordinator ./coordinator
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/worker ./worker
	$(GO) build -o $(BIN)/bench ./scripts/bench

run: build tiny ## serve gpt-oss-20b on :8000 (downloaded on first run; the tiny model when it cannot be had)
	$(BIN)/coordinator $(RUN_ARGS)

run-mock: build ## the original test plan's command on the mock engine (no weights, no download)
	$(BIN)/coordinator --model 20b --profile latency_first --port 8000 --mock

download: build ## download a model into the Hugging Face cache without serving it (MODEL=20b, 120b or org/name)
	$(BIN)/coordinator download $(MODEL)

test: vet test-go fuzz test-e2e ## vet, Go tests (race detector), bounded fuzzing and the openai-SDK end-to-end tests

# errorlint: errors formatted into errors wrap them (%w), and are matched
# with errors.Is/As, so callers can tell causes apart through the layers.
ERRORLINT ?= codeberg.org/polyfloyd/go-errorlint@v1.9.1

vet: ## gofmt check, go vet and errorlint
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(ERRORLINT) -errorf ./...

test-go: $(LLG_LIB) ## Go unit and integration tests
	$(GO) test -race -count=1 ./...

# Bounded fuzzing (go test -fuzz takes one target at a time). test-go runs
# the fuzz targets' seed corpora only; this explores past them, in make
# test too: the request decoders and validators, the Harmony parser on
# arbitrary token sequences, config.json, the safetensors reader. Bounded by
# executions, not time: a time bound sometimes ends a run with "context
# deadline exceeded" while an input is minimised (a failure of the fuzzing
# engine, not of the code). FUZZX scales every budget (FUZZX=10 for a long
# run). A failing input is saved under the package's testdata/fuzz/.
FUZZX ?= 1
FUZZ_TARGETS := FuzzChatRequest:20000:./coordinator/api FuzzCompletionRequest:20000:./coordinator/api \
  FuzzParse:50000:./coordinator/harmony FuzzLoadConfig:2000:./shared/model FuzzOpen:5000:./worker/safetensors

fuzz: ## bounded fuzzing of request decoding, the Harmony parser, config.json and safetensors
	@set -e; for t in $(FUZZ_TARGETS); do \
	  name=$${t%%:*}; rest=$${t#*:}; n=$$(( $${rest%%:*} * $(FUZZX) )); pkg=$${rest#*:}; \
	  echo "fuzz $$name ($$n executions)"; \
	  $(GO) test -run XXX -fuzz "^$$name\$$" -fuzztime $${n}x -fuzzminimizetime 100x $$pkg; \
	done

# requirements-e2e-nodeps.txt: LlamaIndex's OpenAI packages pin openai<3
# and work with the pinned openai 3: installed without their dependencies.
$(VENV)/.ok: scripts/requirements-e2e.txt scripts/requirements-e2e-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-e2e.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r scripts/requirements-e2e-nodeps.txt
	touch $@

# openai-node for scripts/e2e/test_openai_node.py, as pinned in the lock file.
NODE_E2E := scripts/e2e/node
$(NODE_E2E)/node_modules/.ok: $(NODE_E2E)/package.json $(NODE_E2E)/package-lock.json
	npm ci --prefix $(NODE_E2E) --no-audit --no-fund --loglevel=error
	touch $@

# The e2e tests never reach the network: the Hub tests run scripts/fakehub,
# the others run offline against an empty cache (scripts/e2e/conftest.py).
test-e2e: build tiny $(VENV)/.ok $(NODE_E2E)/node_modules/.ok ## end-to-end tests with the official openai Python and Node SDKs, the Agents SDK and huggingface_hub
	$(GO) build -o $(BIN)/fakehub ./scripts/fakehub
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" COORDINATOR_BIN="$(CURDIR)/$(BIN)/coordinator" FAKEHUB_BIN="$(CURDIR)/$(BIN)/fakehub" \
	  HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(VENV)/bin/python -m pytest -q scripts/e2e

bench: build ## streaming overhead in mock mode at 1, 64 and 512 concurrent streams
	scripts/bench-stream.sh

bench-cpu: ## CPU forward-pass benchmarks: one full-size 20b layer, the unembedding, memory bandwidth
	$(GO) test -run XXX -bench 'MemoryRead|Unembed|DecodeLayer' -benchtime 5x ./worker/engine

llguidance: $(LLG_LIB) ## fetch llguidance (structured output) into build/llguidance

$(LLG_LIB): scripts/requirements-llguidance.txt scripts/fetch-llguidance.sh
	scripts/fetch-llguidance.sh $(LLG_DIR)

tiny: ## write the deterministic tiny gpt-oss checkpoint to models/tiny
	$(GO) run ./scripts/tinymodel -out models/tiny

golden: ## regenerate golden data (needs Python venvs: see each script's docstring)
	@echo "tokenizer: scripts/golden_tokenizer.py; Harmony: scripts/golden_harmony.py; model: scripts/golden_model.py"

fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

# CUDA kernels (kernels/, C ABI in kernels/gptoss.h) -> build/libgptoss_kernels.so.
# nvcc comes from the pip wheels scripts/install-cuda.sh puts in .cuda/ (or
# set KERNELS_CUDA to a toolkit root, KERNELS_NCCL_INC to nccl.h's folder).
# cudart is linked statically; cuBLAS and NCCL are opened with dlopen at run
# time, so the library links against neither (only their headers are used).
# KERNELS_PTXAS=-v prints the register/stack report of every kernel.
KERNELS_CUDA ?= $(CURDIR)/.cuda/nvidia/cu13
KERNELS_NCCL_INC ?= $(CURDIR)/.cuda/nvidia/nccl/include
NVCC ?= $(KERNELS_CUDA)/bin/nvcc
KERNELS_LIB := build/libgptoss_kernels.so
KERNELS_SRC := $(wildcard kernels/*.cu)
KERNELS_OBJ := $(patsubst kernels/%.cu,build/kernels/%.o,$(KERNELS_SRC))
KERNELS_HDR := $(wildcard kernels/*.h kernels/*.cuh)
KERNELS_ARCH := -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=sm_90 \
  -gencode=arch=compute_80,code=sm_80
KERNELS_PTXAS ?=
NVCCFLAGS ?= -O3 -std=c++17 $(KERNELS_ARCH) -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra \
  -I$(KERNELS_CUDA)/include -I$(KERNELS_NCCL_INC) $(if $(KERNELS_PTXAS),-Xptxas $(KERNELS_PTXAS))

kernels: $(KERNELS_LIB) ## build build/libgptoss_kernels.so with nvcc (scripts/install-cuda.sh first)

$(KERNELS_LIB): $(KERNELS_OBJ)
	$(NVCC) $(KERNELS_ARCH) -shared -cudart static -L$(KERNELS_CUDA)/lib -o $@ $^ -Xlinker --exclude-libs,ALL -Xlinker -z,defs -ldl -lpthread

build/kernels/%.o: kernels/%.cu $(KERNELS_HDR)
	@mkdir -p $(dir $@)
	@test -x $(NVCC) || { echo "nvcc not found at $(NVCC): run scripts/install-cuda.sh"; exit 1; }
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

# The GPU check (scripts/gpu-check; docs/performance.md, "GPU check"): build
# here, without a GPU, what the device machine runs, and print the command.
# bin/gpu-check is its own binary (worker/gpucheck), not part of make build:
# the worker does not link the device checks. The commit travels inside the
# binary (the device copy has no .git).
GPU_CHECK_CARRY := ["$(BIN)/gpu-check", "$(KERNELS_LIB)"]
gpu-check: kernels ## build bin/gpu-check and the kernels for the device check; print the device command
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-check ./worker/gpucheck
	@echo
	@echo "Device check (one call, under 8 minutes on one H100; results come back from \$$OUT):"
	@echo '  run  command: scripts/gpu-check'
	@echo '       carry:   $(GPU_CHECK_CARRY)'
	@echo '       timeout_s: 540'
	@echo "Smoke test first if the kernels are new: command 'scripts/gpu-check --quick' (about 2 minutes)."

# make install: a system install for the units in configs/systemd (README,
# "Operating"); PREFIX (default /usr/local) and DESTDIR are honoured.
#   $(PREFIX)/bin/{coordinator,worker}
#   $(PREFIX)/lib/libgptoss_kernels.so      when make kernels built it
#   $(UNITDIR)/{nats,coordinator,worker@}.service, their paths rewritten to
#                                           PREFIX, SYSCONFDIR and NATS_SERVER
#   $(PREFIX)/share/gptoss/                 the example configs, as shipped
#   $(SYSCONFDIR)/gptoss/{env,coordinator.yaml,nats.conf}
#                                           only where absent: an operator's
#                                           edited file survives a reinstall
# The profiles are built into the coordinator; share/gptoss/profiles.yaml is
# a copy to edit and name with profiles_file in coordinator.yaml.
# UNITDIR: $(PREFIX)/lib/systemd/system, which is on systemd's unit path for
# /usr/local (software the administrator installed, as /usr/lib/systemd/system
# is for Debian's packages), so /etc/systemd/system stays the administrator's
# own (systemctl edit, enable links) and uninstall never touches it. A PREFIX
# off that path (/opt/gptoss) puts the units in /etc/systemd/system.
# make uninstall removes what install put outside /etc/gptoss; never that.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib/systemd/system,$(SYSCONFDIR)/systemd/system)
NATS_SERVER ?= $(or $(shell command -v nats-server 2>/dev/null),/usr/sbin/nats-server)
UNITS := $(notdir $(wildcard configs/systemd/*.service))
SHARE_FILES := env.example coordinator.yaml nats.conf profiles.yaml

.PHONY: install uninstall
# install builds the binaries only when they are missing, so that `make build
# && sudo make install` needs no Go toolchain on root's PATH: after a change,
# make build first.
install: $(if $(and $(wildcard $(BIN)/coordinator),$(wildcard $(BIN)/worker)),,build) ## install the binaries, kernels, systemd units and /etc/gptoss (PREFIX=/usr/local, DESTDIR)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/share/gptoss
	install -m 0755 $(BIN)/coordinator $(BIN)/worker $(DESTDIR)$(PREFIX)/bin/
	@if [ -f $(KERNELS_LIB) ]; then \
	  echo "install -m 0755 $(KERNELS_LIB) $(DESTDIR)$(PREFIX)/lib/"; \
	  install -d $(DESTDIR)$(PREFIX)/lib && install -m 0755 $(KERNELS_LIB) $(DESTDIR)$(PREFIX)/lib/; \
	else echo "note: no $(KERNELS_LIB) (make kernels builds it): skipped; the CUDA workers need it"; fi
	@if [ -f $(LLG_LIB) ]; then \
	  echo "install -m 0755 $(LLG_DIR)/*.so $(DESTDIR)$(PREFIX)/lib/llguidance/"; \
	  install -d $(DESTDIR)$(PREFIX)/lib/llguidance && install -m 0755 $(LLG_DIR)/*.so $(DESTDIR)$(PREFIX)/lib/llguidance/; \
	else echo "note: no $(LLG_LIB) (make llguidance fetches it): skipped; structured output needs it"; fi
	@for u in $(UNITS); do \
	  echo "install configs/systemd/$$u -> $(DESTDIR)$(UNITDIR)/$$u"; \
	  sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/usr/local/lib/|$(PREFIX)/lib/|g' \
	      -e 's|/usr/sbin/nats-server|$(NATS_SERVER)|g' -e 's|/etc/gptoss|$(SYSCONFDIR)/gptoss|g' \
	      configs/systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 0644 $(addprefix configs/,$(SHARE_FILES)) $(DESTDIR)$(PREFIX)/share/gptoss/
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/gptoss
	@for f in env:env.example:0600 coordinator.yaml:coordinator.yaml:0644 nats.conf:nats.conf:0644; do \
	  dst=$(DESTDIR)$(SYSCONFDIR)/gptoss/$${f%%:*}; src=$${f#*:}; mode=$${src#*:}; src=configs/$${src%%:*}; \
	  if [ -e "$$dst" ]; then echo "kept $$dst (the shipped one: $(PREFIX)/share/gptoss/$${src#configs/})"; \
	  else echo "install -m $$mode $$src $$dst"; install -m $$mode "$$src" "$$dst" || exit 1; fi; \
	done
	@echo "next: edit $(SYSCONFDIR)/gptoss/env (GPTOSS_NATS_TOKEN, GPTOSS_TP), then systemctl daemon-reload &&"
	@echo "      systemctl enable --now nats coordinator worker@0 (one worker@N per GPU)"

uninstall: ## remove what make install put outside /etc/gptoss (never the configuration)
	rm -f $(DESTDIR)$(PREFIX)/bin/coordinator $(DESTDIR)$(PREFIX)/bin/worker $(DESTDIR)$(PREFIX)/lib/$(notdir $(KERNELS_LIB))
	rm -rf $(DESTDIR)$(PREFIX)/lib/llguidance
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS))
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/gptoss/,$(SHARE_FILES))
	@rmdir $(DESTDIR)$(PREFIX)/share/gptoss 2>/dev/null || true
	@echo "kept $(SYSCONFDIR)/gptoss (the configuration) and /var/lib/gptoss (model cache, stored responses)"

clean: ## remove build outputs and the test virtualenv
	rm -rf $(BIN) $(VENV) $(LLG_DIR)
