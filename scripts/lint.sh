#!/usr/bin/env bash
# Static analysis over src/: cppcheck and clang-tidy (config in .clang-tidy).
# Needs a configured build dir for compile_commands.json (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
[ -f "$BUILD/compile_commands.json" ] || { echo "lint: no $BUILD/compile_commands.json"; exit 1; }
mapfile -t files < <(find src -name '*.c' | sort)

echo "cppcheck: ${#files[@]} files"
cppcheck --quiet --error-exitcode=1 --inline-suppr --std=c11 \
  --enable=warning,performance,portability \
  --suppress=missingIncludeSystem --suppress=unmatchedSuppression \
  -D_GNU_SOURCE -I src -I "$BUILD" "${files[@]}"

echo "clang-tidy: ${#files[@]} files"
printf '%s\n' "${files[@]}" |
  xargs -P "$(nproc)" -n 4 clang-tidy -p "$BUILD" --quiet --warnings-as-errors='*' 2>&1 |
  grep -v -E '^[0-9]+ warnings? generated|^Suppressed [0-9]+ warnings|^Use -header-filter|^$' |
  tee /dev/stderr | grep -q -E 'error:|warning:' && { echo "clang-tidy: findings above"; exit 1; }
echo "lint: clean"
