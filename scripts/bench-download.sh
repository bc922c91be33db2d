#!/usr/bin/env bash
# Download throughput of `coordinator download` against huggingface_hub's
# snapshot_download, side by side, from scripts/fakehub on loopback (no
# network: what is measured is the clients' own cost, writing and, for us,
# verifying every byte). SIZE_MB of random weights (default 1024) in two
# shards, ROUNDS interleaved rounds (default 3), each into a fresh cache.
# Needs make build, bin/fakehub and the e2e venv (make test-e2e sets both up).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
trap 'kill "$hub_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/repo"
echo '{"model_type": "gpt_oss"}' > "$work/repo/config.json"
half=$((SIZE_MB / 2))
head -c $((half << 20)) /dev/urandom > "$work/repo/model-00000-of-00002.safetensors"
head -c $(((SIZE_MB - half) << 20)) /dev/urandom > "$work/repo/model-00001-of-00002.safetensors"
bin/fakehub --repo bench/model="$work/repo" --ready-file "$work/ready.json" --quiet &
hub_pid=$!
for _ in $(seq 100); do [ -f "$work/ready.json" ] && break; sleep 0.1; done
hub=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['hub'])" "$work/ready.json")
export HF_ENDPOINT=$hub HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=0
now() { date +%s.%N; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); date: $(date -u +%F)"
echo "payload: ${SIZE_MB} MiB in 2 LFS shards + config.json, fakehub on loopback"
for r in $(seq "$ROUNDS"); do
  rm -rf "$work/c1" "$work/c2"
  t0=$(now); HF_HUB_CACHE=$work/c1 bin/coordinator download bench/model >/dev/null 2>&1; t1=$(now)
  HF_HUB_CACHE=$work/c2 .venv/bin/python -c "import huggingface_hub as h; h.snapshot_download('bench/model')" >/dev/null 2>&1; t2=$(now)
  python3 - "$t0" "$t1" "$t2" "$SIZE_MB" "$r" <<'EOF'
import sys
t0, t1, t2, mb, r = map(float, sys.argv[1:])
ours, theirs = t1 - t0, t2 - t1
print(f"round {int(r)}: coordinator download {ours:.2f} s ({mb/ours:.0f} MiB/s, verified), "
      f"huggingface_hub {theirs:.2f} s ({mb/theirs:.0f} MiB/s, not verified); ratio {theirs/ours:.2f}x")
EOF
done
