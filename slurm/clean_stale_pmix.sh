#!/bin/sh
# Removes the PMIx files of job steps that died with their node; run on a node when it boots,
# before slurmd starts (for example as ExecStartPre= of slurmd.service).
#
#   clean_stale_pmix.sh [NODE_NAME]     (default: the short host name; SLURM_CONF, default
#                                        /etc/slurm/slurm.conf, gives SlurmdSpoolDir and TmpFS)
#
# Why: Slurm 22.05's PMIx plugin gives each job step a socket in the slurmd spool directory,
# stepd.slurm.pmix.JOB.STEP (beside a directory pmix.JOB.STEP), and its clients a directory
# TmpFS/spmix_appdir_UID_JOB.STEP, and does not remove a stale one before binding. When a node
# dies mid-step they stay behind (the spool survives a reboot), and when the job, requeued
# after the node failure, comes back to the node, the same step id cannot start there:
# "pmixp_usock_create_srv: Cannot bind() UNIX socket .../stepd.slurm.pmix.JOB.STEP: Address
# already in use", the launch aborts, and the batch job fails. A Prolog cannot clean this up:
# slurmd runs the prolog only for a job id it has not seen, and it restores the ids it had seen
# from the spool's cred_state when it starts again (unless started with -c), so the requeued
# job's prolog is skipped on exactly the node that crashed. Seen on slurm/namespace_cluster.sh
# (docs/slurm.md).
#
# Nothing of Slurm may be running on the node: it refuses (exit 1) while a slurmstepd runs in
# this network namespace (this node), since every PMIx step file is removed.
set -u
node=${1:-$(hostname -s)}
conf=${SLURM_CONF:-/etc/slurm/slurm.conf}
say() { echo "clean_stale_pmix: $*" >&2; }

here=$(readlink /proc/self/ns/net)
for pid in $(pgrep -x slurmstepd); do
  if [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$here" ]; then
    say "slurmstepd $pid runs on this node: not cleaning (run this before slurmd starts)"
    exit 1
  fi
done

# A slurm.conf setting (case-insensitive key), with %n and %h replaced as slurmd does.
setting() {
  sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/Ip" "$conf" 2>/dev/null |
    tail -n 1 | sed "s/%n/$node/; s/%h/$(hostname)/"
}
spool=$(setting SlurmdSpoolDir)
tmpfs=$(setting TmpFS)
spool=${spool:-/var/spool/slurmd}
tmpfs=${tmpfs:-/tmp}

for path in "$spool"/stepd.slurm.pmix.* "$spool"/pmix.[0-9]* "$tmpfs"/spmix_appdir_*; do
  [ -e "$path" ] || continue
  say "$node: removing $path (a job step that ended with the node)"
  rm -rf "$path" || { say "could not remove $path"; exit 1; }
done
exit 0
