#!/bin/bash
# tests/guest/boot.sh - boot the test guest once under TCG and time it.
#
# Usage: boot.sh [--machine q35|microvm] [--kernel PATH] [--timeout S]
#   --kernel  the bzImage (default out/vmlinuz) or a PVH vmlinux, e.g. the
#             one kh_kernel_resolve() cached
# Prints the QEMU command, then the seconds from start to
# KVMHOST-GUEST-READY and to the KVMHOST-DISK line, and stops the VM.
# Exit 0 when both lines appeared.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
machine=q35
kernel=
timeout=120
while [ $# -gt 0 ]; do
    case "$1" in
    --machine) machine=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "boot.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

eval "$("$here/build.sh" --print-env)"
kernel=${kernel:-$KH_GUEST_KERNEL}
case "$machine" in
q35) blk=virtio-blk-pci ;;
microvm) blk=virtio-blk-device ;; # virtio-mmio, found through ACPI (microvm's default)
*) echo "boot.sh: machine must be q35 or microvm" >&2; exit 2 ;;
esac

append="console=ttyS0 quiet panic=-1"
if [ "$machine" = microvm ]; then
    # microvm has no HPET or ACPI PM timer: the kernel calibrates the TSC
    # against the PIT only, which fails under TCG on a busy host, and the
    # boot then stalls for minutes. Under TCG rdtsc reads the host TSC, so
    # tell the kernel its rate.
    khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
    [ -n "$khz" ] && append="$append tsc_early_khz=$khz"
fi

cmd=(qemu-system-x86_64 -accel tcg -machine "$machine" -cpu max -m 256
     -nodefaults -no-user-config -display none -serial stdio
     -kernel "$kernel" -initrd "$KH_GUEST_INITRD"
     -append "$append"
     -drive "file=$KH_GUEST_DISK,if=none,id=d0,format=raw,readonly=on"
     -device "$blk,drive=d0")
printf "%q " "${cmd[@]}"; echo

log=$(mktemp /tmp/kh-guest-boot.XXXXXX)
start=$(date +%s%N)
"${cmd[@]}" </dev/null >"$log" 2>&1 &
qpid=$!
stop() {
    kill $qpid 2>/dev/null || true
    for _ in $(seq 40); do kill -0 $qpid 2>/dev/null || break; sleep 0.05; done
    kill -KILL $qpid 2>/dev/null || true
    wait $qpid 2>/dev/null || true
    rm -f "$log"
}
trap stop EXIT

ready= disk=
elapsed() { echo "scale=2; ($(date +%s%N) - $start) / 1000000000" | bc; }
while kill -0 $qpid 2>/dev/null; do
    if [ -z "$ready" ] && grep -qa KVMHOST-GUEST-READY "$log"; then ready=$(elapsed); fi
    if [ -z "$disk" ] && grep -qa 'KVMHOST-DISK:' "$log"; then disk=$(elapsed); fi
    [ -n "$ready" ] && [ -n "$disk" ] && break
    [ "$(( ($(date +%s%N) - start) / 1000000000 ))" -ge "$timeout" ] && break
    sleep 0.05
done
echo "ready: ${ready:-none} s  disk: ${disk:-none} s  ($(grep -a 'KVMHOST-DISK:' "$log" | tr -d '\r' || true))"
if [ -z "$ready" ] || [ -z "$disk" ]; then
    if ! kill -0 $qpid 2>/dev/null; then
        rc=0; wait $qpid || rc=$?; echo "QEMU exited with status $rc"
    fi
    echo "--- console:"; tail -c 2000 "$log"; exit 1
fi
