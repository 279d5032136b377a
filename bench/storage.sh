#!/bin/bash
# bench/storage.sh - storage figures (linked clones, memory snapshots) under
# TCG, beside qemu-img and libvirt's virsh snapshot-create-as/-revert on the
# same kind of guest. Starts libvirtd (and virtlogd) itself when none runs,
# without systemd, and stops what it started (bench/libvirtd.sh).
# Usage: bench/storage.sh [--no-libvirt]  (env: KH_BUILD_DIR, KH_BENCH_N=20).
# Never run by CI.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "bench: $*" >&2; }
libvirt=1
args=()
for a in "$@"; do
    if [ "$a" = --no-libvirt ]; then libvirt=0; else args+=("$a"); fi
done
if [ "$libvirt" = 1 ] && ! command -v virsh >/dev/null; then
    log "virsh missing (apt-get install libvirt-daemon-system libvirt-clients): kvmhost only"
    libvirt=0
fi
. "$here/libvirtd.sh"
trap lv_cleanup EXIT
trap 'exit 130' INT TERM
[ "$libvirt" = 1 ] && lv_start
/usr/bin/python3 "$here/storage.py" "${args[@]}"
