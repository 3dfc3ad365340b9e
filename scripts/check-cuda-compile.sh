#!/usr/bin/env bash
# Compile-checks every native translation unit with the CUDA switch on (PL_WITH_CUDA), against
# the CUDA toolkit headers here and Debian's ATen/c10 CUDA headers, on a machine with no GPU and
# no CUDA libtorch. The GPU suite builds and runs the same code against a real CUDA libtorch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cuda_include=""
for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
  if [ -n "$dir" ] && [ -f "$dir/include/cuda_runtime_api.h" ]; then cuda_include="$dir/include"; break; fi
done
if [ -z "$cuda_include" ]; then
  echo "check-cuda-compile: no CUDA headers (cuda_runtime_api.h) in \$CUDA_HOME, \$CUDA_PATH or /usr/local/cuda" >&2
  exit 1
fi

mapfile -t torch_includes < <(node install/find-libtorch.js --gyp include_dirs | tr ' ' '\n')
napi_include=$(node -p "require('node-addon-api').include_dir")
node_include=$(dirname "$(dirname "$(command -v node)")")/include/node

flags=(-std=c++17 -fsyntax-only -Wall -DPL_WITH_CUDA -DNAPI_VERSION=8 -D_GLIBCXX_USE_CXX11_ABI=1
  # Debian's c10 headers lack the generated cuda_cmake_macros.h; the defaults are what we need.
  -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
# -I, not -isystem: -isystem /usr/include would break libstdc++'s #include_next.
for dir in "${torch_includes[@]}"; do flags+=(-I"$dir"); done
flags+=(-isystem "$cuda_include" -I"$napi_include" -isystem "$node_include")

for unit in native/*.cc; do
  echo "check-cuda-compile: $unit"
  g++ "${flags[@]}" "$unit"
done
echo "check-cuda-compile: all translation units compile with PL_WITH_CUDA (CUDA headers: $cuda_include)"
