# Shared by the Slurm tests (sourced): a private one-node cluster started with
# slurm/local_cluster.sh and stopped on exit, job-state polling, and failure reporting.
# The caller sets `build` (the directory holding sambay) before sourcing.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
test_name=$(basename "$0" .sh)
tmp=$(mktemp -d "/tmp/sambay-$test_name.XXXXXX")
# A state directory and ports of its own: a developer's cluster on the default ports (6817/6818)
# is left alone, and a port clash is reported instead of joining someone else's cluster.
export SAMBAY_SLURM_DIR=$tmp/slurm
export SAMBAY_SLURMCTLD_PORT=${SAMBAY_TEST_SLURMCTLD_PORT:-6917}
export SAMBAY_SLURMD_PORT=${SAMBAY_TEST_SLURMD_PORT:-6918}
export SLURM_CONF=$SAMBAY_SLURM_DIR/slurm.conf
cluster_started=0

say() { echo "[$test_name] $*"; }

# Prints the daemons' logs (the reason is usually there) and fails the test.
fail() {
  echo "[$test_name] FAIL: $*" >&2
  for f in "$SAMBAY_SLURM_DIR"/log/*.log; do
    [ -f "$f" ] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

stop_cluster() {
  ((cluster_started)) || return 0
  local pids
  pids=$(cat "$SAMBAY_SLURM_DIR"/pids/*.pid 2>/dev/null | tr '\n' ' ')
  bash "$repo/slurm/local_cluster.sh" stop
  for p in $pids; do
    kill -0 "$p" 2>/dev/null && { echo "[$test_name] FAIL: daemon pid $p still runs after stop" >&2; return 1; }
  done
  cluster_started=0
}

on_exit() {
  local rc=$?
  stop_cluster || rc=1
  if ((rc == 0)); then rm -rf "$tmp"; else echo "[$test_name] files kept in $tmp" >&2; fi
  exit "$rc"
}
trap on_exit EXIT

start_cluster() {
  [ "$(id -u)" -eq 0 ] || fail "the Slurm tests need root: they install slurm-wlm/munge and start munged, slurmctld and slurmd"
  cluster_started=1
  bash "$repo/slurm/local_cluster.sh" start || fail "the local Slurm cluster did not start (reason above)"
}

# The job's state, e.g. RUNNING, PENDING, COMPLETED ("" once Slurm has forgotten it).
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

# Waits until the job has ended for good (a requeue passes through REQUEUED/PENDING).
wait_job_end() {  # job, timeout seconds
  local deadline=$((SECONDS + $2)) s
  while ((SECONDS < deadline)); do
    s=$(job_state "$1")
    case $s in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) echo "$s"; return 0 ;;
    esac
    sleep 0.5
  done
  fail "job $1 did not end within $2 s (state $(job_state "$1"))"
}

# Waits until `cmd...` succeeds.
wait_until() {  # timeout seconds, description, command...
  local seconds=$1 what=$2
  local deadline=$((SECONDS + seconds))
  shift 2
  while ((SECONDS < deadline)); do "$@" && return 0; sleep 0.2; done
  fail "timed out after ${seconds}s waiting for $what"
}

# Highest "step" in a metrics.jsonl (0 when there is none yet).
last_step() { grep -o '"step":[0-9]*' "$1" 2>/dev/null | tail -n 1 | cut -d: -f2 || true; }
step_at_least() { local s; s=$(last_step "$1"); [ -n "$s" ] && ((s >= $2)); }

expect_grep() {  # pattern, file, what it proves
  grep -q -- "$1" "$2" || { echo "--- $2:" >&2; cat "$2" >&2; fail "$3 (no '$1' in $2)"; }
}
