#!/usr/bin/env bash
# bench-llamacpp.sh: our CPU engine against llama.cpp, side by side, on the
# same random gpt-oss weights (issue 18).
#
# What it does, each step reused when its output is already in $WORK:
#   1. writes the random checkpoint (go run ./scripts/tinymodel -preset 20b:
#      MXFP4 experts, bf16 attention, about 13 GB) into $WORK/model-20b;
#   2. builds llama.cpp for this CPU (GGML_NATIVE, Release: llama-bench and
#      llama-batched-bench only) from the llama-cpp-python source package on
#      PyPI, which vendors llama.cpp under vendor/llama.cpp;
#   3. writes a tokenizer.json (scripts/llamacpp/tokenizer_json.py, from
#      ../shared/data/o200k_base.tiktoken and our special tokens; checked
#      against coordinator/tokenizer's golden ids) and converts the checkpoint
#      with llama.cpp's convert_hf_to_gguf.py (outtype auto: MXFP4 experts
#      kept, the other matrices bf16 as ours, norms, biases, sinks and the
#      router f32) into $WORK/gpt-oss-20b-random.gguf;
#      the converter's Python deps go into $WORK/venv (torch from PyPI
#      brings its CUDA libraries: about 5 GB);
#   4. runs, interleaved (ours, llama.cpp, ours, llama.cpp ... REPS times),
#      at THREADS threads:
#        ours:      scripts/cpubench -prefill PREFILL -decode DECODE
#                   -streams STREAMS -prompt NPP -stream-decode NTG
#                   -kernels K, for each K of KERNELS (exact: float32
#                   products; fast: int8 MXFP4 and bf16 dense products)
#        llama.cpp: llama-bench -p PREFILL -n DECODE -r 1 (pp and tg tests)
#                   llama-batched-bench -npp NPP -ntg NTG -npl STREAMS
#      Both models are about 13 GB, so the two never run at once. Before
#      timing, each side has its model in memory and warms up, untimed:
#      cpubench reads the checkpoint files through the page cache (it maps
#      them) and runs a 16-token step; llama.cpp loads with LLAMA_ARGS
#      (default -lm none: the file read into memory, the MXFP4 experts
#      repacked as by default) and llama-bench makes one warm-up run per
#      test, llama-batched-bench a 16-token decode. Not mmap (llama.cpp's
#      default): the repacked experts (9.5 GiB) and the mapped file (12.8
#      GiB) are then both resident, 21.5-22 GiB of a 23.5 GiB machine: one
#      run here decoded at 0.76 tok/s, another at 8.2; -lm none peaks at
#      13.1 GiB;
#   5. prints metric, ours, llama.cpp, ratio (ours/theirs) with the machine,
#      date, our commit and the llama.cpp build, and writes it to
#      $WORK/results.txt (each run's raw output is in $WORK/runs/).
#
# Needs: go, cmake, a C++ compiler, python3 with venv, and PyPI. On Debian:
#   apt-get install cmake build-essential python3-venv
#
# Environment overrides (defaults in brackets):
#   WORK [build/llamacpp]  PRESET [20b]  REPS [2]  THREADS [nproc]
#   PREFILL [512]  DECODE [64]  NPP [128]  NTG [32]  STREAMS [1,4,8]
#   LLAMA_CPP_PYTHON_VERSION [0.3.36]  JOBS [nproc] (build parallelism)
#   LLAMA_ARGS [-lm none] (extra arguments to both llama.cpp tools)
#   KERNELS ["exact fast"] (our CPU kernel sets, each run in every rep)
#   REPORT_ONLY=1: no build and no runs, the table again from $WORK/runs
#
#   scripts/bench-llamacpp.sh
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-$ROOT/build/llamacpp}
PRESET=${PRESET:-20b}
REPS=${REPS:-2}
THREADS=${THREADS:-$(nproc)}
PREFILL=${PREFILL:-512}
DECODE=${DECODE:-64}
KERNELS=${KERNELS:-exact fast}
NPP=${NPP:-128}
NTG=${NTG:-32}
STREAMS=${STREAMS:-1,4,8}
LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
JOBS=${JOBS:-$(nproc)}
LLAMA_ARGS=${LLAMA_ARGS:--lm none}
RANKS=${RANKS:-$ROOT/../shared/data/o200k_base.tiktoken}
export CGO_CFLAGS=${CGO_CFLAGS:-"-O2 -g -Wno-deprecated-declarations"}

MODEL=$WORK/model-$PRESET
HF=$WORK/hf-$PRESET
GGUF=$WORK/gpt-oss-$PRESET-random.gguf
SRC=$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp
BUILD=$WORK/llama-build
VENV=$WORK/venv
RUNS=$WORK/runs

log() { printf '\n== %s: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'bench-llamacpp: %s\n' "$*" >&2; exit 1; }

if [ "${REPORT_ONLY:-0}" != 1 ]; then
for tool in go cmake c++ python3; do
	command -v "$tool" >/dev/null || die "$tool is missing (apt-get install cmake build-essential python3-venv, and Go)"
done
python3 -c 'import venv' 2>/dev/null || die "python3 has no venv module (apt-get install python3-venv)"
[ -f "$RANKS" ] || die "no o200k_base ranks at $RANKS (set RANKS)"
mkdir -p "$WORK" "$RUNS"

# 1. The random checkpoint.
if [ -f "$MODEL/model.safetensors" ] && [ -f "$MODEL/config.json" ]; then
	log "checkpoint: reusing $MODEL"
else
	log "checkpoint: writing $MODEL (tinymodel -preset $PRESET; 20b: about 3 minutes)"
	rm -rf "$MODEL.tmp"
	go run ./scripts/tinymodel -preset "$PRESET" -out "$MODEL.tmp"
	rm -rf "$MODEL"
	mv "$MODEL.tmp" "$MODEL"
fi

# 2. llama.cpp from the llama-cpp-python source package.
if [ ! -d "$SRC" ]; then
	log "llama.cpp: downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (source package)"
	python3 -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$WORK"
	tar -xzf "$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$WORK"
	[ -f "$SRC/CMakeLists.txt" ] || die "no vendored llama.cpp at $SRC"
fi
if [ -x "$BUILD/bin/llama-bench" ] && [ -x "$BUILD/bin/llama-batched-bench" ]; then
	log "llama.cpp: reusing the build in $BUILD"
else
	log "llama.cpp: building llama-bench and llama-batched-bench (about 10 minutes on 2 cores)"
	generator=()
	command -v ninja >/dev/null && generator=(-G Ninja)
	cmake -S "$SRC" -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
		-DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
		-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >"$WORK/cmake-configure.log"
	cmake --build "$BUILD" --target llama-bench llama-batched-bench -j "$JOBS" >"$WORK/cmake-build.log" 2>&1 ||
		{ tail -n 30 "$WORK/cmake-build.log"; die "llama.cpp build failed (log: $WORK/cmake-build.log)"; }
fi
LLAMA_VERSION=$("$BUILD/bin/llama-bench" --version 2>&1 | grep -m1 -i '^version' || true)
log "llama.cpp: ${LLAMA_VERSION:-unknown version} (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"

# 3. The converter's venv, the tokenizer and the GGUF.
if [ -f "$GGUF" ]; then
	log "gguf: reusing $GGUF"
else
	if [ ! -f "$VENV/.ready" ]; then
		log "venv: installing the converter's deps into $VENV (torch brings about 5 GB of CUDA libraries)"
		python3 -m venv "$VENV"
		"$VENV/bin/pip" install -q --upgrade pip
		# Pins as in llama.cpp's requirements/requirements-convert_hf_to_gguf.txt
		# (torch from PyPI: its CPU index is out of reach); gguf from the
		# vendored tree; tokenizers for the tokenizer check.
		"$VENV/bin/pip" install -q torch==2.11.0 "numpy~=2.2.6" "sentencepiece>=0.1.98,<0.3.0" \
			transformers==4.57.6 "protobuf>=4.21.0,<5.0.0" safetensors tokenizers "$SRC/gguf-py"
		touch "$VENV/.ready"
	fi
	log "gguf: tokenizer.json and conversion of $MODEL"
	# A directory of links: the checkpoint stays as tinymodel wrote it.
	rm -rf "$HF"
	mkdir -p "$HF"
	ln -s "$MODEL/config.json" "$HF/config.json"
	for f in "$MODEL"/*.safetensors "$MODEL"/*.safetensors.index.json; do
		[ -e "$f" ] && ln -s "$f" "$HF/$(basename "$f")"
	done
	"$VENV/bin/python" scripts/llamacpp/tokenizer_json.py --ranks "$RANKS" --out "$HF" --check
	"$VENV/bin/python" "$SRC/convert_hf_to_gguf.py" "$HF" --outtype auto --outfile "$GGUF.tmp" >"$WORK/convert.log" 2>&1 ||
		{ grep -v 'Writing:' "$WORK/convert.log" | tail -n 30; die "conversion failed (log: $WORK/convert.log)"; }
	mv "$GGUF.tmp" "$GGUF"
	grep -o 'file type = [0-9]*' "$WORK/convert.log" | tail -n 1 || true
fi

# 4. The runs, interleaved.
HEAD_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The engine is worker/ and shared/: say so when they differ from HEAD.
if [ -n "$(git status --porcelain --untracked-files=no -- worker shared go.mod go.sum 2>/dev/null)" ]; then
	HEAD_COMMIT="$HEAD_COMMIT with uncommitted changes to worker/ or shared/"
fi
rm -rf "$RUNS"
mkdir -p "$RUNS"
cat >"$RUNS/meta.env" <<META
RUN_DATE='$(date -u '+%Y-%m-%d %H:%M UTC')'
RUN_COMMIT='$HEAD_COMMIT'
PRESET='$PRESET' REPS='$REPS' THREADS='$THREADS' PREFILL='$PREFILL' DECODE='$DECODE'
NPP='$NPP' NTG='$NTG' STREAMS='$STREAMS' LLAMA_ARGS='$LLAMA_ARGS' KERNELS='$KERNELS'
META
log "ours: building scripts/cpubench"
go build -o "$WORK/cpubench" ./scripts/cpubench

# peak runs a command and appends its peak RSS to stderr, where GNU time is.
peak() {
	if [ -x /usr/bin/time ]; then /usr/bin/time -f 'peak RSS %M KiB' "$@"; else "$@"; fi
}

for r in $(seq 1 "$REPS"); do
	for k in $KERNELS; do
		log "rep $r/$REPS: ours, -kernels $k (cpubench reads the checkpoint, then warms up, untimed)"
		GOMAXPROCS=$THREADS "$WORK/cpubench" -model "$MODEL" -kernels "$k" -prefill "$PREFILL" -chunk "$PREFILL" -decode "$DECODE" \
			-streams "$STREAMS" -prompt "$NPP" -stream-decode "$NTG" -json >"$RUNS/ours-$k-$r.json" 2>"$RUNS/ours-$k-$r.log" ||
			{ cat "$RUNS/ours-$k-$r.log"; die "cpubench failed"; }
		cat "$RUNS/ours-$k-$r.log"
	done

	log "rep $r/$REPS: llama.cpp ($LLAMA_ARGS; the tools load and warm up untimed)"
	peak "$BUILD/bin/llama-bench" -m "$GGUF" -t "$THREADS" -p "$PREFILL" -n "$DECODE" -r 1 -o json $LLAMA_ARGS \
		>"$RUNS/llama-bench-$r.json" 2>"$RUNS/llama-bench-$r.log" ||
		{ tail -n 30 "$RUNS/llama-bench-$r.log"; die "llama-bench failed"; }
	max_pl=$(tr ',' '\n' <<<"$STREAMS" | sort -n | tail -n 1)
	peak "$BUILD/bin/llama-batched-bench" -m "$GGUF" -t "$THREADS" -tb "$THREADS" -c $((max_pl * (NPP + NTG) + 16)) \
		-npp "$NPP" -ntg "$NTG" -npl "$STREAMS" --output-format jsonl $LLAMA_ARGS \
		>"$RUNS/batched-bench-$r.jsonl" 2>"$RUNS/batched-bench-$r.log" ||
		{ tail -n 30 "$RUNS/batched-bench-$r.log"; die "llama-batched-bench failed"; }
	grep -h '^{' "$RUNS/batched-bench-$r.jsonl" "$RUNS/batched-bench-$r.log" >"$RUNS/batched-bench-$r.rows" || true
	grep -h 'peak RSS' "$RUNS/llama-bench-$r.log" "$RUNS/batched-bench-$r.log" | sed 's/^/llama.cpp /' || true
	python3 - "$RUNS" "$r" <<'EOF'
import json, sys
runs, r = sys.argv[1], sys.argv[2]
for t in json.load(open(f"{runs}/llama-bench-{r}.json")):
    name = f"pp{t['n_prompt']}" if t["n_prompt"] else f"tg{t['n_gen']}"
    print(f"llama-bench {name:8s} {t['avg_ts']:9.2f} tok/s")
for line in open(f"{runs}/batched-bench-{r}.rows"):
    b = json.loads(line)
    print(f"batched-bench pl={b['pl']:<3d} pp={b['pp']} tg={b['tg']}: decode {b['speed_tg']:9.2f} tok/s (prompts {b['speed_pp']:.2f} tok/s)")
EOF
done

fi # REPORT_ONLY

# 5. The table, from $RUNS (meta.env: the settings the runs had).
[ -f "$RUNS/meta.env" ] || die "no runs in $RUNS"
# shellcheck disable=SC1091
. "$RUNS/meta.env"
LLAMA_VERSION=$("$BUILD/bin/llama-bench" --version 2>&1 | grep -m1 -i '^version' || true)
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
FLAGS=$(grep -o -w -E 'avx512f|avx512_vnni|avx512_bf16|avx2' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ' | sed 's/ $//')
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
python3 - "$RUNS" "$REPS" "$WORK/results.txt" <<EOF
import json, os, statistics, sys
runs, reps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kernels = "${KERNELS:-exact}".split()
ours, theirs = {k: {} for k in kernels}, {}
def put(d, k, v): d.setdefault(k, []).append(v)
for r in range(1, reps + 1):
    for kern in kernels:
        f = f"{runs}/ours-{kern}-{r}.json"
        if not os.path.exists(f):  # runs from before -kernels: exact
            f = f"{runs}/ours-{r}.json"
        for x in json.load(open(f))["results"]:
            k = x["metric"] if x["metric"] != "streams" else f"streams={x['streams']}"
            put(ours[kern], k, x["tok_s"])
    for t in json.load(open(f"{runs}/llama-bench-{r}.json")):
        put(theirs, "prefill" if t["n_prompt"] else "decode", t["avg_ts"])
    for line in open(f"{runs}/batched-bench-{r}.rows"):
        b = json.loads(line)
        put(theirs, f"streams={b['pl']}", b["speed_tg"])
names = {"prefill": "prefill $PREFILL tokens (tok/s)", "decode": "decode batch 1, $DECODE tokens (tok/s)"}
for k in ours[kernels[0]]:
    if k.startswith("streams="):
        n = k.split('=')[1]
        names[k] = f"decode {n} stream{'s' if n != '1' else ''}, ctx $NPP+$NTG (tok/s)"
def cell(v):
    if not v: return "-"
    m = statistics.mean(v)
    return f"{m:.2f}" + (" (" + ", ".join(f"{x:.2f}" for x in v) + ")" if len(v) > 1 else "")
head = ["metric"] + [f"ours {k}" for k in kernels] + ["llama.cpp"] + [f"{k}/llama.cpp" for k in kernels]
rows = [head]
for k, name in names.items():
    t = theirs.get(k)
    row = [name] + [cell(ours[kern].get(k)) for kern in kernels] + [cell(t)]
    for kern in kernels:
        o = ours[kern].get(k)
        row.append(f"{statistics.mean(o) / statistics.mean(t):.2f}x" if o and t else "-")
    rows.append(row)
w = [max(len(r[i]) for r in rows) for i in range(len(head))]
lines = [
    "gpt-oss-$PRESET, random weights (tinymodel -preset $PRESET: MXFP4 experts, bf16 attention), $THREADS threads",
    "machine:   $(nproc) cores, $CPU ($FLAGS), $MEM",
    "date:      $RUN_DATE",
    "ours:      $RUN_COMMIT (scripts/cpubench -kernels K: prefill in one step of $PREFILL tokens, greedy sampling)",
    "llama.cpp: $LLAMA_VERSION (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION; llama-bench -p $PREFILL -n $DECODE -r 1, llama-batched-bench -npp $NPP -ntg $NTG -npl $STREAMS; $LLAMA_ARGS)",
    "reps:      $REPS, interleaved; cells are the mean (each rep's value); each run loads its model and warms up untimed",
    "",
]
for i, r in enumerate(rows):
    lines.append("| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(r)) + " |")
    if i == 0:
        lines.append("|" + "|".join("-" * (w[j] + 2) for j in range(len(head))) + "|")
lines.append("")
for kern in kernels:
    o1, o8 = ours[kern].get("streams=1"), ours[kern].get("streams=8")
    if o1 and o8:
        lines.append(f"ours {kern}, 8 streams / 1 stream: {statistics.mean(o8) / statistics.mean(o1):.2f}x")
t1, t8 = theirs.get("streams=1"), theirs.get("streams=8")
if t1 and t8:
    lines.append(f"llama.cpp, 8 streams / 1 stream: {statistics.mean(t8) / statistics.mean(t1):.2f}x")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print()
print(text, end="")
EOF
log "results written to $WORK/results.txt"
