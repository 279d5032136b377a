#!/bin/bash
# bench/run.sh - kvmhost vs libvirt vs raw QEMU on the test guest under TCG.
#
# Usage: bench/run.sh [quick] [--parts raw,libvirt,kvmhost]
#   quick   fewer repetitions, 10 VMs for the reattach figure (about 3 min)
#   full    (default) about 10-15 min
# Env: KH_BUILD_DIR (default <repo>/build), KH_GUEST_KERNEL/INITRD/DISK
#      (default: tests/guest/build.sh --print-env).
# Installs libvirt-daemon-system, libvirt-clients and hyperfine with apt-get
# when missing (root). Starts libvirtd (and virtlogd) itself, without systemd,
# and stops what it started; never autostarts a libvirt network.
# Prints: metric | kvmhost | libvirt | raw qemu | target | ok?
# Never run by CI.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${KH_BUILD_DIR:-$repo/build}
quick=()
parts=raw,libvirt,kvmhost
while [ $# -gt 0 ]; do
    case "$1" in
    quick | --quick) quick=(--quick) ;;
    full) ;;
    --parts) parts=$2; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "bench: $*" >&2; }

# ---- tools
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
if [[ $parts == *libvirt* ]]; then
    command -v libvirtd >/dev/null || need+=(libvirt-daemon-system)
    command -v virsh >/dev/null || need+=(libvirt-clients)
fi
command -v hyperfine >/dev/null || need+=(hyperfine)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi

# ---- guest
if [ -z "${KH_GUEST_KERNEL:-}" ]; then
    eval "$("$repo/tests/guest/build.sh" --print-env 2>/dev/null)"
fi
for f in "$KH_GUEST_KERNEL" "$KH_GUEST_INITRD" "$KH_GUEST_DISK"; do
    [ -r "$f" ] || { echo "run.sh: guest file missing: $f" >&2; exit 1; }
done

# ---- libvirtd, started here when not already running
. "$here/libvirtd.sh"
trap lv_cleanup EXIT
trap 'exit 130' INT TERM

if [[ $parts == *libvirt* ]]; then
    lv_start
fi

out=$(mktemp /tmp/khbench-result-XXXXXX.json)
log "parts=$parts ${quick[*]:-full}; raw figures -> $out"
/usr/bin/python3 "$here/khbench.py" "${quick[@]}" --parts "$parts" --build "$build" \
    --kernel "$KH_GUEST_KERNEL" --initrd "$KH_GUEST_INITRD" --disk "$KH_GUEST_DISK" --out "$out"
