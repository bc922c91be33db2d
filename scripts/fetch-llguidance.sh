#!/usr/bin/env bash
# fetch-llguidance.sh DIR: puts llguidance's C API library in DIR
# (libllguidance.so) with the stub its module needs (libllguidance_pystub.so).
#
# Why a wheel: llguidance is a Rust crate, and this project's machines reach
# PyPI but not crates.io, so the library comes from the wheel PyPI serves
# (pinned and hash-checked in scripts/requirements-llguidance.txt). The
# wheel's extension module is a Python module that also exports the whole C
# API (llguidance.h). It references CPython's API, which the C API never
# calls: instead of requiring a libpython, the stub gives those names an
# address (its symbols are generated from the module's own undefined ones,
# so a new version needs no edit here). coordinator/guide opens the stub
# with RTLD_GLOBAL, then the library.
set -euo pipefail
dir=${1:?usage: fetch-llguidance.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$here/requirements-llguidance.txt" -d "$tmp"
whl=$(ls "$tmp"/llguidance-*.whl)
python3 - "$whl" "$tmp/lib.so" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith("llguidance/_lib") and n.endswith(".so")]
    if len(names) != 1:
        sys.exit(f"fetch-llguidance: no single llguidance/_lib*.so in {sys.argv[1]}: {names}")
    with open(sys.argv[2], "wb") as f:
        f.write(z.read(names[0]))
PY
nm -D --defined-only "$tmp/lib.so" | grep -q ' llg_new_matcher$' || { echo "fetch-llguidance: the module exports no llg_new_matcher" >&2; exit 1; }
# One object per CPython symbol the module imports: an address is all the
# dynamic linker needs, and nothing ever reads or calls them.
nm -D --undefined-only "$tmp/lib.so" | awk '$NF ~ /^_?Py/ {print "char " $NF "[64];"}' > "$tmp/stub.c"
${CC:-cc} -shared -fPIC -o "$tmp/stub.so" "$tmp/stub.c"
install -m 0755 "$tmp/lib.so" "$dir/libllguidance.so"
install -m 0755 "$tmp/stub.so" "$dir/libllguidance_pystub.so"
echo "llguidance: $(basename "$whl") -> $dir"
