#!/usr/bin/env bash
# Checks that native/ is formatted as .clang-format says (npm run lint:cpp). Changes nothing:
# `clang-format -i native/*` applies the format.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v clang-format > /dev/null; then
  echo "format-check: clang-format is not installed. Install it with" >&2
  echo "  apt-get install -y clang-format   (Debian/Ubuntu; brew install clang-format on macOS)" >&2
  exit 127
fi

files=(native/*.cc native/*.h)
clang-format --style=file --dry-run --Werror "${files[@]}"
echo "format-check: ${#files[@]} files in native/ match .clang-format ($(clang-format --version))"
