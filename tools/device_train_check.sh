#!/usr/bin/env bash
# On the GPU machine: the demo config trained on the GPU (compare with the CPU run's
# metrics.jsonl), then a few steps of the 1B config through the real trainer for end-to-end
# tokens/s, MFU and checkpoint write speed. Logs and metrics go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/sambay-device-out}
mkdir -p "$out" /tmp/run
export LD_LIBRARY_PATH="$PWD/.device-build/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
bin=.device-build/bin/sambay
$bin train --config configs/demo.ini --out_dir /tmp/run/demo-gpu 2>&1 | tee "$out/demo_gpu.log" | tail -8
cp /tmp/run/demo-gpu/metrics.jsonl "$out/demo_gpu_metrics.jsonl"
$bin data phonebook --out /tmp/run/phonebook --documents 4000 --entries 200 --seed 3 | tail -1
$bin train --model sambay-da-1b --data /tmp/run/phonebook --seq_len 4096 --micro_batch 2 \
  --steps 12 --warmup 2 --lr 3e-4 --log_every 1 --eval_every 0 --valid_fraction 0.01 \
  --out_dir /tmp/run/1b 2>&1 | tee "$out/train_1b.log" | grep -E "sambay train|step|checkpoint|done|error"
