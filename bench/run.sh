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
started_libvirtd=0
started_virtlogd=0
moved_autostart=()
cleanup() {
    if [ "$started_libvirtd" = 1 ]; then
        local pid
        pid=$(cat /run/libvirtd.pid 2>/dev/null || true)
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    if [ "$started_virtlogd" = 1 ]; then
        local vpid
        vpid=$(cat /run/virtlogd.pid 2>/dev/null || true)
        [ -n "$vpid" ] && kill "$vpid" 2>/dev/null || true
    fi
    [ -n "${lvconf:-}" ] && rm -rf "$lvconf"
    for f in "${moved_autostart[@]}"; do mv -f "$f.khbench-off" "$f" 2>/dev/null || true; done
    if ip link show virbr0 >/dev/null 2>&1; then
        log "warning: virbr0 exists (not created by this run unless noted above)"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $parts == *libvirt* ]]; then
    if ! virsh -q -c qemu:///system version >/dev/null 2>&1; then
        # Never let libvirtd autostart a network (default/virbr0) for the bench.
        for f in /etc/libvirt/qemu/networks/autostart/*.xml; do
            [ -e "$f" ] || continue
            mv -f "$f" "$f.khbench-off" && moved_autostart+=("$f")
        done
        if ! pidof virtlogd >/dev/null; then
            /usr/sbin/virtlogd -d && started_virtlogd=1
        fi
        # libvirt re-probes QEMU (about a minute each time) on every define
        # here: /dev/kvm exists but its QEMU user cannot open it, so its
        # capability cache flips between "KVM" and "no KVM". Its QEMUs run as
        # root for the bench, through a qemu.conf bind-mounted in a private
        # mount namespace (the system's file is not touched).
        lvconf=$(mktemp -d /tmp/khbench-lvconf-XXXXXX)
        cp /etc/libvirt/qemu.conf "$lvconf/qemu.conf"
        printf '\nuser = "root"\ngroup = "root"\n' >>"$lvconf/qemu.conf"
        log "starting libvirtd"
        unshare -m --propagation private sh -c \
            "mount --bind '$lvconf/qemu.conf' /etc/libvirt/qemu.conf && exec /usr/sbin/libvirtd -d"
        started_libvirtd=1
        for _ in $(seq 100); do
            virsh -q -c qemu:///system version >/dev/null 2>&1 && break
            sleep 0.1
        done
        virsh -q -c qemu:///system version >/dev/null || { echo "libvirtd did not come up" >&2; exit 1; }
        sleep 2 # let it settle before the idle RSS reading
    else
        log "using the libvirtd already running"
    fi
fi

out=$(mktemp /tmp/khbench-result-XXXXXX.json)
log "parts=$parts ${quick[*]:-full}; raw figures -> $out"
/usr/bin/python3 "$here/khbench.py" "${quick[@]}" --parts "$parts" --build "$build" \
    --kernel "$KH_GUEST_KERNEL" --initrd "$KH_GUEST_INITRD" --disk "$KH_GUEST_DISK" --out "$out"
