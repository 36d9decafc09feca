#!/usr/bin/env bash
# Runs on the GPU machine (device tool, .device-build carried): chosen GPU test programs, each
# first on a smoke filter under a short timeout (a kernel that hangs costs seconds, not the
# call), then whole; then sambay_bench on a filter, optionally beside the PyTorch anchor's
# output; a summary table last. Logs go to $OUT.
# Usage: tools/device_check.sh [-t "test_a test_b"] [-s SMOKE_FILTER] [-b BENCH_FILTER]
#                              [-a ANCHOR_LOG] [-e "VAR=a;VAR=b"]  (one extra bench run per env)
set -uo pipefail
cd "$(dirname "$0")/.."
tests="" smoke="" bench="" anchors="" extra_env=""
while getopts "t:s:b:a:e:" opt; do
  case $opt in
    t) tests=$OPTARG ;; s) smoke=$OPTARG ;; b) bench=$OPTARG ;; a) anchors=$OPTARG ;;
    e) extra_env=$OPTARG ;; *) exit 2 ;;
  esac
done
out=${OUT:-/tmp/sambay-device-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/.device-build/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export OMP_WAIT_POLICY=passive
bin=.device-build/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
summary=()
failures=()
for t in $tests; do
  if [ -n "$smoke" ]; then
    timeout 60 "$bin/$t" --gtest_brief=1 --gtest_filter="$smoke" > "$out/$t.smoke.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
      summary+=("SMOKE-FAIL $t rc=$rc")
      grep -E "Failure|Expected|Which is|error|FAILED" "$out/$t.smoke.log" | head -30
      continue
    fi
  fi
  timeout 400 "$bin/$t" --gtest_brief=1 > "$out/$t.log" 2>&1
  rc=$?
  rm -f "$out/$t.smoke.log"
  if [ $rc -eq 0 ]; then
    summary+=("PASS $t: $(grep -E '^\[  PASSED' "$out/$t.log")")
    rm -f "$out/$t.log"  # only failures come back (the tool returns a few files)
  else
    summary+=("FAIL $t rc=$rc: $(grep -c '^\[  FAILED  \]' "$out/$t.log") failed")
    failures+=("== $t" "$(grep -B2 -A12 -E 'Failure' "$out/$t.log" | head -60)")
  fi
done
if [ -n "$bench" ]; then
  args=("$bench")
  [ -n "$anchors" ] && args+=(--anchors "$anchors")
  timeout 400 "$bin/sambay_bench" "${args[@]}" > "$out/bench.log" 2>&1 || summary+=("bench rc=$?")
  n=0
  IFS=';' read -ra envs <<< "$extra_env"
  for e in "${envs[@]}"; do
    n=$((n + 1))
    env $e timeout 200 "$bin/sambay_bench" "${args[@]}" > "$out/bench_extra$n.log" 2>&1 ||
      summary+=("bench with $e rc=$?")
    echo "== bench with $e"; grep -vE "^$" "$out/bench_extra$n.log" | tail -n +3
  done
  echo "== bench"; cat "$out/bench.log"
fi
echo "== failures"
printf '%s\n' "${failures[@]}"
echo "== summary"
printf '%s\n' "${summary[@]}"
