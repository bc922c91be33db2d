#!/usr/bin/env bash
# The serving loop's bubble: how long the worker waits between forward steps
# while the coordinator turns a step around (gptoss_worker_idle_seconds_total),
# against its time in steps (gptoss_worker_step_seconds_total), and output
# tokens/s, at 1, 8, 32 and 64 concurrent streams on the tiny model through
# one CPU worker process: one step at a time (--pipeline=false) and
# pipelined (the default), each level run with both in turn, so that the
# two rows of a level come from the same minutes of this machine.
# Needs make build and make tiny. LEVELS, DURATION (seconds per level, at
# least 8), TOKENS (max_tokens) and MODES (--pipeline settings, in the
# order run) override.
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=${LEVELS:-1 8 32 64}
DURATION=${DURATION:-12}
TOKENS=${TOKENS:-64}
MODES=${MODES:-false true}
data=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT
declare -A ports
for mode in $MODES; do
  port=$((20000 + RANDOM % 20000))
  ports[$mode]=$port
  mkdir -p "$data/$mode"
  HF_HUB_OFFLINE=1 GPTOSS_DATA_DIR=$data/$mode bin/coordinator --model models/tiny --port "$port" --log-level warn \
    --profile balanced --pipeline="$mode" >"$data/$mode/log" 2>&1 &
  pids+=($!)
done
cat >"$data/tps.py" <<'EOF'
import json, sys
def find(d):
    # the output tokens/s of the run, wherever bench's JSON keeps it
    if isinstance(d, dict):
        for k, v in d.items():
            if "tokens_per_s" in k and "output" in k and isinstance(v, (int, float)):
                return v
        for v in d.values():
            r = find(v)
            if r is not None:
                return r
    if isinstance(d, list):
        for v in d:
            r = find(v)
            if r is not None:
                return r
    return None
v = find(json.load(open(sys.argv[1])))
print("?" if v is None else round(v, 1))
EOF
for mode in $MODES; do
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:${ports[$mode]}/ready" >/dev/null && break
    sleep 0.1
  done
done
# A short untimed load on each server first: the first minutes of a fresh
# process (allocations, page faults, the prefix cache filling) are not the
# steady state either mode is measured in.
for mode in $MODES; do
  bin/bench --url "http://127.0.0.1:${ports[$mode]}" --model tiny --concurrency 8 --duration 5s \
    --max-tokens "$TOKENS" --out "$data/warmup.json" >/dev/null 2>&1 || true
done
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 ~ "^"n"[{ ]" {print $2}'; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F); commit: $(git rev-parse --short HEAD 2>/dev/null || echo -)"
printf "%8s %9s %12s %12s %10s %12s\n" streams pipeline step_s idle_s idle_pct tokens_per_s
for c in $LEVELS; do
  for mode in $MODES; do
    port=${ports[$mode]}
    # A closed loop for DURATION; the counters are read over its steady
    # middle (after the streams ramp up, before they wind down): a gap with
    # no work queued is not a bubble.
    bin/bench --url "http://127.0.0.1:$port" --model tiny --concurrency "$c" --duration "${DURATION}s" \
      --max-tokens "$TOKENS" --out "$data/bench.json" >/dev/null 2>&1 &
    bench=$!
    sleep 3
    i0=$(metric "$port" gptoss_worker_idle_seconds_total); s0=$(metric "$port" gptoss_worker_step_seconds_total)
    sleep $((DURATION - 5))
    i1=$(metric "$port" gptoss_worker_idle_seconds_total); s1=$(metric "$port" gptoss_worker_step_seconds_total)
    wait "$bench"
    tps=$(python3 "$data/tps.py" "$data/bench.json")
    python3 - "$c" "$mode" "$s0" "$s1" "$i0" "$i1" "$tps" <<'EOF'
import sys
c, mode, s0, s1, i0, i1, tps = sys.argv[1:]
step, idle = float(s1) - float(s0), float(i1) - float(i0)
print(f"{c:>8} {mode:>9} {step:12.3f} {idle:12.3f} {100 * idle / (idle + step):9.1f}% {tps:>12}")
EOF
  done
done
