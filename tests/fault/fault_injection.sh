#!/usr/bin/env bash
# Fault injection against `sambay train`: every class of fault and bad input that once crashed
# the trainer, hung it, lost data or let a wrong checkpoint verify, each run as its own case on
# a tiny SambaY+DA model (a few seconds each):
#   size_overflow        sizes whose products overflow 64 bits: exit 2 naming the option
#   truncated_data       a data file truncated while training: exit 2 naming the file (not SIGBUS)
#   disk_full_checkpoint a full disk during a save (injected ENOSPC at several points of the
#                        write, and a real small tmpfs where mounting is allowed): exit 2 with
#                        the reason, older checkpoints intact and resumable, no crash
#   foreign_checkpoint   a rank file from another run, or from another save of the same step:
#                        refused by inspect and by resume (which falls back)
#   nonfinite            non-finite or absurd hyperparameters refused at start; a checkpoint of
#                        non-finite weights (written by format version 1) reported by inspect
#                        and refused by resume
#   disk_full_metrics    metrics.jsonl, TensorBoard events or stdout that cannot be written: checkpoint and exit 2
#                        (or --on_log_error continue)
#   refused_start        a refused start leaves the run directory exactly as it was
#   two_trainers         a second trainer on a run directory is refused naming the first
#   bad_token            a token id >= the vocabulary: named with file, document and offset
#   early_signal         SIGTERM/SIGUSR1 during startup (also pending before main, and through
#                        mpirun): exit 75, never death by the signal
#   unwritable           unwritable out_dir or checkpoints directory: exit 2 naming the path
#   stale_tmp            leftovers of interrupted writes are removed at start
#   start_markers        every start and resume is a record in metrics.jsonl
#   kill_during_save     kill -9 while checkpoints are being written, again and again: resume
#                        always works and the final weights match an uninterrupted run
#   stopped_rank         a rank stopped with SIGSTOP under mpirun: the watchdog ends the job
#                        with exit 76 naming the collective
#   kill_during_async_save  on a slow disk, kill -9 while a background checkpoint is written
#                        and training has gone on: the previous checkpoint is the newest good
#                        one and resumes bit-exactly; SIGUSR1 during a background write (under
#                        mpirun, DP2) completes it, saves synchronously, exits 75, resumes
# usage: fault_injection.sh CASE|all SAMBAY MPIEXEC FAULT_LIBRARY WORKDIR
# FAULT_LIBRARY is tests/fault/fault_inject.c built as a shared library (LD_PRELOAD).
set -uo pipefail
case_name=$1 sambay=$2 mpiexec=$3 fault_lib=$4 work=$5
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
[ -x $python ] || python=python3
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# A preloaded library under AddressSanitizer builds: the sanitizer need not come first.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0

say() { echo "[fault $case_name] $*"; }
fail() {
  echo "[fault $case_name] FAIL: $*" >&2
  exit 1
}
expect_status() {  # expect_status WANT GOT LOG
  [ "$2" = "$1" ] || { cat "$3" >&2; fail "exit status $2, expected $1 ($3)"; }
}
expect_text() {  # expect_text FILE TEXT...: every TEXT occurs in FILE
  local f=$1
  shift
  for t in "$@"; do grep -qF -- "$t" "$f" || { cat "$f" >&2; fail "'$t' not in $f"; }; done
}
no_text() {  # no_text FILE TEXT
  ! grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "'$2' unexpectedly in $1"; }
}
# The error names the option: "option --micro_batch" (a model field: "model.vocab:").
expect_option() {  # expect_option LOG OPTION
  if [[ $2 == --model.* ]]; then expect_text "$1" "${2#--}:"; else expect_text "$1" "option $2"; fi
}
# Highest "step" of a training record in a metrics.jsonl (0 when none yet).
last_step() { grep -o '"kind":"step","step":[0-9]*' "$1" 2>/dev/null | tail -n 1 | grep -o '[0-9]*$' || echo 0; }
wait_for_step() {  # wait_for_step METRICS STEP PID
  local deadline=$((SECONDS + 120))
  while (($(last_step "$1") < $2)); do
    kill -0 "$3" 2>/dev/null || fail "the trainer (pid $3) ended before step $2"
    ((SECONDS < deadline)) || fail "no step $2 in $1 within 120 s"
    sleep 0.05
  done
}
# Writes to files whose path contains PATTERN fail with ENOSPC after BYTES bytes, for the
# commands run until no_faults (tests/fault/fault_inject.c).
faults() {  # faults PATTERN BYTES
  export SAMBAY_FAULT_PATH=$1 SAMBAY_FAULT_AFTER_BYTES=$2 LD_PRELOAD=$fault_lib
}
no_faults() { unset SAMBAY_FAULT_PATH SAMBAY_FAULT_AFTER_BYTES LD_PRELOAD; }
wait_gone() {  # wait_gone PID SECONDS: waits for a child to end; its status in $status
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -0 "$1" 2>/dev/null && fail "pid $1 still runs after $2 s"
  wait "$1"
  status=$?
}

data() { "$sambay" data phonebook --out "$w/pb" --documents 150 --entries 5 --seed 3 >/dev/null || fail "no data"; }
# The tiny model's training options; the caller adds --out_dir, --steps and the rest.
base=(--model tiny-sambay-da --model.vocab 257 --seq_len 32 --micro_batch 2 --warmup 2
      --lr 3e-3 --log_every 1 --eval_every 0 --threads 1 --device cpu)
# The base options and --data, then "--option value" pairs of the arguments: a later value of
# an option replaces an earlier one.
options() {
  local all=(--data "$w/pb" "${base[@]}" "$@") i
  local -A value=()
  local order=()
  for ((i = 0; i + 1 < ${#all[@]}; i += 2)); do
    [ -n "${value[${all[i]}]+x}" ] || order+=("${all[i]}")
    value[${all[i]}]=${all[i + 1]}
  done
  for i in "${order[@]}"; do printf '%s\n%s\n' "$i" "${value[$i]}"; done
}
train() {
  local opts
  mapfile -t opts < <(options "$@")
  "$sambay" train "${opts[@]}"
}
# Starts `sambay train` in the background: train_bg LOG OPTIONS...; its pid in $pid.
train_bg() {
  local log=$1 opts
  shift
  mapfile -t opts < <(options "$@")
  "$sambay" train "${opts[@]}" >"$log" 2>&1 &
  pid=$!
}
# Runs `sambay train` to completion: train_to LOG OPTIONS...; the exit status in $status.
train_to() {
  local log=$1
  shift
  train "$@" >"$log" 2>&1
  status=$?
}

# Final weights and moments of two runs bit for bit (h5py; skipped without it).
same_final_state() {  # same_final_state STEP_DIR_A STEP_DIR_B
  $python - "$1" "$2" <<'PY' || fail "the final state of $2 differs from $1"
import sys
try:
    import h5py
except ImportError:
    print("note: no h5py: weights not compared"); sys.exit(0)
a, b = (h5py.File(p + "/index.h5") for p in sys.argv[1:])
names = []
a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) and n.startswith(("model", "optim")) else None)
for n in names:
    assert (a[n][...] == b[n][...]).all(), n
print(f"{len(names)} tensors equal bit for bit")
PY
}
# Last loss of a metrics.jsonl, as logged.
last_loss() { grep -o '"loss":[^,]*' "$1" | tail -n 1; }

case_size_overflow() {
  data
  local flags
  for flags in "--model.vocab 4611686018427387904" "--micro_batch 4611686018427387904" \
               "--micro_batch 100000000000000" "--seq_len 3000000000" \
               "--model.d_inner 2147483647 --model.d_state 2147483647" \
               "--steps 9223372036854775807" "--eval_batches 4611686018427387904 --eval_every 1" \
               "--dp_bucket_mb 1e300"; do
    rm -rf "$w/run"
    # shellcheck disable=SC2086
    train_to "$w/log" --out_dir "$w/run" --steps 2 $flags
    expect_status 2 $status "$w/log"
    expect_text "$w/log" "sambay: error:"
    expect_option "$w/log" "${flags%% *}"
    [ ! -e "$w/run" ] || fail "$flags: the refused run left $w/run behind"
  done
  say "8 oversized options refused with exit 2, naming the option; nothing written"
}

case_truncated_data() {
  data
  train_bg "$w/log" --out_dir "$w/run" --steps 100000
  wait_for_step "$w/run/metrics.jsonl" 3 $pid
  truncate -s 0 "$w/pb.bin"
  wait_gone $pid 60
  expect_status 2 $status "$w/log"
  expect_text "$w/log" "$w/pb.bin: changed while it was being read: 0 bytes now"
  say "a data file truncated mid-run: exit 2 naming it (no SIGBUS)"
}

# The newest complete checkpoint of a run directory verifies and the run resumes from it.
check_resumable() {  # check_resumable RUN STEP_EXPECTED STEPS
  "$sambay" ckpt inspect "$1" >"$w/inspect.log" 2>&1 || { cat "$w/inspect.log"; fail "inspect $1 failed"; }
  expect_text "$w/inspect.log" "step $2:" "verified"
  train_to "$w/resume.log" --out_dir "$1" --steps "$3" --save_every 1
  expect_status 0 $status "$w/resume.log"
  expect_text "$w/resume.log" "resume: from $1/checkpoints/step_$(printf %08d "$2")"
}

case_disk_full_checkpoint() {
  data
  # A checkpoint writes its rank file, then the index, then the manifest: the disk fills up at
  # the first byte, early in the rank file, in its tensors, in the index and at the manifest.
  train_to "$w/sizes.log" --out_dir "$w/sizes" --steps 1 --warmup 0
  expect_status 0 $status "$w/sizes.log"
  local rank index point points
  rank=$(stat -c %s "$w/sizes/checkpoints/step_00000001/rank_00000.h5")
  index=$(stat -c %s "$w/sizes/checkpoints/step_00000001/index.h5")
  points=(rank_00000.h5:0 rank_00000.h5:1000 rank_00000.h5:$((rank / 2))
          index.h5:$((index / 2)) manifest.txt:10)
  for point in "${points[@]}"; do
    rm -rf "$w/run"
    faults "step_00000003.tmp/${point%:*}" "${point#*:}"
    train_to "$w/log" --out_dir "$w/run" --steps 6 --save_every 1
    no_faults
    expect_status 2 $status "$w/log"
    expect_text "$w/log" "the checkpoint of step 3 was not written" "No space left on device" \
                "the checkpoints before it are untouched"
    [ ! -e "$w/run/checkpoints/step_00000003.tmp" ] || fail "the unfinished checkpoint was left behind"
    [ ! -e "$w/run/checkpoints/step_00000003" ] || fail "a failed checkpoint was committed"
    check_resumable "$w/run" 2 6
  done
  say "injected ENOSPC at ${#points[@]} points of a checkpoint (file:bytes ${points[*]}): exit 2, no crash, step 2 intact and resumed"
  # A real full disk, where this machine lets us mount a small tmpfs.
  mkdir -p "$w/small"
  if mount -t tmpfs -o size=1200k tmpfs "$w/small" 2>/dev/null; then
    train_to "$w/log" --out_dir "$w/small/run" --steps 6 --save_every 1 --keep_checkpoints 3
    local rc=$status
    cp -r "$w/small/run" "$w/tmpfs_run"
    umount "$w/small"
    expect_status 2 $rc "$w/log"
    expect_text "$w/log" "was not written" "No space left on device"
    local newest
    newest=$(ls -d "$w/tmpfs_run"/checkpoints/step_???????? | tail -n 1)
    newest=${newest##*_}
    sed -i "s|$w/small/run|$w/tmpfs_run|" "$w/tmpfs_run/config.ini"
    check_resumable "$w/tmpfs_run" $((10#$newest)) 6
    say "a real 1.2 MB tmpfs filled by checkpoints: exit 2, step $((10#$newest)) intact and resumed"
  else
    say "note: mounting a tmpfs is not permitted here; the real full-disk variant did not run"
  fi
}

case_foreign_checkpoint() {
  data
  train_to "$w/a.log" --out_dir "$w/a" --steps 2 --save_every 1 --seed 1
  expect_status 0 $status "$w/a.log"
  train_to "$w/b.log" --out_dir "$w/b" --steps 2 --save_every 1 --seed 2
  expect_status 0 $status "$w/b.log"
  cp "$w/b/checkpoints/step_00000002/rank_00000.h5" "$w/a/checkpoints/step_00000002/"
  "$sambay" ckpt inspect "$w/a" >"$w/inspect.log" 2>&1
  expect_status 2 $? "$w/inspect.log"
  expect_text "$w/inspect.log" "rank_00000.h5: written by run" "a file from another run"
  train_to "$w/resume.log" --out_dir "$w/a" --steps 3 --seed 1
  expect_status 0 $status "$w/resume.log"
  expect_text "$w/resume.log" "step_00000002 is damaged and is skipped" \
              "resume: from $w/a/checkpoints/step_00000001"
  say "a rank file of another run: refused by inspect, skipped by resume"
  # The same run and step, saved twice with different contents (resumed with another lr).
  train_to "$w/c.log" --out_dir "$w/c" --steps 2 --save_every 1
  cp -r "$w/c/checkpoints/step_00000002" "$w/c_step2_first"
  train_to "$w/c2.log" --out_dir "$w/c" --steps 2 --save_every 1 --lr 1e-3 \
    --resume "$w/c/checkpoints/step_00000001"
  expect_status 0 $status "$w/c2.log"
  cp "$w/c_step2_first/rank_00000.h5" "$w/c/checkpoints/step_00000002/"
  "$sambay" ckpt inspect "$w/c" >"$w/inspect2.log" 2>&1
  expect_status 2 $? "$w/inspect2.log"
  expect_text "$w/inspect2.log" "are not the ones manifest.txt recorded"
  say "a rank file of another save of the same run and step: refused"
}

case_nonfinite() {
  data
  local flags
  for flags in "--lr inf" "--lr nan" "--lr 1e30" "--weight_decay inf" "--weight_decay 1e9" \
               "--adam_eps inf" "--clip inf" "--beta1 nan" "--model.norm_eps inf" \
               "--dp_bucket_mb inf"; do
    rm -rf "$w/run"
    # shellcheck disable=SC2086
    train_to "$w/log" --out_dir "$w/run" --steps 2 $flags
    expect_status 2 $status "$w/log"
    expect_option "$w/log" "${flags%% *}"
    [ ! -e "$w/run" ] || fail "$flags: the refused run left $w/run behind"
  done
  train_to "$w/log" --out_dir "$w/run" --steps 2 --data "$w/pb:inf"
  expect_status 2 $status "$w/log"
  expect_text "$w/log" "option --data: weight of '$w/pb:inf'"
  say "11 non-finite or absurd hyperparameters refused at start"
  # A checkpoint of non-finite weights, written by format version 1 (--lr inf was accepted).
  local nan_ckpt=$here/../fixtures/checkpoint_v1_nonfinite
  "$sambay" ckpt inspect "$nan_ckpt/step_00000001" >"$w/inspect.log" 2>&1
  expect_status 2 $? "$w/inspect.log"
  expect_text "$w/inspect.log" "NON-FINITE" "hold NaN or infinite values"
  train_to "$w/resume.log" --out_dir "$w/from_nan" --steps 3 --resume "$nan_ckpt/step_00000001" \
    --model.layers mamba,sliding_window --model.kv_source_layer -1 --model.memory_layer -1
  expect_status 2 $status "$w/resume.log"
  expect_text "$w/resume.log" "are NaN or infinite"
  say "a checkpoint of non-finite weights: inspect reports it, resume refuses it"
}

case_disk_full_metrics() {
  data
  # The run_start record (config, placement) takes about 2 kB, a step record about 350 bytes:
  # the disk fills up some steps into training.
  faults run/metrics.jsonl 6000
  train_to "$w/log" --out_dir "$w/run" --steps 40 --save_every 0
  no_faults
  expect_status 2 $status "$w/log"
  expect_text "$w/log" "$w/run/metrics.jsonl: write failed: No space left on device" \
              "stopping after step" "with a checkpoint"
  local stopped
  stopped=$(grep -o 'stopping after step [0-9]*' "$w/log" | grep -o '[0-9]*$')
  [ -d "$w/run/checkpoints/step_$(printf %08d "$stopped")" ] || fail "no checkpoint at step $stopped"
  [ "$(wc -c <"$w/run/metrics.jsonl")" -le 6000 ] || fail "metrics.jsonl grew past the fault"
  [ "$stopped" -gt 0 ] || fail "the disk filled up before training: the test checks nothing"
  check_resumable "$w/run" "$stopped" 40
  say "metrics.jsonl on a full disk: stopped at step $stopped with a checkpoint, exit 2; resumed"
  rm -rf "$w/run"
  faults run/metrics.jsonl 6000
  train_to "$w/log" --out_dir "$w/run" --steps 20 --on_log_error continue
  no_faults
  expect_status 0 $status "$w/log"
  expect_text "$w/log" "warning: $w/run/metrics.jsonl: write failed" "done: 20 steps"
  [ "$(grep -c 'write failed' "$w/log")" = 1 ] || fail "the warning came more than once"
  say "--on_log_error continue: one warning, training finished"
  rm -rf "$w/run"
  faults run/tensorboard 600
  train_to "$w/log" --out_dir "$w/run" --steps 40 --save_every 0 --tensorboard true
  no_faults
  expect_status 2 $status "$w/log"
  expect_text "$w/log" "$w/run/tensorboard/events.out.tfevents." \
              "write failed: No space left on device" "stopping after step" "with a checkpoint"
  stopped=$(grep -o 'stopping after step [0-9]*' "$w/log" | grep -o '[0-9]*$')
  [ -d "$w/run/checkpoints/step_$(printf %08d "$stopped")" ] || fail "no checkpoint at step $stopped"
  [ "$(last_step "$w/run/metrics.jsonl")" = "$stopped" ] || fail "metrics.jsonl stops before step $stopped"
  grep -q '"kind":"end","step":'"$stopped"',.*"reason":"log write failed: ' "$w/run/metrics.jsonl" \
    || fail "no end record naming the failed write"
  say "TensorBoard events on a full disk: stopped at step $stopped with a checkpoint, exit 2"
  rm -rf "$w/run"
  faults run/tensorboard 600
  train_to "$w/log" --out_dir "$w/run" --steps 20 --tensorboard true --on_log_error continue
  no_faults
  expect_status 0 $status "$w/log"
  expect_text "$w/log" "warning: $w/run/tensorboard/events.out.tfevents." "done: 20 steps"
  [ "$(grep -c 'write failed' "$w/log")" = 1 ] || fail "the warning came more than once"
  [ "$(last_step "$w/run/metrics.jsonl")" = 20 ] || fail "metrics.jsonl is incomplete"
  say "TensorBoard events on a full disk with --on_log_error continue: one warning, metrics complete"
  rm -rf "$w/run"
  train --out_dir "$w/run" --steps 20 >/dev/full 2>"$w/log"
  expect_status 2 $? "$w/log"
  expect_text "$w/log" "stdout (the job's log): write failed: No space left on device"
  say "stdout on a full disk: exit 2"
}

case_refused_start() {
  data
  train_to "$w/log" --out_dir "$w/run" --steps 2
  expect_status 0 $status "$w/log"
  # Every name, and every file's size and modification time (the lock file, created and
  # removed again, changes only the directory's own time).
  (cd "$w/run" && find . \( -type f -printf '%p %s %T@\n' \) -o -printf '%p\n' | sort) >"$w/before"
  train_to "$w/refused.log" --out_dir "$w/run" --steps 4 --model.d_model 16
  expect_status 2 $status "$w/refused.log"
  expect_text "$w/refused.log" "written for a different model" "model.d_model: 12 in the checkpoint, 16 here"
  (cd "$w/run" && find . \( -type f -printf '%p %s %T@\n' \) -o -printf '%p\n' | sort) >"$w/after"
  cmp -s "$w/before" "$w/after" || { diff "$w/before" "$w/after"; fail "the refused start changed $w/run"; }
  train_to "$w/refused2.log" --out_dir "$w/new/run" --steps 2 --data "$w/missing"
  expect_status 2 $status "$w/refused2.log"
  [ ! -e "$w/new" ] || fail "a refused start into a new directory left $w/new behind"
  say "refused starts leave the run directory as it was (and create none)"
}

case_two_trainers() {
  data
  train_bg "$w/first.log" --out_dir "$w/run" --steps 100000
  local first=$pid
  wait_for_step "$w/run/metrics.jsonl" 1 $first
  train_to "$w/second.log" --out_dir "$w/run" --steps 5
  expect_status 2 $status "$w/second.log"
  expect_text "$w/second.log" "another trainer is using this run directory: pid $first on $(hostname)"
  kill -0 $first || fail "the first trainer died"
  kill -TERM $first
  wait_gone $first 60
  expect_status 75 $status "$w/first.log"
  [ "$(grep -c '"kind":"run_start"' "$w/run/metrics.jsonl")" = 1 ] || fail "the second trainer wrote metrics"
  # After a kill -9 the kernel has released the lock: the next trainer starts.
  train_bg "$w/third.log" --out_dir "$w/run" --steps 100000
  local third=$pid
  sleep 1
  kill -KILL $third
  wait $third
  train_to "$w/fourth.log" --out_dir "$w/run" --steps 3
  expect_status 0 $status "$w/fourth.log"
  say "a second trainer is refused naming the first (pid $first); after kill -9 the lock is free"
}

case_bad_token() {
  data
  # A flat token file (io/token_file.h) of 200 documents of byte tokens, one of them holding
  # the id 300 (the model has 257).
  $python - "$w/bad.tok" <<'PY'
import random, struct, sys
random.seed(5)
tokens = []
for d in range(200):
    doc = [random.randrange(256) for _ in range(40)]
    if d == 123:
        doc[7] = 300
    tokens += doc + [256]
with open(sys.argv[1], "wb") as f:
    f.write(b"SAMBAYTK" + struct.pack("<IIQiI", 1, 2, len(tokens), 256, 0))
    f.write(struct.pack(f"<{len(tokens)}H", *tokens))
PY
  train_to "$w/log" --out_dir "$w/run" --steps 2 --data "$w/bad.tok"
  expect_status 2 $status "$w/log"
  expect_text "$w/log" "$w/bad.tok: token 300 at offset $((123 * 41 + 7)) of the token stream (document 123, its token 7)" \
              "--model.vocab"
  [ ! -e "$w/run" ] || fail "the refused run left $w/run behind"
  say "a token id above the vocabulary: refused at open, naming the file, document and offset"
}

case_early_signal() {
  data
  local mode sig n=0
  for sig in SIGTERM SIGUSR1; do
    for mode in pending handler 20 150 400; do
      rm -rf "$w/run"
      $python "$here/start_with_signal.py" $mode $sig "$sambay" train \
        $(options --out_dir "$w/run" --steps 100000) >"$w/log" 2>&1
      expect_text "$w/log" "status 75"
      grep -qE "$sig received( during startup|: stopping after step)" "$w/log" ||
        { cat "$w/log"; fail "$sig ($mode): no report of the signal"; }
      n=$((n + 1))
    done
  done
  rm -rf "$w/run"
  $python "$here/start_with_signal.py" pending SIGTERM "$sambay" train \
    $(options --out_dir "$w/run" --steps 100000) >"$w/log" 2>&1
  expect_text "$w/log" "status 75" "SIGTERM received during startup: stopping before training"
  rm -rf "$w/run"
  $python "$here/start_with_signal.py" ranks:2 SIGUSR1 "$mpiexec" -n 2 --oversubscribe \
    --allow-run-as-root -x OMP_NUM_THREADS=1 "$sambay" train \
    $(options --out_dir "$w/run" --steps 100000) >"$w/log" 2>&1
  expect_text "$w/log" "status 75" "SIGUSR1 received"
  say "$n signals during startup (pending before main, at the handler, 20-400 ms later) and one through mpirun: exit 75 each time"
}

case_unwritable() {
  data
  # Permissions do not bind root: the refused trainer runs as nobody where we are root.
  local as=()
  if [ "$(id -u)" = 0 ]; then
    command -v setpriv >/dev/null || fail "running as root without setpriv: cannot drop privileges"
    as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    chmod 755 "$w"
    chmod o+r "$w"/pb.*
  fi
  mkdir -p "$w/locked" "$w/ro_run" "$w/ro_ckpt/checkpoints"
  chmod 555 "$w/locked" "$w/ro_run"
  chmod 777 "$w/ro_ckpt"
  chmod 555 "$w/ro_ckpt/checkpoints"
  "${as[@]}" "$sambay" train $(options --steps 2 --out_dir "$w/locked/run") >"$w/log1" 2>&1
  expect_status 2 $? "$w/log1"
  expect_text "$w/log1" "option --out_dir $w/locked/run: cannot create $w/locked/run: Permission denied"
  "${as[@]}" "$sambay" train $(options --steps 2 --out_dir "$w/ro_run") >"$w/log2" 2>&1
  expect_status 2 $? "$w/log2"
  expect_text "$w/log2" "option --out_dir $w/ro_run: cannot write there" "Permission denied"
  "${as[@]}" "$sambay" train $(options --steps 2 --out_dir "$w/ro_ckpt") >"$w/log3" 2>&1
  expect_status 2 $? "$w/log3"
  expect_text "$w/log3" "the checkpoints directory $w/ro_ckpt/checkpoints: cannot write there"
  no_text "$w/log3" "step      1"
  [ -z "$(ls -A "$w/ro_ckpt" | grep -v checkpoints)" ] || fail "the refused run wrote into $w/ro_ckpt"
  chmod 755 "$w/locked" "$w/ro_run" "$w/ro_ckpt/checkpoints"
  say "unwritable out_dir (missing, existing) and checkpoints directory: exit 2 at start naming the path"
}

case_stale_tmp() {
  data
  train_to "$w/log" --out_dir "$w/run" --steps 2
  expect_status 0 $status "$w/log"
  touch "$w/run/checkpoints/latest.tmp.Ab3dE9" "$w/run/config.ini.tmp.q1W2e3" \
        "$w/run/checkpoints/notes.tmp.txt"
  mkdir -p "$w/run/checkpoints/step_00000007.tmp" && touch "$w/run/checkpoints/step_00000007.tmp/rank_00000.h5"
  train_to "$w/log" --out_dir "$w/run" --steps 3
  expect_status 0 $status "$w/log"
  expect_text "$w/log" "cleanup: removed $w/run/checkpoints/latest.tmp.Ab3dE9" \
              "cleanup: removed $w/run/config.ini.tmp.q1W2e3" \
              "cleanup: removed $w/run/checkpoints/step_00000007.tmp"
  [ -e "$w/run/checkpoints/notes.tmp.txt" ] || fail "a file that is not a leftover was removed"
  [ -z "$(find "$w/run" -name '*.tmp.??????' -o -name 'step_*.tmp')" ] || fail "leftovers remain"
  say "leftovers of interrupted writes removed at start (others kept)"
}

case_start_markers() {
  data
  train_bg "$w/log1" --out_dir "$w/run" --steps 100000 --save_every 0
  wait_for_step "$w/run/metrics.jsonl" 3 $pid
  kill -KILL $pid
  wait $pid
  train_to "$w/log2" --out_dir "$w/run" --steps 4 --save_every 2
  expect_status 0 $status "$w/log2"
  train_to "$w/log3" --out_dir "$w/run" --steps 6 --save_every 2
  expect_status 0 $status "$w/log3"
  $python - "$w/run/metrics.jsonl" <<'PY' || fail "metrics.jsonl markers are wrong"
import json, sys
kinds, steps = [], []
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue  # the line cut by kill -9
    if r["kind"] in ("run_start", "resume"):
        kinds.append((r["kind"], r["step"]))
    elif r["kind"] == "step":
        steps.append(r["step"])
assert [k for k, _ in kinds] == ["run_start", "run_start", "resume"], kinds
assert kinds[1][1] == 0 and kinds[2][1] == 4, kinds
# The restart from step 0 repeats steps, and its marker says where they start again.
assert steps.count(1) == 2 and steps[-2:] == [5, 6], steps
print("markers:", kinds)
PY
  say "a start, a restart from step 0 after kill -9 and a resume are each marked in metrics.jsonl"
}

case_kill_during_save() {
  data
  train_to "$w/ref.log" --out_dir "$w/ref" --steps 12 --save_every 1
  expect_status 0 $status "$w/ref.log"
  local kills=0 tries=0
  while ((kills < 5 && tries < 40)); do
    tries=$((tries + 1))
    train_bg "$w/log" --out_dir "$w/run" --steps 12 --save_every 1
    # Kill as soon as a checkpoint is being written.
    local deadline=$((SECONDS + 60))
    while kill -0 $pid 2>/dev/null && ((SECONDS < deadline)); do
      if compgen -G "$w/run/checkpoints/step_*.tmp" >/dev/null; then kill -KILL $pid; kills=$((kills + 1)); break; fi
    done
    wait $pid
  done
  ((kills >= 3)) || fail "only $kills kills landed during a save in $tries tries"
  train_to "$w/final.log" --out_dir "$w/run" --steps 12 --save_every 1
  expect_status 0 $status "$w/final.log"
  "$sambay" ckpt inspect "$w/run" >"$w/inspect.log" 2>&1 || { cat "$w/inspect.log"; fail "inspect failed"; }
  same_final_state "$w/ref/checkpoints/step_00000012" "$w/run/checkpoints/step_00000012"
  say "$kills kill -9s during checkpoint writes: every restart resumed, final state bit-exact"
}

case_kill_during_async_save() {
  data
  train_to "$w/ref.log" --out_dir "$w/ref" --steps 30 --save_every 10
  expect_status 0 $status "$w/ref.log"
  expect_text "$w/ref.log" "checkpoint: step 10: training paused" "written in the background"
  # Every write of a rank file sleeps 20 ms: a save takes seconds, training steps milliseconds.
  export SAMBAY_FAULT_PATH=.tmp/rank_ SAMBAY_FAULT_DELAY_US=20000 LD_PRELOAD=$fault_lib
  train_bg "$w/log" --out_dir "$w/run" --steps 30 --save_every 10
  local ck=$w/run/checkpoints deadline=$((SECONDS + 120)) killed=""
  while kill -0 $pid 2>/dev/null && ((SECONDS < deadline)); do
    # Step 10 committed, step 20 being written, and training already past step 20.
    if [ -d "$ck/step_00000010" ] && [ -d "$ck/step_00000020.tmp" ] &&
       (($(last_step "$w/run/metrics.jsonl") > 20)); then
      kill -KILL $pid
      killed=1
      break
    fi
    sleep 0.01
  done
  wait $pid
  [ -n "$killed" ] || { cat "$w/log"; fail "no moment with step 20 written in the background while training went on"; }
  [ ! -e "$ck/step_00000020" ] || fail "step 20 was committed before the kill: the disk was not slow enough"
  unset SAMBAY_FAULT_DELAY_US
  no_faults
  # The previous checkpoint is the newest good one; the unfinished one is never taken.
  [ "$(cat "$ck/latest")" = step_00000010 ] || fail "latest is $(cat "$ck/latest"), not step_00000010"
  "$sambay" ckpt inspect "$ck" >"$w/inspect.log" 2>&1 || { cat "$w/inspect.log"; fail "inspect failed"; }
  expect_text "$w/inspect.log" "step_00000010"
  train_to "$w/resumed.log" --out_dir "$w/run" --steps 30 --save_every 10
  expect_status 0 $status "$w/resumed.log"
  expect_text "$w/resumed.log" "resume: from $ck/step_00000010 (step 10" "cleanup: removed"
  same_final_state "$w/ref/checkpoints/step_00000030" "$ck/step_00000030"
  [ "$(last_loss "$w/run/metrics.jsonl")" = "$(last_loss "$w/ref/metrics.jsonl")" ] ||
    fail "last loss $(last_loss "$w/run/metrics.jsonl") differs from $(last_loss "$w/ref/metrics.jsonl")"

  # SIGUSR1 (Slurm's warning before a time limit) while a background save is written, under
  # mpirun with two data-parallel ranks: the
  # pending save completes, the stop's own save is synchronous, exit 75, and the resume gives
  # the uninterrupted run's final state.
  local mpi=("$mpiexec" -n 2 --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1)
  local opts
  mapfile -t opts < <(options --out_dir "$w/dp2_ref" --steps 30 --save_every 10 --micro_batch 1)
  "${mpi[@]}" "$sambay" train "${opts[@]}" >"$w/dp2_ref.log" 2>&1
  expect_status 0 $? "$w/dp2_ref.log"
  mapfile -t opts < <(options --out_dir "$w/dp2" --steps 30 --save_every 10 --micro_batch 1)
  "${mpi[@]}" -x SAMBAY_FAULT_PATH=.tmp/rank_ -x SAMBAY_FAULT_DELAY_US=20000 -x LD_PRELOAD="$fault_lib"     "$sambay" train "${opts[@]}" >"$w/dp2.log" 2>&1 &
  local launcher=$! signalled=""
  ck=$w/dp2/checkpoints deadline=$((SECONDS + 120))
  while kill -0 $launcher 2>/dev/null && ((SECONDS < deadline)); do
    if [ -d "$ck/step_00000010.tmp" ] && (($(last_step "$w/dp2/metrics.jsonl") > 10)); then
      kill -USR1 $launcher  # mpirun forwards SIGUSR1 to the ranks (SIGTERM ends the job)
      signalled=1
      break
    fi
    sleep 0.01
  done
  wait $launcher
  status=$?
  [ -n "$signalled" ] || { cat "$w/dp2.log"; fail "no moment with step 10 written in the background"; }
  expect_status 75 $status "$w/dp2.log"
  local stopped
  stopped=$(grep -o "stopping after step [0-9]*" "$w/dp2.log" | grep -o "[0-9]*$")
  [ -n "$stopped" ] || { cat "$w/dp2.log"; fail "no 'stopping after step' line"; }
  expect_text "$w/dp2.log" "checkpoint: step 10 -> " "checkpoint: step $stopped -> "
  [ -d "$ck/step_00000010" ] && [ -d "$ck/$(printf 'step_%08d' "$stopped")" ] ||
    fail "the pending and the stop's checkpoints are not both committed: $(ls "$ck")"
  mapfile -t opts < <(options --out_dir "$w/dp2" --steps 30 --save_every 10 --micro_batch 1)
  "${mpi[@]}" "$sambay" train "${opts[@]}" >"$w/dp2_resumed.log" 2>&1
  expect_status 0 $? "$w/dp2_resumed.log"
  expect_text "$w/dp2_resumed.log" "resume: from $ck/$(printf 'step_%08d' "$stopped")"
  same_final_state "$w/dp2_ref/checkpoints/step_00000030" "$ck/step_00000030"
  say "kill -9 during a background write: step 10 stayed the newest good checkpoint and resumed bit-exactly; SIGUSR1 during one (DP2) committed it, saved step $stopped, exited 75, resumed bit-exactly"
}

case_stopped_rank() {
  data
  local mpi=("$mpiexec" -n 2 --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1)
  # A checkpoint to resume from afterwards; then a run that writes none, so that the rank is
  # stopped in a training step (checkpoints may take much longer than --watchdog_s).
  "${mpi[@]}" "$sambay" train $(options --out_dir "$w/run" --steps 5) >"$w/first.log" 2>&1
  expect_status 0 $? "$w/first.log"
  "${mpi[@]}" "$sambay" train \
    $(options --out_dir "$w/run" --steps 100000 --save_every 0 --watchdog_s 3) >"$w/log" 2>&1 &
  local launcher=$!
  wait_for_step "$w/run/metrics.jsonl" 8 $launcher
  local rank1=""
  for c in $(ps -o pid= --ppid $launcher); do
    tr '\0' '\n' <"/proc/$c/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && rank1=$c
  done
  [ -n "$rank1" ] || fail "rank 1 of the job not found"
  local t0=$SECONDS
  kill -STOP "$rank1"
  wait_gone $launcher 60
  kill -KILL "$rank1" 2>/dev/null
  expect_status 76 $status "$w/log"
  expect_text "$w/log" "rank 0 of 2: watchdog: the training step of step" "(limit 3 s, --watchdog_s)" \
              "over mpi of group 'dp_cp' (2 ranks)"
  grep -qE "rank 0 of 2: watchdog: .* waiting since [0-9:]+ \([0-9.]+ s\) in (all_reduce|reduce_scatter|all_gather|barrier)" "$w/log" ||
    { cat "$w/log"; fail "the watchdog did not name the collective rank 0 waited in"; }
  say "a stopped rank: the job ended in $((SECONDS - t0)) s with exit 76, naming the collective"
  train_to "$w/resume.log" --out_dir "$w/run" --steps 12
  expect_status 0 $status "$w/resume.log"
  expect_text "$w/resume.log" "resume: from $w/run/checkpoints/step_00000005"
}

cases=(size_overflow truncated_data disk_full_checkpoint foreign_checkpoint nonfinite
       disk_full_metrics refused_start two_trainers bad_token early_signal unwritable stale_tmp
       start_markers kill_during_save kill_during_async_save stopped_rank)
run_case() {
  case_name=$1
  w=$work/$1
  rm -rf "$w" && mkdir -p "$w"
  "case_$1"
}
if [ "$case_name" = all ]; then
  for c in "${cases[@]}"; do (run_case "$c") || exit 1; done
else
  declare -F "case_$case_name" >/dev/null || fail "unknown case (valid: all ${cases[*]})"
  run_case "$case_name"
fi
echo "[fault $case_name] PASS"
