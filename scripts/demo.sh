#!/usr/bin/env bash
# The main job: set up, build, and train a small SambaY + differential-attention model on
# embedded data (the license texts in /usr/share/common-licenses, byte-tokenized), on the GPU
# when there is one, else on the CPU. Shows the loss falling; writes runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${SAMBAY_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target sambay
mkdir -p runs/demo/data
"$build/sambay" data tokenize --split paragraphs --out runs/demo/data/licenses \
  /usr/share/common-licenses/*
# A run directory from an earlier demo is kept (renamed), never overwritten: the demo trains
# from scratch each time.
if [ -e runs/demo/checkpoints ] || [ -e runs/demo/metrics.jsonl ]; then
  kept="runs/demo.$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$kept" && mv runs/demo/checkpoints runs/demo/metrics.jsonl runs/demo/config.ini "$kept"/ 2>/dev/null || true
  echo "demo: the previous demo run was moved to $kept"
fi
exec "$build/sambay" train --config configs/demo.ini "$@"
