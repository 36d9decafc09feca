#!/usr/bin/env bash
# Submits slurm/train.sbatch for one run directory, or for a list of them as a job array.
#
#   slurm/submit.sh [options] RUN_DIR [-- sambay train options]
#   slurm/submit.sh [options] @RUNS_FILE [-- sambay train options]     (one array task per line)
#
# options:
#   --config FILE        the run's config, copied to RUN_DIR/train.ini (required the first time)
#   --nodes N            nodes (default 1)
#   --gpus-per-node G    GPUs per node, one rank per GPU (default 8)
#   --cpu-ranks R        no GPUs: R ranks per node (CPU runs, the local test cluster)
#   --cpus-per-task C    CPU cores per rank (default: the cluster's default)
#   --time T             time limit, Slurm syntax (e.g. 4:00:00)
#   --partition P, --account A, --qos Q
#   --warn-seconds S     send the checkpoint warning S seconds before the limit (default 300)
#   --dependency DEP     sbatch --dependency (slurm/chain.sh passes afterany:<previous job>)
#   --no-requeue         exit after the checkpoint instead of requeueing (chains)
#   --max-parallel K     job arrays: at most K tasks at a time
#   --sambay PATH        the sambay binary (default: build/sambay of this repository)
#   --sbatch-arg ARG     any other sbatch option (repeatable)
#   --dry-run            print the sbatch command, submit nothing
# Prints the job id (or the command with --dry-run).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
die() { echo "submit: $*" >&2; exit 2; }

nodes=1 gpus=8 cpu_ranks="" cpus_per_task="" time_limit="" partition="" account="" qos=""
warn=300 dependency="" requeue=1 max_parallel="" config="" dry_run=0
sambay=$repo/build/sambay
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --gpus-per-node) gpus=$2; shift 2 ;;
    --cpu-ranks) cpu_ranks=$2; shift 2 ;;
    --cpus-per-task) cpus_per_task=$2; shift 2 ;;
    --time) time_limit=$2; shift 2 ;;
    --partition) partition=$2; shift 2 ;;
    --account) account=$2; shift 2 ;;
    --qos) qos=$2; shift 2 ;;
    --warn-seconds) warn=$2; shift 2 ;;
    --dependency) dependency=$2; shift 2 ;;
    --no-requeue) requeue=0; shift ;;
    --max-parallel) max_parallel=$2; shift 2 ;;
    --sambay) sambay=$2; shift 2 ;;
    --sbatch-arg) extra+=("$2"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || die "no RUN_DIR or @RUNS_FILE given (see --help)"
target=$1
shift
if [ $# -gt 0 ]; then
  [ "$1" = -- ] || die "unexpected '$1': sambay train options go after --"
  shift
fi
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes needs a positive number, got '$nodes'"
[[ $warn =~ ^[0-9]+$ ]] || die "--warn-seconds needs a number, got '$warn'"

[ -x "$sambay" ] || die "no sambay binary at $sambay (build it: cmake --build build --target sambay)"
sambay=$(cd "$(dirname "$sambay")" && pwd)/$(basename "$sambay")
# The launcher probe travels with the binary (train.sbatch tests launchers with it).
[ -x "$(dirname "$sambay")/sambay_mpi_probe" ] ||
  die "no sambay_mpi_probe beside $sambay (build it: cmake --build build --target sambay_mpi_probe)"

args=(--nodes="$nodes" --signal="B:USR1@$warn")
if [ -n "$cpu_ranks" ]; then
  args+=(--ntasks-per-node="$cpu_ranks")
else
  # One task per GPU; each rank selects its GPU by local rank (see train.sbatch).
  args+=(--gpus-per-node="$gpus" --ntasks-per-node="$gpus")
fi
[ -n "$cpus_per_task" ] && args+=(--cpus-per-task="$cpus_per_task")
[ -n "$time_limit" ] && args+=(--time="$time_limit")
[ -n "$partition" ] && args+=(--partition="$partition")
[ -n "$account" ] && args+=(--account="$account")
[ -n "$qos" ] && args+=(--qos="$qos")
[ -n "$dependency" ] && args+=(--dependency="$dependency")
args+=(--export="ALL,SAMBAY_BIN=$sambay,SAMBAY_REQUEUE=$requeue")

if [[ $target == @* ]]; then
  runs_file=$(realpath "${target#@}")
  [ -f "$runs_file" ] || die "no runs file ${target#@}"
  n=$(grep -c . "$runs_file")
  ((n > 0)) || die "$runs_file lists no run directories"
  while read -r d; do [ -f "$d/train.ini" ] || die "$d/train.ini is missing"; done <"$runs_file"
  mkdir -p "$(dirname "$runs_file")/logs"
  args+=(--array="0-$((n - 1))${max_parallel:+%$max_parallel}"
         --output="$(dirname "$runs_file")/logs/%A_%a.out"
         --job-name="sambay-$(basename "$(dirname "$runs_file")")")
  target=@$runs_file
else
  mkdir -p "$target/logs"
  target=$(realpath "$target")
  if [ -n "$config" ]; then
    [ -f "$config" ] || die "no config file $config"
    if [ -f "$target/train.ini" ] && ! cmp -s "$config" "$target/train.ini"; then
      die "$target/train.ini exists and differs from $config (a run dir holds one run)"
    fi
    cp "$config" "$target/train.ini"
  fi
  [ -f "$target/train.ini" ] || die "$target/train.ini is missing: pass --config FILE"
  args+=(--output="$target/logs/%j.out" --job-name="sambay-$(basename "$target")")
fi
cmd=(sbatch --parsable "${args[@]}" "${extra[@]}" "$here/train.sbatch" "$target" "$@")

if ((dry_run)); then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
job=$("${cmd[@]}") || die "sbatch failed"
job=${job%%;*}  # --parsable prints "id" or "id;cluster"
if [[ $target != @* ]]; then
  printf '%s job %s: %s\n' "$(date '+%F %T')" "$job" "$(printf '%q ' "${cmd[@]}")" >>"$target/submissions.log"
fi
echo "$job"
