#!/usr/bin/env bash
# libFuzzer targets for the untrusted edges (tests/fuzz/). Needs clang.
#   scripts/fuzz.sh smoke          each target for a bounded run (CI): KH_FUZZ_RUNS
#                                  runs (100000) or KH_FUZZ_SECONDS (60), whichever first
#   scripts/fuzz.sh TARGET [ARGS]  one target, libFuzzer args as given
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ=${FUZZ:-build-fuzz}
if [ ! -f "$FUZZ/build.ninja" ]; then
  CC=clang meson setup "$FUZZ" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized >/dev/null
fi
# the build's output only when it fails (it was hidden: an empty log)
if ! out=$(ninja -C "$FUZZ" 2>&1); then
  printf '%s\n' "$out" | tail -n 40
  echo "fuzz: the fuzz build failed"
  exit 1
fi
mapfile -t targets < <(find "$FUZZ/tests/fuzz" -maxdepth 1 -type f -executable -name 'fuzz_*' | sort)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets built"; exit 1; }
if [ "${1:-smoke}" = smoke ]; then
  for t in "${targets[@]}"; do
    name=$(basename "$t")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
    echo "fuzz: $name"
    "$t" -runs="${KH_FUZZ_RUNS:-100000}" -max_total_time="${KH_FUZZ_SECONDS:-60}" \
      -max_len=4096 -timeout=10 "$work" 2>&1 | tail -n 3
    rm -rf "$work"
  done
  echo "fuzz: all targets ran clean"
else
  name=$1; shift
  exec "$FUZZ/tests/fuzz/$name" "$@"
fi
