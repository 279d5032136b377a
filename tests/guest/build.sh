#!/bin/bash
# tests/guest/build.sh - build the small test guest used by the guest tests.
#
# From Debian packages only: the kernel of linux-image-amd64 (its real
# linux-image-6.1.0-*-amd64 dependency) and busybox-static. Produces, in
# tests/guest/out/ (git-ignored, cached):
#   vmlinuz     the Debian bzImage
#   initrd.img  a busybox initramfs (cpio.gz) that loads the virtio and ext4
#               modules, prints KVMHOST-GUEST-READY on the console, mounts
#               /dev/vda (ext4) read-only if present and prints
#               "KVMHOST-DISK: <marker.txt>", then gives a shell on the
#               console (`poweroff -f` powers the VM off)
#   disk.ext4   a 16 MiB ext4 image holding marker.txt = "kvmhost-disk-ok"
#
# Usage: build.sh              build if needed, print the paths
#        build.sh --print-env  build if needed (log on stderr), then print
#                              KH_GUEST_KERNEL=... KH_GUEST_INITRD=...
#                              KH_GUEST_DISK=... for `eval`
#        build.sh --force      rebuild everything
# Needs root on a fresh Debian 12 machine only to apt-get install missing
# tools (busybox-static, cpio, e2fsprogs, xz-utils, zstd).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
print_env=0
force=0
for arg in "$@"; do
    case "$arg" in
    --print-env) print_env=1 ;;
    --force) force=1 ;;
    -h | --help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# With --print-env, stdout carries only the assignments.
if [ "$print_env" = 1 ]; then exec 3>&1 1>&2; else exec 3>&1; fi

log() { echo "guest: $*"; }
die() { echo "guest: error: $*" >&2; exit 1; }

# Modules the guest loads, as module names; dependencies are added from
# each module's own .modinfo "depends=" and loaded first. crc32c_generic
# stands for ext4/jbd2's "softdep pre: crypto-crc32c".
wanted_modules=(crc32c_generic virtio_pci virtio_mmio virtio_blk virtio_net virtio_balloon ext4)

need_tools() {
    local missing=() t pkg
    for t in busybox:busybox-static cpio:cpio mke2fs:e2fsprogs xz:xz-utils \
             zstd:zstd gzip:gzip dpkg-deb:dpkg; do
        pkg=${t#*:}
        if ! command -v "${t%%:*}" >/dev/null 2>&1; then missing+=("$pkg"); fi
    done
    # busybox must be the static one: it runs alone in the initramfs.
    if command -v busybox >/dev/null && ! dpkg -s busybox-static >/dev/null 2>&1; then
        missing+=(busybox-static)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing packages (need root to install): ${missing[*]}"
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
            { apt-get update -q >/dev/null &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
            die "apt-get install ${missing[*]} failed"
    fi
}

# The real kernel package linux-image-amd64 depends on.
kernel_package() {
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
    if [ -z "$pkg" ]; then
        apt-get update -q >/dev/null 2>&1 || true
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
              sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
    fi
    [ -n "$pkg" ] || die "cannot resolve the kernel package of linux-image-amd64"
    echo "$pkg"
}

stamp_of() {
    # Anything that changes the outputs: the kernel package, this script.
    echo "$1 $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
}

outputs_ok() {
    [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/disk.ext4" ] &&
        [ -f "$out/.stamp" ]
}

print_result() {
    if [ "$print_env" = 1 ]; then
        printf 'KH_GUEST_KERNEL=%q\nKH_GUEST_INITRD=%q\nKH_GUEST_DISK=%q\n' \
            "$out/vmlinuz" "$out/initrd.img" "$out/disk.ext4" >&3
    else
        printf 'kernel: %s\ninitrd: %s\ndisk:   %s\n' \
            "$out/vmlinuz" "$out/initrd.img" "$out/disk.ext4" >&3
    fi
}

# Fast path: built already by this script version (no apt-cache call, so
# it works offline and takes milliseconds).
if [ "$force" = 0 ] && outputs_ok && [ "$(cut -d' ' -f2 "$out/.stamp")" = \
     "$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)" ]; then
    print_result
    exit 0
fi

need_tools
mkdir -p "$out/cache"
pkg=$(kernel_package)
kver=${pkg#linux-image-}
log "kernel package $pkg"

deb=$(ls "$out/cache/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    rm -f "$out/cache/"linux-image-*.deb
    (cd "$out/cache" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    deb=$(ls "$out/cache/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
    [ -n "$deb" ] || die "apt-get download $pkg failed"
fi

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/pkg"
moddir="$work/pkg/lib/modules/$kver"
[ -d "$moddir" ] || die "no lib/modules/$kver in $deb"
[ -f "$work/pkg/boot/vmlinuz-$kver" ] || die "no boot/vmlinuz-$kver in $deb"

# name -> file, with '-' and '_' equivalent as modprobe does.
declare -A modfile=()
while IFS= read -r -d '' f; do
    b=$(basename "$f")
    b=${b%%.ko*}
    modfile[${b//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko*' -print0)

modinfo_depends() {
    # The .modinfo strings are NUL-separated key=value pairs.
    local f=$1 data
    case "$f" in
    *.ko.xz) data=$(xz -dc "$f" | tr '\0' '\n') ;;
    *.ko.zst) data=$(zstd -qdc "$f" | tr '\0' '\n') ;;
    *.ko.gz) data=$(gzip -dc "$f" | tr '\0' '\n') ;;
    *) data=$(tr '\0' '\n' <"$f") ;;
    esac
    grep -a -m1 '^depends=' <<<"$data" | cut -d= -f2 | tr ',' ' ' || true
}

declare -A seen=()
order=()
visit() {
    local m=${1//-/_} d
    [ -n "${seen[$m]:-}" ] && return 0
    seen[$m]=1
    [ -n "${modfile[$m]:-}" ] || die "module $m not found in $pkg"
    for d in $(modinfo_depends "${modfile[$m]}"); do visit "$d"; done
    order+=("$m")
}
for m in "${wanted_modules[@]}"; do visit "$m"; done
log "modules: ${order[*]}"

# The initramfs.
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
cp "$(command -v busybox)" "$root/bin/busybox"
for m in "${order[@]}"; do
    f=${modfile[$m]}
    case "$f" in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
done
printf '%s\n' "${order[@]}" >"$root/lib/modules/load-order"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# kvmhost test guest init (generated by tests/guest/build.sh)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko 2>/dev/null || echo "kvmhost-guest: insmod $m failed"
done
echo KVMHOST-GUEST-READY
# A virtio block device (id 0x0002) shows up as /dev/vda once probed.
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat $d/device 2>/dev/null)" = 0x0002 ] || continue
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do usleep 20000; i=$((i + 1)); done
    break
done
if [ -b /dev/vda ] && mount -t ext4 -o ro /dev/vda /mnt 2>/dev/null; then
    echo "KVMHOST-DISK: $(cat /mnt/marker.txt 2>/dev/null)"
fi
# kvmhost.net=dhcp on the kernel command line: bring eth0 up over DHCP
# (busybox udhcpc) and print the address it got.
case " $(cat /proc/cmdline) " in
*" kvmhost.net=dhcp "*)
    mkdir -p /usr/share/udhcpc
    cat >/usr/share/udhcpc/default.script <<'SCRIPT'
#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "$ip" >/tmp/net-ip ;;
esac
exit 0
SCRIPT
    chmod 755 /usr/share/udhcpc/default.script
    ip link set lo up
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 500 ]; do usleep 20000; i=$((i + 1)); done
    ip link set eth0 up
    if udhcpc -i eth0 -q -n -t 15 -T 3 -s /usr/share/udhcpc/default.script >/dev/null 2>&1; then
        echo "KVMHOST-NET: $(cat /tmp/net-ip)"
    else
        echo "KVMHOST-NET: none"
    fi ;;
esac
echo "kvmhost test guest: shell on the console; 'poweroff -f' to stop"
while true; do
    setsid cttyhack sh -l
done
EOF
chmod 755 "$root/init"

log "writing initrd.img"
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9n >"$work/initrd.img"

log "writing disk.ext4"
mkdir -p "$work/disk"
printf 'kvmhost-disk-ok\n' >"$work/disk/marker.txt"
rm -f "$work/disk.ext4"
mke2fs -q -F -t ext4 -L kvmhost-test -E root_owner=0:0 -d "$work/disk" \
    "$work/disk.ext4" 16M >/dev/null

cp "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinuz"
chmod 644 "$work/vmlinuz" "$work/initrd.img" "$work/disk.ext4"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initrd.img" "$out/initrd.img"
mv -f "$work/disk.ext4" "$out/disk.ext4"
stamp_of "$pkg" >"$out/.stamp"
print_result
