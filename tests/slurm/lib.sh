# Shared by the Slurm tests (sourced): a private cluster started for the test and stopped on
# exit, job-state polling, and failure reporting. The caller sets `build` (the directory holding
# sambay) before sourcing, and `cluster=namespace` for the multi-node cluster of
# slurm/namespace_cluster.sh (default: the one-node slurm/local_cluster.sh).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
test_name=$(basename "$0" .sh)
tmp=$(mktemp -d "/tmp/sambay-$test_name.XXXXXX")
cluster=${cluster:-local}
cluster_started=0

say() { echo "[$test_name] $*"; }

# Whether a process runs: it exists and is not a zombie (which pid 1 may be slow to reap).
pid_running() {  # pid
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [ "${st%% *}" != Z ]
}

case $cluster in
  local)
    # A state directory and ports of its own: a developer's cluster on the default ports
    # (6817/6818) is left alone, and a port clash is reported instead of joining someone
    # else's cluster.
    export SAMBAY_SLURM_DIR=$tmp/slurm
    export SAMBAY_SLURMCTLD_PORT=${SAMBAY_TEST_SLURMCTLD_PORT:-6917}
    export SAMBAY_SLURMD_PORT=${SAMBAY_TEST_SLURMD_PORT:-6918}
    export SLURM_CONF=$SAMBAY_SLURM_DIR/slurm.conf
    cluster_script=$repo/slurm/local_cluster.sh
    cluster_dir=$SAMBAY_SLURM_DIR
    client() { "$@"; }
    ;;
  namespace)
    # Namespaces named after the build directory: a rerun after a crash cleans up its own
    # leftovers, and another checkout's tests on this machine use other names. Ports and
    # addresses live inside the namespaces, so nothing here can clash with the host's.
    export SAMBAY_NS_DIR=$tmp/cluster
    export SAMBAY_NS_TAG=t$(printf '%s' "$(realpath "$build")" | md5sum | cut -c1-8)
    # The nodes' /tmp is their own; the test's directory (run dirs, configs, data) is the
    # cluster's shared file system, and so are the repository and build when under /tmp.
    export SAMBAY_NS_SHARED=$tmp:$repo:$(realpath "$build")
    cluster_script=$repo/slurm/namespace_cluster.sh
    cluster_dir=$SAMBAY_NS_DIR
    # Slurm commands run on node1, the cluster's login and controller node.
    client() { bash "$cluster_script" on node1 "$@"; }
    ;;
  *) echo "[$test_name] FAIL: cluster=$cluster is not local or namespace" >&2; exit 1 ;;
esac

# Prints the daemons' logs (the reason is usually there) and fails the test.
fail() {
  echo "[$test_name] FAIL: $*" >&2
  for f in "$cluster_dir"/log/*.log; do
    [ -f "$f" ] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}

stop_cluster() {
  ((cluster_started)) || return 0
  local pids
  pids=$(cat "$cluster_dir"/pids/*.pid 2>/dev/null | tr '\n' ' ')
  bash "$cluster_script" stop
  for p in $pids; do
    pid_running "$p" && { echo "[$test_name] FAIL: daemon pid $p still runs after stop" >&2; return 1; }
  done
  if [ "$cluster" = namespace ] && ip netns list | grep -q "^sambay-$SAMBAY_NS_TAG-"; then
    echo "[$test_name] FAIL: namespaces left after stop: $(ip netns list | grep "^sambay-$SAMBAY_NS_TAG-" | tr '\n' ' ')" >&2
    return 1
  fi
  cluster_started=0
}

on_exit() {
  local rc=$?
  stop_cluster || { ((rc == 0 || rc == 77)) && rc=1; }
  if ((rc == 0 || rc == 77)); then rm -rf "$tmp"; else echo "[$test_name] files kept in $tmp" >&2; fi
  exit "$rc"
}
trap on_exit EXIT

# The multi-node tests need what the namespaces need; where it is missing they are skipped
# (exit 77) with the reason, as the GPU tests are without a GPU.
skip_without_namespaces() {
  local why=""
  if [ "$(id -u)" -ne 0 ]; then
    why="not root (network, UTS and mount namespaces and the Slurm daemons need root)"
  elif ! command -v ip >/dev/null || ! command -v nsenter >/dev/null; then
    why="no 'ip' or 'nsenter' (packages iproute2, util-linux)"
  elif ! unshare --net --uts --mount --propagation private true 2>/dev/null; then
    why="this machine does not allow new network/UTS/mount namespaces (a container without CAP_SYS_ADMIN?)"
  elif ! ip netns add "sambay-$SAMBAY_NS_TAG-probe" 2>/dev/null; then
    why="'ip netns add' fails here"
  else
    ip netns del "sambay-$SAMBAY_NS_TAG-probe"
    return 0
  fi
  echo "[$test_name] SKIP: $why"
  exit 77
}

start_cluster() {
  if [ "$cluster" = namespace ]; then
    skip_without_namespaces
  else
    [ "$(id -u)" -eq 0 ] || fail "the Slurm tests need root: they install slurm-wlm/munge and start munged, slurmctld and slurmd"
  fi
  cluster_started=1
  bash "$cluster_script" start || fail "the Slurm cluster did not start (reason above)"
}

# The job's state, e.g. RUNNING, PENDING, COMPLETED ("" once Slurm has forgotten it).
job_state() { client scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_field() { client scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

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
