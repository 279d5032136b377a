#!/usr/bin/env bash
# Build kvmhost and run kvmhostd in the foreground with its defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
scripts/install-deps.sh
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
ninja -C "$BUILD" >/dev/null
sock=${KVMHOST_SOCKET:-/run/kvmhost/kvmhostd.sock}
cat <<MSG
kvmhostd is starting with its defaults:
  REST API     unix socket $sock   (try: $BUILD/src/cli/kvmhost host show)
  API document GET /api/v1/openapi.json on that socket (docs/api.md)
  TCP API      off; add --listen 127.0.0.1:8006 (token in /var/lib/kvmhost/api-token)
  state        /var/lib/kvmhost      logs: this terminal
A test guest for a first VM: tests/guest/build.sh (see README).  Ctrl-C stops the
daemon; running VMs keep running and are reattached at the next start.
MSG
exec "$BUILD/src/daemon/kvmhostd" --socket "$sock" "$@"
