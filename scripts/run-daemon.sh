#!/usr/bin/env bash
# Build kvmhost and its web console, and run kvmhostd in the foreground with
# its defaults plus the web console on https://127.0.0.1:8006/ (TLS with a
# self-signed certificate made at first start; its fingerprint is printed).
# KVMHOST_LISTEN=ADDR:PORT changes the TCP address ("" turns TCP off).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
scripts/install-deps.sh
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
ninja -C "$BUILD" >/dev/null
sock=${KVMHOST_SOCKET:-/run/kvmhost/kvmhostd.sock}
listen=${KVMHOST_LISTEN-127.0.0.1:8006}
daemon="$BUILD/src/daemon/kvmhostd"
state=$("$daemon" --help | sed -n 's/.*--state-dir DIR.*(default \(.*\)).*/\1/p')
state=${state:-/var/lib/kvmhost}
args=()
web="off (npm missing or the build failed: scripts/build-web.sh)"
if scripts/build-web.sh; then
  args+=(--web-dir web/dist)
  web="web/dist"
fi
if [ -n "$listen" ]; then
  args+=(--listen "$listen")
  fp=$("$daemon" --state-dir "$state" --tls-fingerprint 2>/dev/null || echo "?")
  tcp="https://$listen/   (token: $state/api-token, created at first start)
               TLS: self-signed, SHA-256 fingerprint
               $fp
               (CLI: --url https://$listen --cacert $state/tls/cert.pem)"
else
  tcp="off (KVMHOST_LISTEN=127.0.0.1:8006 turns it on)"
fi
cat <<MSG
kvmhostd is starting with its defaults:
  REST API     unix socket $sock   (try: $BUILD/src/cli/kvmhost host show)
  API document GET /api/v1/openapi.json on that socket (docs/api.md)
  web console  $tcp
               files: $web; log in with the token: cat $state/api-token
  state        $state      logs: this terminal
A test guest for a first VM: tests/guest/build.sh (see README).  Ctrl-C stops the
daemon; running VMs keep running and are reattached at the next start.
MSG
exec "$daemon" --socket "$sock" "${args[@]}" "$@"
