# syntax=docker/dockerfile:1
# The gpt-oss server in one image: the coordinator, the worker it launches
# (one per GPU, --tp N) and the CUDA kernels library (README, "Operating").
#
#   docker build -t gptoss .
#   docker run --gpus all -p 8000:8000 -v gptoss-hf:/data/hf -v gptoss-data:/data/gptoss \
#     -e GPTOSS_API_KEYS=sk-change-me gptoss --model 20b
#
# Build arguments:
#   KERNELS=1 (default) builds build/libgptoss_kernels.so here with nvcc from
#     the pinned pip wheels of scripts/install-cuda.sh (the toolchain CI
#     builds with; about 700 MB downloaded into a BuildKit cache mount);
#     KERNELS=0 takes a prebuilt build/libgptoss_kernels.so from the context
#     when there is one (make kernels), else the image has no kernels and
#     serves on the CPU only.
#   VERSION: the version /health reports (the context has no .git).
#   RUNTIME_IMAGE: CUDA 13.0. The kernels are built with CUDA 13.0 (cudart
#     linked statically) and dlopen libcublas.so.13 and libnccl.so.2 at run
#     time, which the nvidia/cuda *runtime* images carry (a 12.x image has
#     libcublas.so.12: the kernels would not load). 13.0 is what driver 580
#     supports without the forward-compatibility package; Ubuntu 24.04 (glibc
#     2.39) runs binaries linked on the Debian 12 build stage (glibc 2.36).
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04

# ---- Go binaries: bin/coordinator and bin/worker (cgo: go-nvml) ----
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
# python3-pip: make build fetches llguidance (structured output) from PyPI.
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip && rm -rf /var/lib/apt/lists/*
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make build VERSION="${VERSION}"

# ---- CUDA kernels: build/libgptoss_kernels.so (sm_80, sm_90, sm_90a) ----
FROM ${GO_IMAGE} AS kernels
ARG KERNELS=1
WORKDIR /src
COPY Makefile ./
COPY scripts/install-cuda.sh scripts/
COPY kernels/ kernels/
# A prebuilt library, when the context has one (the wildcard may match
# nothing; Makefile is there so that the instruction always has a source).
COPY Makefile build*/libgptoss_kernels.so* /prebuilt/
RUN --mount=type=cache,target=/root/.cache \
    set -eu; mkdir -p /out/lib; \
    if [ "${KERNELS}" = 1 ]; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-pip && rm -rf /var/lib/apt/lists/*; \
      scripts/install-cuda.sh; \
      make -j"$(nproc)" kernels; \
      cp build/libgptoss_kernels.so /out/lib/; \
    elif [ -f /prebuilt/libgptoss_kernels.so ]; then \
      cp /prebuilt/libgptoss_kernels.so /out/lib/; \
    else \
      echo "KERNELS=0 and no prebuilt build/libgptoss_kernels.so: the image serves on the CPU only"; \
    fi

# ---- runtime ----
FROM ${RUNTIME_IMAGE}
# curl for the health check; CA certificates for the Hugging Face Hub.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin gptoss \
    && mkdir -p /data/hf /data/gptoss && chown -R gptoss:gptoss /data
COPY --from=build /src/bin/coordinator /src/bin/worker /usr/local/bin/
COPY --from=build /src/build/llguidance/ /usr/local/lib/llguidance/
COPY --from=kernels /out/lib/ /usr/local/lib/
# Examples to start from: --config /etc/gptoss/coordinator.yaml,
# --profiles-file /etc/gptoss/profiles.yaml (the profiles are built in).
COPY configs/coordinator.yaml configs/profiles.yaml /etc/gptoss/
# The model is downloaded into the Hugging Face cache (/data/hf); the
# embedded NATS keeps the stored responses (/v1/responses) in
# /data/gptoss. Both are volumes, so a new container reuses them.
ENV HF_HOME=/data/hf \
    GPTOSS_DATA_DIR=/data/gptoss \
    GPTOSS_KERNELS=/usr/local/lib/libgptoss_kernels.so \
    GPTOSS_LLGUIDANCE=/usr/local/lib/llguidance
VOLUME ["/data/hf", "/data/gptoss"]
USER gptoss
WORKDIR /data
EXPOSE 8000
# /health is 200 while the model downloads and loads (liveness); /ready is
# 200 once it serves. GPTOSS_PORT, when set, moves both.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${GPTOSS_PORT:-8000}/health" || exit 1
# Listening on every address needs API keys (--api-key, or GPTOSS_API_KEYS
# comma-separated) or an explicit --allow-unauthenticated: the coordinator
# refuses to start otherwise.
ENTRYPOINT ["coordinator", "--host", "0.0.0.0"]
