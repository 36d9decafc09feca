#!/usr/bin/env bash
# Installs every build and test dependency of sambay on Debian/Ubuntu.
# Idempotent: packages already present are skipped, so CI and developers run it every time.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libopenmpi-dev openmpi-bin          # MPI: process bootstrap, CPU collectives
  libhdf5-dev                         # checkpoints
  libboost-program-options-dev        # CLI (linked statically)
  libfmt-dev                          # formatting and logs
  libgtest-dev                        # unit tests
  libopenblas-dev                     # CPU GEMM through CBLAS
  python3-h5py python3-numpy          # checkpoint interop tests read our files with h5py
  python3-matplotlib                  # scaling plots (tools/scaling_plots.py)
  slurm-wlm munge libpmix-dev         # the one-node Slurm cluster of the Slurm tests (pmix: srun --mpi=pmix)
  iproute2                            # ip netns: the multi-node cluster in network namespaces
)

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all dependencies present"
fi
