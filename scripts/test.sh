#!/usr/bin/env bash
# The test command: installs dependencies, builds (CUDA code too when nvcc exists), runs ctest.
# GPU tests skip with a message on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${SAMBAY_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure -j "$(nproc)" "$@"
