/* manager.h - the instances (VMs) of this host: the registry, lookups,
 * the JSON view, and the ways in for observers (foreach, monitor commands,
 * event hooks).
 *
 * The manager owns every VM: its spec (from the store), its state
 * (instance/lifecycle.h: actions and the state machine) and, while it runs,
 * its process, monitor, console and cgroup through its driver
 * (instance/driver.h; qemu/driver.c for VMs). Create, patch and delete are
 * in instance/config.h. It runs on the loop thread; every state change is
 * written to the store and published as a "vm.state" event.
 *
 * Restart safety: QEMU runs in its own session and cgroup, with its pid and
 * start time recorded before `cont`. kh_manager_new() reattaches to every
 * QEMU that still runs (instance/reattach.c), reconciles the ones that
 * ended meanwhile, and kills the QEMU of a start that never completed.
 */
#ifndef KH_INSTANCE_MANAGER_H
#define KH_INSTANCE_MANAGER_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

#include "conf/vm_spec.h"
#include "host/cgroup.h"
#include "net/netmgr.h"
#include "qemu/accel.h"
#include "qemu/argv.h"
#include "qemu/qmp.h"
#include "storage/storage.h"
#include "store/store.h"
#include "util/err.h"
#include "instance/console.h"
#include "instance/event.h"
#include "instance/task.h"

typedef struct kh_manager kh_manager;

typedef struct kh_manager_config {
    const char *state_dir;     /* kvmhost.db, vms/<id>/{console.log,qemu.log}, cache/ */
    const char *run_dir;       /* vms/<id>/{qmp.sock,serial.sock,qemu/{qemu.pid,vnc.sock}} */
    const char *qemu_binary;
    kh_qemu_caps caps;
    kh_accel accel;
    bool accel_pending;        /* the probe still runs: starts wait for
                                * kh_lifecycle_set_accel() */
    const kh_cgroups *cgroups;
    bool drop_privileges;      /* run QEMU as uid/gid/groups */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    uid_t uid_first;           /* per-VM QEMU uids (instance/vmuid.h): the range */
    unsigned uid_count;        /* 0: every QEMU runs as uid/gid above */
    gid_t kvm_gid;             /* 0: none; else a supplementary group of each VM uid */
    unsigned start_timeout_ms; /* QMP ready deadline; 0 = 30 s */
    kh_storage *storage;       /* resolves disks given as volumes (NULL: none) */
    kh_netmgr *net;            /* networks for NICs (NULL: VMs with NICs are refused) */
} kh_manager_config;

/* Load the VMs from the store and reattach to running QEMUs (asynchronously:
 * the states settle within the next loop iterations). cfg is copied. */
kh_manager *kh_manager_new(uv_loop_t *loop, kh_store *store, kh_events *events,
                           kh_tasks *tasks, const kh_manager_config *cfg, kh_err *err);
/* Detach from every QEMU without touching it (daemon shutdown). */
void kh_manager_free(kh_manager *mgr);

json_t *kh_manager_list_json(kh_manager *mgr);
json_t *kh_manager_vm_json(kh_manager *mgr, const char *name, kh_err *err);

/* A file in the run dir of the QEMU that runs VM id (RUN_DIR/vms/<id>/file):
 * it lives exactly as long as that QEMU, across daemon restarts (the dir
 * goes when QEMU exits). NULL when the VM has no QEMU. */
char *kh_manager_qemu_file(kh_manager *mgr, const char *id, const char *file);
/* The state dir of VM id (STATE_DIR/vms/<id>, made at its first start and
 * removed with it), or a file in it when file is not NULL. */
char *kh_manager_state_file(kh_manager *mgr, const char *id, const char *file);
/* The console of a running VM (KH_E_CONFLICT when it is not running). The
 * pointer is valid until the VM stops; viewers learn it via on_closed. */
kh_console *kh_manager_console(kh_manager *mgr, const char *name, kh_err *err);
/* The VNC unix socket of a running VM with "graphics": "vnc" (a new
 * string), else NULL with err set (409 when it has no display now). */
char *kh_manager_vnc_path(kh_manager *mgr, const char *name, kh_err *err);
/* The console log of any VM (the last `tail` bytes, 0 = all). */
char *kh_manager_console_log(kh_manager *mgr, const char *name, size_t tail, size_t *len,
                             kh_err *err);

void kh_manager_counts(const kh_manager *mgr, unsigned *total, unsigned *running);

/* A read-only view of one VM for observers (instance/metrics.c). Valid during the
 * callback only. */
typedef struct kh_vm_info {
    const char *name;
    const char *id;
    const char *state;        /* "stopped", "running", ... */
    pid_t pid;                /* QEMU, or 0 */
    double started_at;        /* wall time, 0 when not running */
    const kh_vm_spec *spec;
    bool qmp_ready;           /* running or paused with QMP connected */
    unsigned long qmp_rtt_us; /* last QMP round trip */
} kh_vm_info;
typedef void (*kh_manager_vm_fn)(const kh_vm_info *info, void *opaque);
void kh_manager_foreach(kh_manager *mgr, kh_manager_vm_fn fn, void *opaque);
/* Send a QMP command to a running VM by id (args stolen): read-only
 * queries (instance/metrics.c) and the snapshot jobs (instance/snapshot.c). The
 * reply callback always runs (with an error if QEMU goes away). -1 with err
 * (KH_E_CONFLICT when the VM is not running) and no callback otherwise. */
int kh_manager_qmp(kh_manager *mgr, const char *id, const char *command, json_t *args,
                   kh_qmp_reply_cb cb, void *opaque, kh_err *err);

/* ---- for disk attach and detach (instance/disk.c) ---- */

/* Every QMP event of every VM, after the manager's own handling, goes to
 * each hook (at most KH_MANAGER_EVENT_HOOKS; add returns -1 beyond). */
#define KH_MANAGER_EVENT_HOOKS 4
typedef void (*kh_manager_event_fn)(void *opaque, const char *vm_id, const char *event,
                                    json_t *data);
int kh_manager_add_event_hook(kh_manager *mgr, kh_manager_event_fn fn, void *opaque);
/* Not a QMP event: told to the hooks (data {"vm": NAME}) once a QEMU that
 * outlived a daemon restart is adopted again (running or paused). */
#define KH_MANAGER_EVENT_REATTACHED "KVMHOST_REATTACHED"
void kh_manager_remove_event_hook(kh_manager *mgr, kh_manager_event_fn fn, void *opaque);
/* kh_manager_qmp with an fd passed along (SCM_RIGHTS; for add-fd/getfd).
 * fd is owned from the call on, also when it fails. */
int kh_manager_qmp_fd(kh_manager *mgr, const char *id, const char *command, json_t *args,
                      int fd, kh_qmp_reply_cb cb, void *opaque, kh_err *err);

/* ---- the cluster's hooks (set by the daemon in a cluster; none on a single
 * host). The instance layer knows no etcd: it asks and tells through these. */
typedef struct kh_manager_cluster_ops {
    /* Before a VM is created: claim id as this host's and name cluster-wide.
     * -1 with err (409 naming the host that has the name, 503 no quorum). */
    int (*claim)(void *opaque, const char *id, const char *name, kh_err *err);
    /* The same without blocking: done(done_opaque, NULL or the error) runs
     * once, later, on the loop; -1 with err (done not called) when it cannot
     * be sent (no quorum). NULL: only the blocking claim. */
    int (*claim_async)(void *opaque, const char *id, const char *name,
                       void (*done)(void *done_opaque, const kh_err *err), void *done_opaque,
                       kh_err *err);
    /* A create that failed after its claim gives it back. */
    void (*unclaim)(void *opaque, const char *id, const char *name);
    /* Before a start or resume: -1 with err when this host may not run id
     * now (its lease is not alive, or its claim on id is not current). */
    int (*may_run)(void *opaque, const char *id, const char *name, kh_err *err);
    /* The VM's view (kh_manager_vm_json's) changed: created, patched, state. */
    void (*changed)(void *opaque, const char *id, const json_t *vm);
    /* The VM was deleted. */
    void (*deleted)(void *opaque, const char *id, const char *name);
} kh_manager_cluster_ops;
/* ops NULL: no cluster (the single host). ops must outlive the manager. */
void kh_manager_set_cluster(kh_manager *mgr, const kh_manager_cluster_ops *ops, void *opaque);

/* The QEMU node index of disk i of a running VM ("disk<N>"). */
int kh_manager_disk_node(kh_manager *mgr, const char *id, size_t i);
/* Live-restore (backup/restore.c): the next start of VM name gives
 * each qcow2 disk i with fds[i] >= 0 a read-only NBD backing over that
 * connected socket (the disk must have no backing layers). The fds are
 * owned from the call on (closed when not taken). fds NULL: drop any
 * not taken yet. */
int kh_manager_nbd_backing(kh_manager *mgr, const char *name, const int *fds, size_t n,
                           kh_err *err);
/* Which VMs refer to a volume: [{"vm", "running", "readonly"}]. */
json_t *kh_manager_volume_users(kh_manager *mgr, const char *ref);

#endif
