#!/usr/bin/env bash
# Streaming-path overhead in mock mode: starts a coordinator whose mock
# engine takes a fixed STEP per step (no per-sequence or prefill cost), then
# runs bin/bench at 1, 64 and 512 concurrent streams. Every token should
# arrive STEP after the previous one; what the bench measures beyond that
# (added ITL) is the cost of the scheduler, the HTTP/SSE path and the client.
# Usage: scripts/bench-stream.sh [out.json]  (writes out-completions.json and out-chat.json)   (STEP, LEVELS, REQUESTS, MAX_TOKENS, ENDPOINTS override; PIPELINE=false runs one step at a time)
set -euo pipefail
cd "$(dirname "$0")/.."
STEP=${STEP:-20ms}
LEVELS=${LEVELS:-1,64,512}
REQUESTS=${REQUESTS:-3}
MAX_TOKENS=${MAX_TOKENS:-100}
PIPELINE=${PIPELINE:-true}
ENDPOINTS=${ENDPOINTS:-completions chat}
OUT=${1:-docs/bench-stream-mock.json}
[ -x bin/coordinator ] && [ -x bin/bench ] || make build
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); step $STEP"
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; wait 2>/dev/null || true' EXIT
# A fresh server per endpoint, so its /stats window holds only this run.
for ep in $ENDPOINTS; do
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  bin/coordinator --model 20b --mock --profile quality_first --port "$PORT" --log-level error \
    --mock-step "$STEP" --mock-per-seq 0 --mock-prefill-per-token 0 --mock-min-reply-tokens 1000000 --pipeline="$PIPELINE" &
  PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
  echo "== /v1/$ep"
  bin/bench --url "http://127.0.0.1:$PORT" --endpoint "$ep" --concurrency "$LEVELS" --requests "$REQUESTS" \
    --max-tokens "$MAX_TOKENS" --expected-itl "$STEP" --out "${OUT%.json}-$ep.json"
  kill $PID; wait $PID 2>/dev/null || true; PID=
done
