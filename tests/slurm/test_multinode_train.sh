#!/usr/bin/env bash
# Two nodes (slurm/namespace_cluster.sh): `sbatch --nodes 2 --ntasks-per-node 2` of the real
# batch script trains the tiny model with DP2 x TP2, under the probed launcher (srun
# --mpi=pmix) and under mpirun. The log's placement lines show both hosts with one TP pair each;
# the losses equal one process's to 1e-5 (fp32 sums in another order) and the same layout's on
# one host bit for bit (each TP and DP group sums over 2 ranks, an order-free addition, so the
# second host must change nothing). A TP size above the ranks per node is refused naming both,
# and a rank order that splits TP pairs over the nodes (cyclic distribution) names the pair.
# The training traffic goes over the nodes' network: node2's eth0 receives megabytes per run.
# Skipped (77) without root or network namespaces. usage: test_multinode_train.sh BUILD_DIR
build=$1
cluster=namespace
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/multinode_lib.sh"

start_cluster
write_config 40 0

say "references on this host: one rank (micro_batch 2 x grad_accum 2), and DP2 x TP2"
host_run 1 "$tmp/one_rank" --tp 1 --grad_accum 2
host_run 4 "$tmp/one_host"

node2_rx() { bash "$repo/slurm/namespace_cluster.sh" on node2 cat /sys/class/net/eth0/statistics/rx_bytes; }

for launch in probed mpirun; do
  say "two-node job, launcher $launch"
  run=$tmp/two_nodes_$launch
  rx_before=$(node2_rx)
  if [ $launch = mpirun ]; then
    job=$(SAMBAY_LAUNCH=mpirun submit_two_nodes "$run")
  else
    job=$(submit_two_nodes "$run")
  fi
  state=$(wait_job_end "$job" 600)
  log=$run/logs/$job.out
  grep -v '^    ' "$log"
  [ "$state" = COMPLETED ] || fail "job $job ended $state, want COMPLETED"
  if [ $launch = mpirun ]; then
    expect_grep "launcher mpirun" "$log" "SAMBAY_LAUNCH=mpirun was not used"
  else
    expect_grep "launcher srun-pmix" "$log" "the probe did not pick srun --mpi=pmix across the nodes"
  fi
  expect_two_node_placement "$log"
  expect_grep "run finished" "$log" "the run did not finish"
  # The DP pairs {0,2} and {1,3} span the nodes: 40 steps of gradient reduce-scatter and
  # parameter all-gather of the ~10k parameters come to megabytes (2.7 MB measured), Slurm's
  # own messages to kilobytes.
  rx=$(($(node2_rx) - rx_before))
  say "node2 received $rx bytes over eth0"
  ((rx > 1000000)) || fail "node2 received only $rx bytes: the ranks did not talk over the nodes' network"
  compare_metrics "$tmp/one_host/metrics.jsonl" "$run/metrics.jsonl"
  compare_metrics --rtol 1e-5 "$tmp/one_rank/metrics.jsonl" "$run/metrics.jsonl"
done

say "tp 4 with 2 ranks per node is refused, naming both"
# Dimensions that TP 4 divides, so that the model accepts it and the grid decides.
run=$tmp/tp4
job=$(submit_two_nodes "$run" -- --tp 4 --model.n_kv_heads 8 --model.d_inner 16 --model.d_ff 16)
state=$(wait_job_end "$job" 300)
log=$run/logs/$job.out
[ "$state" = FAILED ] || { cat "$log"; fail "job $job ended $state, want FAILED"; }
expect_grep "tensor-parallel size (tp) 4 is larger than the 2 ranks on node node1 (2 nodes of 2 ranks)" \
  "$log" "the refusal does not name the TP size and the ranks per node"
expect_grep "not requeueing" "$log" "a refused layout must not be requeued"
[ "$(job_field "$job" Restarts)" = 0 ] || fail "job $job was requeued"

say "a cyclic rank order puts each TP pair on both nodes: refused, naming the pair"
out=$(client timeout 300 srun --mpi=pmix --nodes 2 --ntasks 4 --distribution=cyclic \
        --cpus-per-task 1 "$sambay" train --config "$tmp/train.ini" --out_dir "$tmp/cyclic" 2>&1) &&
  { echo "$out"; fail "a TP group across nodes was accepted"; }
grep -q "the tensor-parallel group of ranks 0-1 spans nodes node1 and node2 (2 nodes of 2 ranks)" <<<"$out" ||
  { echo "$out"; fail "the refusal does not name the split TP group and its nodes"; }

stop_cluster || fail "stop left processes or namespaces behind"
say "PASS"
