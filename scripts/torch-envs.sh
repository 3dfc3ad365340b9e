#!/usr/bin/env bash
# Installs the two pip PyTorch builds the package is tested and prebuilt against into ignored,
# project-local virtual environments:
#   .venv/torch2.13-cpu    torch 2.13.0+cpu
#   .venv/torch2.14-cu130  torch 2.14.1 built for CUDA 13.0, with its nvidia-* wheels
# Safe to run again: an environment whose stamp matches its package list is left alone.
# Usage: bash scripts/torch-envs.sh [cpu|cuda]...   (no argument: both)
# Prints the path of each environment's python on its last lines (NAME=PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
# An index that cannot be reached fails at once instead of after pip's back-off (set PIP_RETRIES
# to change it).
retries="${PIP_RETRIES:-0}"

# torch 2.13's own dependencies resolve from the configured indexes. numpy serves
# reference/cases.py, the PyTorch oracle of the parity suite (over reference/perceptual.py).
cpu_packages=(torch==2.13.0+cpu numpy)

# torch 2.14.1 depends on cuda-bindings, which the indexes do not serve: install it with
# --no-deps and name what it needs at run time, at the versions its metadata (and that of the
# cuda-toolkit 13.0.3 meta-package it names) pins. nvidia-cuda-crt adds the CUDA headers that
# cuda_runtime.h includes (crt/host_config.h), so a source build needs no CUDA toolkit.
cuda_packages=(
  torch==2.14.1
  nvidia-cublas==13.1.1.3
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cupti==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cudnn-cu13==9.24.0.43
  nvidia-cufft==12.0.0.61
  nvidia-cufile==1.15.1.6
  nvidia-curand==10.4.0.35
  nvidia-cusolver==12.0.4.66
  nvidia-cusparse==12.6.3.3
  nvidia-cusparselt-cu13==0.8.1
  nvidia-nccl-cu13==2.30.7
  nvidia-nvjitlink==13.4.92
  nvidia-nvshmem-cu13==3.4.5
  nvidia-nvtx==13.0.85
  numpy typing-extensions filelock sympy mpmath networkx jinja2 markupsafe fsspec
  torchvision==0.29.1 pillow
)

# make_env NAME PIP_FLAGS PACKAGES...
make_env() {
  local name="$1" flags="$2"
  shift 2
  local dir=".venv/$name"
  local stamp="$dir/.torch-envs-stamp"
  local want="$flags $*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$dir/bin/python" -c 'import torch' 2>/dev/null; then
    echo "torch-envs: $name is up to date" >&2
  else
    echo "torch-envs: installing $name" >&2
    # A half-made environment (no working pip) starts again; a working one is updated in place.
    "$dir/bin/python" -m pip --version >/dev/null 2>&1 || { rm -rf "$dir"; "$python" -m venv "$dir"; }
    # shellcheck disable=SC2086 # flags is a word list on purpose
    "$dir/bin/python" -m pip install --quiet --no-input --retries "$retries" $flags "$@" >&2
    "$dir/bin/python" -c 'import torch; print("torch-envs: " + torch.__version__ + " imports")' >&2
    echo "$want" >"$stamp"
  fi
}

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(cpu cuda)
for which in "${wanted[@]}"; do
  case "$which" in
    cpu) make_env torch2.13-cpu "" "${cpu_packages[@]}"; echo "torch2.13-cpu=$PWD/.venv/torch2.13-cpu/bin/python" ;;
    cuda) make_env torch2.14-cu130 "--no-deps" "${cuda_packages[@]}"; echo "torch2.14-cu130=$PWD/.venv/torch2.14-cu130/bin/python" ;;
    *) echo "torch-envs: unknown environment '$which' (cpu or cuda)" >&2; exit 2 ;;
  esac
done
