#!/usr/bin/env bash
# Submits a run longer than the partition's time limit as a chain of N jobs: each starts when
# the one before it has ended, whatever its exit status (--dependency=afterany), and resumes
# from the newest checkpoint in the run directory.
#
#   slurm/chain.sh N [slurm/submit.sh options] RUN_DIR [-- sambay train options]
#
# The jobs do not requeue themselves (--no-requeue): when the time-limit warning makes the
# trainer checkpoint and exit 75, the job ends and the next one in the chain takes over. Once
# the run has finished (RUN_DIR/DONE), the remaining jobs return at once. Without a chain, a
# single job that requeues itself (slurm/submit.sh) reaches the same end; chains suit clusters
# that forbid requeueing or that cap how long a job may stay in the queue.
# An alternative with the same effect: give the jobs one --job-name and --dependency=singleton.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] && [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 N [submit.sh options] RUN_DIR [-- train options]" >&2; exit 2; }
n=$1
shift
for a in "$@"; do
  case $a in --dependency|--dry-run|@*) echo "chain: $a is not supported in a chain" >&2; exit 2 ;; --) break ;; esac
done
previous=""
for ((i = 1; i <= n; i++)); do
  job=$("$here/submit.sh" --no-requeue ${previous:+--dependency "afterany:$previous"} "$@")
  echo "chain: job $i/$n is $job${previous:+ (after $previous)}" >&2
  echo "$job"
  previous=$job
done
