#!/usr/bin/env bash
# `sambay train --device cuda`: a run killed with kill -9 after a background checkpoint resumes
# bit for bit. Two uninterrupted runs of 12 steps (checkpoints every 4 steps, written in the
# background) must agree bit for bit with each other (the GPU step is deterministic), and a run
# killed after its step-8 checkpoint was committed and resumed must log the same losses, norms
# and learning rates and end with the same weights and moments. The GPU's weights start from a
# tensor-at-a-time initialisation and are saved from the ranks' own pieces (no host copy), so
# this also checks those paths. Exits 77 (skipped) without a GPU.
# usage: train_gpu_resume.sh SAMBAY WORKDIR
set -euo pipefail
sambay=$1 work=$2
here=$(cd "$(dirname "$0")/.." && pwd)
python=/usr/bin/python3  # the system python has h5py (Debian's python3-h5py)
[ -x $python ] || python=python3
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "train_gpu_resume: skipped, no GPU on this machine"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$sambay" data phonebook --out pb --documents 400 --entries 20 >/dev/null
opts=(train --device cuda --data pb --model demo-sambay-da --seq_len 256 --micro_batch 2
      --steps 12 --warmup 2 --lr 1e-3 --log_every 1 --eval_every 0 --save_every 4)
"$sambay" "${opts[@]}" --out_dir ref >ref.log 2>&1 || { tail -20 ref.log; exit 1; }
"$sambay" "${opts[@]}" --out_dir ref2 >ref2.log 2>&1 || { tail -20 ref2.log; exit 1; }
$python "$here/slurm/compare_metrics.py" ref/metrics.jsonl ref2/metrics.jsonl ||
  { echo "two uninterrupted GPU runs differ: resume cannot be checked bit for bit"; exit 1; }
grep -q "written in the background" ref.log || { echo "no background checkpoint"; exit 1; }
"$sambay" "${opts[@]}" --out_dir killed >killed.log 2>&1 &
pid=$!
for _ in $(seq 1200); do
  [ -d killed/checkpoints/step_00000008 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
kill -KILL $pid 2>/dev/null || true
wait $pid || true
[ -d killed/checkpoints/step_00000008 ] || { echo "no step-8 checkpoint before the kill"; tail killed.log; exit 1; }
"$sambay" "${opts[@]}" --out_dir killed >resumed.log 2>&1 || { tail -20 resumed.log; exit 1; }
grep -q "resume: from killed/checkpoints/step_0000000[8-9]\|resume: from killed/checkpoints/step_0000001" resumed.log ||
  { echo "did not resume"; grep resume resumed.log; exit 1; }
$python "$here/slurm/compare_metrics.py" ref/metrics.jsonl killed/metrics.jsonl
$python - ref/checkpoints/step_00000012 killed/checkpoints/step_00000012 <<'PY'
import sys
try:
    import h5py
except ImportError:
    print("note: no h5py: final weights not compared"); sys.exit(0)
a, b = (h5py.File(p + "/index.h5") for p in sys.argv[1:])
names = []
a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) and n.startswith(("model", "optim")) else None)
bad = [n for n in names if not (a[n][...] == b[n][...]).all()]
print(f"{len(names) - len(bad)} of {len(names)} tensors equal bit for bit")
sys.exit(1 if bad else 0)
PY
echo "train_gpu_resume: a GPU run killed after a background checkpoint resumed bit for bit"
