#!/bin/bash
# bench/net.sh - network figures, inside a network namespace it creates:
#   - creating a NAT network: POST /api/v1/networks until dnsmasq answers
#     (bridge + nftables + dnsmasq bound on the gateway), target <= 100 ms;
#   - tap setup per VM start (create tap, enslave, up: the daemon's vm.nics
#     log line), target <= 10 ms;
#   - guest-to-guest TCP throughput (busybox httpd -> wget, 32 MiB, median of 3) between
#     two test guests on kvmhost's NAT network, then the same two guests on
#     libvirt's default NAT network (virbr0 + its dnsmasq, made with
#     net-create), under the accelerator the host has (TCG here).
# The libvirt side runs a libvirtd of its own inside the same namespace and
# a private mount namespace (tmpfs over /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt and /etc/libvirt/qemu, a private qemu.conf), so neither
# the host's interfaces nor a libvirtd already running are touched; the
# namespace and everything in it are gone at exit.
# Usage: bench/net.sh [N] [--no-libvirt]  (N network creations, default 10).
# Root. Never run by CI. Env: KH_BUILD_DIR, KH_GUEST_* as for the tests.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "${1:-}" = "--libvirt-inner" ]; then
    # In the bench's netns and a private mount namespace (see below).
    res=$2
    for d in /run/libvirt /var/lib/libvirt /var/cache/libvirt /etc/libvirt/qemu; do
        mkdir -p "$d"
        mount -t tmpfs -o mode=0755 tmpfs "$d"
    done
    mkdir -p /var/lib/libvirt/qemu /var/lib/libvirt/dnsmasq /var/lib/libvirt/network \
        /etc/libvirt/qemu/networks/autostart
    cp /etc/libvirt/qemu.conf "$res/qemu.conf"
    cat >>"$res/qemu.conf" <<'CONF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
CONF
    mount --bind "$res/qemu.conf" /etc/libvirt/qemu.conf
    pidf=/run/libvirt/kh-bench-libvirtd.pid
    /usr/sbin/libvirtd -d -p "$pidf"
    trap 'kill "$(cat "$pidf" 2>/dev/null)" 2>/dev/null || true' EXIT
    for _ in $(seq 300); do
        virsh -q -c qemu:///system version >/dev/null 2>&1 && break
        sleep 0.2
    done
    /usr/bin/python3 "$here/net_libvirt.py" "$res" >"$res/libvirt.json"
    exit 0
fi

n=10
libvirt=1
for a in "$@"; do
    case "$a" in
    --no-libvirt) libvirt=0 ;;
    *) n=$a ;;
    esac
done
ns=kh-b-$(printf '%08x' $((RANDOM * 32768 + RANDOM)))
res=$(mktemp -d /tmp/khbench-net-XXXXXX)
ip netns add "$ns"
trap 'for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done; sleep 0.3; ip netns delete "$ns"; rm -rf "$res"' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" /usr/bin/python3 "$here/net.py" "$n" "$res/kvmhost.json"
if [ "$libvirt" = 1 ]; then
    command -v libvirtd >/dev/null && command -v virsh >/dev/null ||
        { echo "net.sh: libvirt is not installed (apt-get install libvirt-daemon-system libvirt-clients)" >&2; exit 1; }
    ip netns exec "$ns" unshare -m --propagation private "$0" --libvirt-inner "$res"
fi
/usr/bin/python3 - "$res" <<'EOF2'
import json, os, sys
res = sys.argv[1]
k = json.load(open(os.path.join(res, "kvmhost.json")))
lv = {}
p = os.path.join(res, "libvirt.json")
if os.path.exists(p) and os.path.getsize(p):
    lv = json.loads(open(p).read().strip().splitlines()[-1])
print()
print("%-48s | %10s | %10s" % ("guest-to-guest TCP, NAT network, TCG", "kvmhost", "libvirt"))
print("%-48s | %10s | %10s" % ("-" * 48, "-" * 10, "-" * 10))
print("%-48s | %10.1f | %10s" % ("throughput, 32 MiB httpd -> wget (MiB/s, median)",
                                 k["kvmhost_mibs"], "%.1f" % lv["libvirt_mibs"] if lv else "-"))
print("%-48s | %10s | %10s" % ("  the three runs", "/".join("%.0f" % r for r in k["kvmhost_runs"]),
                               "/".join("%.0f" % r for r in lv["libvirt_runs"]) if lv else "-"))
print("%-48s | %10.1f | %10s" % ("network create (ms; kvmhost: until DNS answers)",
                                 k["net_create_ms"],
                                 "%.1f" % lv["libvirt_net_create_ms"] if lv else "-"))
EOF2
