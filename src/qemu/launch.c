/* launch.c - owns the start of a QEMU: the kernel preparation (off the
 * loop thread) and its memo, the fd map QEMU inherits (QMP, serial,
 * kernel, disks, backing layers, secrets, taps, vhost-net), the run dir,
 * the argv, the cgroup and its first limits, and the spawn; then QMP and
 * the console are connected and the lifecycle told. */
#include "qemu/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf/limits.h"
#include "host/proc.h"
#include "host/spawn.h"
#include "instance/instance_int.h"
#include "instance/quota.h"
#include "instance/vmuid.h"
#include "net/tap.h"
#include "qemu/cidata.h"
#include "qemu/driver.h"
#include "qemu/firmware.h"
#include "qemu/kernel.h"
#include "qemu/tpm.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/sock.h"

/* Fixed fd numbers inside QEMU (see kh_spawn): golden-testable argv. */
enum { FD_QMP = 3, FD_SERIAL, FD_KERNEL, FD_INITRD, FD_DISK0 };
/* Backing layers of volume disks: FD_BACKING0 + i * KH_DISK_BACKING_MAX + j. */
#define FD_BACKING0 (FD_DISK0 + KH_VM_DISKS_MAX)
#define FD_SECRET0 (FD_BACKING0 + KH_VM_DISKS_MAX * KH_DISK_BACKING_MAX)
/* Secrets of encrypted backing layers: FD_BSECRET0 + i * KH_DISK_BACKING_MAX + j. */
#define FD_BSECRET0 (FD_SECRET0 + KH_VM_DISKS_MAX)
#define FD_COUNT (FD_BSECRET0 + KH_VM_DISKS_MAX * KH_DISK_BACKING_MAX)
/* Then per NIC i and queue q < Q (kh_qemu_nic_queues): the tap at
 * FD_NIC0 + i*2*QMAX + q, its vhost-net fd at FD_NIC0 + i*2*QMAX + QMAX + q. */
#define NIC_FD_STRIDE (2 * KH_QEMU_NIC_QUEUES_MAX)
enum { FD_NIC0 = FD_COUNT, FD_END = FD_NIC0 + NIC_FD_STRIDE * KH_VM_NICS_MAX };
/* Then the UEFI VARS copy, the swtpm control channel, the guest agent. */
/* Then per disk the socket of a live-restore's NBD backing (FD_NBDB0 + i). */
enum { FD_VARS = FD_END, FD_TPM, FD_QGA, FD_NBDB0, FD_ALL = FD_NBDB0 + KH_VM_DISKS_MAX };

/* A kernel preparation in the thread pool; cancelled: the VM let go of it
 * (kill, delete, shutdown) and it frees itself when done. */
struct kh_launch_job {
    uv_work_t work;
    kh_inst *v;
    char *kernel_in;
    char *cache_dir;
    char *kernel_out;
    kh_err err;
    bool cancelled;
};

/* Which boot file a kernel resolved to, remembered by the kernel file's
 * identity so that a start does not hash the kernel again (~10 ms for a
 * distribution bzImage). A changed file has a new identity. */
typedef struct kernel_memo {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    char *in;
    char *out;
    struct kernel_memo *next;
} kernel_memo;

static int open_ro(const char *path, const char *what, kh_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        kh_err_errno(err, errno == ENOENT ? KH_E_INVALID : KH_E_INTERNAL, errno,
                     "%s: cannot open %s", what, path);
    return fd;
}

/* The VM's taps, named kh<the MAC's 12 hex digits> (unique on the host,
 * within IFNAMSIZ, and stable when other NICs come and go), on their
 * networks' bridges; QEMU inherits them (it cannot open /dev/net/tun
 * itself): Q queues each (multiqueue when Q > 1), and as many
 * /dev/vhost-net fds when the host has it. */
static int open_nics(kh_inst *v, int *fds, int *nic_fds, int *nic_vhost_fds, kh_err *err)
{
    const kh_vm_spec *spec = v->spec;
    uint64_t t0 = kh_now_us();
    if (spec->nnics && !v->mgr->cfg.net) {
        kh_err_set(err, KH_E_UNAVAILABLE, "nics: networks are not available on this daemon");
        return -1;
    }
    unsigned queues = kh_qemu_nic_queues(spec);
    for (size_t i = 0; i < spec->nnics; i++) {
        char ifname[16];
        int tfd[KH_QEMU_NIC_QUEUES_MAX];
        kh_tap_name(spec->nics[i].mac, ifname);
        if (kh_netmgr_tap_open(v->mgr->cfg.net, spec->nics[i].network, ifname, queues, tfd,
                               err) < 0) {
            kh_err_prefix(err, "nics[%zu]", i);
            return -1;
        }
        int base = FD_NIC0 + (int)i * NIC_FD_STRIDE;
        bool vhost = true;
        for (unsigned q = 0; q < queues; q++) {
            fds[base + (int)q] = tfd[q];
            nic_fds[i * queues + q] = base + (int)q;
            nic_vhost_fds[i * queues + q] = -1;
            int vfd = vhost ? open("/dev/vhost-net", O_RDWR | O_CLOEXEC) : -1;
            if (vfd >= 0) {
                fds[base + KH_QEMU_NIC_QUEUES_MAX + (int)q] = vfd;
                nic_vhost_fds[i * queues + q] = base + KH_QEMU_NIC_QUEUES_MAX + (int)q;
            } else if (vhost) {
                vhost = false; /* all of a NIC's queues or none */
                for (unsigned j = 0; j < q; j++)
                    nic_vhost_fds[i * queues + j] = -1;
            }
        }
    }
    if (spec->nnics)
        kh_log(KH_LOG_DEBUG, "vm.nics", "vm=%s nics=%zu queues=%u us=%llu", spec->name,
               spec->nnics, queues, (unsigned long long)(kh_now_us() - t0));
    return 0;
}

/* A memfd holding 0x3f8 (COM1) as 2 little-endian bytes: SeaBIOS's
 * "etc/sercon-port" (argv.c). */
static int firmware_serial_fd(kh_err *err)
{
    static const unsigned char port[2] = { 0xf8, 0x03 };
    int fd = memfd_create("kvmhost-sercon-port", MFD_CLOEXEC);
    if (fd < 0 || write(fd, port, sizeof(port)) != (ssize_t)sizeof(port)) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "memfd for the firmware serial console");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* What QEMU sees of the filesystem (host/confine.h): QEMU gets every disk,
 * kernel, tap and vhost-net as an fd, so its /dev holds only the plain
 * character devices (and kvm with KVM), and of the daemon's directories
 * only its own dir in the run dir (pid file, VNC socket) stays; /tmp is
 * private. */
static void confine_view(const kh_manager *mgr, const char *own, kh_confine *c)
{
    static const char *const devs[] = { "null", "zero", "full", "random", "urandom" };
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < KH_ARRAY_LEN(devs); i++)
        c->devs[c->ndevs++] = devs[i];
    if (mgr->cfg.accel == KH_ACCEL_KVM)
        c->devs[c->ndevs++] = "kvm";
    kh_confine_hide(c, "/tmp");
    kh_confine_hide(c, mgr->state_dir);
    kh_confine_hide(c, mgr->run_dir);
    c->keep = own;
}

int kh_launch_cidata_write(kh_inst *v, const char *path, kh_err *err)
{
    kh_cidata c;
    kh_cidata_render(v->spec->cloud_init, v->id, v->spec->name, &c);
    /* QEMU opens it by path in its run dir (it may swap it later) */
    int r = kh_cidata_write_iso(&c, path, 0644, err);
    kh_cidata_clear(&c);
    return r;
}

/* Create the run dir, sockets and fds, build the argv, spawn QEMU. */
static void start_spawn(kh_inst *v, const char *kernel_file)
{
    kh_qemu_driver_step(v, KH_LAUNCH_KERNEL);
    kh_manager *mgr = v->mgr;
    kh_err err = KH_ERR_INIT;
    int fds[FD_ALL];
    for (size_t i = 0; i < KH_ARRAY_LEN(fds); i++)
        fds[i] = -1;
    int disk_fds[KH_VM_DISKS_MAX];
    int nbd_fds[KH_VM_DISKS_MAX];
    int backing_fds[KH_VM_DISKS_MAX][KH_DISK_BACKING_MAX];
    const int *backing_ptrs[KH_VM_DISKS_MAX] = { NULL };
    int secret_fds[KH_VM_DISKS_MAX];
    int bsecret_fds[KH_VM_DISKS_MAX][KH_DISK_BACKING_MAX];
    const int *bsecret_ptrs[KH_VM_DISKS_MAX] = { NULL };
    kh_vm_spec *rs = kh_vm_spec_dup(v->spec); /* volumes resolved to files */
    int nic_fds[KH_VM_NICS_MAX * KH_QEMU_NIC_QUEUES_MAX];
    int nic_vhost_fds[KH_VM_NICS_MAX * KH_QEMU_NIC_QUEUES_MAX];
    int dirfd = -1, log_fd = -1, serial_conn = -1;
    char *run = kh_runtime_run_path(v, NULL), *state = kh_runtime_state_path(v, NULL);
    /* QEMU's own files in a subdir of its uid: the run dir itself (the
     * daemon's sockets and records) stays root's */
    char *own = kh_runtime_run_path(v, KH_RUNTIME_QEMU_DIR);
    char *pidfile = kh_runtime_run_path(v, KH_RUNTIME_QEMU_DIR "/qemu.pid");
    char *vnc = kh_runtime_run_path(v, KH_RUNTIME_QEMU_DIR "/vnc.sock");
    char *log_path = kh_runtime_state_path(v, "qemu.log");
    char *kernel_arg = NULL, *initrd_arg = NULL, *firmware_arg = NULL, *cidata = NULL;
    kh_firmware_choice fw = { 0 };
    kh_strv *argv = NULL;

    kh_runtime_disk_nodes_reset(v);
    kh_vmuid_identity id = { 0 };
    if (mgr->cfg.drop_privileges && kh_vmuid_identity_get(mgr, v->id, &id, &err) < 0)
        goto fail;
    if (kh_fs_mkdir_p(state, 0700, &err) < 0)
        goto fail;
    kh_fs_rm_rf(run, NULL);
    if (kh_fs_mkdir_p(run, 0711, &err) < 0 || kh_fs_mkdir_p(own, 0700, &err) < 0)
        goto fail;
    if (chmod(run, 0711) < 0 || (mgr->cfg.drop_privileges && chown(own, id.uid, id.gid) < 0)) {
        kh_err_errno(&err, KH_E_INTERNAL, errno, "chown %s", own);
        goto fail;
    }
    /* a migration's target: the source's; else the spec's, else the default */
    snprintf(v->boot_cpu, sizeof(v->boot_cpu), "%s",
             kh_qemu_cpu_of(rs, v->incoming_cpu, mgr->cfg.accel));
    kh_runtime_boot_record(v);
    kh_qemu_driver_step(v, KH_LAUNCH_RUNDIR);
    dirfd = open(run, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        kh_err_errno(&err, KH_E_INTERNAL, errno, "open %s", run);
        goto fail;
    }
    fds[FD_QMP] = kh_sock_listen_at(dirfd, "qmp.sock", 4, &err);
    if (fds[FD_QMP] < 0)
        goto fail;
    if (v->spec->serial) {
        fds[FD_SERIAL] = kh_sock_listen_at(dirfd, "serial.sock", 4, &err);
        if (fds[FD_SERIAL] < 0)
            goto fail;
    }
    if (!kernel_file && v->spec->serial && v->spec->machine == KH_MACHINE_Q35) {
        /* SeaBIOS's serial console (argv.c): the port, in the fd a kernel
         * would use (a disk boot has none). */
        if ((fds[FD_KERNEL] = firmware_serial_fd(&err)) < 0)
            goto fail;
        firmware_arg = xasprintf("/proc/self/fd/%d", FD_KERNEL);
    }
    if (kernel_file) {
        if ((fds[FD_KERNEL] = open_ro(kernel_file, "boot.kernel", &err)) < 0)
            goto fail;
        kernel_arg = xasprintf("/proc/self/fd/%d", FD_KERNEL);
        if (v->spec->initrd) {
            if ((fds[FD_INITRD] = open_ro(v->spec->initrd, "boot.initrd", &err)) < 0)
                goto fail;
            initrd_arg = xasprintf("/proc/self/fd/%d", FD_INITRD);
        }
    }
    if (rs->machine == KH_MACHINE_Q35) {
        /* the guest agent's channel (qemu/qga.h connects when asked) */
        fds[FD_QGA] = kh_sock_listen_at(dirfd, "qga.sock", 4, &err);
        if (fds[FD_QGA] < 0)
            goto fail;
    }
    if (rs->cloud_init) {
        /* in QEMU's own dir: the only part of the run dir its namespace sees */
        cidata = kh_runtime_run_path(v, KH_RUNTIME_QEMU_DIR "/cidata.iso");
        if (kh_launch_cidata_write(v, cidata, &err) < 0)
            goto fail;
    }
    if (rs->firmware == KH_FIRMWARE_UEFI) {
        if (kh_firmware_select(NULL, rs->secure_boot, &fw, &err) < 0)
            goto fail;
        fds[FD_VARS] = kh_firmware_vars_open(&fw, state, mgr->cfg.drop_privileges, id.uid,
                                             id.gid, &err);
        if (fds[FD_VARS] < 0)
            goto fail;
    }
    if (kh_bindings_resolve_volumes(mgr, v, rs, KH_E_CONFLICT, &err) < 0)
        goto fail;
    for (size_t i = 0; i < rs->ndisks; i++) {
        kh_disk_spec *d = &rs->disks[i];
        /* cache=none when every layer's filesystem takes O_DIRECT; the fds
         * carry the flag (QEMU's fd-set dups share it) */
        d->direct = kh_fs_direct_ok(d->path);
        for (size_t j = 0; j < d->nbacking && d->direct; j++)
            d->direct = kh_fs_direct_ok(d->backing[j].path);
        int odirect = d->direct ? O_DIRECT : 0;
        for (size_t j = 0; j < d->nbacking; j++) {
            int bfd = open(d->backing[j].path, O_RDONLY | O_CLOEXEC | odirect);
            if (bfd < 0) {
                kh_err_errno(&err, KH_E_INTERNAL, errno, "disks[%zu]: cannot open layer %zu of %s",
                             i, j + 1, d->volume ? d->volume : d->path);
                goto fail;
            }
            int target = FD_BACKING0 + (int)(i * KH_DISK_BACKING_MAX + j);
            fds[target] = bfd;
            backing_fds[i][j] = target;
            backing_ptrs[i] = backing_fds[i];
            bsecret_fds[i][j] = -1;
            if (d->backing[j].encrypted) {
                /* each encrypted layer has its own key, in its own memfd */
                kh_volume_chain c;
                int sfd = -1;
                if (kh_storage_resolve(mgr->cfg.storage, d->volume, &c, &err) == 0) {
                    sfd = kh_storage_volume_secret_fd(mgr->cfg.storage, c.layer[j + 1].id,
                                                      &err);
                    kh_volume_chain_clear(&c);
                }
                if (sfd < 0)
                    goto fail;
                int starget = FD_BSECRET0 + (int)(i * KH_DISK_BACKING_MAX + j);
                fds[starget] = sfd;
                bsecret_fds[i][j] = starget;
                bsecret_ptrs[i] = bsecret_fds[i];
            }
        }
        secret_fds[i] = -1;
        if (d->encrypted) {
            /* the key reaches QEMU through an inherited memfd only */
            kh_volume_chain c;
            int sfd = -1;
            if (kh_storage_resolve(mgr->cfg.storage, d->volume, &c, &err) == 0) {
                sfd = kh_storage_volume_secret_fd(mgr->cfg.storage, c.layer[0].id, &err);
                kh_volume_chain_clear(&c);
            }
            if (sfd < 0)
                goto fail;
            fds[FD_SECRET0 + i] = sfd;
            secret_fds[i] = FD_SECRET0 + (int)i;
        }
        int fd = open(d->path, (d->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | odirect);
        if (fd < 0) {
            kh_err_errno(&err, errno == ENOENT || errno == EACCES || errno == EROFS
                                   ? KH_E_INVALID : KH_E_INTERNAL,
                         errno, "disks[%zu]: cannot open %s", i, d->path);
            goto fail;
        }
        fds[FD_DISK0 + i] = fd;
        disk_fds[i] = FD_DISK0 + (int)i;
        nbd_fds[i] = -1;
        if (v->nbd_backing && v->nbd_backing[i] >= 0) { /* live-restore: taken once */
            fds[FD_NBDB0 + i] = v->nbd_backing[i];
            v->nbd_backing[i] = -1;
            nbd_fds[i] = FD_NBDB0 + (int)i;
        }
        if (!d->readonly) /* a writable top layer is the VM's own */
            kh_vmuid_own_fd(&id, fd, d->path);
    }
    if (open_nics(v, fds, nic_fds, nic_vhost_fds, &err) < 0 ||
        kh_bindings_nic_rates(v, NULL, v->spec->limits, &err) < 0)
        goto fail;
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
                  O_TRUNC, 0600);
    kh_vmuid_own_fd(&id, log_fd, log_path);
    kh_qemu_driver_step(v, KH_LAUNCH_FDS);

    kh_argv_env env = {
        .binary = mgr->qemu_binary,
        .vm_id = v->id,
        .accel = mgr->cfg.accel,
        .cpu = v->boot_cpu,
        .tsc_khz = kh_proc_cpu_khz(),
        .qmp_fd = FD_QMP,
        .serial_fd = v->spec->serial ? FD_SERIAL : -1,
        .pidfile = pidfile,
        .vnc_socket = vnc,
        .kernel_file = kernel_arg,
        .initrd_file = initrd_arg,
        .firmware_serial_file = firmware_arg,
        .disk_fds = disk_fds,
        .nbd_backing_fds = nbd_fds,
        .backing_fds = backing_ptrs,
        .secret_fds = secret_fds,
        .backing_secret_fds = bsecret_ptrs,
        .nic_fds = nic_fds,
        .nic_vhost_fds = nic_vhost_fds,
        .incoming = v->incoming_port != 0, /* migration target (instance/migrate.c) */
        .fw_code = fw.code,
        .fw_vars_fd = fds[FD_VARS] >= 0 ? FD_VARS : -1,
        .fw_smm = fw.smm,
        .cidata_path = cidata,
        .tpm_fd = rs->tpm ? FD_TPM : -1,
        .qga_fd = fds[FD_QGA] >= 0 ? FD_QGA : -1,
    };
    argv = kh_qemu_argv_build(rs, &mgr->cfg.caps, &env, &err);
    if (!argv)
        goto fail;
    kh_qemu_driver_step(v, KH_LAUNCH_ARGV);
    if (mgr->cfg.cgroups && mgr->cfg.cgroups->version &&
        kh_cgroups_vm_create(mgr->cfg.cgroups, v->id, &err) < 0)
        goto fail;
    /* Limits must hold from the first instruction; without limits the
     * defaults are written best-effort (a cgroup left over from an earlier
     * run may still carry old values). */
    if (v->spec->limits) {
        if (kh_quota_apply_cgroup(mgr->cfg.cgroups, v->id, v->spec->limits, &err) < 0)
            goto fail;
    } else {
        (void)kh_quota_apply_cgroup(mgr->cfg.cgroups, v->id, NULL, NULL);
    }

    kh_qemu_driver_step(v, KH_LAUNCH_CGROUP);
    if (rs->tpm) {
        /* swtpm first, in the VM's cgroup; it ends with QEMU's connection */
        kh_tpm_opts to = { .state_dir = state, .drop_privileges = mgr->cfg.drop_privileges,
                           .uid = id.uid, .gid = id.gid, /* the VM's own uid */
                           .cgroups = mgr->cfg.cgroups && mgr->cfg.cgroups->version
                                          ? mgr->cfg.cgroups : NULL,
                           .vm_id = v->id, .key_fd = -1 };
        /* the state encrypted with the VM's key (derived, never stored) */
        if (mgr->cfg.storage &&
            (to.key_fd = kh_storage_vm_tpm_key_fd(mgr->cfg.storage, v->id, &err)) < 0)
            goto fail;
        pid_t tpm_pid;
        /* swtpm (the QEMU user) walks through STATE/vms/<id> to its own
         * "tpm" dir: both traverse only (0711, as STATE itself), so it
         * can list nothing and open only what it owns */
        char *vms = xasprintf("%s/vms", mgr->state_dir);
        int ch = mgr->cfg.drop_privileges && (chmod(vms, 0711) < 0 || chmod(state, 0711) < 0);
        free(vms);
        if (ch) {
            kh_err_errno(&err, KH_E_INTERNAL, errno, "chmod %s", state);
            goto fail;
        }
        int started = kh_tpm_start(&to, &fds[FD_TPM], &tpm_pid, &err);
        if (to.key_fd >= 0)
            close(to.key_fd);
        if (started < 0)
            goto fail;
        kh_log(KH_LOG_INFO, "vm.tpm", "vm=%s swtpm=%d", v->spec->name, (int)tpm_pid);
    }
    kh_spawn_fd pfds[KH_ARRAY_LEN(fds)];
    size_t npfds = 0;
    for (int i = 0; i < (int)KH_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            pfds[npfds++] = (kh_spawn_fd){ fds[i], i };
    /* QEMU outlives the daemon (own session, no death signal): the next
     * daemon reattaches to it. */
    kh_spawn_spec ss = {
        .argv = argv->v,
        .stdin_fd = -1,
        .stdout_fd = log_fd,
        .stderr_fd = log_fd,
        .fds = pfds,
        .nfds = npfds,
        .new_session = true,
        .die_with_parent = false,
        .no_new_privs = true,
        .drop_privileges = mgr->cfg.drop_privileges,
        .uid = id.uid,
        .gid = id.gid,
        .groups = id.groups,
        .ngroups = id.ngroups,
        .cgroups = mgr->cfg.cgroups,
        .vm_id = v->id,
    };
    kh_confine confine;
    if (mgr->cfg.drop_privileges) {
        confine_view(mgr, own, &confine);
        ss.confine = &confine;
    }
    if (v->task)
        kh_task_progress(v->task, 40, "starting QEMU");
    kh_spawn_child child;
    if (kh_spawn(&ss, &child, &err) < 0)
        goto fail;
    pid_t pid = child.pid;
    int pidfd = child.pidfd;
    kh_qemu_driver_step(v, KH_LAUNCH_SPAWN);
    v->pid = pid;
    v->is_child = true;
    v->pid_start = kh_proc_start_time(pid);
    v->accel = mgr->cfg.accel;
    v->started_at = kh_wall_time();
    /* Recorded before anything else can fail: a daemon crash from here on
     * finds this QEMU and kills or adopts it. */
    kh_runtime_persist(v);
    kh_qemu_driver_step(v, KH_LAUNCH_PERSIST);
    {
        char *line = kh_strv_join(argv, " ");
        kh_log(KH_LOG_INFO, "vm.spawn", "vm=%s pid=%d accel=%s", v->spec->name, (int)pid,
               kh_accel_name(v->accel));
        kh_log(KH_LOG_DEBUG, "vm.argv", "vm=%s argv=\"%s\"", v->spec->name, line);
        free(line);
    }
    if (kh_lifecycle_watch_pid(v, pidfd, &err) < 0)
        goto fail_running;

    /* The listening sockets accept our connection through their backlog
     * even before QEMU runs its main loop. */
    if (kh_qemu_driver_connect(v, dirfd, &err) < 0)
        goto fail_running;
    if (v->spec->serial) {
        char *clog = kh_runtime_state_path(v, "console.log");
        v->console = kh_console_new(mgr->loop, clog, KH_CONSOLE_LOG_MAX);
        free(clog);
        char note[128], when[32];
        kh_time_format(kh_wall_time(), when);
        snprintf(note, sizeof(note), "\r\n[kvmhost: vm started at %s]\r\n", when);
        kh_console_note(v->console, note);
        serial_conn = kh_sock_connect_at(dirfd, "serial.sock", &err);
        if (serial_conn < 0)
            goto fail_running;
        int conn = serial_conn;
        serial_conn = -1; /* the console owns it from here, even on failure */
        if (kh_console_attach_fd(v->console, conn, &err) < 0)
            goto fail_running;
    }
    kh_qemu_driver_step(v, KH_LAUNCH_CONNECT);
    kh_lifecycle_launched(v);
    goto out;

fail_running:
    if (serial_conn >= 0)
        close(serial_conn);
    kh_lifecycle_start_fail(v, &err);
    goto out;
fail:
    kh_err_prefix(&err, "starting vm %s", v->spec->name);
    if (v->pid <= 0)
        kh_runtime_cgroup_remove(v); /* made above, and no QEMU ever ran in it */
    kh_lifecycle_start_fail(v, &err);
    kh_fs_rm_rf(run, NULL);
out:
    for (size_t i = 0; i < KH_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (dirfd >= 0)
        close(dirfd);
    if (log_fd >= 0)
        close(log_fd);
    kh_strv_free(argv);
    kh_vm_spec_free(rs);
    free(run);
    free(own);
    free(state);
    free(pidfile);
    free(vnc);
    free(log_path);
    free(kernel_arg);
    free(initrd_arg);
    free(firmware_arg);
    free(cidata);
    kh_firmware_choice_clear(&fw);
}

static void start_resolve_work(uv_work_t *w)
{
    kh_launch_job *job = w->data;
    job->kernel_out = kh_kernel_resolve(job->kernel_in, job->cache_dir, &job->err);
}

static void job_free(kh_launch_job *job)
{
    free(job->kernel_in);
    free(job->cache_dir);
    free(job->kernel_out);
    free(job);
}

static bool same_file(const kernel_memo *m, const struct stat *st)
{
    return m->dev == st->st_dev && m->ino == st->st_ino && m->size == st->st_size &&
           m->mtime.tv_sec == st->st_mtim.tv_sec && m->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* The remembered resolution of path, or NULL. The result still exists. */
static const char *kernel_memo_get(kernel_memo *memo, const char *path)
{
    struct stat st, out;
    if (stat(path, &st) < 0)
        return NULL;
    for (kernel_memo *m = memo; m; m = m->next)
        if (strcmp(m->in, path) == 0 && same_file(m, &st) && stat(m->out, &out) == 0)
            return m->out;
    return NULL;
}

static void kernel_memo_put(kh_manager *mgr, const char *path, const char *resolved)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    for (kernel_memo **pp = (kernel_memo **)&mgr->driver_data; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->in, path) == 0) {
            kernel_memo *old = *pp;
            *pp = old->next;
            free(old->in);
            free(old->out);
            free(old);
            break;
        }
    }
    kernel_memo *m = xcalloc(1, sizeof(*m));
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    m->size = st.st_size;
    m->mtime = st.st_mtim;
    m->in = xstrdup(path);
    m->out = xstrdup(resolved);
    m->next = mgr->driver_data;
    mgr->driver_data = m;
}

static void start_resolve_done(uv_work_t *w, int status)
{
    kh_launch_job *job = w->data;
    if (job->cancelled) {
        /* Abandoned (kill, delete, shutdown): the VM may be gone. */
        job_free(job);
        return;
    }
    kh_inst *v = job->v;
    kh_qemu_driver_vm(v)->job = NULL;
    if (job->kernel_out)
        kernel_memo_put(v->mgr, job->kernel_in, job->kernel_out);
    if (status == UV_ECANCELED || v->state != KH_INST_STARTING || v->pid > 0) {
        /* nothing left to do */
    } else if (!job->kernel_out) {
        kh_err_prefix(&job->err, "starting vm %s", v->spec->name);
        kh_lifecycle_start_fail(v, &job->err);
    } else {
        start_spawn(v, job->kernel_out);
    }
    job_free(job);
}

void kh_launch_start(kh_inst *v)
{
    kh_qemu_driver_step(v, KH_LAUNCH_BEGIN);
    if (!v->spec->kernel) {
        start_spawn(v, NULL);
        return;
    }
    if (v->spec->tpm) {
        /* Not through PVH: SeaBIOS puts its ACPI tables and, with a TPM,
         * the TPM's 64 KiB event log at the top of the low RAM, more than
         * the 160 KiB QEMU's PVH loader keeps clear of the initrd, which
         * pvh.bin then copies over them: the guest saw no ACPI at all, so
         * no TPM (and no power button). The bzImage's own loader places
         * the initrd below what the firmware reserved. */
        char *file = xstrdup(v->spec->kernel);
        start_spawn(v, file);
        free(file);
        return;
    }
    const char *known = kernel_memo_get(v->mgr->driver_data, v->spec->kernel);
    if (known) {
        char *file = xstrdup(known); /* start_spawn may reach kernel_memo_put */
        start_spawn(v, file);
        free(file);
        return;
    }
    kh_task_progress(v->task, 10, "preparing the kernel");
    /* Decompressing a kernel once takes a second: off the loop thread. */
    kh_launch_job *job = xcalloc(1, sizeof(*job));
    job->v = v;
    job->kernel_in = xstrdup(v->spec->kernel);
    job->cache_dir = xstrdup(v->mgr->kernel_cache);
    job->work.data = job;
    kh_qemu_driver_vm(v)->job = job;
    uv_queue_work(v->mgr->loop, &job->work, start_resolve_work, start_resolve_done);
}

int kh_launch_init(kh_manager *mgr, kh_err *err)
{
    return kh_fs_mkdir_p(mgr->kernel_cache, 0755, err);
}

void kh_launch_fini(kh_manager *mgr)
{
    for (kernel_memo *m = mgr->driver_data, *n; m; m = n) {
        n = m->next;
        free(m->in);
        free(m->out);
        free(m);
    }
    mgr->driver_data = NULL;
}

void kh_launch_cancel(kh_launch_job *job)
{
    job->cancelled = true;
}
