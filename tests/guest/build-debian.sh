#!/bin/bash
# tests/guest/build-debian.sh - build the real Debian 12 guest disk used by the
# distribution-guest tests (cloud-init, boot from disk, UEFI + Secure Boot,
# TPM, guest agent).
#
# From Debian's packages only (mmdebstrap from the mirror apt uses), as root,
# without booting anything and without partition devices (no udev needed):
#   1. mmdebstrap a bookworm tree with systemd, linux-image-amd64, grub
#      (i386-pc and x86_64-efi, the signed EFI grub), shim-signed, cloud-init,
#      openssh-server, qemu-guest-agent, mokutil, tpm2-tools
#   2. the root partition is an ext4 filled from the tree (mkfs.ext4 -d), the
#      ESP a FAT filled with mtools: /EFI/BOOT/BOOTX64.EFI = the signed shim,
#      grubx64.efi = Debian's signed grub, a grub.cfg pointing at the root
#   3. the GPT disk (BIOS boot 1 MiB + ESP 63 MiB + root) is assembled with
#      sfdisk and dd; GRUB's boot.img goes into the MBR and a core.img (made
#      with the tree's grub-mkimage) into the BIOS boot partition, patched as
#      grub-bios-setup would
#   4. converted to qcow2
# Outputs in tests/guest/out/ (git-ignored), cached by this script's hash:
#   debian.qcow2            boots under SeaBIOS, UEFI, and UEFI + Secure Boot
#   debian-unsigned.qcow2   an overlay of debian.qcow2 whose ESP loader is an
#                           unsigned grub (Secure Boot firmware must refuse it)
#   debian.env              KH_DEBIAN_DISK=... KH_DEBIAN_UNSIGNED=...
# The guest: hostname "debian", serial console ttyS0, cloud-init NoCloud
# (datasource_list NoCloud, None), systemd-networkd for cloud-init's network.
#
# Usage: build-debian.sh [--force] [--print-env]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
force=0
print_env=0
for arg in "$@"; do
    case "$arg" in
    --force) force=1 ;;
    --print-env) print_env=1 ;;
    -h | --help) sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-debian.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
if [ "$print_env" = 1 ]; then exec 3>&1 1>&2; else exec 3>&1; fi
log() { echo "debian: $*"; }
die() { echo "debian: error: $*" >&2; exit 1; }

hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
disk="$out/debian-$hash.qcow2"
unsigned="$out/debian-unsigned-$hash.qcow2"
emit() {
    ln -sfn "$(basename "$disk")" "$out/debian.qcow2"
    ln -sfn "$(basename "$unsigned")" "$out/debian-unsigned.qcow2"
    printf 'KH_DEBIAN_DISK=%s\nKH_DEBIAN_UNSIGNED=%s\n' "$disk" "$unsigned" > "$out/debian.env"
    cat "$out/debian.env" >&3
}
if [ "$force" = 0 ] && [ -s "$disk" ] && [ -s "$unsigned" ]; then emit; exit 0; fi

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap as root, mkfs -d keeps owners)"
missing=()
for t in mmdebstrap:mmdebstrap sfdisk:fdisk mkfs.fat:dosfstools mcopy:mtools \
         mkfs.ext4:e2fsprogs qemu-img:qemu-utils qemu-io:qemu-utils; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$out"
work=$(mktemp -d "$out/debian-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

# Fixed identities: the grub configs name the root by UUID.
root_uuid=5d1c0c3e-6b8e-4b55-9a4f-1d0e6b1a2c3d
esp_id=4B484531        # FAT volume id, shown as 4B48-4531
mirror=http://deb.debian.org/debian
secmirror=http://deb.debian.org/debian-security

pkgs=systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,
pkgs+=grub-pc-bin,grub-efi-amd64-bin,grub-efi-amd64-signed,shim-signed,mokutil,
pkgs+=cloud-init,openssh-server,qemu-guest-agent,iproute2,netbase,
pkgs+=sudo,less,ca-certificates,e2fsprogs,dosfstools,tpm2-tools
# The mmdebstrap tree is the slow part (minutes): cached on its own, keyed
# by what goes into it, so that changes to the steps below reuse it.
rootkey=$(printf '%s\n' "$pkgs" "$mirror" "$secmirror" v1 | sha256sum | cut -c1-16)
roottar="$out/cache/debian-root-$rootkey.tar"
mkdir -p "$out/cache"
if [ ! -s "$roottar" ]; then
    log "mmdebstrap bookworm (several minutes)"
    rm -f "$out"/cache/debian-root-*.tar
    mmdebstrap --variant=minbase --format=tar --include="$pkgs" \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --essential-hook='echo "grub-pc grub-pc/install_devices_empty boolean true" | chroot "$1" debconf-set-selections' \
        bookworm "$roottar.tmp" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $secmirror bookworm-security main" >&2
    mv "$roottar.tmp" "$roottar"
fi
mkdir -p "$root"
tar -C "$root" --numeric-owner -xpf "$roottar"

kver=$(ls "$root/lib/modules" | sort -V | tail -n1)
[ -n "$kver" ] && [ -s "$root/boot/vmlinuz-$kver" ] || die "no kernel in the tree"
log "kernel $kver"

# A small initramfs (the default takes every module: 36 MB that SeaBIOS and
# GRUB read and the kernel unpacks, slow under TCG): what a VM's root needs.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
# ahci, sr_mod and isofs too: the cidata CD-ROM is on q35's AHCI, and
# cloud-init-local waits for it (udev would load them late in the boot).
printf '%s\n' virtio_pci virtio_blk virtio_scsi virtio_net ext4 crc32c_generic \
    ahci sr_mod cdrom isofs virtio_console > "$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k "$kver" >&2
echo debian > "$root/etc/hostname"
# The ESP is mounted when used (an automount): no boot waits for its device.
cat > "$root/etc/fstab" <<EOF
UUID=$root_uuid / ext4 errors=remount-ro 0 1
UUID=${esp_id:0:4}-${esp_id:4:4} /boot/efi vfat umask=0077,nofail,noauto,x-systemd.automount 0 0
EOF
mkdir -p "$root/boot/efi"
cat > "$root/etc/cloud/cloud.cfg.d/90-kvmhost.cfg" <<'EOF'
# kvmhost test image: NoCloud only (no network metadata probing), one
# host key type (RSA key generation takes long under TCG), and the modules
# that what kvmhost renders uses (hostname, users and keys, write_files,
# bootcmd, packages, runcmd, disk growth); the others (snap, landscape,
# puppet, chef, locale, ntp...) only cost Python imports at every boot.
datasource_list: [ NoCloud, None ]
ssh_genkeytypes: [ ed25519 ]
# the hostname resolves (127.0.1.1): sudo does not wait for DNS at each call
manage_etc_hosts: localhost
cloud_init_modules:
 - migrator
 - seed_random
 - bootcmd
 - write-files
 - growpart
 - resizefs
 - set_hostname
 - update_hostname
 - update_etc_hosts
 - users-groups
 - ssh
cloud_config_modules:
 - set-passwords
 - apt-configure
 - runcmd
cloud_final_modules:
 - package-update-upgrade-install
 - write-files-deferred
 - scripts-vendor
 - scripts-per-once
 - scripts-per-boot
 - scripts-per-instance
 - scripts-user
 - final-message
 - power-state-change
EOF
# Under TCG every second counts: no timers that wake apt or fsck jobs, no
# getty on a VGA console the VMs do not have, the journal in memory.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
         man-db.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
         e2scrub_reap.service getty@tty1.service systemd-pstore.service \
         systemd-binfmt.service proc-sys-fs-binfmt_misc.automount; do
    chroot "$root" systemctl mask "$u" >/dev/null 2>&1 || true
done
# No KVM inside (TCG's "max" CPU announces SVM), no frequency drivers, no
# wireless stack (networkd's nl80211 probe loads cfg80211: minutes under TCG).
printf 'blacklist %s\n' kvm kvm_amd kvm_intel powernow_k8 pcspkr cfg80211 \
    > "$root/etc/modprobe.d/kvmhost.conf"
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/kvmhost.conf"
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "$root" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true
# A root password for debugging on the serial console only (ssh refuses it).
chroot "$root" sh -c 'echo root:kvmhost | chpasswd'
rm -f "$root"/etc/ssh/ssh_host_*_key* # cloud-init (or sshd-keygen) makes them per VM
chroot "$root" sh -c 'command -v ssh-keygen >/dev/null' && \
    mkdir -p "$root/etc/systemd/system/ssh.service.d" && cat > "$root/etc/systemd/system/ssh.service.d/keygen.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
EOF
mkdir -p "$root/etc/ssh/sshd_config.d"
echo 'HostKey /etc/ssh/ssh_host_ed25519_key' > "$root/etc/ssh/sshd_config.d/kvmhost.conf"

# mitigations=off: TCG runs no other tenant, and the mitigations cost it
# much; quiet keeps the kernel's messages off the (slow) serial console,
# systemd's unit lines stay for the tests' console tails; no_timer_check,
# as cloud images have it: a vCPU starved on a busy host fails the kernel's
# IO-APIC timer check ("Kernel panic - not syncing: IO-APIC + timer doesn't
# work!", seen here under load).
cmdline="root=UUID=$root_uuid ro console=ttyS0,115200n8 net.ifnames=0 mitigations=off no_timer_check quiet systemd.show_status=1"
mkdir -p "$root/boot/grub"
cat > "$root/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
search --no-floppy --fs-uuid --set=root $root_uuid
menuentry 'Debian GNU/Linux 12' {
    linux /boot/vmlinuz-$kver $cmdline
    initrd /boot/initrd.img-$kver
}
EOF
cp -a "$root/usr/lib/grub/i386-pc" "$root/boot/grub/"

# BIOS: core.img with an embedded config that finds the root by UUID.
cat > "$root/tmp/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
EOF
chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg -p /boot/grub \
    biosdisk part_gpt part_msdos ext2 search search_fs_uuid normal configfile linux echo test
cp "$root/tmp/core.img" "$work/core.img"
cp "$root/usr/lib/grub/i386-pc/boot.img" "$work/boot.img"
# EFI, unsigned: a grub of our own (Secure Boot must refuse it).
chroot "$root" grub-mkimage -O x86_64-efi -o /tmp/grubx64-unsigned.efi -c /tmp/early.cfg -p /boot/grub \
    part_gpt part_msdos ext2 fat search search_fs_uuid normal configfile linux echo test
cp "$root/tmp/grubx64-unsigned.efi" "$work/"
rm -f "$root/tmp/core.img" "$root/tmp/early.cfg" "$root/tmp/grubx64-unsigned.efi"

# The ESP: shim (signed by Microsoft) loads grubx64.efi (signed by Debian)
# from its own directory; the signed grub reads $prefix=/EFI/debian.
espcfg="$work/esp-grub.cfg"
cat > "$espcfg" <<EOF
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
configfile \$prefix/grub.cfg
EOF
make_esp() { # make_esp IMG BOOTX64 GRUBX64
    rm -f "$1"
    mkfs.fat -F 32 -i "$esp_id" -n ESP -C "$1" $((63 * 1024)) >/dev/null
    export MTOOLS_SKIP_CHECK=1
    mmd -i "$1" ::/EFI ::/EFI/BOOT ::/EFI/debian
    mcopy -i "$1" "$2" ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$1" "$3" ::/EFI/BOOT/grubx64.efi
    mcopy -i "$1" "$espcfg" ::/EFI/BOOT/grub.cfg
    mcopy -i "$1" "$2" ::/EFI/debian/shimx64.efi
    mcopy -i "$1" "$3" ::/EFI/debian/grubx64.efi
    mcopy -i "$1" "$espcfg" ::/EFI/debian/grub.cfg
    if [ -s "$root/usr/lib/shim/mmx64.efi.signed" ]; then
        mcopy -i "$1" "$root/usr/lib/shim/mmx64.efi.signed" ::/EFI/BOOT/mmx64.efi
    fi
}
shim="$root/usr/lib/shim/shimx64.efi.signed"
sgrub="$root/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
[ -s "$shim" ] && [ -s "$sgrub" ] || die "signed shim or grub missing from the tree"
make_esp "$work/esp.img" "$shim" "$sgrub"
# The unsigned variant: the firmware loads our unsigned grub directly.
make_esp "$work/esp-unsigned.img" "$work/grubx64-unsigned.efi" "$work/grubx64-unsigned.efi"

# Root filesystem from the tree (2.5 GiB, sparse).
log "root filesystem"
mkfs.ext4 -q -F -L root -U "$root_uuid" -d "$root" "$work/root.img" 2500M

# The disk: 1 MiB gap, BIOS boot (1 MiB), ESP (63 MiB), root.
log "disk"
raw="$work/disk.raw"
truncate -s $((2 + 63 + 2500 + 1))M "$raw"
sfdisk -q "$raw" <<EOF
label: gpt
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios
start=4096, size=$((63 * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$((4096 + 63 * 2048)), size=$((2500 * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
EOF
dd if="$work/esp.img" of="$raw" bs=1M seek=2 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$raw" bs=1M seek=65 conv=notrunc,sparse status=none
# GRUB for BIOS, as grub-bios-setup does it: boot.img in the MBR (the
# partition table kept) pointing at core.img at LBA 2048; core.img's first
# sector (diskboot) gets the block list of the rest of core.img.
python3 - "$raw" "$work/boot.img" "$work/core.img" <<'EOF'
import struct, sys
raw, boot, core = sys.argv[1:]
b = bytearray(open(boot, 'rb').read())
c = bytearray(open(core, 'rb').read())
if len(c) % 512:
    c += b'\0' * (512 - len(c) % 512)
start = 2048
nsec = len(c) // 512
if nsec > 2048:
    sys.exit('core.img does not fit the BIOS boot partition')
struct.pack_into('<Q', b, 0x5c, start)        # GRUB_BOOT_MACHINE_KERNEL_SECTOR
# diskboot: the first block list entry sits at the end of its sector.
struct.pack_into('<QHH', c, 0x200 - 12, start + 1, nsec - 1, 0x820)
with open(raw, 'r+b') as f:
    mbr = bytearray(f.read(512))
    mbr[:0x1b8] = b[:0x1b8]                   # code; keep disk id + table
    f.seek(0); f.write(mbr)
    f.seek(start * 512); f.write(c)
EOF

qemu-img convert -q -f raw -O qcow2 "$raw" "$work/disk.qcow2"
mv "$work/disk.qcow2" "$disk"
# The unsigned overlay: only the ESP differs.
qemu-img create -q -u -f qcow2 -F qcow2 -b "$(basename "$disk")" "$work/unsigned.qcow2" $((2 + 63 + 2500 + 1))M
mv "$work/unsigned.qcow2" "$unsigned"
qemu-io -f qcow2 -c "write -s $work/esp-unsigned.img $((2 * 1024 * 1024)) $((63 * 1024 * 1024))" \
    "$unsigned" >/dev/null
rm -f "$out"/debian-[0-9a-f]*.qcow2.old
for f in "$out"/debian-*.qcow2; do
    case "$f" in "$disk" | "$unsigned" | "$out/debian.qcow2" | "$out/debian-unsigned.qcow2") ;;
    *) rm -f "$f" ;; esac
done
log "built $disk"
emit
