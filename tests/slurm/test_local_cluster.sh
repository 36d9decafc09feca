#!/usr/bin/env bash
# The local one-node Slurm cluster really works: it starts, runs a 2-task step, runs a batch job
# that receives SIGUSR1 from `scancel --batch --signal=USR1` (what `--signal=B:USR1@T` sends at
# a time limit), requeues itself, comes back with SLURM_RESTART_COUNT=1 and completes; `stop`
# ends exactly the daemons `start` recorded. usage: test_local_cluster.sh BUILD_DIR
build=$1
source "$(dirname "$0")/lib.sh"

start_cluster
[ "$(sinfo -h -n localhost -o %t)" = idle ] || fail "node not idle after start: $(sinfo -N)"
for d in munged slurmctld slurmd; do
  pid=$(cat "$SAMBAY_SLURM_DIR/pids/$d.pid" 2>/dev/null) || { [ $d = munged ] && continue; fail "no pid recorded for $d"; }
  [ "$(cat /proc/$pid/comm)" = "$d" ] || fail "recorded pid $pid is not $d"
done

out=$(timeout 60 srun -n2 hostname) || fail "srun -n2 hostname failed: $out"
[ "$(echo "$out" | wc -l)" = 2 ] || fail "srun -n2 hostname printed '$out', want two lines"
say "srun -n2 hostname: $(echo $out)"

cat >"$tmp/job.sh" <<'JOB'
#!/usr/bin/env bash
echo "SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}"
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then echo finished; exit 0; fi
got=0
trap 'got=1' USR1
echo started
sleep 120 &
wait $!
if ((got)); then
  echo "got SIGUSR1"
  kill $! 2>/dev/null
  scontrol requeue "$SLURM_JOB_ID" && echo "requeue requested"
  sleep 30  # Slurm ends this run now
fi
echo "no signal came"
exit 1
JOB
job=$(sbatch --parsable --requeue --open-mode=append --output="$tmp/job.out" "$tmp/job.sh") ||
  fail "sbatch failed"
say "submitted job $job"
wait_until 60 "job $job to start" grep -qs started "$tmp/job.out"
scancel --batch --signal=USR1 "$job" || fail "scancel --signal=USR1 failed"
state=$(wait_job_end "$job" 120)
cat "$tmp/job.out"
[ "$state" = COMPLETED ] || fail "job $job ended $state, want COMPLETED"
expect_grep "got SIGUSR1" "$tmp/job.out" "the batch shell did not see the signal"
expect_grep "requeue requested" "$tmp/job.out" "the job could not requeue itself"
expect_grep "SLURM_RESTART_COUNT=0" "$tmp/job.out" "first run missing"
expect_grep "SLURM_RESTART_COUNT=1" "$tmp/job.out" "the requeued run did not see SLURM_RESTART_COUNT=1"
expect_grep "finished" "$tmp/job.out" "the requeued run did not finish"
[ "$(job_field "$job" Restarts)" = 1 ] || fail "scontrol shows Restarts=$(job_field "$job" Restarts), want 1"

stop_cluster || fail "stop left daemons running"
say "PASS"
