#!/usr/bin/env bash
# The scaling tools end to end on the local Slurm cluster: sambay_sweep plans a μP++ depth
# sweep of three tiny SambaY+DA models (depths 4, 8, 12; width 8 per layer of depth) on
# generated data and submits it as one job array; the tasks train with the real sambay;
# collect gathers the runs into one CSV; fit fits L(C) = A C^-alpha + E; the plot tool writes
# PNGs. A strong-scaling plan is checked in --dry-run form (its sbatch commands).
# usage: test_sweep.sh BUILD_DIR
build=$1
source "$(dirname "$0")/lib.sh"
sweep=$build/sambay_sweep
for b in sambay sambay_sweep sambay_mpi_probe; do
  [ -x "$build/$b" ] || fail "$build/$b is missing (build the sambay and sambay_sweep targets)"
done
/usr/bin/python3 -c "import matplotlib" 2>/dev/null ||
  fail "python3-matplotlib is not installed for /usr/bin/python3 (run scripts/setup.sh)"

"$build/sambay" data phonebook --out "$tmp/phonebook" --documents 300 --entries 10 >/dev/null ||
  fail "sambay data phonebook failed"
cat >"$tmp/depth.ini" <<INI
[sweep]
name = depth-test
kind = depth
out_dir = sweep
warmup_fraction = 0.1
[train]
data = $tmp/phonebook
valid_fraction = 0.05
seq_len = 64
micro_batch = 4
lr = 3e-3
log_every = 5
eval_every = 0
eval_batches = 4
device = cpu
threads = 1
[depth]
family = sambay-da
depths = 4 8 12
width_per_depth = 8
vocab = 257
mup_base_width = 32
tokens = 15000
gpus = 1
[slurm]
cpu = true
gpus_per_node = 1
cpus_per_task = 1
INI

start_cluster

out=$("$sweep" plan "$tmp/depth.ini" --sambay "$build/sambay") || fail "sambay_sweep plan failed: $out"
echo "$out"
array=$(echo "$out" | sed -n 's/^submitted .* as job array \([0-9]*\)$/\1/p')
[ -n "$array" ] || fail "plan submitted no job array"
for i in 0 1 2; do
  state=$(wait_job_end "${array}_$i" 600)
  [ "$state" = COMPLETED ] || { cat "$tmp"/sweep/*/logs/*.out; fail "array task $i ended $state"; }
done
for d in d4 d8 d12; do
  [ -f "$tmp/sweep/$d/DONE" ] || fail "run $d did not finish"
  grep -q "model.mup_base_width = 32" "$tmp/sweep/$d/config.ini" || fail "run $d: μP++ base width not in its config"
done

"$sweep" collect "$tmp/sweep" || fail "collect failed"
csv=$tmp/sweep/results.csv
cat "$csv"
/usr/bin/python3 - "$csv" <<'PY' || fail "results.csv is not what the runs did"
import csv, math, sys
rows = {r["run"]: r for r in csv.DictReader(open(sys.argv[1]))}
assert sorted(rows) == ["d12", "d4", "d8"], rows.keys()
for name, depth in (("d4", 4), ("d8", 8), ("d12", 12)):
    r = rows[name]
    assert r["status"] == "finished" and int(r["depth"]) == depth and int(r["d_model"]) == 8 * depth, r
    assert math.isfinite(float(r["final_loss"])) and float(r["flops"]) > 0 and float(r["tokens_per_s"]) > 0, r
    assert int(r["tokens"]) == int(r["steps_done"]) * 4 * 64, r
assert int(rows["d4"]["params"]) < int(rows["d8"]["params"]) < int(rows["d12"]["params"])
assert float(rows["d4"]["flops"]) < float(rows["d8"]["flops"]) < float(rows["d12"]["flops"])
PY

"$sweep" fit "$csv" --y final_loss --out "$tmp/fit.ini" || fail "fit failed"
grep -q '^alpha = ' "$tmp/fit.ini" || fail "fit.ini holds no alpha"
/usr/bin/python3 "$repo/tools/scaling_plots.py" --results "$csv" --fit "$tmp/fit.ini" --out "$tmp/plots" ||
  fail "scaling_plots.py failed"
[ "$(head -c 4 "$tmp/plots/loss_vs_compute.png" | tail -c 3)" = PNG ] || fail "loss_vs_compute.png is not a PNG"

# The paper's budget rules at CPU scale (configs/sweeps/archscale-cpu-demo.ini), planned and
# checked by the trainer's parser, as sbatch commands: every run's lr, batch, warmup and schedule
# come from [budget], its model from ArchScale's family with μP++'s depth rule.
out=$("$sweep" plan "$repo/configs/sweeps/archscale-cpu-demo.ini" --sambay "$build/sambay" --dry-run \
  --set sweep.out_dir="$tmp/archscale" --set train.data="$tmp/phonebook") || fail "archscale plan failed: $out"
echo "$out"
for d in d4 d8 d12 d16; do
  ini=$tmp/archscale/$d/train.ini
  for line in "schedule = linear" "min_lr_ratio = 0" "lr = 0.004" "model.mup_base_depth = 8" \
              "model.mup_base_width = 32" "model.tied_embedding = false" "model.init = archscale"; do
    grep -qx "$line" "$ini" || fail "$ini lacks '$line'"
  done
  grep -q "^budget_params = " "$tmp/archscale/$d/sweep.ini" || fail "$d: no budget_params in sweep.ini"
done

# A strong-scaling study as sbatch commands: one job array per resource shape.
cat >"$tmp/strong.ini" <<INI
[sweep]
name = strong-test
kind = strong
out_dir = strong
[train]
data = $tmp/phonebook
seq_len = 64
micro_batch = 4
warmup = 2
device = cpu
[scaling]
gpus = 1 2 4
layouts = dp
global_batch = 8
steps = 20
[slurm]
gpus_per_node = 2
cpu = true
INI
out=$("$sweep" plan "$tmp/strong.ini" --sambay "$build/sambay" --dry-run) || fail "strong plan failed: $out"
echo "$out"
[ "$(echo "$out" | grep -c '^sbatch .*--array=0-0 ')" = 3 ] ||
  fail "want three one-task job arrays (1 node x 1 rank, 1 x 2, 2 x 2)"
echo "$out" | grep -q -- '--nodes=2 .*--ntasks-per-node=2' || fail "the 4-rank run is not on 2 nodes of 2"
squeue -h | grep -q . && fail "--dry-run submitted jobs: $(squeue)"

stop_cluster || fail "stop left daemons running"
say "PASS"
