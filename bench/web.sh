#!/bin/bash
# bench/web.sh - the web console's figures in headless Chromium against a
# real kvmhostd: first-load JavaScript (compressed), dashboard time to
# interactive, VM list render time with 200 VMs (targets from issue 6).
# Builds the daemon and the web console first; needs chromium (apt-get) and
# npm. Env: KH_BUILD_DIR (default <repo>/build), KH_BENCH_VMS (200).
# Never run by CI.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
build=${KH_BUILD_DIR:-$repo/build}
[ -f "$build/build.ninja" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null
scripts/build-web.sh
[ -x /usr/bin/chromium ] || { echo "bench/web.sh: needs chromium (apt-get install chromium)" >&2; exit 1; }
KH_DAEMON="$build/src/daemon/kvmhostd" exec node web/tests/bench.mjs
