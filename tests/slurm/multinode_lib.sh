# Shared by the multi-node training tests (sourced after lib.sh with cluster=namespace): the
# tiny model's data and config, runs on this host outside Slurm for reference, two-node
# submissions of slurm/train.sbatch, and the checks of a two-node job's log.
build=$(realpath "$build")  # the tests cd to $tmp
sambay=$build/sambay
[ -x "$sambay" ] || fail "no sambay binary at $sambay"
[ -x "$build/sambay_mpi_probe" ] || fail "no sambay_mpi_probe beside $sambay (build the sambay target)"
cd "$tmp"  # the cluster's shared file system: jobs start in their submit directory

# A tiny SambaY+DA model whose layers split over TP 2 (as in mpi/train_parallel_equivalence.sh),
# one thread per rank, every step logged. Global batch: micro_batch 2 on each of 2 DP ranks.
write_config() {  # steps, save_every
  "$sambay" data phonebook --out "$tmp/phonebook" --documents 200 --entries 8 >/dev/null ||
    fail "sambay data phonebook failed"
  cat >"$tmp/train.ini" <<INI
model = tiny-sambay-da
model.vocab = 257
model.n_heads = 8
model.n_kv_heads = 4
data = $tmp/phonebook
seq_len = 32
micro_batch = 2
steps = $1
save_every = $2
lr = 3e-3
warmup = 5
log_every = 1
eval_every = 20
eval_batches = 2
tp = 2
device = cpu
threads = 1
INI
}

# sambay train under mpirun on this host (one node, outside Slurm and the namespaces).
host_run() {  # ranks, out dir, sambay train options...
  local np=$1 out=$2
  shift 2
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np "$np" --oversubscribe \
    --bind-to none -x OMP_NUM_THREADS=1 "$sambay" train --config "$tmp/train.ini" \
    --out_dir "$out" "$@" >"$out.log" 2>&1 || { cat "$out.log"; fail "the $np-rank run on this host failed"; }
}

# Submits train.sbatch from node1 for 2 nodes x 2 ranks; prints the job id.
submit_two_nodes() {  # run dir, [submit.sh options] [-- sambay train options]
  client bash "$repo/slurm/submit.sh" --sambay "$sambay" --nodes 2 --cpu-ranks 2 \
    --cpus-per-task 1 --config "$tmp/train.ini" "$@" || fail "submit.sh $* failed"
}

# The job ran on both nodes, two ranks each, with each TP pair on one node.
expect_two_node_placement() {  # log
  expect_grep "nodes=2 (node\[1-2\]) tasks=4 tasks/node=2" "$1" "the job did not get 2 nodes x 2 tasks"
  expect_grep "world 4 = dp 2 x cp 1 x tp 2; rank 0 is (dp 0, cp 0, tp 0), local rank 0 of 2 on its node" \
    "$1" "the grid is not DP2 x TP2 with 2 ranks per node"
  expect_grep "^  node1: ranks 0-1, no GPU" "$1" "ranks 0-1 (a TP group) are not on node1"
  expect_grep "^  node2: ranks 2-3, no GPU" "$1" "ranks 2-3 (a TP group) are not on node2"
}

compare_metrics() {  # [--rtol R] reference.jsonl run.jsonl
  /usr/bin/python3 "$repo/tests/slurm/compare_metrics.py" "$@" || fail "metrics differ: $*"
}
