#!/usr/bin/env bash
# A two-node DP2 x TP2 job (slurm/namespace_cluster.sh) gets the time-limit warning mid-run
# (`scancel --batch --signal=USR1`, what `--signal=B:USR1@T` sends): the ranks on both nodes
# checkpoint, the job exits 75, requeues itself, comes back on both nodes and resumes, and every
# logged number equals an uninterrupted two-node run's bit for bit.
# Skipped (77) without root or network namespaces. usage: test_multinode_preemption.sh BUILD_DIR
build=$1
cluster=namespace
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/multinode_lib.sh"

start_cluster
# No periodic checkpoints: the only one is the one the warning asks for.
write_config 80 0

say "the uninterrupted two-node run"
ref=$(submit_two_nodes "$tmp/reference")
state=$(wait_job_end "$ref" 900)
[ "$state" = COMPLETED ] || { cat "$tmp/reference/logs/$ref.out"; fail "reference job $ref ended $state"; }
expect_two_node_placement "$tmp/reference/logs/$ref.out"

say "the preempted two-node run"
run=$tmp/preempted
job=$(submit_two_nodes "$run")
wait_until 600 "the run to reach step 30" step_at_least "$run/metrics.jsonl" 30
client scancel --batch --signal=USR1 "$job" || fail "scancel --batch --signal=USR1 $job failed"
state=$(wait_job_end "$job" 900)
log=$run/logs/$job.out
grep -v '^    ' "$log"
[ "$state" = COMPLETED ] || fail "job $job ended $state, want COMPLETED"
expect_grep "SIGUSR1 (time-limit warning)" "$log" "the batch script did not get the warning"
expect_grep "trainer exited with status 75" "$log" "the ranks did not checkpoint and exit 75"
expect_grep "requeued job $job" "$log" "the job did not requeue itself"
expect_grep "SLURM_RESTART_COUNT=1 nodes=2" "$log" "the requeued run did not start on two nodes"
expect_grep "resume: from $run/checkpoints/step_" "$log" "the requeued run did not resume from the checkpoint"
expect_grep "run finished" "$log" "the requeued run did not finish"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts), want 1"
# Both runs of the job placed a TP pair on each node.
[ "$(grep -c '^  node2: ranks 2-3, no GPU' "$log")" = 2 ] || fail "not both runs of job $job used node2"
expect_two_node_placement "$log"

compare_metrics "$tmp/reference/metrics.jsonl" "$run/metrics.jsonl"
stop_cluster || fail "stop left processes or namespaces behind"
say "PASS"
