#!/usr/bin/env bash
# `sambay train --device cuda` under mpirun with 2 ranks sharing one GPU (the trainer picks the
# host-staged MPI communicators: NCCL cannot put two ranks on one GPU) against one rank on the
# same global batch: DP2 (also with gradient accumulation: only the step's last micro-batch
# hands its gradient buckets to the group during backward), TP2 and TP2 with sequence parallelism
# (TP2+SP: the residual stream, norms, embedding and loss on half the rows per rank) runs of 10
# steps of a small SambaY+DA model. The GPU computes
# in bf16, and the layouts run GEMMs of other shapes (DP: half the micro-batch; TP: half the
# heads and channels, fp32 partial sums), so the runs differ by bf16 rounding, not bit for bit:
# losses and gradient norms must agree to 1e-2 relative (a missing gradient reduction moves the
# norm by about 40%, a doubled one by 100%). The optimizer state is sharded over the DP ranks
# (ZeRO-1 on the GPU); each rank checkpoints the values it owns (written in the background): the
# DP2 run's step-5 checkpoint resumes on one rank and the one-rank run's under DP2, both matching
# the uninterrupted runs' steps 6-10.
# Exits 77 (skipped) without a GPU.
# usage: train_gpu_parallel_equivalence.sh MPIEXEC SAMBAY WORKDIR
set -euo pipefail
mpiexec=$1 sambay=$2 work=$3
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "train_gpu_parallel_equivalence: skipped, no GPU on this machine"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" && cd "$work"
run() {  # run NP OUT_DIR [options]
  local np=$1 out=$2
  shift 2
  "$mpiexec" -n "$np" --oversubscribe --allow-run-as-root "$sambay" train --device cuda \
    --data pb --model demo-sambay-da --model.n_heads 8 --model.n_kv_heads 4 --seq_len 256 \
    --steps 10 --warmup 2 \
    --lr 1e-3 --log_every 1 --eval_every 0 --save_every 5 --out_dir "$out" "$@" >"$out.log" 2>&1 ||
    { echo "$out failed:"; tail -20 "$out.log"; exit 1; }
}
"$sambay" data phonebook --out pb --documents 400 --entries 8 >/dev/null
run 1 np1 --micro_batch 4 --grad_accum 2
run 2 dp2 --micro_batch 4 --dp_bucket_mb 0.5
run 2 dp2_accum --micro_batch 2 --grad_accum 2 --dp_bucket_mb 0.5
run 2 tp2 --tp 2 --micro_batch 4 --grad_accum 2
run 2 tp2_sp --tp 2 --sequence_parallel true --micro_batch 4 --grad_accum 2
run 1 from_dp2 --micro_batch 4 --grad_accum 2 --resume dp2/checkpoints/step_00000005
run 2 dp2_from_np1 --micro_batch 4 --dp_bucket_mb 0.5 --resume np1/checkpoints/step_00000005
mkdir -p last5
grep '"loss"' np1/metrics.jsonl | tail -5 >last5/metrics.jsonl
grep -q "GPU tensors over mpi_host_staged" dp2.log || { echo "dp2: not host-staged"; exit 1; }
values() { grep -o "\"$1\":[-0-9.e+]*" "$2" | cut -d: -f2; }
status=0
compare() {  # compare RUN REFERENCE STEPS
  for key in loss grad_norm; do
    paste <(values $key $2/metrics.jsonl) <(values $key $1/metrics.jsonl) | awk -v r=$1 -v k=$key -v want=$3 '
      { n++; d = $1 - $2; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1; if (d / a > worst) worst = d / a }
      END { printf "%s %s: %d steps, largest relative difference from one rank %.2e\n", r, k, n, worst
            exit (n != want || worst > 1e-2) }' || status=1
  done
}
for run in dp2 dp2_accum tp2 tp2_sp; do compare $run np1 10; done
compare from_dp2 last5 5
compare dp2_from_np1 last5 5
exit $status
