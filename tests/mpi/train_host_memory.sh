#!/usr/bin/env bash
# Host memory per rank under mpirun: each rank holds what it owns and no whole-model copy.
# A model whose parameters dominate its memory (6.9M parameters in wide MLPs, 8-token
# micro-batches) trains 6 steps with background checkpoints every 2 steps on 1 rank, DP2 and TP2.
# Each rank's peak RSS (VmHWM, in metrics.jsonl) minus what the same layout takes for a model
# without parameters to speak of (the process, MPI, libraries) must be
#   - at most 1.2 x the host memory the run planned and printed (launch/memory_plan.h), and
#   - at DP2 at most 0.75 x, at TP2 at most 0.6 x, the single rank's.
# (Whole-model host copies, as checkpoints once gathered, put DP2 near 0.87 x: the second check
# fails for them; the planned fractions are 0.68 and 0.5.)
# usage: train_host_memory.sh MPIEXEC SAMBAY WORKDIR
set -euo pipefail
mpiexec=$1 sambay=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$sambay" data phonebook --out pb --documents 200 --entries 8 >/dev/null
run() {  # run NAME NP D_FF [options]: the largest peak RSS of a rank and the plan, in MiB
  local name=$1 np=$2 d_ff=$3
  shift 3
  "$mpiexec" -n "$np" --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1 "$sambay" train \
    --data pb --model tiny-sambay-da --model.vocab 257 --model.n_heads 8 --model.n_kv_heads 4 \
    --model.d_ff "$d_ff" --seq_len 8 --micro_batch 1 --steps 6 --warmup 1 --save_every 2 \
    --eval_every 0 --out_dir "$name" "$@" >"$name.log" 2>&1 || { cat "$name.log"; exit 1; }
  grep -q "written in the background" "$name.log" || { echo "$name: no background save"; exit 1; }
  python3 - "$name/metrics.jsonl" <<'PY'
import json, sys
rec = [r for r in map(json.loads, open(sys.argv[1])) if "peak_rss_bytes" in r][-1]
print(max(rec["peak_rss_bytes"]) / 2**20, rec["planned_host_bytes"] / 2**20)
PY
}
declare -A peak plan base
for layout in np1 dp2 tp2; do
  case $layout in
    np1) args=(1 --grad_accum 2) ;;
    dp2) args=(2 --grad_accum 1) ;;
    tp2) args=(2 --grad_accum 2 --tp 2) ;;
  esac
  read -r peak[$layout] plan[$layout] < <(run "$layout" "${args[0]}" 24000 "${args[@]:1}")
  read -r base[$layout] _ < <(run "${layout}_base" "${args[0]}" 8 "${args[@]:1}")
done
python3 - "${peak[np1]}" "${plan[np1]}" "${base[np1]}" "${peak[dp2]}" "${plan[dp2]}" \
  "${base[dp2]}" "${peak[tp2]}" "${plan[tp2]}" "${base[tp2]}" <<'PY'
import sys
v = list(map(float, sys.argv[1:]))
runs = {name: dict(peak=v[3 * i], plan=v[3 * i + 1], base=v[3 * i + 2])
        for i, name in enumerate(["np1", "dp2", "tp2"])}
bad = 0
for name, r in runs.items():
    held = r["peak"] - r["base"]
    r["held"] = held
    print(f"{name}: peak RSS {r['peak']:.0f} MiB, {held:.0f} MiB beside the process's own "
          f"{r['base']:.0f}; planned {r['plan']:.0f} MiB ({held / r['plan']:.2f} x)")
    if held > 1.2 * r["plan"]:
        print(f"FAIL {name}: holds {held:.0f} MiB, more than 1.2 x the planned {r['plan']:.0f}")
        bad += 1
for name, limit in [("dp2", 0.75), ("tp2", 0.6)]:
    ratio = runs[name]["held"] / runs["np1"]["held"]
    print(f"{name}: {ratio:.2f} x the single rank's memory (at most {limit})")
    if ratio > limit:
        print(f"FAIL {name}: {ratio:.2f} x the single rank's, more than {limit}")
        bad += 1
sys.exit(1 if bad else 0)
PY
echo "train_host_memory: DP2 and TP2 ranks hold their share of the model's state, as planned"
