#!/usr/bin/env bash
# Step time of each parallel layout against one rank on the same cores (CPU backend, MPI):
# every layout trains the same model on the same global batch with the node's cores split
# evenly among its ranks, so a perfect layout would take the single rank's time; the overhead
# column is what communication and the smaller per-rank work cost. Run it with the build of
# scripts/setup.sh (OpenBLAS): a reference-BLAS build (tools/device_build.sh) is far too slow.
# usage: bench/parallel_overhead.sh SAMBAY [CORES] [WORKDIR]
# Prints a Markdown table (median step time of steps 2..N from metrics.jsonl).
set -euo pipefail
sambay=$(realpath "$1")
cores=${2:-$(nproc)}
work=${3:-/tmp/sambay-parallel-overhead}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
"$sambay" data phonebook --out pb --documents 4000 --entries 16 >/dev/null
steps=6
# A SambaY+DA model of 8 layers, width 256 (about 9M parameters), 1024-token sequences,
# global batch 8 sequences.
common=(--device cpu --data pb --model demo-sambay-da --model.d_model 256 --model.d_inner 512
        --model.dt_rank 16 --model.d_ff 768 --model.n_heads 8 --model.n_kv_heads 4
        --model.head_dim 32 --model.window 256 --seq_len 1024 --steps $steps --warmup 2
        --log_every 1 --eval_every 0 --save_every 0)
threads() { echo $((cores / $1 > 0 ? cores / $1 : 1)); }  # per rank, at least 1
run() {  # run NAME NP OPTIONS...
  local name=$1 np=$2
  shift 2
  mpirun -np "$np" --bind-to none --oversubscribe --allow-run-as-root "$sambay" train \
    "${common[@]}" --threads $(threads "$np") --out_dir "$name" "$@" \
    >"$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$name.log"; exit 1; }
}
median_step_ms() {  # steps 2..N: the first step includes warm-up
  grep -o '"step_ms":[0-9.e+]*' "$1/metrics.jsonl" | cut -d: -f2 | tail -n +2 | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
layouts=(
  "1-rank 1 --micro_batch 8"
  "DP2 2 --micro_batch 4"
  "DP4 4 --micro_batch 2"
  "TP2 2 --tp 2 --micro_batch 8"
  "TP2+SP 2 --tp 2 --sequence_parallel true --micro_batch 8"
  "CP2 2 --cp 2 --micro_batch 8"
  "CP4 4 --cp 4 --micro_batch 8"
  "DP2xTP2 4 --tp 2 --micro_batch 4"
  "TP2xCP2 4 --tp 2 --cp 2 --micro_batch 8"
)
printf "| layout | ranks x threads | step (ms) | tokens/s | overhead vs 1 rank |\n"
printf "| --- | --- | --- | --- | --- |\n"
base=""
for l in "${layouts[@]}"; do
  read -r name np opts <<<"$l"
  # shellcheck disable=SC2086
  run "$name" "$np" $opts
  ms=$(median_step_ms "$name")
  [ -n "$base" ] || base=$ms
  awk -v n="$name" -v np="$np" -v t="$(threads "$np")" -v ms="$ms" -v base="$base" 'BEGIN {
    printf "| %s | %d x %d | %.0f | %.0f | %+.0f%% |\n", n, np, t, ms, 8 * 1024 / (ms / 1000),
      100 * (ms / base - 1) }'
done
