#!/usr/bin/env bash
# slurm/train.sbatch, submit.sh and chain.sh on the local Slurm cluster, with a stand-in trainer
# (fake_sambay.sh: the checkpoint interface without the model) so that the batch machinery is
# tested on its own: the time-limit warning leads to checkpoint, exit 75, requeue and resume
# (launched by srun with the probed MPI plugin, and by mpirun); a chain continues in its next
# job; a cancelled job is not requeued; a finished run is not trained again; a job array trains
# one run dir per task; a job the trainer's watchdog ended (exit 76) is requeued once per
# checkpoint, so a hang that recurs before any progress ends the run.
# usage: test_batch_requeue.sh BUILD_DIR
build=$1
source "$(dirname "$0")/lib.sh"

[ -x "$build/sambay_mpi_probe" ] || fail "$build/sambay_mpi_probe is missing (build the sambay target)"
mkdir -p "$tmp/bin"
ln -s "$repo/tests/slurm/fake_sambay.sh" "$tmp/bin/sambay"
ln -s "$(realpath "$build/sambay_mpi_probe")" "$tmp/bin/sambay_mpi_probe"
printf 'steps = 40\n' >"$tmp/fake.ini"
submit() { bash "$repo/slurm/submit.sh" --sambay "$tmp/bin/sambay" "$@" || fail "submit.sh $* failed"; }

# Every step 1..40 logged exactly once: the resumed part continued where the checkpoint was.
check_metrics() {
  local steps
  steps=$(grep -o '"step":[0-9]*' "$1/metrics.jsonl" | cut -d: -f2 | tr '\n' ' ')
  [ "$steps" = "$(seq -s ' ' 1 40) " ] || fail "$1/metrics.jsonl has steps '$steps', want 1..40 once each"
}

# A run that gets the time-limit warning mid-way, requeues itself and finishes.
preempt_and_requeue() {  # run dir
  local run=$1 job state log
  job=$(submit --cpu-ranks 2 --config "$tmp/fake.ini" "$run")
  wait_until 60 "$run to reach step 10" step_at_least "$run/metrics.jsonl" 10
  scancel --batch --signal=USR1 "$job" || fail "scancel --signal=USR1 $job failed"
  state=$(wait_job_end "$job" 120)
  log=$run/logs/$job.out
  cat "$log"
  [ "$state" = COMPLETED ] || fail "job $job ended $state, want COMPLETED"
  expect_grep "SIGUSR1 (time-limit warning)" "$log" "the batch script did not get the warning"
  expect_grep "SIGUSR1, checkpointed at step" "$log" "the signal did not reach the ranks"
  expect_grep "trainer exited with status 75" "$log" "the trainer's checkpoint exit was not seen"
  expect_grep "requeued job $job" "$log" "the job did not requeue itself"
  expect_grep "SLURM_RESTART_COUNT=1" "$log" "the requeued run did not start"
  expect_grep "resumed from step" "$log" "the requeued run did not resume"
  expect_grep "run finished" "$log" "the requeued run did not finish"
  [ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts), want 1"
  [ -f "$run/DONE" ] || fail "$run/DONE missing after the run finished"
  check_metrics "$run"
}

start_cluster

say "1. warning -> checkpoint -> requeue -> resume, launcher probed"
preempt_and_requeue "$tmp/run-srun"
expect_grep "launcher srun-pmix" "$tmp/run-srun/logs/"*.out "pmix (which works with Debian's OpenMPI) was not chosen"

say "2. the same through mpirun"
SAMBAY_LAUNCH=mpirun preempt_and_requeue "$tmp/run-mpirun"
expect_grep "launcher mpirun" "$tmp/run-mpirun/logs/"*.out "SAMBAY_LAUNCH=mpirun was not used"

say "3. a chain of two jobs: the first checkpoints and ends, the second resumes"
run=$tmp/run-chain
jobs=$(bash "$repo/slurm/chain.sh" 2 --sambay "$tmp/bin/sambay" --cpu-ranks 2 --config "$tmp/fake.ini" "$run") ||
  fail "chain.sh failed"
first=$(echo "$jobs" | sed -n 1p) second=$(echo "$jobs" | sed -n 2p)
[ "$(job_field "$second" Dependency)" = "afterany:${first}(unfulfilled)" ] ||
  fail "job $second depends on '$(job_field "$second" Dependency)', want afterany:$first"
wait_until 60 "$run to reach step 10" step_at_least "$run/metrics.jsonl" 10
scancel --batch --signal=USR1 "$first"
wait_job_end "$first" 60 >/dev/null
state=$(wait_job_end "$second" 120)
cat "$run"/logs/*.out
[ "$state" = COMPLETED ] || fail "second job $second ended $state"
expect_grep "not requeueing (SAMBAY_REQUEUE=0" "$run/logs/$first.out" "a chain job requeued itself"
expect_grep "resumed from step" "$run/logs/$second.out" "the second job did not resume"
[ "$(job_field "$first" Restarts)" = 0 ] || fail "chain job $first was requeued"
check_metrics "$run"

say "4. a cancelled job is not requeued"
run=$tmp/run-cancel
job=$(submit --cpu-ranks 2 --config "$tmp/fake.ini" "$run")
wait_until 60 "$run to reach step 5" step_at_least "$run/metrics.jsonl" 5
scancel "$job"
state=$(wait_job_end "$job" 60)
cat "$run/logs/$job.out"
[ "$state" = CANCELLED ] || fail "cancelled job $job ended $state"
[ "$(job_field "$job" Restarts)" = 0 ] || fail "cancelled job $job was requeued"
[ ! -f "$run/DONE" ] || fail "a cancelled run was marked DONE"

say "5. a finished run is not trained again"
job=$(submit --cpu-ranks 2 "$tmp/run-srun")
[ "$(wait_job_end "$job" 60)" = COMPLETED ] || fail "resubmitting a finished run failed"
expect_grep "nothing to do" "$tmp/run-srun/logs/$job.out" "a finished run was trained again"
check_metrics "$tmp/run-srun"

say "6. a job array: one run dir per task"
for i in 0 1; do mkdir -p "$tmp/array/r$i" && cp "$tmp/fake.ini" "$tmp/array/r$i/train.ini"; done
printf '%s\n' "$tmp/array/r0" "$tmp/array/r1" >"$tmp/array/runs.txt"
job=$(submit --cpu-ranks 1 "@$tmp/array/runs.txt")
for i in 0 1; do
  [ "$(wait_job_end "${job}_$i" 120)" = COMPLETED ] || fail "array task $i failed"
  check_metrics "$tmp/array/r$i"
  ls "$tmp/array/r$i/logs/"*.out >/dev/null || fail "array task $i wrote no log into its run dir"
done

say "7. the watchdog's exit 76: requeued; the same hang again without a newer checkpoint: not"
run=$tmp/run-hang
mkdir -p "$run"
printf 'steps = 40\nsave_every = 5\nhang_at_step = 12\n' >"$run/train.ini"
job=$(submit --cpu-ranks 1 "$run")
state=$(wait_job_end "$job" 120)
log=$run/logs/$job.out
cat "$log"
[ "$state" = FAILED ] || fail "job $job ended $state, want FAILED (the hang recurred)"
expect_grep "trainer exited with status 76" "$log" "the watchdog's exit was not seen"
expect_grep "requeued job $job" "$log" "the first hang was not requeued"
expect_grep "not requeueing: the run hung again before writing a checkpoint newer than step_00000010" \
  "$log" "the recurring hang was requeued"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts), want 1"
[ "$(cat "$run/logs/watchdog_requeues")" = step_00000010 ] || fail "watchdog_requeues: $(cat "$run/logs/watchdog_requeues")"

stop_cluster || fail "stop left daemons running"
say "PASS"
