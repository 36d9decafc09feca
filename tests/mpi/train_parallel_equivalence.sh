#!/usr/bin/env bash
# `sambay train` under mpirun against a single process on the same global batch: 10 steps of a
# tiny SambaY+DA model on generated data give the same losses with
#   1 rank (micro_batch 2 x grad_accum 2);
#   DP2 (micro_batch 2, small buckets so the gradient goes through several padded
#   reduce-scatters), DP2 with micro_batch 1 x grad_accum 2, DP4 (micro_batch 1);
#   TP2, TP2 with sequence parallelism, DP2 x TP2 (--tp 2 on 4 ranks), CP2, CP4, TP2 x CP2.
# fp32 gradients are summed over ranks in another order than one process accumulates them, so
# losses agree to 1e-5 relative, not bit for bit. Validation losses are compared where the
# micro-batch (and so the validation set) is the same. Each rank checkpoints the values it owns
# (its ZeRO pieces of its TP shard, in the background) and any layout loads them: the DP2 x TP2
# run's step-5 checkpoint resumes on one rank, and the one-rank run's resumes under DP2 x TP2,
# and both give the uninterrupted run's losses for steps 6-10. Also: only rank 0 logs.
# usage: train_parallel_equivalence.sh MPIEXEC SAMBAY WORKDIR
set -euo pipefail
mpiexec=$1 sambay=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
run() {  # run NP OUT_DIR [options]
  local np=$1 out=$2
  shift 2
  "$mpiexec" -n "$np" --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1 "$sambay" train \
    --data pb --model tiny-sambay-da --model.vocab 257 --model.n_heads 8 --model.n_kv_heads 4 \
    --seq_len 32 --steps 10 --warmup 2 --lr 3e-3 --log_every 1 --eval_every 5 --eval_batches 4 \
    --save_every 5 --out_dir "$out" "$@" >"$out.log"
}
"$sambay" data phonebook --out pb --documents 200 --entries 8 >/dev/null
run 1 np1 --micro_batch 2 --grad_accum 2
run 2 np2 --micro_batch 2 --dp_bucket_mb 0.002
run 2 np2_accum --micro_batch 1 --grad_accum 2
run 4 np4 --micro_batch 1
run 2 tp2 --tp 2 --micro_batch 2 --grad_accum 2
run 2 tp2_sp --tp 2 --sequence_parallel true --micro_batch 2 --grad_accum 2
run 4 dp2_tp2 --tp 2 --micro_batch 2 --dp_bucket_mb 0.002
run 2 cp2 --cp 2 --micro_batch 2 --grad_accum 2
run 4 cp4 --cp 4 --micro_batch 2 --grad_accum 2
run 4 tp2_cp2 --tp 2 --cp 2 --sequence_parallel true --micro_batch 2 --grad_accum 2
# Resharding: step 5 of one layout resumed under another, steps 6-10 compared.
run 1 from_dp2_tp2 --micro_batch 2 --grad_accum 2 --resume dp2_tp2/checkpoints/step_00000005
run 4 from_np1 --tp 2 --micro_batch 2 --resume np1/checkpoints/step_00000005

values() {  # values KEY FILE: the KEY values of metrics.jsonl, one per line
  grep -o "\"$1\":[-0-9.e+]*" "$2" | cut -d: -f2
}
compare() {  # compare KEY RUN [REF]: RUN's KEY values against REF's (np1), to 1e-5 relative
  local ref=${3:-np1}
  paste <(values "$1" "$ref"/metrics.jsonl) <(values "$1" "$2"/metrics.jsonl) | awk -v k="$1" -v r="$2" '
    { n++; d = $1 - $2; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1
      if (d > 1e-5 * a) { printf "%s %s line %d: %s vs np1 %s\n", r, k, n, $2, $1; bad++ } }
    END { if (n == 0) { print r ": no " k " values"; exit 1 } exit bad > 0 }'
  [ "$(values "$1" "$ref"/metrics.jsonl | wc -l)" = "$(values "$1" "$2"/metrics.jsonl | wc -l)" ] ||
    { echo "$2: number of $1 values differs from $ref"; exit 1; }
}
for r in np2 np2_accum np4 tp2 tp2_sp dp2_tp2 cp2 cp4 tp2_cp2; do compare loss $r; done
compare valid_loss np2
compare valid_loss tp2
compare valid_loss tp2_sp
compare valid_loss cp2
# The resumed runs log steps 6-10 only: compared against the last 5 losses of the layout that
# ran them uninterrupted.
mkdir -p last5_np1 last5_dp2_tp2
grep '"loss"' np1/metrics.jsonl | tail -5 >last5_np1/metrics.jsonl
grep '"loss"' dp2_tp2/metrics.jsonl | tail -5 >last5_dp2_tp2/metrics.jsonl
compare loss from_dp2_tp2 last5_np1
compare loss from_np1 last5_dp2_tp2
grep -q "resume: from dp2_tp2/checkpoints/step_00000005" from_dp2_tp2.log ||
  { echo "from_dp2_tp2: did not resume"; cat from_dp2_tp2.log; exit 1; }
[ "$(values loss np1/metrics.jsonl | wc -l)" = 10 ] || { echo "np1: expected 10 losses"; exit 1; }
lines=$(grep -c "^step .*/10 | loss" np2.log)
[ "$lines" = 10 ] || { echo "np2: $lines step lines printed (rank 0 alone should print 10)"; exit 1; }

# A layout the model cannot take is refused on every rank, naming the option and the field.
if "$mpiexec" -n 2 --oversubscribe --allow-run-as-root "$sambay" train --data pb --tp 2 \
    --model tiny-sambay-da --out_dir bad_tp >bad_tp.log 2>&1; then
  echo "--tp 2 with 2 key/value heads was accepted"; exit 1
fi
grep -q "rank [01] of 2: error: option --tp: .*n_kv_heads = 2 is not divisible" bad_tp.log ||
  { echo "--tp 2: unexpected output:"; cat bad_tp.log; exit 1; }
echo "train_parallel_equivalence: DP2, DP4, TP2, TP2+SP, DP2xTP2, CP2, CP4, TP2xCP2+SP and resharded resumes match one rank to 1e-5"
