#!/usr/bin/env bash
# Sets up generic-perceptual-loss from a fresh clone on Debian: system packages (libtorch and
# the PyTorch reference), npm packages, the TypeScript build and the native addon.
# Safe to run again: it installs only what is missing and rebuilds incrementally.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# libtorch (C++), PyTorch + torchvision (the reference for tests and benchmarks), the toolchain,
# and clang-format for `npm run lint:cpp`.
packages=(libtorch-dev python3-torch python3-torchvision cmake g++ make clang-format)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for package in "${packages[@]}"; do
  installed "$package" || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "setup: apt-get is not available here. Install the equivalents of those packages (libtorch, PyTorch" >&2
      echo "       and torchvision for python3, CMake, g++ and make), or point LIBTORCH at a libtorch folder," >&2
      echo "       then run this script again." >&2
    else
      echo "setup: installing them needs root. Run:" >&2
      echo "       sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
      echo "       then run this script again." >&2
    fi
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "setup: npm ci"
npm ci --no-audit --no-fund

echo "setup: compiling TypeScript"
npm run --silent build:ts

echo "setup: building the native addon"
npm run --silent build:native

echo "setup: compiling the demo"
npm run --silent build:demo

# The suite tests every libtorch flavour: pip's torch 2.13 (CPU) and 2.14.1 (CUDA 13.0) in .venv/
# (idempotent), and a prebuild for each flavour found (incremental), as `npm pack` ships them.
echo "setup: pip torch environments in .venv/"
bash scripts/torch-envs.sh

echo "setup: a prebuild for every libtorch flavour"
npm run --silent prebuilds

echo "setup: done"
