/* manager.h - the VMs of this host and their lifecycle.
 *
 * The manager owns every VM: its spec (from the store), its state machine
 * and, while it runs, its QEMU process, QMP connection, console and cgroup.
 * It runs on the loop thread; actions are tasks (vm/task.h) and every state
 * change is written to the store and published as a "vm.state" event.
 *
 * State machine (one action at a time per VM; kill is always accepted while
 * a QEMU exists):
 *
 *   stopped --start--> starting --QMP ready + cont--> running
 *   running --pause--> paused --resume--> running
 *   running|paused --stop--> stopping --(guest powers off | timeout: kill)--> stopped
 *   any but stopped --kill--> stopped
 *   QEMU exits for any reason --> stopped (state_reason says why)
 *
 * Restart safety: QEMU runs in its own session and cgroup, with its pid and
 * start time recorded before `cont`. kh_manager_new() reattaches to every
 * QEMU that still runs (QMP and console again), reconciles the ones that
 * ended meanwhile, and kills the QEMU of a start that never completed.
 */
#ifndef KH_VM_MANAGER_H
#define KH_VM_MANAGER_H

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
#include "vm/console.h"
#include "vm/event.h"
#include "vm/task.h"

typedef struct kh_manager kh_manager;

typedef struct kh_manager_config {
    const char *state_dir;     /* kvmhost.db, vms/<id>/{console.log,qemu.log}, cache/ */
    const char *run_dir;       /* vms/<id>/{qmp.sock,serial.sock,qemu.pid,vnc.sock} */
    const char *qemu_binary;
    kh_qemu_caps caps;
    kh_accel accel;
    bool accel_pending;        /* the probe still runs: starts wait for
                                * kh_manager_set_accel() */
    const kh_cgroups *cgroups;
    bool drop_privileges;      /* run QEMU as uid/gid/groups */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    unsigned start_timeout_ms; /* QMP ready deadline; 0 = 30 s */
    kh_storage *storage;       /* resolves disks given as volumes (NULL: none) */
    kh_netmgr *net;            /* networks for NICs (NULL: VMs with NICs are refused) */
} kh_manager_config;

typedef enum kh_vm_action {
    KH_ACTION_START,
    KH_ACTION_STOP,
    KH_ACTION_KILL,
    KH_ACTION_REBOOT,
    KH_ACTION_PAUSE,
    KH_ACTION_RESUME,
} kh_vm_action;

/* Load the VMs from the store and reattach to running QEMUs (asynchronously:
 * the states settle within the next loop iterations). cfg is copied. */
kh_manager *kh_manager_new(uv_loop_t *loop, kh_store *store, kh_events *events,
                           kh_tasks *tasks, const kh_manager_config *cfg, kh_err *err);
/* Detach from every QEMU without touching it (daemon shutdown). */
void kh_manager_free(kh_manager *mgr);

json_t *kh_manager_list_json(kh_manager *mgr);
json_t *kh_manager_vm_json(kh_manager *mgr, const char *name, kh_err *err);
/* Create from a spec object; returns the VM object. */
json_t *kh_manager_create(kh_manager *mgr, const json_t *spec, kh_err *err);
json_t *kh_manager_patch(kh_manager *mgr, const char *name, const json_t *patch, kh_err *err);
int kh_manager_delete(kh_manager *mgr, const char *name, kh_err *err);
/* Record the vCPU count a running VM has after a hot-plug (vm/hotplug.c):
 * the spec's vcpus (max_vcpus is kept) in the store, the vCPU pinning
 * re-applied. Returns the VM object. */
json_t *kh_manager_set_live_vcpus(kh_manager *mgr, const char *id, unsigned vcpus, kh_err *err);

/* Check and begin an action. opts may hold "timeout" (stop). Returns the
 * running task, or NULL with err set (KH_E_CONFLICT when the state forbids
 * it, KH_E_NOTFOUND, KH_E_INVALID for bad opts) and nothing changed. */
kh_task *kh_manager_action(kh_manager *mgr, const char *name, kh_vm_action action,
                           const json_t *opts, kh_err *err);
const char *kh_vm_action_name(kh_vm_action action);

/* A file in the run dir of the QEMU that runs VM id (RUN_DIR/vms/<id>/file):
 * it lives exactly as long as that QEMU, across daemon restarts (the dir
 * goes when QEMU exits). NULL when the VM has no QEMU. */
char *kh_manager_qemu_file(kh_manager *mgr, const char *id, const char *file);
/* The console of a running VM (KH_E_CONFLICT when it is not running). The
 * pointer is valid until the VM stops; viewers learn it via on_closed. */
kh_console *kh_manager_console(kh_manager *mgr, const char *name, kh_err *err);
/* The VNC unix socket of a running VM with "graphics": "vnc" (a new
 * string), else NULL with err set (409 when it has no display now). */
char *kh_manager_vnc_path(kh_manager *mgr, const char *name, kh_err *err);
/* The console log of any VM (the last `tail` bytes, 0 = all). */
char *kh_manager_console_log(kh_manager *mgr, const char *name, size_t tail, size_t *len,
                             kh_err *err);

/* The accelerator probe finished: starts that waited for it go on. */
void kh_manager_set_accel(kh_manager *mgr, kh_accel accel);
/* A child process ended (the daemon's SIGCHLD reaper calls this). */
void kh_manager_child_exited(kh_manager *mgr, pid_t pid, int status);
void kh_manager_counts(const kh_manager *mgr, unsigned *total, unsigned *running);

/* A read-only view of one VM for observers (vm/metrics.c). Valid during the
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
 * queries (vm/metrics.c) and the snapshot jobs (vm/snapshot.c). The
 * reply callback always runs (with an error if QEMU goes away). -1 with err
 * (KH_E_CONFLICT when the VM is not running) and no callback otherwise. */
int kh_manager_qmp(kh_manager *mgr, const char *id, const char *command, json_t *args,
                   kh_qmp_reply_cb cb, void *opaque, kh_err *err);

/* ---- disk attach and detach (vm/disk.c) ---- */

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

/* A VM's disks, taken for a change. */
typedef struct kh_vm_disks {
    char id[37];
    bool live;                    /* a QEMU runs it (running or paused, QMP up) */
    kh_vm_spec *spec;             /* a copy (owned by the caller) */
    int node[KH_VM_DISKS_MAX];    /* QEMU node "disk<N>" of each spec disk */
} kh_vm_disks;
/* Take a VM's disks for a change: 409 while an action or another disk
 * change runs, while it starts or stops, and for a template. Until
 * kh_manager_disk_end the VM refuses actions (but kill) and disk PATCHes. */
int kh_manager_disk_begin(kh_manager *mgr, const char *name, kh_vm_disks *out, kh_err *err);
void kh_manager_disk_end(kh_manager *mgr, const char *id);
/* Store a new disk list: spec (stolen) becomes the VM's spec; for a VM
 * with a QEMU, node gives the QEMU node of each disk (kept across a daemon
 * restart). Returns the VM object, or NULL with err set and nothing
 * changed. */
json_t *kh_manager_disk_commit(kh_manager *mgr, const char *id, kh_vm_spec *spec,
                               const int *node, kh_err *err);
/* The QEMU node index of disk i of a running VM ("disk<N>"). */
int kh_manager_disk_node(kh_manager *mgr, const char *id, size_t i);
/* Which VMs refer to a volume: [{"vm", "running", "readonly"}]. */
json_t *kh_manager_volume_users(kh_manager *mgr, const char *ref);

/* ---- NIC changes (vm/nic.c) ---- */

/* The tap of the NIC with this MAC: "kh" + its 12 hex digits. */
void kh_manager_tap_name(const char *mac, char out[16]);
/* Would the VM accept this NIC list (an array of NIC objects)? removed:
 * the index of the NIC that goes (its limits.nic entry goes too, later
 * ones move down), or -1. Returns it
 * checked and completed (MACs assigned), or NULL with err (400/404/409).
 * Nothing changes. */
json_t *kh_manager_nics_check(kh_manager *mgr, const char *name, const json_t *nics,
                              int removed, kh_err *err);
/* Replace the VM's NIC list in its spec and the store, in any state but
 * starting/stopping (vm/nic.c changes a running QEMU first); the network
 * manager's bindings (reservations, anti-spoofing, security groups)
 * follow at once. */
int kh_manager_nics_commit(kh_manager *mgr, const char *name, const json_t *nics, int removed,
                           kh_err *err);

#endif
