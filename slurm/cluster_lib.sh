# Shared by the test clusters slurm/local_cluster.sh (one node) and slurm/namespace_cluster.sh
# (several nodes in network namespaces); sourced. The caller sets `me` (its name in messages)
# and `state` (its state directory, holding pids/).

die() { echo "$me: $*" >&2; exit 1; }
log() { echo "$me: $*"; }

install_packages() {  # package...
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" -eq 0 ] || die "packages missing (${missing[*]}) and not root to install them"
  log "installing ${missing[*]}"
  # Debian's policy-rc.d or the missing init system stops the packages' own service starts;
  # the cluster scripts start the daemons themselves.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
}

# Whether a process runs: it exists and is not a zombie. (Daemons outlive the script that
# started them and are then reaped by pid 1, which on some machines is slow to do so or never
# does; a zombie has ended all the same.)
pid_running() {  # pid
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [ "${st%% *}" != Z ]
}

# The pid recorded in pids/NAME.pid if that process still runs COMM (default NAME).
live_pid() {  # name [comm]
  local f=$state/pids/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && pid_running "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${2:-$1}" ] &&
    echo "$pid"
}

# Starts a daemon in the foreground mode of its own session, so that the script can return
# while it keeps running, and records the pid of that very process ($! is the daemon itself:
# setsid, setpriv and nsenter exec without forking here). Output goes to log/NAME.stdout.
spawn() {  # name command...
  local name=$1
  shift
  setsid "$@" </dev/null >>"$state/log/$name.stdout" 2>&1 &
  echo $! >"$state/pids/$name.pid"
}

# Ends a recorded daemon: TERM, up to 10 s, then KILL. Quiet when it is not running.
end_daemon() {  # name [comm]
  local pid
  pid=$(live_pid "$@") || { rm -f "$state/pids/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do pid_running "$pid" || break; sleep 0.25; done
  if pid_running "$pid"; then log "$1 ($pid) ignored TERM, killing"; kill -KILL "$pid" || true; fi
  rm -f "$state/pids/$1.pid"
}

wait_for() {  # seconds, description, command...
  local seconds=$1 what=$2
  shift 2
  for ((i = 0; i < seconds * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  echo "$me: timed out after ${seconds}s waiting for $what" >&2
  return 1
}

# The slurm.conf settings both test clusters share (docs/slurm.md, "The local test cluster"):
# linuxproc process tracking and no task plugin need no cgroups; config_overrides lets a node
# claim the CPUs it is configured with whatever the machine has; no accounting database; requeue
# allowed by default.
slurm_common_settings() {
  cat <<'EOF'
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it may start again (default 120 s); short
# here so that the requeue tests take seconds, not minutes.
AuthInfo=cred_expire=10
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=10
# Schedule every 2 s instead of every minute: a requeued job starts as soon as it is eligible.
SchedulerParameters=sched_interval=2,bf_interval=2
MailProg=/bin/true
MinJobAge=600
EOF
}

# Only read when a cgroup plugin is loaded (none is here); pinned to v1 so that a site that
# switches plugins on a cgroup-v2-only host gets the setting known to work there.
write_cgroup_conf() {  # directory of slurm.conf
  printf 'CgroupPlugin=cgroup/v1\nCgroupAutomount=yes\n' >"$1/cgroup.conf"
}
