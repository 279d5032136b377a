#!/usr/bin/env bash
# Static analysis over src/: cppcheck and clang-tidy (config in .clang-tidy).
# Needs a configured build dir for compile_commands.json (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
[ -f "$BUILD/compile_commands.json" ] || { echo "lint: no $BUILD/compile_commands.json"; exit 1; }
mapfile -t files < <(find src -name '*.c' | sort)

echo "cppcheck: ${#files[@]} files"
# cppcheck does not read system headers, so jansson's loop macros are
# "unknown" to it (unknownMacro is a configuration notice, not a finding).
cppcheck --quiet --error-exitcode=1 --inline-suppr --std=c11 \
  --enable=warning,performance,portability \
  --suppress=missingIncludeSystem --suppress=unmatchedSuppression \
  --suppress=unknownMacro -D_GNU_SOURCE -I src -I "$BUILD" "${files[@]}"

echo "clang-tidy: ${#files[@]} files"
out=$(printf '%s\n' "${files[@]}" |
  xargs -P "$(nproc)" -n 4 clang-tidy -p "$BUILD" --quiet --warnings-as-errors='*' 2>&1 |
  grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated|^Suppressed [0-9]+ warnings|^Use -header-filter|^Use -system-headers|^[0-9]+ warnings? treated as errors|^$' || true)
if printf '%s\n' "$out" | grep -q -E 'error:|warning:'; then
  printf '%s\n' "$out"
  echo "clang-tidy: findings above"
  exit 1
fi
echo "lint: clean"
