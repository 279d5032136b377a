#!/bin/bash
# bench/storage.sh - storage figures (linked clones, memory snapshots) under TCG.
# Usage: bench/storage.sh   (env: KH_BUILD_DIR, KH_BENCH_N=20). Never run by CI.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "$0")/storage.py" "$@"
