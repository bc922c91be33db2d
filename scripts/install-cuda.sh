#!/usr/bin/env bash
# Installs the CUDA toolkit that `make kernels` needs from pinned pip wheels
# into a local prefix (default .cuda/ in the repository, git-ignored): no GPU
# and no system CUDA needed. Since CUDA 13 the wheels lay out a usable tree
# under nvidia/cu13/{bin,include,lib}. Idempotent: a stamp file records the
# pinned set, and a second run with the same pins does nothing.
#
#   scripts/install-cuda.sh            # installs, prints where nvcc is
#   CUDA_PREFIX=/opt/x scripts/install-cuda.sh
#
# The compiler wheels are installed whole (about 105 MB of wheels, 270 MB
# unpacked). cuBLAS and NCCL are needed at build time only for their headers
# (the library dlopens them at run time), and their wheels are large (cuBLAS
# about 420 MB, NCCL about 200 MB, mostly shared libraries): they are
# downloaded without installing and only their include/ trees are unpacked.
#
# The tree is built once per pinned set in a cache outside the checkout
# ($GPTOSS_CUDA_CACHE, default ~/.cache/gptoss-cuda/<hash of the pins>) and
# the prefix is a symlink to it, so a fresh clone on the same machine (CI)
# links it in a moment instead of downloading 700 MB again. Where the cache
# cannot be written, the tree goes straight into the prefix.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${CUDA_PREFIX:-$PWD/.cuda}"
PYTHON="${PYTHON:-python3}"
CACHE_ROOT="${GPTOSS_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gptoss-cuda}"

# The lent GPU machines run driver 580 (CUDA 13.0): 13.0.x throughout.
TOOLKIT=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
  # cuobjdump (inspection only: lists the cubins of the built library);
  # no 13.0 wheel of it exists, and 13.2 reads 13.0 binaries.
  nvidia-cuda-cuobjdump==13.2.51
)
HEADERS_ONLY=(
  nvidia-cublas==13.0.2.14
  nvidia-nccl-cu13==2.28.9
)

want="${TOOLKIT[*]} | headers: ${HEADERS_ONLY[*]}"
nvcc="$PREFIX/nvidia/cu13/bin/nvcc"

installed() { [ -f "$1/.installed" ] && [ "$(cat "$1/.installed")" = "$want" ] && [ -x "$1/nvidia/cu13/bin/nvcc" ]; }

if installed "$PREFIX"; then
  echo "cuda: up to date in $PREFIX"
  echo "nvcc: $nvcc"
  exit 0
fi

quiet_root() { grep -v "Running pip as the 'root' user" >&2 || true; }

# populate DIR: installs the pinned set into the empty folder DIR.
populate() {
  local dir="$1" wheels f
  wheels="$(mktemp -d)"
  # pip install --target skips top-level folders that already exist
  # (nvidia/), so every toolkit wheel goes in one call into an empty folder.
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --no-warn-script-location \
    --target "$dir" "${TOOLKIT[@]}" 2> >(quiet_root)
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
    "${HEADERS_ONLY[@]}" 2> >(quiet_root)
  "$PYTHON" -c '
import os, sys, zipfile
src, prefix = sys.argv[1], sys.argv[2]
n = 0
for name in sorted(os.listdir(src)):
    with zipfile.ZipFile(os.path.join(src, name)) as z:
        for info in z.infolist():
            if "include" in info.filename.split("/")[:-1] and not info.is_dir():
                z.extract(info, prefix)
                n += 1
if n == 0:
    sys.exit("install-cuda: no headers found in the cuBLAS/NCCL wheels")
print(f"cuda: unpacked {n} headers from {len(os.listdir(src))} wheels")
' "$wheels" "$dir"
  rm -rf "$wheels"
  for f in nvidia/cu13/include/cublas_api.h nvidia/nccl/include/nccl.h nvidia/cu13/include/cuda_runtime.h \
    nvidia/cu13/include/cccl/cub/cub.cuh nvidia/cu13/lib/libcudart_static.a nvidia/cu13/bin/nvcc; do
    [ -e "$dir/$f" ] || { echo "install-cuda: $dir/$f missing after install" >&2; return 1; }
  done
  echo "$want" >"$dir/.installed"
}

start=$(date +%s)
key="$(printf '%s' "$want" | sha256sum | cut -c1-16)"
store="$CACHE_ROOT/$key"
if mkdir -p "$CACHE_ROOT" 2>/dev/null && [ -w "$CACHE_ROOT" ]; then
  if installed "$store"; then
    echo "cuda: found in the cache $store"
  else
    staging="$(mktemp -d "$CACHE_ROOT/.tmp.XXXXXX")"
    trap 'rm -rf "$staging"' EXIT
    populate "$staging"
    rm -rf "$store"
    mv "$staging" "$store"  # a concurrent run sees all or nothing
    trap - EXIT
  fi
  rm -rf "$PREFIX"
  ln -s "$store" "$PREFIX"
else
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  populate "$PREFIX"
fi
"$nvcc" --version | tail -1
echo "cuda: ready in $PREFIX ($(($(date +%s) - start))s)"
echo "nvcc: $nvcc"
