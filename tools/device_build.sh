#!/usr/bin/env bash
# Builds what runs on the lent GPU machine (tools/device_run.sh) into .device-build/, which git
# ignores and the device tool carries: CUDA arch 90, Boost/GoogleTest static, the reference BLAS
# (450 KB instead of OpenBLAS's 36 MB; the CPU code there only computes test references), and
# the few shared libraries that machine may lack. Usage: tools/device_build.sh [targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.device-build/' .git/info/exclude 2>/dev/null || echo '/.device-build/' >> .git/info/exclude
out=.device-build
mkdir -p "$out/netlib" "$out/bin" "$out/lib"
if [ ! -e "$out/netlib/libblas.so.3" ]; then
  (cd "$out/netlib" && apt-get download libblas3 >/dev/null && dpkg -x libblas3_*.deb x &&
   cp -L x/usr/lib/x86_64-linux-gnu/blas/libblas.so.3 . && rm -rf x libblas3_*.deb)
fi
cmake -S . -B "$out/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMBAY_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DSAMBAY_BLAS_LIBRARY="$PWD/$out/netlib/libblas.so.3" >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sambay sambay_bench test_core)
  for t in tests/test_*_cuda.cpp; do [ -e "$t" ] && targets+=("$(basename "$t" .cpp)"); done
fi
cmake --build "$out/build" -j "$(nproc)" --target "${targets[@]}"
rm -f "$out"/bin/*
for t in "${targets[@]}"; do
  f=$(find "$out/build" -maxdepth 2 -type f -name "$t" -perm -u+x | head -n 1)
  [ -n "$f" ] || { echo "device_build: no binary for $t" >&2; exit 1; }
  cp "$f" "$out/bin/" && strip "$out/bin/$t"
done
cp -L "$out/netlib/libblas.so.3" /usr/lib/x86_64-linux-gnu/libfmt.so.9 \
  /usr/lib/x86_64-linux-gnu/libgomp.so.1 "$out/lib/"
du -sh "$out/bin" "$out/lib"
