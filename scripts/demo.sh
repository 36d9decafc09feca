#!/usr/bin/env bash
# The main job: set up, build, and train a small SambaY + differential-attention model on
# embedded data (the license texts in /usr/share/common-licenses, byte-tokenized), on the GPU
# when there is one, else on the CPU. Shows the loss falling; writes runs/demo/ (metrics,
# TensorBoard events, checkpoints) and draws the curves to runs/demo/curves.png.
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
  mkdir -p "$kept"
  for f in checkpoints metrics.jsonl config.ini tensorboard curves.png; do
    [ -e "runs/demo/$f" ] && mv "runs/demo/$f" "$kept"/
  done
  echo "demo: the previous demo run was moved to $kept"
fi
"$build/sambay" train --config configs/demo.ini "$@"
/usr/bin/python3 tools/plot_run.py runs/demo --out runs/demo/curves.png
echo "demo: TensorBoard reads runs/demo/tensorboard (tensorboard --logdir runs/demo/tensorboard)"
