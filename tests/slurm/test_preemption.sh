#!/usr/bin/env bash
# End to end on the local Slurm cluster: slurm/train.sbatch trains a tiny SambaY model with
# 2 CPU ranks; SIGUSR1 comes mid-run as it would before a time limit; the job must checkpoint
# (exit 75), requeue itself (SLURM_RESTART_COUNT=1), resume and finish, and every logged loss,
# learning rate, gradient norm and validation loss must equal an uninterrupted run's bit for bit.
# Needs the checkpoint (--resume, exit 75) and MPI data-parallel features of sambay train; exits
# 77 (ctest: skipped) only when `sambay train --help` does not list --resume.
# usage: test_preemption.sh BUILD_DIR
build=$1
sambay=$build/sambay
[ -x "$sambay" ] || { echo "test_preemption: FAIL: no sambay binary at $sambay" >&2; exit 1; }
if ! "$sambay" train --help | grep -q -- '--resume'; then
  echo "test_preemption: SKIP: '$sambay train --help' lists no --resume: the checkpoint/resume" \
       "feature (exit 75 on SIGUSR1, --resume auto) is not in this build"
  exit 77
fi
source "$(dirname "$0")/lib.sh"

"$sambay" data phonebook --out "$tmp/phonebook" --documents 300 --entries 10 >/dev/null ||
  fail "sambay data phonebook failed"
# A tiny model (d 32, 8 layers of every kind) on one thread per rank: about 20 steps a second.
cat >"$tmp/train.ini" <<INI
model = demo-sambay-da
model.d_model = 32
model.n_heads = 2
model.n_kv_heads = 2
model.head_dim = 16
model.d_ff = 64
model.d_inner = 64
model.dt_rank = 2
model.window = 16
data = $tmp/phonebook
valid_fraction = 0.05
seq_len = 64
micro_batch = 4
steps = 200
lr = 3e-3
warmup = 10
log_every = 1
eval_every = 50
eval_batches = 2
device = cpu
threads = 1
INI
submit() { bash "$repo/slurm/submit.sh" --sambay "$sambay" --cpu-ranks 2 --cpus-per-task 1 \
             --config "$tmp/train.ini" "$@" || fail "submit.sh $* failed"; }

start_cluster

say "the uninterrupted reference run"
ref=$(submit "$tmp/reference")
state=$(wait_job_end "$ref" 300)
[ "$state" = COMPLETED ] || { cat "$tmp/reference/logs/$ref.out"; fail "reference job $ref ended $state"; }

say "the preempted run"
job=$(submit "$tmp/preempted")
wait_until 120 "the run to reach step 40" step_at_least "$tmp/preempted/metrics.jsonl" 40
scancel --batch --signal=USR1 "$job" || fail "scancel --signal=USR1 $job failed"
state=$(wait_job_end "$job" 300)
log=$tmp/preempted/logs/$job.out
cat "$log"
[ "$state" = COMPLETED ] || fail "job $job ended $state, want COMPLETED"
expect_grep "trainer exited with status 75" "$log" "the trainer did not checkpoint and exit 75"
expect_grep "requeued job $job" "$log" "the job did not requeue itself"
expect_grep "SLURM_RESTART_COUNT=1" "$log" "the requeued run did not start"
expect_grep "run finished" "$log" "the requeued run did not finish"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts), want 1"
# Each start ran the dry run first: the fresh start planned one, the requeued one the resume.
[ "$(grep -c "dry run: every check passed" "$log")" = 2 ] ||
  fail "the job's two starts did not each pass the dry run before training"
expect_grep "resume from $tmp/preempted/checkpoints/step_" "$log" "the requeued start's dry run did not name its checkpoint"
interrupted_at=$(grep -c '"loss"' "$tmp/preempted/metrics.jsonl")
say "the preempted run logged $interrupted_at training records over both runs"

/usr/bin/python3 "$repo/tests/slurm/compare_metrics.py" "$tmp/reference/metrics.jsonl" \
  "$tmp/preempted/metrics.jsonl" || fail "the resumed run differs from the uninterrupted one"

say "a run whose data is gone: the dry run ends the job before training"
sed "s|^data = .*|data = $tmp/no_such_data|" "$tmp/train.ini" >"$tmp/bad.ini"
bad=$(bash "$repo/slurm/submit.sh" --sambay "$sambay" --cpu-ranks 2 --cpus-per-task 1 \
        --config "$tmp/bad.ini" "$tmp/bad") || fail "submit.sh of the bad run failed"
state=$(wait_job_end "$bad" 300)
log=$tmp/bad/logs/$bad.out
cat "$log"
expect_grep "no_such_data" "$log" "the dry run did not name the missing data"
expect_grep "the dry run found the run unusable" "$log" "the job did not stop after the failed dry run"
[ "$state" = FAILED ] || fail "job $bad ended $state, want FAILED"
! grep -q "trainer exited" "$log" || fail "the bad run trained after its dry run failed"
! [ -e "$tmp/bad/metrics.jsonl" ] || fail "the bad run's dry run wrote metrics.jsonl"

stop_cluster || fail "stop left daemons running"
say "PASS"
