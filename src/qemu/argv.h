/* argv.h - the QEMU command line, built by a pure function.
 *
 * kh_qemu_argv_build() turns a VM spec, the host's QEMU capabilities and
 * the runtime environment (fds and paths the process runner prepared) into
 * an argv. It touches nothing outside its arguments, so it is golden-tested:
 * tests/unit/argv/NAME.json -> NAME.args (or NAME.err for rejected specs).
 *
 * Rules it keeps:
 *  - `-nodefaults -no-user-config`, `-S` (the driver sends `cont` after
 *    setup), QMP on an inherited listening socket, `-sandbox` with every
 *    deny option, JSON `-blockdev` and JSON `-device`.
 *  - Any user string that reaches a QEMU option goes through JSON
 *    encoding (blockdev/device) or kh_qemu_opt_escape() (comma doubling);
 *    strings that cannot be made safe are rejected with KH_E_INVALID.
 */
#ifndef KH_QEMU_ARGV_H
#define KH_QEMU_ARGV_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "conf/vm_spec.h"
#include "util/err.h"
#include "util/strv.h"

typedef enum kh_accel {
    KH_ACCEL_TCG,
    KH_ACCEL_KVM,
} kh_accel;

/* QEMU's name for the accelerator ("tcg", "kvm"), as in -accel. */
const char *kh_accel_name(kh_accel a);

/* The guest's CPU (-cpu). KVM: the host's. TCG: x86-64-v2 with AES (as
 * Proxmox's default model x86-64-v2-AES: what RHEL 9 needs, the same on
 * every host of a cluster); under `max` the Debian guest booted to SSH
 * 10-20 s slower (not for its AVX or 5-level paging: max without them was
 * as slow; docs/guests.md "The guest's CPU under TCG"). */
#define KH_CPU_TCG "qemu64,+aes,+cx16,+lahf_lm,+pclmulqdq,+popcnt,+sse4.1,+sse4.2,+ssse3"
const char *kh_qemu_cpu_default(kh_accel a);
/* The -cpu a QEMU gets: cpu (a migration source's) if given, else the
 * spec's cpu_model, else the default: the one rule, for the builder and for
 * what boot.json records. */
const char *kh_qemu_cpu_of(const kh_vm_spec *spec, const char *cpu, kh_accel a);
/* The -cpu of a QEMU whose start did not record one (boot.json before
 * "cpu"): what kvmhost used then ("host", TCG "max"). */
const char *kh_qemu_cpu_unrecorded(kh_accel a);

typedef struct kh_qemu_caps {
    unsigned version;   /* major * 10000 + minor * 100 + micro, e.g. 70202 */
    bool sandbox;       /* -sandbox (seccomp) compiled in */
    bool io_uring;      /* aio=io_uring supported by the file driver */
} kh_qemu_caps;

typedef struct kh_argv_env {
    const char *binary;     /* argv[0], e.g. "/usr/bin/qemu-system-x86_64" */
    const char *vm_id;      /* the VM's uuid: -uuid, and the -name guest= */
    kh_accel accel;
    const char *cpu;        /* -cpu (NULL: the spec's cpu_model, else kh_qemu_cpu_default) */
    /* Host TSC frequency in kHz, 0 when unknown. microvm has no HPET or PM
     * timer; under TCG the kernel's PIT calibration fails on a busy host and
     * the boot stalls, so the builder tells the kernel (tsc_early_khz). */
    unsigned tsc_khz;
    int qmp_fd;             /* listening unix socket QEMU inherits for QMP */
    int serial_fd;          /* listening unix socket for the serial chardev (-1: none) */
    const char *pidfile;    /* -pidfile */
    const char *vnc_socket; /* path for -vnc unix: when graphics is vnc */
    /* Files QEMU reads: the kernel/initrd it should load (e.g.
     * "/proc/self/fd/5" or a cached PVH vmlinux), NULL when not booting a
     * kernel. */
    const char *kernel_file;
    const char *initrd_file;
    /* A file holding the serial port for SeaBIOS's serial console (2 bytes,
     * 0x3f8 little-endian, e.g. "/proc/self/fd/5"); used for a q35 VM with
     * a serial console that boots from disk. NULL: none. */
    const char *firmware_serial_file;
    /* One per disk: an inherited fd to put in an fd set (-add-fd), or -1 to
     * let QEMU open the spec's path. NULL: all -1. QEMU picks an fd-set fd
     * by access mode, so open it O_RDONLY for a read-only disk and O_RDWR
     * otherwise. */
    const int *disk_fds;
    /* Per disk, NULL or one fd per backing layer (disks[i].backing[j]),
     * same rules as disk_fds: -1 lets QEMU open the layer's path. NULL:
     * all -1. */
    const int *const *backing_fds;
    /* Q = kh_qemu_nic_queues(spec) per NIC, NIC i's at [i*Q .. i*Q+Q-1]:
     * the inherited tap fds (opened with IFF_VNET_HDR, and
     * IFF_MULTI_QUEUE when Q > 1), and as many /dev/vhost-net fds or -1
     * (all of a NIC's) for no vhost. Required when the spec has NICs;
     * every NIC must have its mac assigned. */
    const int *nic_fds;
    const int *nic_vhost_fds;
    /* Per disk, an inherited fd holding the passphrase of an encrypted disk
     * (-1 for the others); NULL: none. Read by a secret object from
     * /proc/self/fd/N: the key is never in the argv. */
    const int *secret_fds;
    /* Per disk, NULL or one fd per backing layer holding the passphrase of
     * an encrypted layer (-1 for the others). NULL: none. */
    const int *const *backing_secret_fds;
    /* The target of a live migration: `-incoming defer` (the guest state
     * comes later through migrate-incoming; instance/migrate.c). */
    bool incoming;
    /* Live-restore (backup/restore.c): per disk, an inherited fd of a
     * connected socket to a read-only NBD server, or -1. A qcow2 disk
     * without backing layers then gets that export as its backing (node
     * "disk<i>-lr", which block-stream empties into the disk). NULL: none. */
    const int *nbd_backing_fds;
    /* firmware "uefi" (qemu/firmware.h): the firmware code QEMU reads by
     * path (read-only), an inherited fd of the VM's own VARS copy
     * (O_RDWR), and whether the firmware needs SMM (machine smm=on). */
    const char *fw_code;
    int fw_vars_fd;
    bool fw_smm;
    /* cloud_init: the cidata ISO (in the run dir, QEMU opens it by path so
     * that an edit can swap the medium); NULL: none. */
    const char *cidata_path;
    /* tpm: a connected socket to the VM's swtpm control channel. */
    int tpm_fd;
    /* An inherited listening socket for the guest agent's virtio-serial
     * channel org.qemu.guest_agent.0 (q35); < 3: no channel. */
    int qga_fd;
} kh_argv_env;

/* The QEMU device id of the cidata CD-ROM (blockdev-change-medium). */
#define KH_QEMU_CIDATA_DEV "cidata-dev"

/* Queues per NIC: min(vcpus, KH_QEMU_NIC_QUEUES_MAX) on q35 (virtio-net
 * multiqueue with MSI-X), 1 on microvm. */
#define KH_QEMU_NIC_QUEUES_MAX 8
unsigned kh_qemu_nic_queues(const kh_vm_spec *spec);

/* Empty PCIe root ports every q35 VM has for hot-plug (disks, NICs):
 * ids "hp0".."hp7", slot 0x1c of pcie.0. A hot-plugged device names one of
 * them as its "bus"; which are free is QEMU's to say (query-pci). */
#define KH_QEMU_HOTPLUG_PORTS 8
void kh_qemu_hotplug_port_id(unsigned i, char *buf, size_t size);

/* The -blockdev nodes of one image layer, as JSON objects (new references),
 * with the disk performance defaults (see argv.c): direct (the file was
 * opened with O_DIRECT, its filesystem takes it) gives cache.direct=true,
 * i.e. cache=none; aio is io_uring when QEMU has it, else native with
 * direct, else threads; writable format nodes get discard=unmap and
 * detect-zeroes=unmap.
 * shared with disk hot-plug (instance/disk.c, blockdev-add) so that a hot-plugged
 * disk gets exactly the options of a cold-plugged one. The protocol node:
 * driver "file" with the cache and aio defaults and, when writable,
 * discard=unmap. The format node on top of file_node: backing is the node
 * below (NULL: none; qcow2 always names it, so QEMU never opens a backing
 * file named in the image); key_secret (qcow2 only, NULL: not encrypted) the
 * secret object holding its LUKS passphrase. */
json_t *kh_qemu_blockdev_file(const kh_qemu_caps *caps, const char *node_name,
                              const char *filename, bool readonly, bool direct);
json_t *kh_qemu_blockdev_format(kh_disk_format format, const char *node_name,
                                const char *file_node, bool readonly, const char *backing,
                                const char *key_secret);

/* Build the argv. Returns NULL with err set when the spec cannot be
 * expressed safely (KH_E_INVALID) or the host cannot run it
 * (KH_E_UNSUPPORTED, e.g. microvm without a kernel). */
kh_strv *kh_qemu_argv_build(const kh_vm_spec *spec, const kh_qemu_caps *caps,
                            const kh_argv_env *env, kh_err *err);

/* QEMU option-value escaping: ',' doubled. Returns a new string. */
char *kh_qemu_opt_escape(const char *s);

#endif
