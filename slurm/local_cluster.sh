#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm tests and for trying the batch scripts.
#
#   slurm/local_cluster.sh start    install slurm-wlm + munge if missing, write the config, start
#                                   munged, slurmctld and slurmd, wait until the node is idle
#   slurm/local_cluster.sh status   the daemons this script started, and sinfo
#   slurm/local_cluster.sh stop     scontrol shutdown, then end exactly the pids that start recorded
#   slurm/local_cluster.sh env      prints `export SLURM_CONF=...` (eval it to use sbatch, srun...)
#
# Everything lives in $SAMBAY_SLURM_DIR (default /tmp/sambay-slurm): slurm.conf, the daemons'
# logs, their state and spool directories, and pids/<daemon>.pid. The system's /etc/slurm is not
# touched: the clients find the config through SLURM_CONF, which sbatch passes on to the jobs.
# munged uses the default socket that Slurm's auth/munge plugin expects; a munged that is
# already running there is used and left alone. Needs root (packages, daemons, job users).
set -euo pipefail

state=${SAMBAY_SLURM_DIR:-/tmp/sambay-slurm}
ctld_port=${SAMBAY_SLURMCTLD_PORT:-6817}
slurmd_port=${SAMBAY_SLURMD_PORT:-6818}
cpus=${SAMBAY_SLURM_CPUS:-2}
conf=$state/slurm.conf
munge_socket=/run/munge/munge.socket.2
export SLURM_CONF=$conf

me=local_cluster
source "$(dirname "${BASH_SOURCE[0]}")/cluster_lib.sh"

# The last lines of a daemon's log, for error messages that say why.
log_tail() { [ -f "$state/log/$1.log" ] && tail -n 15 "$state/log/$1.log" | sed "s/^/  $1: /" >&2 || true; }

write_config() {
  mkdir -p "$state"/{log,pids,ctld,slurmd,tmp}
  {
    cat <<EOF
# Written by slurm/local_cluster.sh: a one-node test cluster.
ClusterName=sambay-local
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/ctld/slurmctld.pid
SlurmdPidFile=$state/slurmd/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
# The PMIx plugin makes TmpFS/spmix_appdir_UID_JOB.STEP for every step: a directory of this
# cluster's own, so that another test cluster on this machine (whose job ids start at 1 too)
# does not collide with it ("Cannot create directory ...: File exists").
TmpFS=$state/tmp
EOF
    slurm_common_settings
    cat <<EOF
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  } >"$conf"
  write_cgroup_conf "$state"
}

port_in_use() { ss -ltn "( sport = :$1 )" 2>/dev/null | grep -q LISTEN; }

start_munged() {
  if [ -S "$munge_socket" ] && munge -n </dev/null | unmunge >/dev/null 2>&1; then
    if live_pid munged >/dev/null; then log "munged already running (ours)"; else
      log "munged already running (not started here, left alone)"; rm -f "$state/pids/munged.pid"; fi
    return 0
  fi
  id munge >/dev/null 2>&1 || die "user munge does not exist (is the munge package installed?)"
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
  rm -f "$munge_socket"  # a stale socket from a killed munged would make it refuse to start
  spawn munged setpriv --reuid=munge --regid=munge --init-groups \
    /usr/sbin/munged --foreground --log-file=/var/log/munge/munged.log
  wait_for 10 "munged to answer" bash -c 'munge -n </dev/null | unmunge' || {
    tail -n 15 /var/log/munge/munged.log >&2 2>/dev/null; cat "$state/log/munged.stdout" >&2
    die "munged did not start"; }
}

node_idle() { [ "$(sinfo -h -n localhost -o %t 2>/dev/null)" = idle ]; }

start() {
  install_packages slurm-wlm munge
  if live_pid slurmctld >/dev/null || live_pid slurmd >/dev/null; then
    node_idle && { log "already running"; return 0; }
    die "a previous start is half up; run '$0 stop' first"
  fi
  for p in "$ctld_port" "$slurmd_port"; do
    port_in_use "$p" && die "port $p is taken (another Slurm?); set SAMBAY_SLURMCTLD_PORT/SAMBAY_SLURMD_PORT"
  done
  write_config
  start_munged
  # -i: ignore state saved by an earlier run of this cluster (jobs of a previous test).
  spawn slurmctld /usr/sbin/slurmctld -D -i -f "$conf"
  wait_for 20 "slurmctld to answer" scontrol ping || { log_tail slurmctld; cat "$state/log/slurmctld.stdout" >&2
    die "slurmctld did not start (log: $state/log/slurmctld.log)"; }
  spawn slurmd /usr/sbin/slurmd -D -f "$conf" -N localhost
  wait_for 30 "the node to become idle" node_idle || { log_tail slurmd; log_tail slurmctld
    sinfo -N -l >&2 || true; die "the node did not come up idle (logs: $state/log/)"; }
  log "up: $(sinfo -h -o '%P %D node(s) %c CPUs %t') (SLURM_CONF=$conf)"
}

stop() {
  local pids=() name pid
  for name in slurmd slurmctld munged; do
    pid=$(live_pid "$name") && pids+=("$pid")
  done
  # The cluster's jobs first: slurmd exits on shutdown but leaves running steps (their
  # slurmstepd, srun and ranks) behind, as after a test that failed mid-job. Then a clean
  # shutdown (slurmctld saves state, slurmd exits), then the recorded pids.
  if live_pid slurmctld >/dev/null; then
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      log "cancelling jobs $jobs"
      scancel $jobs 2>/dev/null || true
      # KillWait (10 s) between SIGTERM and SIGKILL, plus the epilog.
      wait_for 30 "the jobs to end" bash -c '[ -z "$(squeue -h -o %A)" ]' || true
    fi
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  for name in slurmd slurmctld munged; do end_daemon "$name"; done
  log "stopped${pids[*]:+ (pids ${pids[*]})}"
}

status() {
  local name pid up=0
  for name in munged slurmctld slurmd; do
    if pid=$(live_pid "$name"); then echo "$name: running, pid $pid"; up=1; else echo "$name: not running (from here)"; fi
  done
  [ "$up" -eq 1 ] && sinfo -N -o '%N %P %t %c' 2>/dev/null || true
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
