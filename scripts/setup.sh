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
  nlohmann-json3-dev                  # JSON: metrics, Hugging Face configs, safetensors headers
  libpcre2-dev zlib1g-dev             # the BPE tokenizer's regex (Unicode, JIT); gzip input
  libgtest-dev                        # unit tests
  libopenblas-dev                     # CPU GEMM through CBLAS
  python3-h5py python3-numpy          # checkpoint interop tests read our files with h5py
  python3-matplotlib                  # scaling plots (tools/scaling_plots.py)
  python3-pip                         # the PyPI packages below
  slurm-wlm munge libpmix-dev         # the one-node Slurm cluster of the Slurm tests (pmix: srun --mpi=pmix)
  iproute2                            # ip netns: the multi-node cluster in network namespaces
)

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all dependencies present"
fi

# PyPI packages some tests compare against (those tests skip with a message without them), for
# the same python3 as python3-h5py: tiktoken and bpe-openai (whose wheel ships the o200k_base and
# cl100k_base vocabularies) check the BPE tokenizer, tokenizers the exported tokenizer files,
# tensorboard (its event reader) the training's event files.
pip_packages=(tiktoken bpe-openai tokenizers tensorboard)
pip_modules=(tiktoken bpe_openai tokenizers tensorboard)
pip_missing=()
for i in "${!pip_packages[@]}"; do
  /usr/bin/python3 -c "import ${pip_modules[$i]}" 2>/dev/null || pip_missing+=("${pip_packages[$i]}")
done
if ((${#pip_missing[@]})); then
  echo "setup: installing ${pip_missing[*]} with pip"
  # Debian marks its python3 as externally managed; these go to /usr/local, beside apt's.
  $sudo_cmd /usr/bin/python3 -m pip install --quiet --break-system-packages "${pip_missing[@]}" ||
    echo "setup: warning: pip could not install ${pip_missing[*]}; the tests that need them skip"
fi
