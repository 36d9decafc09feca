#!/usr/bin/env bash
# On the GPU machine (one GPU; .device-build carried, built with tools/device_build.sh including
# the MPI test programs): every GPU unit test, the parallel layouts on one GPU through host-staged
# MPI (the GPU model's TP2 and DP2 against one rank, and the trainer's DP2 and TP2), the CPU
# layouts' equivalence tests under MPI, and the 1B step benchmark (the single-GPU path must not
# have slowed down). Not the CPU step-time benchmark (bench/parallel_overhead.sh): the device
# build links the reference BLAS, far too slow to time the CPU backend.
# Logs go to $OUT. Usage: tools/device_parallel_check.sh [checks|bench|all] (default all)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/sambay-device-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/.device-build/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
bin=$PWD/.device-build/bin
mpi=(mpirun --oversubscribe --allow-run-as-root --bind-to none)
what=${1:-all}
status=0
step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, prints PASS/FAIL and the time
  local name=$1 t0=$SECONDS
  shift
  if "$@" >"$out/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - t0)) s): $(grep -E 'PASSED|match|largest' "$out/$name.log" | head -4 | tr '\n' ' ')"
  else
    echo "FAIL $name ($((SECONDS - t0)) s)"; tail -30 "$out/$name.log"; status=1
  fi
}
if [ "$what" = checks ] || [ "$what" = all ]; then
bash tools/device_run.sh tests || status=1
step model_parallel_gpu_np1 "${mpi[@]}" -np 1 $bin/mpi_test_model_parallel_gpu
step model_parallel_gpu_np2 "${mpi[@]}" -np 2 $bin/mpi_test_model_parallel_gpu
step model_parallel_cpu_np2 "${mpi[@]}" -np 2 -x OMP_NUM_THREADS=4 $bin/mpi_test_model_parallel \
  --gtest_filter='ModelParallelNp2.*'
step model_parallel_cpu_np4 "${mpi[@]}" -np 4 -x OMP_NUM_THREADS=4 $bin/mpi_test_model_parallel \
  --gtest_filter='ModelParallelNp4.*'
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
step train_gpu_parallel bash tests/mpi/train_gpu_parallel_equivalence.sh mpirun $bin/sambay \
  /tmp/train_gpu_parallel
grep -h "largest" "$out/train_gpu_parallel.log"
step step_bench $bin/sambay_bench step_1b
tail -8 "$out/step_bench.log"
fi
exit $status
