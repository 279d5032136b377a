#!/usr/bin/env bash
# Install what kvmhost needs to build, run and test on Debian 12, and the
# unprivileged user QEMU runs as. Idempotent; apt-get runs only when a
# package is missing.
set -euo pipefail

BUILD_PKGS=(gcc libarchive-dev libxml2-dev clang meson ninja-build pkg-config
  libjansson-dev libuv1-dev libsqlite3-dev libmicrohttpd-dev libcurl4-openssl-dev
  libwslay-dev liblzma-dev zlib1g-dev libzstd-dev libssl-dev libseccomp-dev
  libmnl-dev libnftables-dev libgnutls28-dev libsodium-dev libcjose-dev
  libnbd-dev  # backups: the NBD client (src/backup/nbd.c)
  libbpf-dev)  # cgroup v2 device programs (src/host/devbpf.c)
RUN_PKGS=(qemu-system-x86 qemu-utils sqlite3 dnsmasq-base etcd-server
  e2fsprogs util-linux  # debugfs, partx: template create --reset-identity
  coreutils  # qemu-utils: qemu-nbd, qemu-io (backups and their tests); sleep: the backup keeper
  ovmf swtpm swtpm-tools genisoimage)  # UEFI, TPM 2.0, cloud-init cidata (docs/guests.md)
TEST_PKGS=(busybox-static cpio e2fsprogs xz-utils zstd python3 python3-pytest python3-websocket
  python3-pytest-xdist python3-jsonschema python3-cryptography
  prometheus
  clang-tidy cppcheck libclang-rt-14-dev iproute2 nftables
  etcd-server etcd-client
  mmdebstrap fdisk dosfstools mtools xorriso openssh-client  # tests/guest/build-debian.sh, test_guests.py
  # bench/libvirt_peer.py: the libvirt column of bench/migrate.py, backup.py,
  # guest_boot.py (private libvirtds; the system's libvirtd is not used)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients python3-libvirt)

want=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}")
[ "${1:-}" = "--test" ] && want+=("${TEST_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "kvmhost: these packages are missing: ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "kvmhost: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The web console's browser tests (scripts/test.sh): Chromium, and Node.js
# with npm for the build. Not fatal here: without them the browser stage
# says so and fails on its own.
if [ "${1:-}" = "--test" ] && [ "$(id -u)" -eq 0 ]; then
  web=()
  dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed" || web+=(chromium)
  command -v npm >/dev/null || web+=(nodejs npm)
  if [ ${#web[@]} -gt 0 ]; then
    echo "kvmhost: installing ${web[*]} (browser tests)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends "${web[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${web[@]}" >/dev/null; }; } ||
      echo "kvmhost: warning: cannot install ${web[*]}; the browser tests will fail" >&2
  fi
fi

# QEMU never runs as root: each VM's QEMU gets a uid of its own from
# kvmhostd's --qemu-uid-range (no passwd entry needed); this system user is
# for --qemu-user (every QEMU as one user, the compatibility mode).
if [ "$(id -u)" -eq 0 ] && ! getent passwd kvmhost-qemu >/dev/null; then
  getent group kvm >/dev/null || groupadd --system kvm
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --groups kvm kvmhost-qemu
  echo "kvmhost: created system user kvmhost-qemu"
fi
