/* argv.c - the QEMU command line, built by a pure function.
 *
 * Shape (QEMU 7.2 and newer, in this order; see tests/unit/argv/data for
 * complete examples):
 *
 *   BINARY -name guest=<vm id>,debug-threads=on -uuid <vm id> -S
 *   -msg timestamp=on -no-user-config -nodefaults -no-shutdown
 *   -machine q35,usb=off,vmport=off,dump-guest-core=off | microvm,dump-guest-core=off
 *   -accel kvm|tcg -cpu host|max -m size=<MiB>M -smp <vcpus>[,maxcpus=<max_vcpus>]
 *   -chardev socket,id=qmp,fd=<qmp_fd>,server=on,wait=off -mon chardev=qmp,mode=control
 *   [-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny]
 *   [-pidfile <path>]
 *   [-boot strict=on]                                  (q35)
 *   [-kernel <file> [-initrd <file>] [-append <cmdline>]]
 *   per disk i:
 *     [-object {"qom-type":"iothread","id":"iothread-disk<i>"}]      (q35)
 *     [-add-fd fd=<fd>,set=<i+1>,opaque=disk<i>]   (when the runner passed an fd)
 *     per backing layer j of a volume's chain, deepest first (read-only):
 *       [-add-fd fd=<fd>,set=<(i+1)*100+j+1>,opaque=disk<i>-b<j+1>]
 *       -blockdev {"driver":"file","node-name":"disk<i>-b<j+1>-file",...}
 *       [-object {"qom-type":"secret","id":"disk<i>-b<j+1>-secret",...}] (encrypted layer)
 *       -blockdev {"driver":"raw|qcow2","node-name":"disk<i>-b<j+1>",
 *                  "backing":"disk<i>-b<j+2>"|null,...}
 *     [-object {"qom-type":"secret","id":"disk<i>-secret","format":"raw",
 *               "file":"/proc/self/fd/<fd>"}]           (an encrypted disk)
 *     -blockdev {"driver":"file","node-name":"disk<i>-file","filename":...}
 *     -blockdev {"driver":"raw|qcow2","node-name":"disk<i>","file":"disk<i>-file",
 *                ["encrypt":{"format":"luks","key-secret":"disk<i>-secret"}]}
 *     -device {"driver":"virtio-blk-pci|virtio-blk-device","drive":"disk<i>",...}
 *   per NIC i (Q = kh_qemu_nic_queues(): min(vcpus, 8) on q35, 1 on microvm):
 *     -netdev {"type":"tap","id":"net<i>","fd":"<fd>","vhost":true|false[,"vhostfd":"<fd>"]}
 *             (Q > 1: "fds":"<fd>:<fd>..","vhostfds":"..": Q fds each; QEMU
 *             refuses "queues" beside "fds" and counts the fds instead)
 *     -device {"driver":"virtio-net-pci|virtio-net-device","netdev":"net<i>","mac":...,
 *              "id":"net<i>-dev"[,"bus":"pcie.0","addr":"0x14"+i]
 *              [,"mq":true,"vectors":2Q+2]}
 *   [-device {"driver":"virtio-balloon-pci","id":"balloon0","bus":"pcie.0",
 *             "addr":"0x3"}]                                          (q35)
 *   per hot-plug port i < KH_QEMU_HOTPLUG_PORTS:                     (q35)
 *     -device {"driver":"pcie-root-port","id":"hp<i>","bus":"pcie.0",
 *              "addr":"0x1c.<i>","chassis":i+1,"port":0x10+i,"io-reserve":0
 *              [,"multifunction":true]}
 *   [-chardev socket,id=serial0,fd=<serial_fd>,server=on,wait=off
 *    -device {"driver":"isa-serial","chardev":"serial0","id":"serial0-dev","index":0}
 *    [-fw_cfg name=etc/sercon-port,file=<firmware_serial_file>]]  (q35 without -kernel)
 *   -display none
 *   [-vnc vnc=unix:<socket, commas doubled>
 *    -device {"driver":"VGA","id":"video0","bus":"pcie.0","addr":"0x1"}]
 *   [-incoming defer]                     (the target of a live migration)
 * Real guest operating systems (q35):
 *   firmware uefi: -blockdev file+raw "fw-code" (read-only, by path) and
 *     -add-fd set=9001 + -blockdev file+raw "fw-vars" (the VM's VARS copy),
 *     placed before -machine, which gets pflash0=fw-code,pflash1=fw-vars
 *     [,smm=on]; secure_boot: -global driver=cfi.pflash01,property=secure,value=on
 *   cloud_init: -blockdev file+raw "cidata" (read-only, by path)
 *     -device {"driver":"ide-cd","bus":"ide.1","drive":"cidata","id":"cidata-dev"}
 *     on q35's built-in AHCI (no bootindex: the disk boots)
 *   tpm: -chardev socket,id=tpm0-chr,fd=<fd> (connected to swtpm)
 *     -tpmdev emulator,id=tpm0,chardev=tpm0-chr -device {"driver":"tpm-crb",...}
 *   guest agent: -chardev socket,id=qga0,fd=<fd>,server=on,wait=off
 *     -device virtio-serial-pci (pcie.0 slot 0x2)
 *     -device {"driver":"virtserialport","name":"org.qemu.guest_agent.0",...}
 *
 * Decisions:
 *  - The guest is named by its id (-name guest=<uuid>): the user's name
 *    never reaches QEMU, so it needs no escaping and renames cannot break a
 *    running process's identity.
 *  - User strings reach QEMU in exactly three ways: inside JSON built with
 *    jansson (disk paths: escaped by construction), as a whole plain option
 *    argument that QEMU does not split (-kernel, -append, -pidfile), or
 *    through kh_qemu_opt_escape() (the -vnc socket path, given with an
 *    explicit "vnc=" key so a '=' in the path cannot turn into a key).
 *    -initrd is plain for Linux/PVH kernels, but a multiboot kernel splits
 *    it at ',' (modules) and ' ' (arguments), so those are rejected there.
 *  - Disks are two JSON -blockdev nodes each: a "file" protocol node and a
 *    format node whose driver is the user's declared format. Performance
 *    defaults (kh_qemu_blockdev_file/format): cache=none (cache.direct=true,
 *    flushes honoured) when the disk's files take O_DIRECT (the runner
 *    opened them so: d->direct), else the host page cache; aio io_uring
 *    when QEMU has it, else native (needs O_DIRECT), else threads;
 *    discard=unmap and detect-zeroes=unmap for writable disks, so guest
 *    TRIM and zero writes free host space. qcow2 gets
 *    "backing":null: QEMU never opens a backing file named inside the
 *    image. A volume's chain comes from kvmhost's own records, one node
 *    per layer, and each qcow2 layer names the next node explicitly. Disks on q35 are virtio-blk-pci at fixed slots 0x4 + i of
 *    pcie.0 (stable guest topology), each with its own iothread; microvm
 *    uses virtio-blk-device on virtio-mmio (no PCI).
 *  - The serial port is an isa-serial device (COM1, index 0) on both
 *    machines: with -nodefaults microvm's built-in serial gets no chardev,
 *    while -device isa-serial works on its ISA bus (checked with a guest).
 *  - A q35 VM that boots from its disk (no -kernel) with a serial console
 *    gets SeaBIOS's serial console (sercon): the fw_cfg file
 *    "etc/sercon-port" holds the port (0x3f8, COM1, as 2 little-endian
 *    bytes), and SeaBIOS then writes its screen - its banner, "Booting
 *    from Hard Disk...", "No bootable device", a boot loader's text menu -
 *    to the serial port as well (with a VGA too). Chosen over sgabios
 *    (-device sga), which QEMU 8.2 dropped in favour of sercon. QEMU warns
 *    that the name lacks the "opt/" prefix (SeaBIOS reads this name only);
 *    the warning lands in qemu.log. A -kernel boot does not get it: the
 *    firmware only hands over to the kernel there.
 *  - -no-shutdown: a guest power-off leaves QEMU in the "shutdown" state,
 *    so the daemon reads the reason over QMP before it quits QEMU.
 *  - Anything that cannot be made safe is KH_E_INVALID, even if the spec
 *    validator should have caught it; microvm without a kernel or with
 *    graphics is KH_E_UNSUPPORTED; an env that does not match the spec
 *    (no serial socket for a serial console) is KH_E_INTERNAL.
 */
#include "qemu/argv.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "util/check.h"
#include "util/mem.h"

#define DISK_PCI_SLOT_BASE 0x4
#define VGA_PCI_SLOT 0x1
#define NIC_PCI_SLOT_BASE 0x14
#define BALLOON_PCI_SLOT 0x3
#define HOTPLUG_PCI_SLOT 0x1c
#define VSERIAL_PCI_SLOT 0x2
#define FW_VARS_FDSET 9001

const char *kh_accel_name(kh_accel a)
{
    switch (a) {
    case KH_ACCEL_TCG:
        return "tcg";
    case KH_ACCEL_KVM:
        return "kvm";
    }
    return "unknown";
}

const char *kh_qemu_cpu_default(kh_accel a)
{
    return a == KH_ACCEL_KVM ? "host" : KH_CPU_TCG;
}

const char *kh_qemu_cpu_of(const kh_vm_spec *spec, const char *cpu, kh_accel a)
{
    return cpu && *cpu ? cpu : spec->cpu_model ? spec->cpu_model : kh_qemu_cpu_default(a);
}

const char *kh_qemu_cpu_unrecorded(kh_accel a)
{
    return a == KH_ACCEL_KVM ? "host" : "max";
}

char *kh_qemu_opt_escape(const char *s)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',' ? 2 : 1;
    char *out = xmalloc(n), *q = out;
    for (const char *p = s; *p; p++) {
        *q++ = *p;
        if (*p == ',')
            *q++ = ',';
    }
    *q = '\0';
    return out;
}

/* The argv under construction, with a sticky error: once err is set every
 * add is a no-op and kh_qemu_argv_build() checks once at the end. */
typedef struct argv_builder {
    kh_strv *sv;
    kh_err *err;
} argv_builder;

static bool failed(const argv_builder *b)
{
    return kh_err_isset(b->err);
}

static void add(argv_builder *b, const char *s)
{
    if (!failed(b))
        kh_strv_add(b->sv, s);
}

static void add2(argv_builder *b, const char *opt, const char *val)
{
    add(b, opt);
    add(b, val);
}

static void addf(argv_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(argv_builder *b, const char *fmt, ...)
{
    if (failed(b))
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    kh_strv_add_steal(b->sv, s);
}

/* opt followed by obj as compact JSON with sorted keys (stable goldens).
 * Takes the reference to obj. */
static void add_json(argv_builder *b, const char *opt, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    if (!s) {
        kh_err_set(b->err, KH_E_INVALID, "cannot encode the %s argument", opt);
        return;
    }
    add(b, opt);
    add(b, s);
    free(s);
}

/* json_string() that records a failure (invalid UTF-8) in the builder. */
static json_t *jstr(argv_builder *b, const char *s, const char *what)
{
    json_t *j = json_string(s);
    if (!j)
        kh_err_set(b->err, KH_E_INVALID, "%s is not valid UTF-8", what);
    return j;
}

/* An inherited fd must be a real descriptor, not stdin/out/err (QEMU's
 * -add-fd refuses those too). */
static int check_fd(int fd, const char *what, kh_err *err)
{
    if (fd < 3) {
        kh_err_set(err, KH_E_INVALID, "%s: %d is not a usable inherited descriptor", what, fd);
        return -1;
    }
    return 0;
}

static int disk_fd(const kh_argv_env *env, size_t i)
{
    return env->disk_fds ? env->disk_fds[i] : -1;
}

static int backing_fd(const kh_argv_env *env, size_t i, size_t j)
{
    return env->backing_fds && env->backing_fds[i] ? env->backing_fds[i][j] : -1;
}

static const char *kernel_file(const kh_vm_spec *spec, const kh_argv_env *env)
{
    return env->kernel_file ? env->kernel_file : spec->kernel;
}

static const char *initrd_file(const kh_vm_spec *spec, const kh_argv_env *env)
{
    if (!spec->initrd)
        return NULL;
    return env->initrd_file ? env->initrd_file : spec->initrd;
}

/* Everything the builder relies on, checked again here: the spec may come
 * from an older store or a caller that skipped the validator. */
static int check_spec(const kh_vm_spec *spec, kh_err *err)
{
    if (spec->cpu_model && !kh_vm_cpu_model_valid(spec->cpu_model)) {
        kh_err_set(err, KH_E_INVALID, "cpu_model: not a model and feature list");
        return -1;
    }
    if (spec->machine != KH_MACHINE_Q35 && spec->machine != KH_MACHINE_MICROVM) {
        kh_err_set(err, KH_E_INVALID, "machine: unknown machine type %d", (int)spec->machine);
        return -1;
    }
    if (spec->graphics != KH_GRAPHICS_NONE && spec->graphics != KH_GRAPHICS_VNC) {
        kh_err_set(err, KH_E_INVALID, "graphics: unknown graphics type %d", (int)spec->graphics);
        return -1;
    }
    if (spec->vcpus < 1 || spec->vcpus > KH_VM_VCPUS_MAX) {
        kh_err_set(err, KH_E_INVALID, "vcpus: must be an integer between 1 and %d",
                   KH_VM_VCPUS_MAX);
        return -1;
    }
    if (spec->memory_mib < KH_VM_MEMORY_MIN_MIB || spec->memory_mib > KH_VM_MEMORY_MAX_MIB) {
        kh_err_set(err, KH_E_INVALID, "memory_mib: must be an integer between %llu and %llu",
                   KH_VM_MEMORY_MIN_MIB, KH_VM_MEMORY_MAX_MIB);
        return -1;
    }
    if (spec->kernel && kh_check_abs_path(spec->kernel, "boot.kernel", err) < 0)
        return -1;
    if (spec->initrd && kh_check_abs_path(spec->initrd, "boot.initrd", err) < 0)
        return -1;
    if (spec->cmdline && kh_check_text(spec->cmdline, KH_VM_CMDLINE_MAX, "boot.cmdline", err) < 0)
        return -1;
    if (!spec->kernel && (spec->initrd || spec->cmdline)) {
        kh_err_set(err, KH_E_INVALID, "boot.%s: requires boot.kernel",
                   spec->initrd ? "initrd" : "cmdline");
        return -1;
    }
    if (spec->ndisks > KH_VM_DISKS_MAX) {
        kh_err_set(err, KH_E_INVALID, "disks: at most %d disks (got %zu)", KH_VM_DISKS_MAX,
                   spec->ndisks);
        return -1;
    }
    for (size_t i = 0; i < spec->ndisks; i++) {
        const kh_disk_spec *d = &spec->disks[i];
        char what[48];
        snprintf(what, sizeof(what), "disks[%zu].path", i);
        if (kh_check_abs_path(d->path, what, err) < 0)
            return -1;
        if (d->format != KH_DISK_RAW && d->format != KH_DISK_QCOW2) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu].format: must be \"raw\" or \"qcow2\"", i);
            return -1;
        }
        if (d->encrypted && d->format != KH_DISK_QCOW2) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: only a qcow2 image is encrypted", i);
            return -1;
        }
        if (d->nbacking && d->format != KH_DISK_QCOW2) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: only a qcow2 image has backing layers", i);
            return -1;
        }
        if (d->nbacking > KH_DISK_BACKING_MAX) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: more than %d backing layers", i,
                       KH_DISK_BACKING_MAX);
            return -1;
        }
        for (size_t j = 0; j < d->nbacking; j++) {
            const kh_disk_layer *l = &d->backing[j];
            char lwhat[80];
            snprintf(lwhat, sizeof(lwhat), "disks[%zu].backing[%zu].path", i, j);
            if (kh_check_abs_path(l->path, lwhat, err) < 0)
                return -1;
            if ((l->format != KH_DISK_RAW && l->format != KH_DISK_QCOW2) ||
                (j + 1 < d->nbacking && l->format != KH_DISK_QCOW2) ||
                (l->encrypted && l->format != KH_DISK_QCOW2)) {
                kh_err_set(err, KH_E_INVALID, "disks[%zu].backing[%zu]: bad format", i, j);
                return -1;
            }
        }
    }
    if (spec->machine == KH_MACHINE_MICROVM) {
        if (!spec->kernel) {
            kh_err_set(err, KH_E_UNSUPPORTED,
                       "machine \"microvm\" cannot boot from a disk: it needs boot.kernel");
            return -1;
        }
        if (spec->graphics != KH_GRAPHICS_NONE) {
            kh_err_set(err, KH_E_UNSUPPORTED, "machine \"microvm\" has no graphics");
            return -1;
        }
    }
    if (spec->machine != KH_MACHINE_Q35 &&
        (spec->firmware != KH_FIRMWARE_BIOS || spec->tpm || spec->cloud_init)) {
        kh_err_set(err, KH_E_UNSUPPORTED, "machine \"microvm\" has no UEFI, TPM or CD-ROM");
        return -1;
    }
    if (spec->secure_boot && spec->firmware != KH_FIRMWARE_UEFI) {
        kh_err_set(err, KH_E_INVALID, "secure_boot: needs firmware \"uefi\"");
        return -1;
    }
    if (!spec->kernel && spec->ndisks == 0) {
        kh_err_set(err, KH_E_INVALID, "nothing to boot: no boot.kernel and no disks");
        return -1;
    }
    return 0;
}

static int check_env(const kh_vm_spec *spec, const kh_argv_env *env, kh_err *err)
{
    if (!env->binary) {
        kh_err_set(err, KH_E_INTERNAL, "qemu binary: no path given");
        return -1;
    }
    if (kh_check_abs_path(env->binary, "qemu binary", err) < 0)
        return -1;
    if (env->accel != KH_ACCEL_TCG && env->accel != KH_ACCEL_KVM) {
        kh_err_set(err, KH_E_INTERNAL, "unknown accelerator %d", (int)env->accel);
        return -1;
    }
    if (env->cpu && !kh_vm_cpu_model_valid(env->cpu)) {
        kh_err_set(err, KH_E_INVALID, "cpu model: not a model and feature list");
        return -1;
    }
    if (!kh_check_uuid(env->vm_id)) {
        kh_err_set(err, KH_E_INVALID, "vm id: must be a lowercase UUID");
        return -1;
    }
    if (check_fd(env->qmp_fd, "qmp socket", err) < 0)
        return -1;
    if (spec->serial && env->serial_fd < 0) {
        kh_err_set(err, KH_E_INTERNAL, "serial console requested but no serial socket given");
        return -1;
    }
    if (spec->serial && check_fd(env->serial_fd, "serial socket", err) < 0)
        return -1;
    if (env->pidfile && kh_check_abs_path(env->pidfile, "pidfile", err) < 0)
        return -1;
    if (spec->graphics == KH_GRAPHICS_VNC) {
        if (!env->vnc_socket) {
            kh_err_set(err, KH_E_INTERNAL, "vnc requested but no vnc socket path given");
            return -1;
        }
        if (kh_check_abs_path(env->vnc_socket, "vnc socket", err) < 0)
            return -1;
        if (strlen(env->vnc_socket) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
            kh_err_set(err, KH_E_INVALID, "vnc socket: path longer than a unix socket allows");
            return -1;
        }
    }
    if (spec->kernel) {
        const char *k = kernel_file(spec, env), *i = initrd_file(spec, env);
        if (kh_check_abs_path(k, "kernel file", err) < 0)
            return -1;
        if (i && kh_check_abs_path(i, "initrd file", err) < 0)
            return -1;
        if (i && strpbrk(i, ", ")) {
            /* a multiboot kernel would read "a,b" as two modules */
            kh_err_set(err, KH_E_INVALID, "initrd file: must not contain ',' or spaces");
            return -1;
        }
    }
    for (size_t i = 0; i < spec->ndisks; i++) {
        char what[48];
        snprintf(what, sizeof(what), "disks[%zu] fd", i);
        int fd = disk_fd(env, i);
        if (fd != -1 && check_fd(fd, what, err) < 0)
            return -1;
        if (spec->disks[i].encrypted) {
            snprintf(what, sizeof(what), "disks[%zu] secret fd", i);
            fd = env->secret_fds ? env->secret_fds[i] : -1;
            if (fd == -1) {
                kh_err_set(err, KH_E_INTERNAL, "disks[%zu]: encrypted, but no secret fd", i);
                return -1;
            }
            if (check_fd(fd, what, err) < 0)
                return -1;
        }
        for (size_t j = 0; j < spec->disks[i].nbacking; j++) {
            char lwhat[80];
            snprintf(lwhat, sizeof(lwhat), "disks[%zu].backing[%zu] fd", i, j);
            fd = backing_fd(env, i, j);
            if (fd != -1 && check_fd(fd, lwhat, err) < 0)
                return -1;
            if (spec->disks[i].backing[j].encrypted) {
                const int *sf = env->backing_secret_fds ? env->backing_secret_fds[i] : NULL;
                snprintf(lwhat, sizeof(lwhat), "disks[%zu].backing[%zu] secret fd", i, j);
                if (!sf || sf[j] == -1) {
                    kh_err_set(err, KH_E_INTERNAL, "%s: encrypted, but none given", lwhat);
                    return -1;
                }
                if (check_fd(sf[j], lwhat, err) < 0)
                    return -1;
            }
        }
    }
    if (spec->firmware == KH_FIRMWARE_UEFI) {
        if (!env->fw_code) {
            kh_err_set(err, KH_E_INTERNAL, "firmware uefi: no firmware code given");
            return -1;
        }
        if (kh_check_abs_path(env->fw_code, "firmware code", err) < 0 ||
            check_fd(env->fw_vars_fd, "firmware vars fd", err) < 0)
            return -1;
    }
    if (spec->cloud_init) {
        if (!env->cidata_path) {
            kh_err_set(err, KH_E_INTERNAL, "cloud_init: no cidata image given");
            return -1;
        }
        if (kh_check_abs_path(env->cidata_path, "cidata image", err) < 0)
            return -1;
    }
    if (spec->tpm && check_fd(env->tpm_fd, "tpm socket", err) < 0)
        return -1;
    if (env->qga_fd >= 3 && spec->machine != KH_MACHINE_Q35) {
        kh_err_set(err, KH_E_INTERNAL, "guest agent channel: q35 only");
        return -1;
    }
    if (spec->nnics > KH_VM_NICS_MAX) {
        kh_err_set(err, KH_E_INVALID, "nics: at most %d NICs (got %zu)", KH_VM_NICS_MAX,
                   spec->nnics);
        return -1;
    }
    if (spec->nnics && !env->nic_fds) {
        kh_err_set(err, KH_E_INTERNAL, "nics requested but no tap fds given");
        return -1;
    }
    unsigned queues = kh_qemu_nic_queues(spec);
    for (size_t i = 0; i < spec->nnics; i++) {
        char what[64];
        for (unsigned q = 0; q < queues; q++) {
            snprintf(what, sizeof(what), "nics[%zu] tap fd (queue %u)", i, q);
            if (check_fd(env->nic_fds[i * queues + q], what, err) < 0)
                return -1;
        }
        const int *vfd = env->nic_vhost_fds ? env->nic_vhost_fds + i * queues : NULL;
        for (unsigned q = 0; vfd && q < queues; q++) {
            snprintf(what, sizeof(what), "nics[%zu] vhost fd (queue %u)", i, q);
            if ((vfd[q] == -1) != (vfd[0] == -1)) {
                kh_err_set(err, KH_E_INTERNAL, "%s: vhost on some queues only", what);
                return -1;
            }
            if (vfd[q] != -1 && check_fd(vfd[q], what, err) < 0)
                return -1;
        }
        if (!spec->nics[i].mac) {
            kh_err_set(err, KH_E_INTERNAL, "nics[%zu]: no MAC address assigned", i);
            return -1;
        }
    }
    return 0;
}

static void add_machine(argv_builder *b, const kh_vm_spec *spec, const kh_argv_env *env)
{
    const char *ram = spec->hugepages ? ",memory-backend=ram0" : "";
    bool uefi = spec->machine == KH_MACHINE_Q35 && spec->firmware == KH_FIRMWARE_UEFI;
    add(b, "-machine");
    if (uefi)
        addf(b, "q35,usb=off,vmport=off,dump-guest-core=off,pflash0=fw-code,pflash1=fw-vars%s%s",
             env->fw_smm || spec->secure_boot ? ",smm=on" : "", ram);
    else if (spec->machine == KH_MACHINE_Q35)
        addf(b, "q35,usb=off,vmport=off,dump-guest-core=off%s", ram);
    else
        addf(b, "microvm,dump-guest-core=off%s", ram);
    if (spec->hugepages) {
        /* memfd: no hugetlbfs mount or path for QEMU to open; prealloc:
         * the pages are taken at start, not at the first guest fault. */
        add(b, "-object");
        addf(b, "{\"hugetlb\":true,\"hugetlbsize\":%u,\"id\":\"ram0\",\"prealloc\":true,"
             "\"qom-type\":\"memory-backend-memfd\",\"size\":%llu}",
             KH_VM_HUGEPAGE_KIB * 1024U, (unsigned long long)spec->memory_mib << 20);
    }
    add2(b, "-accel", kh_accel_name(env->accel));
    add2(b, "-cpu", kh_qemu_cpu_of(spec, env->cpu, env->accel));
    add(b, "-m");
    addf(b, "size=%lluM", (unsigned long long)spec->memory_mib);
    add(b, "-smp");
    if (spec->max_vcpus > spec->vcpus)
        addf(b, "%u,maxcpus=%u", spec->vcpus, spec->max_vcpus);
    else
        addf(b, "%u", spec->vcpus);
}

/* UEFI: the firmware code (read-only, by path: a distribution file) and
 * the VM's VARS copy (an inherited fd, writable), each a file node and a
 * raw node, before -machine names them as pflash0 and pflash1. */
static void add_firmware(argv_builder *b, const kh_vm_spec *spec, const kh_qemu_caps *caps,
                         const kh_argv_env *env)
{
    if (spec->machine != KH_MACHINE_Q35 || spec->firmware != KH_FIRMWARE_UEFI)
        return;
    json_t *code = jstr(b, env->fw_code, "firmware code");
    if (!code)
        return;
    json_t *file = kh_qemu_blockdev_file(caps, "fw-code-file", "", true, false);
    json_object_set_new(file, "filename", code);
    add_json(b, "-blockdev", file);
    add_json(b, "-blockdev", kh_qemu_blockdev_format(KH_DISK_RAW, "fw-code", "fw-code-file", true,
                                                     NULL, NULL));
    add(b, "-add-fd");
    addf(b, "fd=%d,set=%d,opaque=fw-vars", env->fw_vars_fd, FW_VARS_FDSET);
    char path[32];
    snprintf(path, sizeof(path), "/dev/fdset/%d", FW_VARS_FDSET);
    file = kh_qemu_blockdev_file(caps, "fw-vars-file", path, false, false);
    json_object_del(file, "discard");
    add_json(b, "-blockdev", file);
    json_t *vars = kh_qemu_blockdev_format(KH_DISK_RAW, "fw-vars", "fw-vars-file", false, NULL,
                                           NULL);
    json_object_del(vars, "discard");
    json_object_del(vars, "detect-zeroes");
    add_json(b, "-blockdev", vars);
    if (spec->secure_boot)
        add2(b, "-global", "driver=cfi.pflash01,property=secure,value=on");
}

/* cloud-init's NoCloud seed: a read-only CD-ROM on q35's AHCI. */
static void add_cidata(argv_builder *b, const kh_vm_spec *spec, const kh_qemu_caps *caps,
                       const kh_argv_env *env)
{
    if (!spec->cloud_init)
        return;
    json_t *path = jstr(b, env->cidata_path, "cidata image");
    if (!path)
        return;
    json_t *file = kh_qemu_blockdev_file(caps, "cidata-file", "", true, false);
    json_object_set_new(file, "filename", path);
    add_json(b, "-blockdev", file);
    add_json(b, "-blockdev", kh_qemu_blockdev_format(KH_DISK_RAW, "cidata", "cidata-file", true,
                                                     NULL, NULL));
    add_json(b, "-device", json_pack("{s:s, s:s, s:s, s:s}", "driver", "ide-cd", "bus", "ide.1",
                                     "drive", "cidata", "id", KH_QEMU_CIDATA_DEV));
}

/* The TPM: QEMU's emulator backend on a socket connected to swtpm's
 * control channel; a CRB interface (TPM 2.0 only, what Windows 11 and
 * systemd expect). */
static void add_tpm(argv_builder *b, const kh_vm_spec *spec, const kh_argv_env *env)
{
    if (!spec->tpm)
        return;
    add(b, "-chardev");
    addf(b, "socket,id=tpm0-chr,fd=%d", env->tpm_fd);
    add2(b, "-tpmdev", "emulator,id=tpm0,chardev=tpm0-chr");
    add_json(b, "-device", json_pack("{s:s, s:s, s:s}", "driver", "tpm-crb", "tpmdev", "tpm0",
                                     "id", "tpm0-dev"));
}

/* The guest agent's channel: virtio-serial port org.qemu.guest_agent.0 on
 * a listening socket the daemon connects to (qemu/qga.h). */
static void add_qga(argv_builder *b, const kh_argv_env *env)
{
    if (env->qga_fd < 3)
        return;
    add(b, "-chardev");
    addf(b, "socket,id=qga0,fd=%d,server=on,wait=off", env->qga_fd);
    char addr[16];
    snprintf(addr, sizeof(addr), "0x%x", VSERIAL_PCI_SLOT);
    add_json(b, "-device", json_pack("{s:s, s:s, s:s, s:s}", "driver", "virtio-serial-pci", "id",
                                     "vserial0", "bus", "pcie.0", "addr", addr));
    add_json(b, "-device", json_pack("{s:s, s:s, s:s, s:s}", "driver", "virtserialport", "bus",
                                     "vserial0.0", "chardev", "qga0", "name",
                                     "org.qemu.guest_agent.0"));
}

/* The protocol ("file") node of one image layer: through an fd set when
 * the runner passed an fd (-add-fd first), else by path. The caller adds
 * its own keys (discard) before emitting it. NULL when the path cannot be
 * expressed (the error is set on the builder). */
static json_t *file_node_new(argv_builder *b, const kh_qemu_caps *caps, int fd, size_t set,
                             const char *opaque, const char *node_name, const char *path,
                             const char *what, bool readonly, bool direct)
{
    char *fdset_path = NULL;
    if (fd >= 0) {
        add(b, "-add-fd");
        addf(b, "fd=%d,set=%zu,opaque=%s", fd, set, opaque);
        fdset_path = xasprintf("/dev/fdset/%zu", set);
    }
    json_t *filename = fdset_path ? json_string(fdset_path) : jstr(b, path, what);
    free(fdset_path);
    if (!filename)
        return NULL;
    json_t *file = kh_qemu_blockdev_file(caps, node_name, "", readonly, direct);
    json_object_set_new(file, "filename", filename);
    return file;
}

json_t *kh_qemu_blockdev_file(const kh_qemu_caps *caps, const char *node_name,
                              const char *filename, bool readonly, bool direct)
{
    json_t *file = json_object();
    json_object_set_new(file, "driver", json_string("file"));
    json_object_set_new(file, "node-name", json_string(node_name));
    json_object_set_new(file, "filename", json_string(filename));
    json_object_set_new(file, "read-only", json_boolean(readonly));
    json_object_set_new(file, "aio", json_string(caps->io_uring ? "io_uring"
                                                 : direct       ? "native"
                                                                : "threads"));
    json_t *cache = json_object();
    json_object_set_new(cache, "direct", json_boolean(direct));
    json_object_set_new(cache, "no-flush", json_false());
    json_object_set_new(file, "cache", cache);
    if (!readonly)
        json_object_set_new(file, "discard", json_string("unmap"));
    return file;
}

json_t *kh_qemu_blockdev_format(kh_disk_format format, const char *node_name,
                                const char *file_node, bool readonly, const char *backing,
                                const char *key_secret)
{
    json_t *fmt = json_object();
    json_object_set_new(fmt, "driver", json_string(kh_disk_format_name(format)));
    json_object_set_new(fmt, "node-name", json_string(node_name));
    json_object_set_new(fmt, "file", json_string(file_node));
    json_object_set_new(fmt, "read-only", json_boolean(readonly));
    if (!readonly) {
        json_object_set_new(fmt, "discard", json_string("unmap"));
        json_object_set_new(fmt, "detect-zeroes", json_string("unmap"));
    }
    if (format == KH_DISK_QCOW2) {
        json_object_set_new(fmt, "backing", backing ? json_string(backing) : json_null());
        if (key_secret)
            json_object_set_new(fmt, "encrypt", json_pack("{s:s, s:s}", "format", "luks",
                                                          "key-secret", key_secret));
    }
    return fmt;
}

/* One read-only backing layer: its file node and format node. */
static void add_backing_layer(argv_builder *b, const kh_qemu_caps *caps, const kh_argv_env *env,
                              const kh_disk_spec *d, size_t i, size_t j)
{
    const kh_disk_layer *l = &d->backing[j];
    char node[48], file_node[56], next[48], what[80];
    snprintf(node, sizeof(node), "disk%zu-b%zu", i, j + 1);
    snprintf(file_node, sizeof(file_node), "disk%zu-b%zu-file", i, j + 1);
    snprintf(next, sizeof(next), "disk%zu-b%zu", i, j + 2);
    snprintf(what, sizeof(what), "disks[%zu].backing[%zu].path", i, j);
    json_t *file = file_node_new(b, caps, backing_fd(env, i, j), (i + 1) * 100 + j + 1, node,
                                 file_node, l->path, what, true, d->direct);
    if (!file)
        return;
    add_json(b, "-blockdev", file);

    char secret_id[64];
    snprintf(secret_id, sizeof(secret_id), "%s-secret", node);
    if (l->encrypted) {
        json_t *sec = json_object();
        char *sfile = xasprintf("/proc/self/fd/%d", env->backing_secret_fds[i][j]);
        json_object_set_new(sec, "qom-type", json_string("secret"));
        json_object_set_new(sec, "id", json_string(secret_id));
        json_object_set_new(sec, "format", json_string("raw"));
        json_object_set_new(sec, "file", json_string(sfile));
        free(sfile);
        add_json(b, "-object", sec);
    }
    add_json(b, "-blockdev", kh_qemu_blockdev_format(l->format, node, file_node, true,
                                                     j + 1 < d->nbacking ? next : NULL,
                                                     l->encrypted ? secret_id : NULL));
}

static void add_disk(argv_builder *b, const kh_vm_spec *spec, const kh_qemu_caps *caps,
                     const kh_argv_env *env, size_t i)
{
    const kh_disk_spec *d = &spec->disks[i];
    bool q35 = spec->machine == KH_MACHINE_Q35;
    char node[32], file_node[40], iothread[48], dev_id[40], what[48];
    snprintf(node, sizeof(node), "disk%zu", i);
    snprintf(file_node, sizeof(file_node), "disk%zu-file", i);
    snprintf(iothread, sizeof(iothread), "iothread-disk%zu", i);
    snprintf(dev_id, sizeof(dev_id), "disk%zu-dev", i);
    snprintf(what, sizeof(what), "disks[%zu].path", i);

    if (q35) {
        json_t *io = json_object();
        json_object_set_new(io, "qom-type", json_string("iothread"));
        json_object_set_new(io, "id", json_string(iothread));
        add_json(b, "-object", io);
    }

    /* The chain's nodes exist before the node that names them. */
    for (size_t j = d->nbacking; j-- > 0;)
        add_backing_layer(b, caps, env, d, i, j);

    char secret_id[48];
    snprintf(secret_id, sizeof(secret_id), "disk%zu-secret", i);
    if (d->encrypted) {
        json_t *sec = json_object();
        char *file = xasprintf("/proc/self/fd/%d", env->secret_fds[i]);
        json_object_set_new(sec, "qom-type", json_string("secret"));
        json_object_set_new(sec, "id", json_string(secret_id));
        json_object_set_new(sec, "format", json_string("raw"));
        json_object_set_new(sec, "file", json_string(file));
        free(file);
        add_json(b, "-object", sec);
    }

    json_t *file = file_node_new(b, caps, disk_fd(env, i), i + 1, node, file_node, d->path,
                                 what, d->readonly, d->direct);
    if (!file)
        return;
    add_json(b, "-blockdev", file);

    char first[48];
    snprintf(first, sizeof(first), "disk%zu-b1", i);
    int nbd_fd = env->nbd_backing_fds ? env->nbd_backing_fds[i] : -1;
    bool lr = nbd_fd >= 0 && !d->nbacking && d->format == KH_DISK_QCOW2 && !d->readonly;
    if (lr) {
        /* live-restore: the backup's NBD export under the empty disk */
        snprintf(first, sizeof(first), "disk%zu-lr", i);
        char fdstr[16];
        snprintf(fdstr, sizeof(fdstr), "%d", nbd_fd);
        add_json(b, "-blockdev",
                 json_pack("{s:s, s:s, s:{s:s, s:s}, s:b}", "driver", "nbd", "node-name", first,
                           "server", "type", "fd", "str", fdstr, "read-only", 1));
    }
    add_json(b, "-blockdev",
             kh_qemu_blockdev_format(d->format, node, file_node, d->readonly,
                                     d->nbacking || lr ? first : NULL,
                                     d->encrypted ? secret_id : NULL));

    json_t *dev = json_object();
    json_object_set_new(dev, "driver", json_string(q35 ? "virtio-blk-pci" : "virtio-blk-device"));
    json_object_set_new(dev, "drive", json_string(node));
    json_object_set_new(dev, "id", json_string(dev_id));
    if (q35) {
        char addr[16];
        snprintf(addr, sizeof(addr), "0x%zx", DISK_PCI_SLOT_BASE + i);
        json_object_set_new(dev, "bus", json_string("pcie.0"));
        json_object_set_new(dev, "addr", json_string(addr));
        json_object_set_new(dev, "iothread", json_string(iothread));
    }
    if (i == 0 && !spec->kernel)
        json_object_set_new(dev, "bootindex", json_integer(1));
    add_json(b, "-device", dev);
}

unsigned kh_qemu_nic_queues(const kh_vm_spec *spec)
{
    if (spec->machine != KH_MACHINE_Q35)
        return 1;
    return spec->vcpus < KH_QEMU_NIC_QUEUES_MAX ? (spec->vcpus ? spec->vcpus : 1)
                                                : KH_QEMU_NIC_QUEUES_MAX;
}

/* "a:b:c" of the fds of NIC i (queues of them, from base). */
static void fd_list(char *buf, size_t size, const int *base, unsigned queues)
{
    size_t off = 0;
    buf[0] = '\0';
    for (unsigned q = 0; q < queues && off < size; q++)
        off += (size_t)snprintf(buf + off, size - off, "%s%d", q ? ":" : "", base[q]);
}

static void add_nic(argv_builder *b, const kh_vm_spec *spec, const kh_argv_env *env, size_t i)
{
    char id[32], dev_id[40], fds[160];
    unsigned queues = kh_qemu_nic_queues(spec);
    snprintf(id, sizeof(id), "net%zu", i);
    snprintf(dev_id, sizeof(dev_id), "net%zu-dev", i);
    const int *tfd = env->nic_fds + i * queues;
    const int *vfd = env->nic_vhost_fds ? env->nic_vhost_fds + i * queues : NULL;
    bool vhost = vfd && vfd[0] >= 0;
    json_t *nd = json_object();
    json_object_set_new(nd, "type", json_string("tap"));
    json_object_set_new(nd, "id", json_string(id));
    fd_list(fds, sizeof(fds), tfd, queues);
    json_object_set_new(nd, queues > 1 ? "fds" : "fd", json_string(fds));
    json_object_set_new(nd, "vhost", json_boolean(vhost));
    if (vhost) {
        fd_list(fds, sizeof(fds), vfd, queues);
        json_object_set_new(nd, queues > 1 ? "vhostfds" : "vhostfd", json_string(fds));
    }
    /* QEMU counts the queues from fds (it refuses "queues" beside them). */
    add_json(b, "-netdev", nd);
    bool q35 = spec->machine == KH_MACHINE_Q35;
    json_t *dev = json_object();
    json_object_set_new(dev, "driver", json_string(q35 ? "virtio-net-pci" : "virtio-net-device"));
    json_object_set_new(dev, "netdev", json_string(id));
    json_object_set_new(dev, "mac", json_string(spec->nics[i].mac));
    json_object_set_new(dev, "id", json_string(dev_id));
    if (q35) {
        char addr[16];
        snprintf(addr, sizeof(addr), "0x%zx", NIC_PCI_SLOT_BASE + i);
        json_object_set_new(dev, "bus", json_string("pcie.0"));
        json_object_set_new(dev, "addr", json_string(addr));
        json_object_set_new(dev, "romfile", json_string(""));
    }
    if (queues > 1) {
        json_object_set_new(dev, "mq", json_true());
        json_object_set_new(dev, "vectors", json_integer(2 * queues + 2));
    }
    add_json(b, "-device", dev);
}

/* q35 VMs always get a balloon: its target (limits.balloon_mib) and its
 * statistics can then change on a running VM. */
static void add_balloon(argv_builder *b, const kh_vm_spec *spec)
{
    if (spec->machine != KH_MACHINE_Q35)
        return;
    char addr[16];
    snprintf(addr, sizeof(addr), "0x%x", BALLOON_PCI_SLOT);
    json_t *dev = json_object();
    json_object_set_new(dev, "driver", json_string("virtio-balloon-pci"));
    json_object_set_new(dev, "id", json_string("balloon0"));
    json_object_set_new(dev, "bus", json_string("pcie.0"));
    json_object_set_new(dev, "addr", json_string(addr));
    add_json(b, "-device", dev);
}

/* q35 VMs get KH_QEMU_HOTPLUG_PORTS empty PCIe root ports, the eight
 * functions of slot 0x1c: devices hot-plugged into a running VM (disks,
 * NICs) go there, because pcie.0 itself takes no hot-plug. io-reserve=0:
 * virtio devices behind PCIe ports are modern-only and need no I/O BAR, so
 * the ports do not eat the 64 KiB I/O space. */
static void add_hotplug_ports(argv_builder *b, const kh_vm_spec *spec)
{
    if (spec->machine != KH_MACHINE_Q35)
        return;
    for (unsigned i = 0; i < KH_QEMU_HOTPLUG_PORTS; i++) {
        char id[16], addr[16];
        kh_qemu_hotplug_port_id(i, id, sizeof(id));
        snprintf(addr, sizeof(addr), "0x%x.%u", HOTPLUG_PCI_SLOT, i);
        json_t *dev = json_object();
        json_object_set_new(dev, "driver", json_string("pcie-root-port"));
        json_object_set_new(dev, "id", json_string(id));
        json_object_set_new(dev, "bus", json_string("pcie.0"));
        json_object_set_new(dev, "addr", json_string(addr));
        json_object_set_new(dev, "chassis", json_integer(i + 1));
        json_object_set_new(dev, "port", json_integer(0x10 + i));
        json_object_set_new(dev, "io-reserve", json_integer(0));
        if (i == 0)
            json_object_set_new(dev, "multifunction", json_true());
        add_json(b, "-device", dev);
    }
}

void kh_qemu_hotplug_port_id(unsigned i, char *buf, size_t size)
{
    snprintf(buf, size, "hp%u", i);
}

static void add_serial(argv_builder *b, const kh_vm_spec *spec, const kh_argv_env *env)
{
    if (!spec->serial)
        return;
    add(b, "-chardev");
    addf(b, "socket,id=serial0,fd=%d,server=on,wait=off", env->serial_fd);
    json_t *dev = json_object();
    json_object_set_new(dev, "driver", json_string("isa-serial"));
    json_object_set_new(dev, "chardev", json_string("serial0"));
    json_object_set_new(dev, "id", json_string("serial0-dev"));
    json_object_set_new(dev, "index", json_integer(0));
    add_json(b, "-device", dev);
    /* SeaBIOS (q35 without -kernel: the firmware finds the boot loader)
     * mirrors its screen to the serial port named by fw_cfg
     * "etc/sercon-port" (a little-endian port number, hence a file). */
    if (spec->machine == KH_MACHINE_Q35 && !spec->kernel && env->firmware_serial_file &&
        spec->firmware == KH_FIRMWARE_BIOS) {
        char *file = kh_qemu_opt_escape(env->firmware_serial_file);
        add(b, "-fw_cfg");
        addf(b, "name=etc/sercon-port,file=%s", file);
        free(file);
    }
}

static void add_display(argv_builder *b, const kh_vm_spec *spec, const kh_argv_env *env)
{
    add2(b, "-display", "none");
    if (spec->graphics != KH_GRAPHICS_VNC)
        return;
    char *path = kh_qemu_opt_escape(env->vnc_socket);
    add(b, "-vnc");
    addf(b, "vnc=unix:%s", path);
    free(path);
    char addr[16];
    snprintf(addr, sizeof(addr), "0x%x", VGA_PCI_SLOT);
    json_t *dev = json_object();
    json_object_set_new(dev, "driver", json_string("VGA"));
    json_object_set_new(dev, "id", json_string("video0"));
    json_object_set_new(dev, "bus", json_string("pcie.0"));
    json_object_set_new(dev, "addr", json_string(addr));
    add_json(b, "-device", dev);
}

kh_strv *kh_qemu_argv_build(const kh_vm_spec *spec, const kh_qemu_caps *caps,
                            const kh_argv_env *env, kh_err *err)
{
    kh_err local = KH_ERR_INIT;
    kh_err *e = err ? err : &local; /* the builder needs somewhere to stick */
    if (!spec || !caps || !env) {
        kh_err_set(e, KH_E_INTERNAL, "argv build: missing spec, caps or env");
        return NULL;
    }
    if (check_spec(spec, e) < 0 || check_env(spec, env, e) < 0)
        return NULL;

    argv_builder b = { kh_strv_new(), e };
    add(&b, env->binary);
    add(&b, "-name");
    addf(&b, "guest=%s,debug-threads=on", env->vm_id);
    add2(&b, "-uuid", env->vm_id);
    add(&b, "-S");
    add2(&b, "-msg", "timestamp=on");
    add(&b, "-no-user-config");
    add(&b, "-nodefaults");
    add(&b, "-no-shutdown");
    add_firmware(&b, spec, caps, env);
    add_machine(&b, spec, env);

    add(&b, "-chardev");
    addf(&b, "socket,id=qmp,fd=%d,server=on,wait=off", env->qmp_fd);
    add2(&b, "-mon", "chardev=qmp,mode=control");
    if (caps->sandbox)
        add2(&b, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,"
                             "resourcecontrol=deny");
    if (env->pidfile)
        add2(&b, "-pidfile", env->pidfile);

    if (spec->machine == KH_MACHINE_Q35)
        add2(&b, "-boot", "strict=on");
    if (spec->kernel) {
        add2(&b, "-kernel", kernel_file(spec, env));
        if (spec->initrd)
            add2(&b, "-initrd", initrd_file(spec, env));
        bool tsc = spec->machine == KH_MACHINE_MICROVM && env->accel == KH_ACCEL_TCG &&
                   env->tsc_khz;
        if (tsc) {
            char *append = xasprintf("%s%stsc_early_khz=%u", spec->cmdline ? spec->cmdline : "",
                                     spec->cmdline ? " " : "", env->tsc_khz);
            add2(&b, "-append", append);
            free(append);
        } else if (spec->cmdline) {
            add2(&b, "-append", spec->cmdline);
        }
    }
    for (size_t i = 0; i < spec->ndisks; i++)
        add_disk(&b, spec, caps, env, i);
    for (size_t i = 0; i < spec->nnics; i++)
        add_nic(&b, spec, env, i);
    add_cidata(&b, spec, caps, env);
    add_balloon(&b, spec);
    add_hotplug_ports(&b, spec);
    add_tpm(&b, spec, env);
    add_qga(&b, env);
    add_serial(&b, spec, env);
    add_display(&b, spec, env);
    if (env->incoming)
        add2(&b, "-incoming", "defer");

    if (failed(&b)) {
        kh_strv_free(b.sv);
        return NULL;
    }
    return b.sv;
}
