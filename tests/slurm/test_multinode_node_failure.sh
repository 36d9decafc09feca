#!/usr/bin/env bash
# A node dies under a two-node DP2 x TP2 job (slurm/namespace_cluster.sh crash node2: its link
# goes down, every process on it is killed). Slurm declares the node down, ends the job with a
# message naming the node failure and requeues it; the node reboots (namespace_cluster.sh boot);
# the requeued job starts on both nodes again, resumes from the newest checkpoint that was
# complete when the node died, and every logged number equals an uninterrupted two-node run's
# bit for bit. Skipped (77) without root or network namespaces.
# usage: test_multinode_node_failure.sh BUILD_DIR
build=$1
cluster=namespace
# A dead node is declared down after 10 s without an answer (instead of the cluster's 20 s).
export SAMBAY_NS_SLURMD_TIMEOUT=10
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/multinode_lib.sh"

start_cluster
write_config 80 20

say "the uninterrupted two-node run"
ref=$(submit_two_nodes "$tmp/reference")
state=$(wait_job_end "$ref" 900)
[ "$state" = COMPLETED ] || { cat "$tmp/reference/logs/$ref.out"; fail "reference job $ref ended $state"; }

say "node2 dies mid-run"
run=$tmp/crashed
job=$(submit_two_nodes "$run")
wait_until 600 "the run to pass its step-20 checkpoint" step_at_least "$run/metrics.jsonl" 25
bash "$repo/slurm/namespace_cluster.sh" crash node2 || fail "crash node2 failed"
# The newest complete checkpoint: nothing newer can complete without node2's ranks.
good=$(cat "$run/checkpoints/latest") || fail "no checkpoint pointer in $run/checkpoints"
crashed_at=$(last_step "$run/metrics.jsonl")
say "node2 crashed at step $crashed_at; the newest complete checkpoint is $good"

log=$run/logs/$job.out
requeued() { [ "$(job_field "$job" Restarts)" = 1 ] && [ "$(job_state "$job")" = PENDING ]; }
wait_until 180 "Slurm to requeue job $job after the node failure" requeued
expect_grep "srun: error: Node failure on node2" "$log" "the job's log does not name the failed node"
expect_grep "CANCELLED AT .* DUE TO NODE FAILURE" "$log" "the job was not ended for the node failure"
[ "$(client sinfo -h -n node2 -o %t)" = "down*" ] || fail "node2 is '$(client sinfo -h -n node2 -o %t)', want down*"
grep -q "requeue job JobId=$job due to failure of node node2" "$cluster_dir/log/slurmctld.log" ||
  fail "slurmctld did not requeue job $job for the failure of node2"

say "node2 reboots; the requeued job resumes"
bash "$repo/slurm/namespace_cluster.sh" boot node2 || fail "node2 did not boot"
state=$(wait_job_end "$job" 900)
grep -v '^    ' "$log"
[ "$state" = COMPLETED ] || fail "job $job ended $state, want COMPLETED"
expect_grep "SLURM_RESTART_COUNT=1 nodes=2" "$log" "the requeued run did not start on two nodes"
expect_grep "resume: from $run/checkpoints/$good " "$log" "the requeued run did not resume from $good"
expect_grep "run finished" "$log" "the requeued run did not finish"
[ "$(grep -c '^  node2: ranks 2-3, no GPU' "$log")" = 2 ] || fail "the requeued run did not use node2"

compare_metrics "$tmp/reference/metrics.jsonl" "$run/metrics.jsonl"
stop_cluster || fail "stop left processes or namespaces behind"
say "PASS"
