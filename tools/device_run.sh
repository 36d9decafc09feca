#!/usr/bin/env bash
# Runs on the GPU machine (through the device tool, with .device-build carried): checks that the
# carried binaries find their libraries, runs every GPU test program and the kernel benchmarks,
# and leaves the logs in $OUT. Usage: tools/device_run.sh [tests|bench|all] [bench filter]
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
filter=${2:-}
out=${OUT:-/tmp/sambay-device-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/.device-build/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export OMP_WAIT_POLICY=passive
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
missing=0
for b in .device-build/bin/*; do
  if ldd "$b" | grep -q "not found"; then
    echo "MISSING LIBRARIES for $b:"; ldd "$b" | grep "not found"; missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1
status=0
if [ "$what" = tests ] || [ "$what" = all ]; then
  for b in .device-build/bin/test_*; do
    name=$(basename "$b")
    if "$b" --gtest_brief=1 > "$out/$name.log" 2>&1; then
      echo "PASS $name: $(grep -E '^\[  (PASSED|SKIPPED) ' "$out/$name.log" | tr '\n' ' ')"
    else
      echo "FAIL $name"; grep -E "Failure|FAILED|error|Error" "$out/$name.log" | head -40; status=1
    fi
  done
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  .device-build/bin/sambay_bench "$filter" 2>&1 | tee "$out/bench.log" || status=1
fi
exit $status
