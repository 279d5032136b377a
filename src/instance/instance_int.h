/* instance_int.h - private to the instance layer and its drivers: the
 * manager and instance structs and the calls between the files that split
 * the job (manager.c registry and view, lifecycle.c state machine, config.c
 * create/patch/delete, runtime.c run-dir files, reattach.c, live.c live
 * limits, bindings.c storage and network). Not for src/api or other users.
 */
#ifndef KH_INSTANCE_INT_H
#define KH_INSTANCE_INT_H

#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

#include "instance/driver.h"
#include "instance/lifecycle.h"
#include "instance/manager.h"
#include "util/inet.h"

#define KH_CONSOLE_LOG_MAX (1024 * 1024)

typedef enum kh_inst_state {
    KH_INST_STOPPED,
    KH_INST_STARTING,
    KH_INST_RUNNING,
    KH_INST_PAUSED,
    KH_INST_STOPPING,
} kh_inst_state;
#define KH_INST_STATES 5

struct kh_inst {
    kh_manager *mgr;
    const kh_driver *drv;
    void *drv_state;       /* the driver's, while it holds anything (release frees) */
    char id[37];
    kh_vm_spec *spec;
    kh_inst_state state;
    char *reason;
    double created_at, updated_at, started_at;

    /* While a process exists. */
    pid_t pid;
    unsigned long long pid_start;
    bool is_child;         /* spawned by this daemon: waitpid gives the status */
    kh_accel accel;
    int pidfd;
    uv_poll_t *pidfd_poll;
    kh_console *console;
    uv_timer_t *timer;     /* start deadline or stop grace */
    uv_timer_t *resend;    /* stop: the ACPI power-down request again, periodically */
    char *stop_forced;     /* stop: why QEMU was killed instead (NULL: not forced) */
    char *going_down;      /* why the process is expected to exit ("stopped", ...) */
    kh_err *start_err;     /* a failed start: the task fails with it once QEMU has ended */
    bool await_accel;      /* a start waiting for the accelerator probe */
    bool disk_busy;        /* a disk attach or detach is under way (instance/disk.c) */

    kh_task *task;         /* the action in progress */
    kh_vm_action task_action;
    unsigned stop_timeout; /* stop: the grace in seconds (for the forced message) */
    uint64_t start_us;     /* when the start action began (monotonic; start timing) */
    kh_task *kill_task;    /* a kill that overtook task */
    kh_inst *next;
    /* Disks (instance/disk.c): the QEMU node index ("disk<N>") of each spec
     * disk while a QEMU runs; hot-plug and -unplug break the identity, so it
     * is kept in RUN_DIR/vms/<id>/disks.json for a daemon restart. */
    int disk_node[KH_VM_DISKS_MAX];
    /* What the running QEMU was started with, kept in RUN_DIR/vms/<id>/
     * boot.json for a daemon restart: disks on a node below boot_disks and
     * NICs with a MAC in boot_macs were there at start (no live unplug),
     * the others were hot-plugged. Start disks keep nodes 0..n-1 and can
     * not leave while QEMU runs, so a hot-plug always gets a node >= n.
     * -1: unknown (no QEMU, or one started without the file). */
    int boot_disks;
    int boot_nics;
    char boot_macs[KH_VM_NICS_MAX][KH_MAC_STRLEN];
    char boot_cpu[128];    /* its -cpu ("": unknown) */
    /* migration (instance/migrate.c): this start is a migration target's:
     * QEMU runs `-incoming defer`, listens on incoming_host:incoming_port
     * (migrate-incoming) and is not `cont`-ed; the state stays "starting"
     * with reason "incoming" until kh_lifecycle_incoming_commit(). */
    char *incoming_host;
    unsigned incoming_port;
    /* local disks: before migrate-incoming, nbd-server-start on
     * incoming_host:incoming_nbd_port and a writable export of node
     * disk<i> for each bit i of incoming_nbd_disks (0: none) */
    unsigned incoming_nbd_port;
    uint64_t incoming_nbd_disks;
    /* migration and NBD over TLS: the tls-creds-x509 dir (NULL: plain) */
    char *incoming_tls_dir;
    /* the source's -cpu, which the incoming QEMU must have ("": default) */
    char incoming_cpu[128];
    /* live-restore: per spec disk, a connected socket to a read-only NBD
     * server or -1, taken by the next launch (kh_manager_nbd_backing) */
    int *nbd_backing;
    /* guest agent (instance/guest.c): what it said last (GuestView, NULL:
     * nothing yet or the process is gone) and when to ask again (monotonic
     * seconds) */
    json_t *guest;
    double guest_due;
    /* jsontext.c: its JSON view as text, with the stamp it was built at */
    struct kh_jsontext *jtext;
};

void kh_jsontext_free(struct kh_jsontext *t);

struct kh_manager {
    uv_loop_t *loop;
    kh_store *store;
    kh_events *events;
    kh_tasks *tasks;
    kh_manager_config cfg;
    const kh_driver *driver;  /* the one driver today: qemu */
    void *driver_data;        /* its manager-wide state (init/fini) */
    char *state_dir, *run_dir, *qemu_binary, *kernel_cache;
    gid_t *groups;
    kh_inst *vms;
    unsigned count;
    struct {
        kh_manager_event_fn fn;
        void *opaque;
    } event_hooks[KH_MANAGER_EVENT_HOOKS];
    const kh_manager_cluster_ops *cluster; /* NULL: a single host */
    void *cluster_opaque;
    struct kh_guest_poll *guest_poll; /* instance/guest.c: the agent poller */
};

/* A process exists or the state says one is on its way or going. */
static inline bool kh_inst_active(const kh_inst *v)
{
    return v->state != KH_INST_STOPPED || v->pid > 0;
}

/* ---- manager.c: registry and view ---- */
kh_inst *kh_manager_find(kh_manager *mgr, const char *name, kh_err *err);
kh_inst *kh_manager_find_id(kh_manager *mgr, const char *id);
/* A new instance in the registry (spec stolen), in name order. */
kh_inst *kh_manager_add(kh_manager *mgr, const char *id, kh_vm_spec *spec);
/* Out of the registry (the caller frees it). */
void kh_manager_unlink(kh_manager *mgr, kh_inst *v);
/* Its runtime released, then freed. */
void kh_manager_inst_free(kh_inst *v);
json_t *kh_manager_json(const kh_inst *v);
/* Tell the cluster hook that v's view changed (nothing on a single host). */
void kh_manager_cluster_changed(const kh_inst *v);
/* Tell the event hooks (driver monitor events, "reattached"). */
void kh_manager_hooks_call(kh_inst *v, const char *event, json_t *data);

/* ---- lifecycle.c: the state machine and what drivers tell it ---- */
const char *kh_lifecycle_state_name(kh_inst_state s);
void kh_lifecycle_set_state(kh_inst *v, kh_inst_state state, const char *reason);
/* Why the process is expected to exit; the first cause wins. */
void kh_lifecycle_going_down(kh_inst *v, const char *why);
/* Drop everything held while a process exists (driver, timers, pidfd,
 * console), not the pid itself. */
void kh_lifecycle_release(kh_inst *v);
/* Watch the recorded pid: its end settles the state. pidfd: the spawner's
 * pidfd of v->pid (host/spawn.h; taken, also on failure), or -1 to open
 * one (kh_spawn_pidfd_open: a reattached process). */
int kh_lifecycle_watch_pid(kh_inst *v, int pidfd, kh_err *err);
/* The process is gone (status < 0: unknown, not our child). */
void kh_lifecycle_process_ended(kh_inst *v, int status);
/* Driver notifications. */
void kh_lifecycle_launched(kh_inst *v);
void kh_lifecycle_started(kh_inst *v);
void kh_lifecycle_start_fail(kh_inst *v, const kh_err *err);
/* migration: start v as a migration target (QEMU -incoming defer listening on
 * host:port, no cont); kh_lifecycle_incoming() is the driver's word that
 * QEMU listens (err: it failed); commit: cont, then "running". */
int kh_lifecycle_start_incoming(kh_inst *v, const char *host, unsigned port, kh_err *err);
void kh_lifecycle_incoming(kh_inst *v, const kh_err *err);
int kh_lifecycle_incoming_commit(kh_inst *v, kh_err *err);
void kh_lifecycle_stop_failed(kh_inst *v);
void kh_lifecycle_action_done(kh_inst *v, const kh_err *err);
void kh_lifecycle_guest_paused(kh_inst *v);
void kh_lifecycle_guest_resumed(kh_inst *v);
void kh_lifecycle_guest_reset(kh_inst *v);
/* A shutdown came from inside: guest true when the guest asked for it;
 * reason the monitor's word for it (may be NULL). */
void kh_lifecycle_guest_shutdown(kh_inst *v, bool guest, const char *reason);
/* After a restart the driver learnt the guest state again. */
void kh_lifecycle_reattached(kh_inst *v, bool running, const char *status);

/* ---- runtime.c: the run dir and its files ---- */
/* The run dir (RUN_DIR/vms/<id>, root's, 0711) holds the daemon's sockets
 * and records; QEMU's own files (qemu.pid, vnc.sock) are in this subdir,
 * owned by the VM's uid, the one part of the run dir QEMU sees. */
#define KH_RUNTIME_QEMU_DIR "qemu"
char *kh_runtime_state_path(const kh_inst *v, const char *file);
char *kh_runtime_run_path(const kh_inst *v, const char *file);
/* The migration TLS files of src copied into QEMU's own run dir, owned by
 * the VM's uid: that dir (the caller frees it), or NULL with err. */
char *kh_runtime_qemu_tls(kh_inst *v, const char *src, kh_err *err);
/* The store row of the runtime fields (state, pid, ...); logged on error. */
void kh_runtime_persist(kh_inst *v);
void kh_runtime_disk_nodes_reset(kh_inst *v);
void kh_runtime_disk_nodes_load(kh_inst *v);
/* Record node[] (for each spec disk) in memory and disks.json. */
void kh_runtime_disk_nodes_save(kh_inst *v, const int *node);
void kh_runtime_boot_reset(kh_inst *v);
void kh_runtime_boot_record(kh_inst *v);
void kh_runtime_boot_load(kh_inst *v);
bool kh_runtime_boot_has_mac(const kh_inst *v, const char *mac);
/* The last bytes of the process log (newlines flattened), for errors. */
char *kh_runtime_log_tail(const kh_inst *v);
/* Remove the run dir (the process is gone). */
void kh_runtime_clear(kh_inst *v);
/* Remove the instance's (empty) cgroup dirs; a failure is logged. */
void kh_runtime_cgroup_remove(kh_inst *v);

/* ---- guest.c: the guest agent poller ---- */
/* Every running q35 VM's agent is asked now and then (one question at a
 * time, in the thread pool), its answer kept in v->guest for the view. */
void kh_guest_poll_start(kh_manager *mgr);
void kh_guest_poll_stop(kh_manager *mgr);

/* ---- reattach.c ---- */
/* Adopt v's process after a daemon restart, or settle a process that ended. */
void kh_reattach(kh_inst *v);

/* ---- live.c: limits applied to a live instance ---- */
/* The host-side limits (cgroup, tap rates) of next; on failure the ones
 * of old are put back and -1 returned with err. */
int kh_live_apply(kh_inst *v, const kh_limits *old, const kh_limits *next, kh_err *err);
/* Undo a kh_live_apply(v, old, applied) that may not stay (old back). */
void kh_live_undo(kh_inst *v, const kh_limits *applied, const kh_limits *old);

/* ---- bindings.c: storage volumes and network ---- */
/* Resolve the volume disks of spec in place (see bindings.c); self: a
 * start (checks volume sharing); code: the refusal code. */
int kh_bindings_resolve_volumes(kh_manager *mgr, const kh_inst *self, kh_vm_spec *spec,
                                kh_code code, kh_err *err);
/* Volume disks exist and may be attached as asked (on a copy). */
int kh_bindings_check_volumes(kh_manager *mgr, const kh_vm_spec *spec, kh_err *err);
json_t *kh_bindings_volume_users(kh_manager *mgr, const char *ref);
/* Hook into / out of the storage layer (users, live resize). */
void kh_bindings_attach(kh_manager *mgr);
void kh_bindings_detach(kh_manager *mgr);
/* Tell the network manager every instance's NICs. */
void kh_bindings_sync(kh_manager *mgr);
/* Check a spec's NICs and give each a MAC. */
int kh_bindings_nics_prepare(kh_manager *mgr, const char *vm_id, kh_vm_spec *spec, kh_err *err);
/* limits.nic inbound rates on the taps (old -> now). */
int kh_bindings_nic_rates(kh_inst *v, const kh_limits *old, const kh_limits *now, kh_err *err);

#endif
