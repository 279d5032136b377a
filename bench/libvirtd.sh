# bench/libvirtd.sh - sourced by the benches that compare with libvirt.
# lv_start: start virtlogd and libvirtd (QEMUs as root through a qemu.conf
# bind-mounted in a private mount namespace; no network autostart) unless a
# libvirtd answers already. lv_cleanup: stop what lv_start started and put
# back what it moved. Needs log() from the caller.

started_libvirtd=0
started_virtlogd=0
moved_autostart=()
lvconf=

lv_cleanup() {
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

lv_start() {
    if virsh -q -c qemu:///system version >/dev/null 2>&1; then
        log "using the libvirtd already running"
        return 0
    fi
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
}
