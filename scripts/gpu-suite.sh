#!/usr/bin/env bash
# The GPU suite: one command on the GPU machine, with .device/ (npm run gpu:pack) carried.
#   bash scripts/gpu-suite.sh                 on the GPU machine: unpack node, build the addon against
#                                             that machine's PyTorch, run test/gpu/ (node:test: parity in
#                                             2-D, volumes and instance masks, devices, graphs, async,
#                                             multidevice), then bench/gpu-bench.mjs against PyTorch on
#                                             the same GPU (2-D rows and volume rows)
#   bash scripts/gpu-suite.sh --cpu-dry-run   here: the same steps, test and bench files on the CPU with
#                                             tiny shapes (packs into a temporary folder, uses this node)
# Writes everything under $OUT (default ./gpu-out): machine.json, build.log, tests.txt, tests.xml,
# parity.json, bench.json, gpu-<card>-<date>.json and table.txt; prints the short table last.
# PL_SUITE_SKIP=tests, =bench or =stable leaves that phase out (for a rerun of the others). The stable
# phase runs the stable-ABI prebuild as packed, with no build, against the same torch.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

mode=gpu
case "${1:-}" in
  "") ;;
  --cpu-dry-run) mode=cpu ;;
  *) echo "usage: bash scripts/gpu-suite.sh [--cpu-dry-run]" >&2; exit 2 ;;
esac

out="${OUT:-$root/gpu-out}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/pl-gpu-suite.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
log() { echo "gpu-suite [$(($(date +%s) - started))s] $*"; }
failures=()

# ---------------------------------------------------------------- what travels
if [ "$mode" = cpu ]; then
  # Debian's python3-torch, as the CPU reference of the other tests.
  export PL_PYTHON="${PL_PYTHON:-/usr/bin/python3}"
  pack="$work/pack"
  node_bin=$(command -v node)
  node scripts/gpu-pack.js --out "$pack" --no-node || { echo "gpu-suite: packing failed"; exit 1; }
else
  pack="${PL_DEVICE_PACK:-$root/.device}"
  [ -f "$pack/manifest.json" ] || { echo "gpu-suite: no $pack/manifest.json: run npm run gpu:pack and carry .device"; exit 1; }
  [ -f "$pack/node.xz" ] || { echo "gpu-suite: $pack has no node.xz (packed with --no-node?)"; exit 1; }
  mkdir -p "$work/bin"
  xz -dc "$pack/node.xz" >"$work/bin/node" && chmod +x "$work/bin/node" || { echo "gpu-suite: cannot unpack node"; exit 1; }
  node_bin="$work/bin/node"
fi
export PATH="$(dirname "$node_bin"):$PATH"
export NODE_PATH="$pack/node_modules"
log "node $("$node_bin" --version) ($node_bin), pack $pack ($(
  "$node_bin" -p "const m = require('$pack/manifest.json'); m.commit.slice(0, 12) + (m.dirty ? ' with uncommitted changes' : '')"))"

# ---------------------------------------------------------------- the machine
"$node_bin" "$pack/test/gpu/machine.mjs" --mode "$mode" --pack "$pack" >"$out/machine.json" 2>"$out/machine.err" ||
  { cat "$out/machine.err"; echo "gpu-suite: cannot read the machine's facts"; exit 1; }
"$node_bin" -e "const m = require('$out/machine.json'); console.log('gpu-suite: ' + m.summary)"

# ---------------------------------------------------------------- build against this machine's PyTorch
package="$work/package"
cp -r "$pack/package" "$package"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
log "building the addon"
{
  timeout 300 cmake -S "$package" -B "$package/build/cmake" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_JS_INC="$pack/node_modules/node-api-headers/include" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$package/build/Release" &&
    timeout 300 cmake --build "$package/build/cmake" --parallel "$(nproc)" &&
    (cd "$package" && "$node_bin" -e "
      const fs = require('fs');
      fs.writeFileSync('build/Release/libtorch.json', JSON.stringify(require('./dist/libtorch.js').findLibtorch().chosen, null, 2));")
} >"$out/build.log" 2>&1
build_status=$?
if [ $build_status -ne 0 ] || [ ! -f "$package/build/Release/generic_perceptual_loss.node" ]; then
  tail -40 "$out/build.log"
  echo "gpu-suite: the build failed (full log: build.log)"
  exit 1
fi
grep -E "libtorch [0-9]" "$out/build.log" | head -1
log "built $package/build/Release/generic_perceptual_loss.node"

export PL_PACKAGE="$package" PL_SUITE_MODE="$mode" PL_SUITE_OUT="$out" PL_PACK="$pack"

# ---------------------------------------------------------------- tests (node:test)
if [ "${PL_SUITE_SKIP:-}" != tests ]; then
  log "tests: $pack/test/gpu"
  (cd "$package" && timeout 240 "$node_bin" --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=junit --test-reporter-destination="$out/tests.xml" \
    "$pack"/test/gpu/*.test.mjs) 2>&1 | tee "$out/tests.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failures+=(tests)
fi

# ---------------------------------------------------------------- benchmark against PyTorch
if [ "${PL_SUITE_SKIP:-}" != bench ]; then
  log "benchmark"
  (cd "$package" && timeout 300 "$node_bin" "$pack/bench/gpu-bench.mjs" --mode "$mode" --out "$out") 2>&1 | tee "$out/bench.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failures+=(bench)
fi

# ---------------------------------------------------------------- the stable-ABI prebuild, as packed here
# The one binary for every torch >= 2.10, built on the development machine and carried in the pack,
# against this machine's torch with no build: parity, devices and the bench rows, beside the
# source-built exact binary above. PL_BINARY=stable-abi passes the source build over.
if [ "${PL_SUITE_SKIP:-}" != stable ]; then
  stable_out="$out/stable-abi"
  mkdir -p "$stable_out"
  # Here (the dry run) the torch is the 2.13 environment's, as the CPU reference too: the
  # system's 1.13 is older than the binary's target. There, python3's torch (2.11).
  stable_env=()
  if [ "$mode" = cpu ]; then
    stable_python="$root/.venv/torch2.13-cpu/bin/python"
    stable_env=(LIBTORCH_PYTHON="$stable_python" PL_PYTHON="$stable_python")
  fi
  if [ -d "$pack/package/prebuilds/stable-abi-torch2.10" ]; then
    log "stable-ABI prebuild: tests and bench"
    # What the phase runs is the stable-ABI prebuild, not a build of this machine: checked, and kept.
    (cd "$package" && env "${stable_env[@]}" PL_BINARY=stable-abi "$node_bin" -p \
      "const r = require('./dist/index.js').runtime(); r.binaryReason + '\\n' + r.binary") 2>&1 | tee "$stable_out/binary.txt"
    grep -q '^stable-ABI prebuild' "$stable_out/binary.txt" || failures+=(stable-binary)
    (cd "$package" && env "${stable_env[@]}" PL_BINARY=stable-abi PL_SUITE_OUT="$stable_out" timeout 180 "$node_bin" --test --test-concurrency=1 \
      --test-reporter=spec --test-reporter-destination=stdout \
      "$pack/test/gpu/parity.test.mjs" "$pack/test/gpu/volumes.test.mjs" "$pack/test/gpu/instance-masks.test.mjs" \
      "$pack/test/gpu/devices.test.mjs") 2>&1 | tee "$stable_out/tests.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failures+=(stable-tests)
    (cd "$package" && env "${stable_env[@]}" PL_BINARY=stable-abi timeout 240 "$node_bin" "$pack/bench/gpu-bench.mjs" --mode "$mode" --out "$stable_out") 2>&1 |
      tee "$stable_out/bench.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failures+=(stable-bench)
  else
    echo "gpu-suite: the pack has no stable-ABI prebuild"
    failures+=(stable-missing)
  fi
fi
# ---------------------------------------------------------------- the short table, last
log "done; files in $out"
# The budget of /work/shared/GPU.md: a lent GPU gives 15 minutes in all, machine start included, and
# the suite must leave room for one rerun.
elapsed=$(($(date +%s) - started))
[ "$mode" = gpu ] && [ "$elapsed" -gt 480 ] && echo "gpu-suite: WARNING: took ${elapsed} s, over the 480 s budget (GPU.md): trim it before the next run"
grep -E "^ℹ (tests|pass|fail|skipped) " "$out/tests.txt" 2>/dev/null | tr '\n' ' '
echo
[ -f "$out/table.txt" ] && cat "$out/table.txt"
[ -f "$out/stable-abi/table.txt" ] && { echo "stable-ABI prebuild:"; cat "$out/stable-abi/table.txt"; }
if [ ${#failures[@]} -gt 0 ]; then
  echo "gpu-suite: FAILED: ${failures[*]}"
  exit 1
fi
echo "gpu-suite: OK ($mode)"
