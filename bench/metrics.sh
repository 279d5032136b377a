#!/bin/bash
# bench/metrics.sh - GET /metrics latency and sampler cost with many VMs,
# beside the same figures for libvirt's `virsh domstats` over as many VMs.
# Usage: bench/metrics.sh [--defined N] [--running N] [--requests N] [--no-libvirt]
# (defaults 100 defined, 20 running). Starts libvirtd (and virtlogd) itself
# when none runs, without systemd, and stops what it started (bench/libvirtd.sh).
# Never run by CI.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export KH_BUILD_DIR=${KH_BUILD_DIR:-$here/../build}
log() { echo "bench: $*" >&2; }
libvirt=1
for a in "$@"; do [ "$a" = --no-libvirt ] && libvirt=0; done
if [ "$libvirt" = 1 ] && ! command -v virsh >/dev/null; then
    log "virsh missing (apt-get install libvirt-daemon-system libvirt-clients): kvmhost only"
    libvirt=0
fi
. "$here/libvirtd.sh"
trap lv_cleanup EXIT
trap 'exit 130' INT TERM
if [ "$libvirt" = 1 ]; then
    lv_start
else
    set -- "$@" --no-libvirt
fi
/usr/bin/python3 "$here/metrics.py" "$@"
