#!/usr/bin/env bash
# `sambay train` under mpirun against a single process on the same global batch: 10 steps of a
# tiny model on generated data give the same losses with 1 rank (micro_batch 2 x grad_accum 2),
# 2 ranks (micro_batch 2, small buckets so the gradient goes through several padded
# reduce-scatters), 2 ranks (micro_batch 1 x grad_accum 2) and 4 ranks (micro_batch 1).
# fp32 gradients are summed over ranks in another order than one process accumulates them, so
# losses agree to 1e-5 relative, not bit for bit. Validation losses are compared where the
# micro-batch (and so the validation set) is the same. Also: only rank 0 logs, and --tp 2 is
# refused on every rank with a message saying tensor parallelism is not implemented yet.
# usage: train_dp_equivalence.sh MPIEXEC SAMBAY WORKDIR
set -euo pipefail
mpiexec=$1 sambay=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
run() {  # run NP OUT_DIR [options]
  local np=$1 out=$2
  shift 2
  "$mpiexec" -n "$np" --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1 "$sambay" train \
    --data pb --model tiny-sambay-da --model.vocab 257 --seq_len 32 --steps 10 --warmup 2 \
    --lr 3e-3 --log_every 1 --eval_every 5 --eval_batches 4 --out_dir "$out" "$@" >"$out.log"
}
"$sambay" data phonebook --out pb --documents 200 --entries 8 >/dev/null
run 1 np1 --micro_batch 2 --grad_accum 2
run 2 np2 --micro_batch 2 --dp_bucket_mb 0.002
run 2 np2_accum --micro_batch 1 --grad_accum 2
run 4 np4 --micro_batch 1

values() {  # values KEY FILE: the KEY values of metrics.jsonl, one per line
  grep -o "\"$1\":[-0-9.e+]*" "$2" | cut -d: -f2
}
compare() {  # compare KEY RUN: RUN's KEY values against np1's, to 1e-5 relative
  paste <(values "$1" np1/metrics.jsonl) <(values "$1" "$2"/metrics.jsonl) | awk -v k="$1" -v r="$2" '
    { n++; d = $1 - $2; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1
      if (d > 1e-5 * a) { printf "%s %s line %d: %s vs np1 %s\n", r, k, n, $2, $1; bad++ } }
    END { if (n == 0) { print r ": no " k " values"; exit 1 } exit bad > 0 }'
  [ "$(values "$1" np1/metrics.jsonl | wc -l)" = "$(values "$1" "$2"/metrics.jsonl | wc -l)" ] ||
    { echo "$2: number of $1 values differs from np1"; exit 1; }
}
compare loss np2
compare loss np2_accum
compare loss np4
compare valid_loss np2
[ "$(values loss np1/metrics.jsonl | wc -l)" = 10 ] || { echo "np1: expected 10 losses"; exit 1; }
lines=$(grep -c "^step .*/10 | loss" np2.log)
[ "$lines" = 10 ] || { echo "np2: $lines step lines printed (rank 0 alone should print 10)"; exit 1; }

if "$mpiexec" -n 2 --oversubscribe --allow-run-as-root "$sambay" train --data pb --tp 2 \
    --out_dir tp2 >tp2.log 2>&1; then
  echo "--tp 2 was accepted"; exit 1
fi
grep -q "rank [01] of 2: error: option --tp: tensor parallelism is not implemented yet" tp2.log ||
  { echo "--tp 2: unexpected output:"; cat tp2.log; exit 1; }
echo "train_dp_equivalence: np2, np2 (grad_accum 2) and np4 losses match np1 to 1e-5"
