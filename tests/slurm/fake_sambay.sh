#!/usr/bin/env bash
# A stand-in for `sambay train` with the checkpoint interface that slurm/train.sbatch relies on
# (SIGUSR1 or SIGTERM: finish the step, checkpoint, exit 75; `--resume auto` continues from the
# run directory), so that the batch machinery is tested on a real Slurm independently of the
# trainer. A step is a 0.1 s sleep; step k logs the loss 1/k to metrics.jsonl (rank 0 only).
# Config keys besides `steps`: `save_every = N` checkpoints every N steps; `hang_at_step = K`
# ends every run that reaches step K with exit 76, as the trainer's watchdog does when a rank
# stops responding.
set -uo pipefail
if [ "${1:-}" != train ]; then echo "fake_sambay: only 'train'" >&2; exit 2; fi
shift
if [ "${1:-}" = --help ]; then
  echo "  --config arg   --out_dir arg   --resume arg (auto: newest checkpoint in out_dir)"
  exit 0
fi
config="" out="" resume=""
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2 ;;
    --out_dir) out=$2; shift 2 ;;
    --resume) resume=$2; shift 2 ;;
    *) shift ;;
  esac
done
steps=$(sed -n 's/^steps *= *//p' "$config")
save_every=$(sed -n 's/^save_every *= *//p' "$config")
hang_at=$(sed -n 's/^hang_at_step *= *//p' "$config")
# mpirun ranks inherit the batch step's SLURM_PROCID=0: OpenMPI's variable comes first.
rank=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}
start=0
checkpoint() {  # checkpoint STEP (rank 0 writes it, with the `latest` pointer of a real run)
  [ "$rank" = 0 ] || return 0
  echo "$1" >"$out/checkpoint.tmp" && mv "$out/checkpoint.tmp" "$out/checkpoint"
  mkdir -p "$out/checkpoints" && printf 'step_%08d\n' "$1" >"$out/checkpoints/latest"
}
if [ "$resume" = auto ] && [ -f "$out/checkpoint" ]; then
  start=$(cat "$out/checkpoint")
  echo "fake_sambay rank $rank: resumed from step $start"
fi
echo "fake_sambay rank $rank: training steps $((start + 1))..$steps"
stop=""
trap 'stop=USR1' USR1
trap 'stop=TERM' TERM
for ((step = start + 1; step <= steps; step++)); do
  sleep 0.1 &
  wait $! || wait $!  # a signal interrupts the first wait; the step still completes
  if [ "$rank" = 0 ]; then
    loss=$(awk -v k="$step" 'BEGIN { printf "%.6f", 1 / k }')
    echo "{\"step\":$step,\"loss\":$loss}" >>"$out/metrics.jsonl"
  fi
  if [ -n "$save_every" ] && ((step % save_every == 0)); then checkpoint "$step"; fi
  if [ -n "$hang_at" ] && ((step == hang_at)); then
    echo "fake_sambay rank $rank: watchdog: no progress at step $step, exit 76"
    exit 76
  fi
  if [ -n "$stop" ] && ((step < steps)); then
    checkpoint "$step"
    echo "fake_sambay rank $rank: SIG$stop, checkpointed at step $step, exit 75"
    exit 75
  fi
done
echo "fake_sambay rank $rank: done"
