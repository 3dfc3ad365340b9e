#!/usr/bin/env bash
# `npm run test:asan`: the native side of the fuzz suites under AddressSanitizer and
# UndefinedBehaviorSanitizer. Builds the addon with -DPL_SANITIZE=ON into build/asan (the normal
# build in build/Release is left alone), puts it into a temporary copy of the package (the loader
# only looks at <package>/build/Release), runs the fuzz, hostile-file and concurrency tests there
# with the sanitizer runtime preloaded (node itself is not instrumented), and fails if any
# sanitizer report appears.
#
#   bash scripts/asan.sh [vitest arguments...]    (default: the fuzz, hostile-file and concurrency tests below)
# Environment: PL_FUZZ_RUNS_SCALE (default 1: the full 10,000+ fuzz cases), KEEP_ASAN_DIR=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

ASAN_LIB=$(gcc -print-file-name=libasan.so)
if [[ ! -e "$ASAN_LIB" || "$ASAN_LIB" == libasan.so ]]; then
  echo "asan: no libasan.so for gcc (apt-get install gcc); cannot run" >&2
  exit 2
fi

# 1. The sanitized addon. build-native.js needs dist/ (libtorch discovery) and records the
#    libtorch it used in build/Release/libtorch.json.
[[ -f dist/libtorch.js ]] || npm run build:ts
mkdir -p build/Release
node install/build-native.js --out build/asan --CDPL_SANITIZE=ON
BINARY=build/asan/Release/generic_perceptual_loss.node
if ! ldd "$BINARY" | grep libasan > /dev/null; then
  echo "asan: $BINARY is not linked against libasan (was PL_SANITIZE=ON applied?)" >&2
  exit 2
fi

# 2. A package copy whose build/Release is the sanitized addon.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pl-asan-XXXXXX")
LOGS="$WORK/sanitizer-logs"
cleanup() { if [[ "${KEEP_ASAN_DIR:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "asan: kept $WORK"; fi; }
trap cleanup EXIT
PKG="$WORK/package"
mkdir -p "$PKG/build/Release" "$LOGS"
cp -r package.json tsconfig.json vitest.config.ts lib dist scripts test "$PKG/"
ln -s "$ROOT/node_modules" "$PKG/node_modules"
cp "$BINARY" "$PKG/build/Release/generic_perceptual_loss.node"
cp build/Release/libtorch.json "$PKG/build/Release/libtorch.json"

# Python (the PyTorch reference, the pickle writer) runs without the sanitizer runtime.
cat > "$WORK/python3" <<'EOF'
#!/bin/sh
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
exec /usr/bin/python3 "$@"
EOF
chmod +x "$WORK/python3"

# The copy loads the sanitized addon (and nothing else) under the preloaded runtime.
loaded=$(cd "$PKG" && LD_PRELOAD="$ASAN_LIB" ASAN_OPTIONS=detect_leaks=0 node -e "console.log(require('./dist/index.js').runtime().binary)")
if [[ "$loaded" != "$PKG/build/Release/generic_perceptual_loss.node" ]]; then
  echo "asan: the package copy loaded $loaded, not the sanitized addon" >&2
  exit 2
fi

# 3. The tests, with the runtime preloaded. Leak checking is off: node and libtorch keep
#    allocations until exit by design. Any report is written to $LOGS and fails the run.
TESTS=("$@")
[[ ${#TESTS[@]} -gt 0 ]] || TESTS=(test/fuzz/*.test.ts test/files/*.test.ts test/stress/concurrency.test.ts)
echo "asan: running ${TESTS[*]} against $BINARY (PL_FUZZ_RUNS_SCALE=${PL_FUZZ_RUNS_SCALE:-1})"
set +e
(
  cd "$PKG"
  export LD_PRELOAD="$ASAN_LIB"
  export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=$LOGS/asan:print_summary=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan"
  export PL_REFERENCE_PYTHON="$WORK/python3"
  export PL_FUZZ_RUNS_SCALE="${PL_FUZZ_RUNS_SCALE:-1}"
  node node_modules/vitest/vitest.mjs run "${TESTS[@]}" --reporter=default 2>&1
) | tee "$WORK/output.log"
status=${PIPESTATUS[0]}
set -e

reports=$(find "$LOGS" -type f | wc -l)
inline=$(grep -cE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" "$WORK/output.log" || true)
if [[ "$reports" -gt 0 || "$inline" -gt 0 ]]; then
  echo "asan: FAIL: $reports sanitizer report file(s), $inline report line(s) in the output"
  for f in "$LOGS"/*; do [[ -f "$f" ]] && { echo "---- $f"; head -60 "$f"; }; done
  exit 1
fi
if [[ "$status" -ne 0 ]]; then
  echo "asan: FAIL: the tests failed (exit $status) under the sanitizers, with no sanitizer report"
  exit "$status"
fi
echo "asan: PASS: no AddressSanitizer or UndefinedBehaviorSanitizer report"
