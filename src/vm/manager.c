#include "vm/manager.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/limits.h"
#include "conf/vm_spec.h"
#include "host/proc.h"
#include "net/link.h"
#include "qemu/kernel.h"
#include "qemu/process.h"
#include "qemu/qmp.h"
#include "schema/schema.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/inet.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/sock.h"
#include "vm/quota.h"

static uint64_t kh_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define CONSOLE_LOG_MAX (1024 * 1024)
#define QEMU_LOG_MAX (256 * 1024)
#define STOP_TIMEOUT_DEFAULT 60
#define STOP_TIMEOUT_MAX 3600

/* Fixed fd numbers inside QEMU (see kh_process_spawn): golden-testable argv. */
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

typedef enum vm_state {
    VM_STOPPED,
    VM_STARTING,
    VM_RUNNING,
    VM_PAUSED,
    VM_STOPPING,
} vm_state;

static const char *const state_names[] = { "stopped", "starting", "running", "paused",
                                            "stopping" };

typedef struct vm vm;
typedef struct start_job start_job;

/* QMP callbacks reach their VM through a link that is cut when the VM lets
 * go of the connection; the link itself is freed by the last callback
 * (on_closed). So a late reply never touches a VM that moved on or is gone. */
typedef struct qmp_link {
    vm *v;
} qmp_link;

struct vm {
    kh_manager *mgr;
    char id[37];
    kh_vm_spec *spec;
    vm_state state;
    char *reason;
    double created_at, updated_at, started_at;

    /* While a QEMU exists. */
    pid_t pid;
    unsigned long long pid_start;
    bool is_child;         /* spawned by this daemon: waitpid gives the status */
    kh_accel accel;
    int pidfd;
    uv_poll_t *pidfd_poll;
    kh_qmp *qmp;
    qmp_link *qlink;
    kh_console *console;
    start_job *start_job;  /* kernel preparation in the thread pool */
    uv_timer_t *timer;     /* start deadline or stop grace */
    char *going_down;      /* why QEMU is expected to exit ("stopped", ...) */
    bool reattaching;
    bool await_accel;      /* a start waiting for the accelerator probe */
    bool pinned_others;    /* emulator/iothread pinning applied: undo it when unset */
    bool disk_busy;        /* a disk attach or detach is under way (vm/disk.c) */
    pid_t *vcpu_tids;      /* from the last query-cpus-fast (pinning) */
    size_t nvcpu_tids;

    kh_task *task;         /* the action in progress */
    kh_vm_action task_action;
    kh_task *kill_task;    /* a kill that overtook task */
    vm *next;
    /* Disks (vm/disk.c): the QEMU node index ("disk<N>") of each spec disk
     * while a QEMU runs; hot-plug and -unplug break the identity, so it is
     * kept in RUN_DIR/vms/<id>/disks.json for a daemon restart. */
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
};

struct start_job {
    uv_work_t work;
    vm *v;
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

struct kh_manager {
    uv_loop_t *loop;
    kh_store *store;
    kh_events *events;
    kh_tasks *tasks;
    kh_manager_config cfg;
    char *state_dir, *run_dir, *qemu_binary, *kernel_cache;
    gid_t *groups;
    vm *vms;
    unsigned count;
    kernel_memo *kernels;
    struct {
        kh_manager_event_fn fn;
        void *opaque;
    } event_hooks[KH_MANAGER_EVENT_HOOKS];
};

/* ---- helpers ---- */

const char *kh_vm_action_name(kh_vm_action action)
{
    static const char *const names[] = { "vm.start", "vm.stop", "vm.kill", "vm.reboot",
                                         "vm.pause", "vm.resume" };
    return (unsigned)action < KH_ARRAY_LEN(names) ? names[action] : "vm.action";
}

static vm *find(kh_manager *mgr, const char *name, kh_err *err)
{
    if (kh_check_name(name, "vm name", err) < 0)
        return NULL;
    for (vm *v = mgr->vms; v; v = v->next)
        if (strcmp(v->spec->name, name) == 0)
            return v;
    kh_err_set(err, KH_E_NOTFOUND, "no vm named %s", name);
    return NULL;
}

static char *vm_state_path(const vm *v, const char *file)
{
    return xasprintf("%s/vms/%s%s%s", v->mgr->state_dir, v->id, file ? "/" : "", file ? file : "");
}

static char *vm_run_path(const vm *v, const char *file)
{
    return xasprintf("%s/vms/%s%s%s", v->mgr->run_dir, v->id, file ? "/" : "", file ? file : "");
}

static json_t *time_json(double t)
{
    if (t <= 0)
        return json_null();
    char s[32];
    kh_time_format(t, s);
    return json_string(s);
}

static bool boot_has_mac(const vm *v, const char *mac)
{
    for (int i = 0; mac && i < v->boot_nics; i++)
        if (strcmp(v->boot_macs[i], mac) == 0)
            return true;
    return false;
}

/* "hotplugged" on each disk and NIC while a QEMU runs and boot.json says
 * what it started with: true for what can be unplugged live. Runtime only,
 * never part of the stored spec. */
static void hotplugged_json(const vm *v, json_t *j)
{
    if (v->pid <= 0)
        return;
    json_t *disks = json_object_get(j, "disks");
    for (size_t i = 0; v->boot_disks >= 0 && i < v->spec->ndisks && i < KH_VM_DISKS_MAX; i++)
        json_object_set_new(json_array_get(disks, i), "hotplugged",
                            json_boolean(v->disk_node[i] >= v->boot_disks));
    json_t *nics = json_object_get(j, "nics");
    for (size_t i = 0; v->boot_nics >= 0 && i < v->spec->nnics; i++)
        json_object_set_new(json_array_get(nics, i), "hotplugged",
                            json_boolean(!boot_has_mac(v, v->spec->nics[i].mac)));
}

static json_t *vm_json(const vm *v)
{
    json_t *j = kh_vm_spec_to_json(v->spec);
    hotplugged_json(v, j);
    json_object_set_new(j, "id", json_string(v->id));
    json_object_set_new(j, "state", json_string(state_names[v->state]));
    json_object_set_new(j, "state_reason", v->reason ? json_string(v->reason) : json_null());
    json_object_set_new(j, "pid", v->pid > 0 ? json_integer(v->pid) : json_null());
    json_object_set_new(j, "accelerator",
                        v->pid > 0 ? json_string(kh_accel_name(v->accel)) : json_null());
    json_object_set_new(j, "created_at", time_json(v->created_at));
    json_object_set_new(j, "updated_at", time_json(v->updated_at));
    json_object_set_new(j, "started_at", v->pid > 0 ? time_json(v->started_at) : json_null());
    json_object_set_new(j, "console_viewers",
                        json_integer(v->console ? kh_console_viewer_count(v->console) : 0));
    json_object_set_new(j, "template",
                        json_boolean(kh_storage_is_template(v->mgr->cfg.storage, v->id)));
    return j;
}

static void persist_runtime(vm *v)
{
    kh_vm_row row;
    memset(&row, 0, sizeof(row));
    memcpy(row.id, v->id, sizeof(row.id));
    row.state = (char *)(uintptr_t)state_names[v->state];
    row.state_reason = v->reason;
    row.pid = v->pid;
    row.pid_start = v->pid_start;
    row.accel = v->pid > 0 ? (char *)(uintptr_t)kh_accel_name(v->accel) : NULL;
    row.started_at = v->started_at;
    kh_err err = KH_ERR_INIT;
    if (kh_store_vm_update_runtime(v->mgr->store, &row, &err) < 0)
        kh_log(KH_LOG_ERROR, "vm.persist", "vm=%s error=\"%s\"", v->spec->name, err.msg);
}

static void set_state(vm *v, vm_state state, const char *reason)
{
    vm_state prev = v->state;
    v->state = state;
    if (reason) {
        free(v->reason);
        v->reason = xstrdup(reason);
    }
    persist_runtime(v);
    char q[300];
    kh_log(KH_LOG_INFO, "vm.state", "vm=%s state=%s previous=%s reason=%s", v->spec->name,
           state_names[state], state_names[prev], kh_log_quote(q, sizeof(q), v->reason));
    kh_events_publish(v->mgr->events, "vm.state", v->spec->name,
                      json_pack("{s:s, s:s, s:s?}", "state", state_names[state], "previous",
                                state_names[prev], "reason", v->reason));
}

static void going_down(vm *v, const char *why)
{
    /* The first cause wins: a guest power-off after a stop is still a stop. */
    if (!v->going_down)
        v->going_down = xstrdup(why);
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void timer_stop(vm *v)
{
    if (v->timer) {
        uv_close((uv_handle_t *)v->timer, timer_closed);
        v->timer = NULL;
    }
}

static void timer_start(vm *v, uint64_t ms, uv_timer_cb cb)
{
    timer_stop(v);
    v->timer = xcalloc(1, sizeof(*v->timer));
    uv_timer_init(v->mgr->loop, v->timer);
    v->timer->data = v;
    uv_timer_start(v->timer, cb, ms, 0);
}

static void kill_qemu(vm *v)
{
    if (v->pid <= 0)
        return;
    /* Through the pidfd when we have one: no risk of hitting a reused pid. */
    if (v->pidfd >= 0 && syscall(SYS_pidfd_send_signal, v->pidfd, SIGKILL, NULL, 0) == 0)
        return;
    if (kh_proc_alive(v->pid, v->pid_start))
        kill(v->pid, SIGKILL);
}

static void task_finish_ok(vm *v)
{
    if (v->task) {
        kh_task *t = v->task;
        v->task = NULL;
        kh_task_succeed(t, vm_json(v));
    }
}

static void task_finish_err(vm *v, const kh_err *err)
{
    if (v->task) {
        kh_task *t = v->task;
        v->task = NULL;
        kh_task_fail(t, err);
    }
}

/* The last lines of qemu.log, for error messages. */
static char *qemu_log_tail(vm *v)
{
    char *path = vm_state_path(v, "qemu.log");
    size_t len = 0;
    kh_err err = KH_ERR_INIT;
    char *text = kh_console_log_read(path, 300, &len, &err);
    free(path);
    if (!text)
        return xstrdup("");
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return text;
}

/* ---- process end ---- */

static void pidfd_closed(uv_handle_t *h)
{
    free(h);
}

static void disk_nodes_reset(vm *v)
{
    for (int i = 0; i < KH_VM_DISKS_MAX; i++)
        v->disk_node[i] = i;
}

static void boot_reset(vm *v)
{
    v->boot_disks = -1;
    v->boot_nics = -1;
}

/* At start: what QEMU gets, in memory and in boot.json. */
static void boot_record(vm *v)
{
    v->boot_disks = (int)v->spec->ndisks;
    v->boot_nics = 0;
    json_t *macs = json_array();
    for (size_t i = 0; i < v->spec->nnics && i < KH_VM_NICS_MAX; i++) {
        const char *mac = v->spec->nics[i].mac ? v->spec->nics[i].mac : "";
        snprintf(v->boot_macs[v->boot_nics++], KH_MAC_STRLEN, "%s", mac);
        json_array_append_new(macs, json_string(mac));
    }
    json_t *doc = json_pack("{s:i, s:o}", "disks", v->boot_disks, "macs", macs);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *path = vm_run_path(v, "boot.json");
    kh_err err = KH_ERR_INIT;
    if (kh_fs_write_atomic(path, text, strlen(text), 0600, &err) < 0)
        kh_log(KH_LOG_ERROR, "vm.boot", "vm=%s error=\"%s\"", v->spec->name, err.msg);
    free(path);
    free(text);
}

/* After a daemon restart: boot.json, else unknown. */
static void boot_load(vm *v)
{
    boot_reset(v);
    char *path = vm_run_path(v, "boot.json");
    json_t *j = kh_fs_read_json(path, 65536, NULL);
    free(path);
    json_t *d = json_object_get(j, "disks"), *macs = json_object_get(j, "macs");
    if (json_is_integer(d) && json_integer_value(d) >= 0 &&
        json_integer_value(d) <= KH_VM_DISKS_MAX && json_is_array(macs) &&
        json_array_size(macs) <= KH_VM_NICS_MAX) {
        v->boot_disks = (int)json_integer_value(d);
        v->boot_nics = 0;
        size_t i;
        json_t *m;
        json_array_foreach(macs, i, m)
            snprintf(v->boot_macs[v->boot_nics++], KH_MAC_STRLEN, "%s",
                     json_string_value(m) ? json_string_value(m) : "");
    }
    json_decref(j);
}

static void release_runtime(vm *v)
{
    timer_stop(v);
    disk_nodes_reset(v);
    boot_reset(v);
    v->reattaching = false;
    v->await_accel = false;
    free(v->vcpu_tids);
    v->vcpu_tids = NULL;
    v->nvcpu_tids = 0;
    v->pinned_others = false;
    if (v->start_job) {
        v->start_job->cancelled = true;
        v->start_job = NULL;
    }
    if (v->pidfd_poll) {
        uv_close((uv_handle_t *)v->pidfd_poll, pidfd_closed);
        v->pidfd_poll = NULL;
    }
    if (v->pidfd >= 0) {
        close(v->pidfd);
        v->pidfd = -1;
    }
    if (v->qmp) {
        kh_qmp *q = v->qmp;
        v->qmp = NULL;
        v->qlink->v = NULL;
        v->qlink = NULL;
        kh_qmp_close(q);
    }
    if (v->console) {
        kh_console *c = v->console;
        v->console = NULL;
        kh_console_free(c);
    }
}

/* Remove the VM's (empty) cgroup dirs; a failure is logged, never fatal. */
static void cgroup_remove(vm *v)
{
    const kh_cgroups *cg = v->mgr->cfg.cgroups;
    kh_err err = KH_ERR_INIT;
    if (cg && cg->version && kh_cgroups_vm_remove(cg, v->id, &err) < 0)
        kh_log(KH_LOG_WARN, "vm.cgroup", "vm=%s error=\"%s\"", v->spec->name, err.msg);
}

/* QEMU is gone: release everything and settle the state. status < 0 when
 * unknown (not our child). */
static void process_ended(vm *v, int status)
{
    if (v->pid <= 0)
        return;
    char why[256];
    if (v->going_down)
        snprintf(why, sizeof(why), "%s", v->going_down);
    else if (status >= 0 && WIFSIGNALED(status))
        snprintf(why, sizeof(why), "crashed: QEMU killed by signal %d", WTERMSIG(status));
    else if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0)
        snprintf(why, sizeof(why), "crashed: QEMU exited with status %d", WEXITSTATUS(status));
    else if (status >= 0)
        snprintf(why, sizeof(why), "QEMU exited");
    else
        snprintf(why, sizeof(why), "QEMU exited (status unknown)");

    kh_log(KH_LOG_INFO, "vm.exit", "vm=%s pid=%d status=%d", v->spec->name, (int)v->pid, status);
    vm_state was = v->state;
    release_runtime(v);
    v->pid = 0;
    v->pid_start = 0;
    v->is_child = false;
    KH_FREE(v->going_down);

    kh_err err = KH_ERR_INIT;
    cgroup_remove(v);
    char *run = vm_run_path(v, NULL);
    kh_fs_rm_rf(run, NULL);
    free(run);

    if (was == VM_STARTING && v->task && v->task_action == KH_ACTION_START) {
        char *tail = qemu_log_tail(v);
        kh_err_set(&err, KH_E_QEMU, "QEMU exited during start (%s)%s%s", why,
                   *tail ? ": " : "", tail);
        free(tail);
        set_state(v, VM_STOPPED, why);
        task_finish_err(v, &err);
    } else {
        set_state(v, VM_STOPPED, why);
        if (v->task && (v->task_action == KH_ACTION_STOP || v->task_action == KH_ACTION_KILL)) {
            task_finish_ok(v);
        } else if (v->task) {
            kh_err_set(&err, KH_E_CONFLICT, "vm %s stopped (%s) during %s", v->spec->name, why,
                       kh_vm_action_name(v->task_action));
            task_finish_err(v, &err);
        }
    }
    if (v->kill_task) {
        kh_task *t = v->kill_task;
        v->kill_task = NULL;
        kh_task_succeed(t, vm_json(v));
    }
}

static void pidfd_ready(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    vm *v = h->data;
    int wstatus = -1;
    if (v->is_child) {
        pid_t r = waitpid(v->pid, &wstatus, WNOHANG);
        if (r == 0)
            return; /* not yet: spurious wake-up */
        if (r < 0)
            wstatus = -1; /* already reaped by the SIGCHLD path */
    }
    process_ended(v, wstatus);
}

void kh_manager_child_exited(kh_manager *mgr, pid_t pid, int status)
{
    for (vm *v = mgr->vms; v; v = v->next) {
        if (v->pid == pid && v->is_child) {
            process_ended(v, status);
            return;
        }
    }
}

static int watch_pid(vm *v, kh_err *err)
{
    v->pidfd = kh_process_pidfd(v->pid);
    if (v->pidfd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "pidfd_open(%d)", (int)v->pid);
        return -1;
    }
    v->pidfd_poll = xcalloc(1, sizeof(*v->pidfd_poll));
    uv_poll_init(v->mgr->loop, v->pidfd_poll, v->pidfd);
    v->pidfd_poll->data = v;
    uv_poll_start(v->pidfd_poll, UV_READABLE, pidfd_ready);
    return 0;
}

/* ---- QMP ---- */

static vm *link_vm(void *opaque)
{
    return ((qmp_link *)opaque)->v;
}

static void qmp_ignore_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    vm *v = link_vm(opaque);
    if (v && err)
        kh_log(KH_LOG_WARN, "vm.qmp", "vm=%s error=\"%s\"", v->spec->name, err->msg);
}

static void qmp_send(vm *v, const char *cmd, kh_qmp_reply_cb cb)
{
    kh_err err = KH_ERR_INIT;
    if (!v->qmp ||
        kh_qmp_command(v->qmp, cmd, NULL, cb ? cb : qmp_ignore_reply, v->qlink, &err) < 0) {
        kh_err_set(&err, KH_E_QEMU, "QMP is not connected");
        if (cb) {
            qmp_link tmp = { v };
            cb(NULL, NULL, &err, &tmp);
        }
    }
}

static void qmp_open(vm *v)
{
    v->qlink = xcalloc(1, sizeof(*v->qlink));
    v->qlink->v = v;
}

static void hooks_call(vm *v, const char *event, json_t *data)
{
    for (size_t i = 0; i < KH_MANAGER_EVENT_HOOKS; i++)
        if (v->mgr->event_hooks[i].fn)
            v->mgr->event_hooks[i].fn(v->mgr->event_hooks[i].opaque, v->id, event, data);
}

static void on_qmp_event(kh_qmp *q, const char *event, json_t *data, double ts, void *opaque)
{
    (void)q;
    (void)ts;
    vm *v = link_vm(opaque);
    if (!v)
        return;
    kh_log(KH_LOG_DEBUG, "vm.qmp_event", "vm=%s event=%s", v->spec->name, event);
    hooks_call(v, event, data);
    if (strcmp(event, "SHUTDOWN") == 0) {
        /* With -no-shutdown QEMU stays until told: the reason is ours to keep. */
        const char *reason = json_string_value(json_object_get(data, "reason"));
        bool guest = json_is_true(json_object_get(data, "guest"));
        if (v->state == VM_STOPPING)
            going_down(v, "stopped: guest powered off on ACPI request");
        else if (guest)
            going_down(v, "guest shut down");
        else {
            char why[128];
            snprintf(why, sizeof(why), "shut down (%s)", reason ? reason : "host");
            going_down(v, why);
        }
        qmp_send(v, "quit", NULL);
    } else if (strcmp(event, "STOP") == 0 && !v->task && v->state == VM_RUNNING) {
        set_state(v, VM_PAUSED, "paused by QEMU");
    } else if (strcmp(event, "RESUME") == 0 && !v->task && v->state == VM_PAUSED) {
        set_state(v, VM_RUNNING, "resumed");
    } else if (strcmp(event, "RESET") == 0) {
        kh_events_publish(v->mgr->events, "vm.reset", v->spec->name, NULL);
    }
}

static void on_qmp_closed(kh_qmp *q, void *opaque)
{
    qmp_link *link = opaque;
    vm *v = link->v;
    if (v && v->qmp == q) {
        /* QEMU closed it (it is exiting): the pidfd tells the end. */
        v->qmp = NULL;
        v->qlink = NULL;
    }
    free(link);
}

static void start_fail(vm *v, const kh_err *err)
{
    /* Kill whatever was started; process_ended() settles the rest. If no
     * QEMU exists yet, settle here. */
    kh_err copy = *err;
    if (v->pid > 0) {
        going_down(v, "start failed");
        kh_task *t = v->task;
        v->task = NULL;
        kill_qemu(v);
        if (t)
            kh_task_fail(t, &copy);
        return;
    }
    release_runtime(v);
    set_state(v, VM_STOPPED, "start failed");
    task_finish_err(v, &copy);
}

static void on_cont(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    vm *v = link_vm(opaque);
    if (!v || v->state != VM_STARTING)
        return;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "cont: %s", err->msg);
        start_fail(v, &e);
        return;
    }
    timer_stop(v);
    v->started_at = kh_wall_time();
    set_state(v, VM_RUNNING, "started");
    task_finish_ok(v);
}

static void reattach_status(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque);

static void on_throttle_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    vm *v = link_vm(opaque);
    if (v && err) {
        kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, err->msg);
        kh_events_publish(v->mgr->events, "vm.limits_failed", v->spec->name,
                          json_pack("{s:s}", "message", err->msg));
    }
}

static void pin_failed(vm *v, const kh_err *e)
{
    kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e->msg);
    kh_events_publish(v->mgr->events, "vm.limits_failed", v->spec->name,
                      json_pack("{s:s}", "message", e->msg));
}

/* Iothreads and the emulator's other threads, once the vCPU threads are
 * known (they keep cpu_affinity). */
static void on_iothreads_pin(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    vm *v = link_vm(opaque);
    if (!v || v->pid <= 0)
        return;
    kh_err e = KH_ERR_INIT;
    pid_t io[64];
    size_t n = err ? 0 : kh_quota_vcpu_threads(ret, io, KH_ARRAY_LEN(io));
    if (err)
        kh_err_set(&e, KH_E_QEMU, "query-iothreads: %s", err->msg);
    else if (kh_quota_pin_others(v->pid, v->vcpu_tids, v->nvcpu_tids, io, n, v->spec->limits,
                                 &e) == 0)
        return;
    pin_failed(v, &e);
}

static void on_cpus_pin(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    vm *v = link_vm(opaque);
    if (!v || v->pid <= 0)
        return;
    kh_err e = KH_ERR_INIT;
    pid_t tids[256];
    size_t n = err ? 0 : kh_quota_vcpu_threads(ret, tids, KH_ARRAY_LEN(tids));
    if (err) {
        kh_err_set(&e, KH_E_QEMU, "query-cpus-fast: %s", err->msg);
    } else if (kh_quota_pin(v->pid, tids, n, v->spec->limits, &e) == 0) {
        free(v->vcpu_tids);
        v->vcpu_tids = n ? xcalloc(n, sizeof(*tids)) : NULL;
        if (n)
            memcpy(v->vcpu_tids, tids, n * sizeof(*tids));
        v->nvcpu_tids = n;
        return;
    }
    pin_failed(v, &e);
}

/* Pinning: ask QEMU for its vCPU threads, then pin them (and the others). */
static void send_pinning(vm *v)
{
    kh_err e = KH_ERR_INIT;
    if (v->qmp && kh_qmp_command(v->qmp, "query-cpus-fast", NULL, on_cpus_pin, v->qlink, &e) < 0)
        kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    /* The other threads after the vCPUs (replies come in order, so the
     * vCPU thread ids are known by then); again once after they were
     * unpinned, to let them run anywhere. Both before `cont` at start. */
    const kh_limits *l = v->spec->limits;
    bool others = l && (l->nemu_cpus || l->nio_cpus);
    if (v->qmp && (others || v->pinned_others)) {
        v->pinned_others = others;
        if (kh_qmp_command(v->qmp, "query-iothreads", NULL, on_iothreads_pin, v->qlink, &e) < 0)
            kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    }
}

/* The balloon target (q35 only): limits.balloon_mib, or all of the guest's
 * memory when unset. At start the statistics are switched on too. */
static void send_balloon(vm *v, bool starting)
{
    if (v->spec->machine != KH_MACHINE_Q35 || !v->qmp)
        return;
    kh_err e = KH_ERR_INIT;
    if (starting)
        (void)kh_qmp_command(v->qmp, "qom-set",
                             json_pack("{s:s, s:s, s:i}", "path", "/machine/peripheral/balloon0",
                                       "property", "guest-stats-polling-interval", "value", 10),
                             on_throttle_reply, v->qlink, &e);
    uint64_t mib = v->spec->limits && v->spec->limits->balloon_mib ? v->spec->limits->balloon_mib
                                                                    : v->spec->memory_mib;
    if (starting && mib == v->spec->memory_mib)
        return; /* a fresh balloon is deflated already */
    json_int_t bytes = (json_int_t)mib * 1048576; /* mib <= 16 TiB: no overflow */
    if (kh_qmp_command(v->qmp, "balloon", json_pack("{s:I}", "value", bytes),
                       on_throttle_reply, v->qlink, &e) < 0)
        kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e.msg);
}

static uint64_t balloon_of(const kh_limits *l)
{
    return l ? l->balloon_mib : 0;
}

static bool same_list(const unsigned *a, size_t na, const unsigned *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(*a)) == 0);
}

/* cpu_affinity, emulator_cpus and iothread_cpus all equal. */
static bool same_affinity(const kh_limits *a, const kh_limits *b)
{
    static const kh_limits none;
    if (!a)
        a = &none;
    if (!b)
        b = &none;
    return same_list(a->cpus, a->ncpus, b->cpus, b->ncpus) &&
           same_list(a->emu_cpus, a->nemu_cpus, b->emu_cpus, b->nemu_cpus) &&
           same_list(a->io_cpus, a->nio_cpus, b->io_cpus, b->nio_cpus);
}

/* Disk limits through QMP, for each disk whose limits differ from old (old
 * NULL: at start, only disks with limits). */
static void send_throttles(vm *v, const kh_limits *old)
{
    for (size_t i = 0; i < v->spec->ndisks && v->qmp; i++) {
        const kh_disk_limits *now = kh_limits_disk(v->spec->limits, (unsigned)i);
        const kh_disk_limits *was = old ? kh_limits_disk(old, (unsigned)i) : NULL;
        if (!old && !now)
            continue;
        if (old && ((!now && !was) ||
                    (now && was && memcmp(now->v, was->v, sizeof(now->v)) == 0)))
            continue;
        kh_err e = KH_ERR_INIT;
        if (kh_qmp_command(v->qmp, "block_set_io_throttle",
                           kh_quota_throttle_args((unsigned)v->disk_node[i],
                                                  v->spec->machine == KH_MACHINE_Q35, now),
                           on_throttle_reply, v->qlink,
                           &e) < 0)
            kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    }
}

/* NICs with "link": "down" lose their carrier before the guest runs. */
static void send_links(vm *v)
{
    for (size_t i = 0; i < v->spec->nnics && v->qmp; i++) {
        if (!v->spec->nics[i].link_down)
            continue;
        char id[40];
        snprintf(id, sizeof(id), "net%zu-dev", i);
        kh_err e = KH_ERR_INIT;
        if (kh_qmp_command(v->qmp, "set_link", json_pack("{s:s, s:b}", "name", id, "up", 0),
                           qmp_ignore_reply, v->qlink, &e) < 0)
            kh_log(KH_LOG_WARN, "vm.nic_link", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    }
}

static void on_qmp_ready(kh_qmp *q, const kh_err *err, void *opaque)
{
    vm *v = link_vm(opaque);
    if (!v)
        return;
    if (err) {
        kh_log(KH_LOG_WARN, "vm.qmp", "vm=%s error=\"%s\"", v->spec->name, err->msg);
        if (v->state == VM_STARTING)
            start_fail(v, err);
        return;
    }
    if (v->reattaching) {
        kh_err e = KH_ERR_INIT;
        if (kh_qmp_command(q, "query-status", NULL, reattach_status, v->qlink, &e) < 0)
            kh_log(KH_LOG_WARN, "vm.reattach", "vm=%s error=\"%s\"", v->spec->name, e.msg);
        return;
    }
    if (v->state == VM_STARTING) {
        if (v->task)
            kh_task_progress(v->task, 80, "starting vCPUs");
        send_throttles(v, NULL); /* queued before cont: the guest never runs unthrottled */
        if (v->spec->limits && (v->spec->limits->ncpus || v->spec->limits->nemu_cpus ||
                                v->spec->limits->nio_cpus))
            send_pinning(v);
        send_balloon(v, true);
        send_links(v);
        qmp_send(v, "cont", on_cont);
    }
}

static const kh_qmp_callbacks qmp_cbs = {
    .on_ready = on_qmp_ready,
    .on_event = on_qmp_event,
    .on_closed = on_qmp_closed,
};

/* ---- start ---- */


static void start_deadline(uv_timer_t *t)
{
    vm *v = t->data;
    kh_err err = KH_ERR_INIT;
    kh_err_set(&err, KH_E_TIMEOUT, "QEMU did not become ready within %u ms",
               v->mgr->cfg.start_timeout_ms);
    start_fail(v, &err);
}

/* ---- disks given as volumes (storage/storage.h) ---- */

static bool has_qemu(const vm *v)
{
    return v->state != VM_STOPPED || v->pid > 0;
}

/* Resolve the volume disks of spec in place: file, format and backing
 * chain from the storage records. A writable disk may not be a read-only
 * base or the base of other volumes (writing it would corrupt them), and
 * when `self` is given (a start), a volume used by another VM with a QEMU
 * is refused unless both use it read-only (security case 23). code is the
 * error code for those refusals (400 at create, 409 at start). */
static int resolve_volumes(kh_manager *mgr, const vm *self, kh_vm_spec *spec, kh_code code,
                           kh_err *err)
{
    for (size_t i = 0; i < spec->ndisks; i++) {
        kh_disk_spec *d = &spec->disks[i];
        if (!d->volume)
            continue;
        if (!mgr->cfg.storage) {
            kh_err_set(err, KH_E_UNAVAILABLE, "disks[%zu]: storage is not available", i);
            return -1;
        }
        kh_volume_chain c;
        kh_err rerr = KH_ERR_INIT;
        if (kh_storage_resolve(mgr->cfg.storage, d->volume, &c, &rerr) < 0) {
            kh_err_set(err, rerr.code == KH_E_NOTFOUND ? KH_E_INVALID : rerr.code,
                       "disks[%zu].volume: %s", i, rerr.msg);
            return -1;
        }
        int rc = 0;
        if (!d->readonly && c.readonly) {
            kh_err_set(err, code, "disks[%zu]: volume %s is a read-only base; attach it "
                                  "readonly or use a clone", i, d->volume);
            rc = -1;
        } else if (!d->readonly && c.dependents) {
            kh_err_set(err, code, "disks[%zu]: volume %s is the base of %u other volume(s); "
                                  "attach it readonly", i, d->volume, c.dependents);
            rc = -1;
        }
        for (const vm *o = mgr->vms; rc == 0 && self && o; o = o->next) {
            if (o == self || !has_qemu(o))
                continue;
            for (size_t k = 0; k < o->spec->ndisks; k++) {
                const kh_disk_spec *od = &o->spec->disks[k];
                if (od->volume && strcmp(od->volume, d->volume) == 0 &&
                    !(od->readonly && d->readonly)) {
                    kh_err_set(err, KH_E_CONFLICT,
                               "disks[%zu]: volume %s is in use by the running vm %s; a "
                               "volume is shared only read-only", i, d->volume, o->spec->name);
                    rc = -1;
                    break;
                }
            }
        }
        if (rc == 0) {
            free(d->path);
            d->path = xstrdup(c.layer[0].path);
            d->format = c.layer[0].format;
            d->encrypted = c.encrypted;
            kh_disk_spec_clear_backing(d);
            if (c.n > 1) {
                d->nbacking = c.n - 1;
                d->backing = xcalloc(d->nbacking, sizeof(*d->backing));
                for (size_t j = 1; j < c.n; j++) {
                    d->backing[j - 1].path = xstrdup(c.layer[j].path);
                    d->backing[j - 1].format = c.layer[j].format;
                    d->backing[j - 1].encrypted = c.layer[j].encrypted;
                }
            }
        }
        kh_volume_chain_clear(&c);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The storage layer asks which VMs refer to a volume. */
static json_t *volume_users(void *opaque, const char *ref)
{
    kh_manager *mgr = opaque;
    json_t *arr = json_array();
    for (const vm *v = mgr->vms; v; v = v->next) {
        for (size_t i = 0; i < v->spec->ndisks; i++) {
            const kh_disk_spec *d = &v->spec->disks[i];
            if (d->volume && strcmp(d->volume, ref) == 0) {
                json_array_append_new(arr, json_pack("{s:s, s:b, s:b}", "vm", v->spec->name,
                                                     "running", has_qemu(v), "readonly",
                                                     d->readonly));
                break;
            }
        }
    }
    return arr;
}

typedef struct live_resize {
    kh_volume_resize_done done;
    void *opaque;
} live_resize;

static void on_block_resize(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    live_resize *lr = opaque;
    lr->done(err, lr->opaque);
    free(lr);
}

/* The storage layer grows a volume that a running VM writes to. */
static int volume_live_resize(void *opaque, const char *ref, uint64_t size,
                              kh_volume_resize_done done, void *done_opaque, kh_err *err)
{
    kh_manager *mgr = opaque;
    for (vm *v = mgr->vms; v; v = v->next) {
        if (!v->qmp || (v->state != VM_RUNNING && v->state != VM_PAUSED))
            continue;
        for (size_t i = 0; i < v->spec->ndisks; i++) {
            const kh_disk_spec *d = &v->spec->disks[i];
            if (!d->volume || strcmp(d->volume, ref) != 0 || d->readonly)
                continue;
            char node[32];
            snprintf(node, sizeof(node), "disk%d", v->disk_node[i]);
            live_resize *lr = xcalloc(1, sizeof(*lr));
            lr->done = done;
            lr->opaque = done_opaque;
            if (kh_qmp_command(v->qmp, "block_resize",
                               json_pack("{s:s, s:I}", "node-name", node, "size",
                                         (json_int_t)size),
                               on_block_resize, lr, err) < 0) {
                free(lr);
                return -1;
            }
            kh_log(KH_LOG_INFO, "volume.resize_online", "vm=%s volume=%s size=%llu",
                   v->spec->name, ref, (unsigned long long)size);
            return 0;
        }
    }
    kh_err_set(err, KH_E_CONFLICT, "volume %s: no running VM writes to it now", ref);
    return -1;
}

static int open_ro(const char *path, const char *what, kh_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        kh_err_errno(err, errno == ENOENT ? KH_E_INVALID : KH_E_INTERNAL, errno,
                     "%s: cannot open %s", what, path);
    return fd;
}

void kh_manager_tap_name(const char *mac, char out[16])
{
    size_t k = 0;
    out[k++] = 'k';
    out[k++] = 'h';
    for (const char *p = mac; p && *p && k < 15; p++)
        if (*p != ':')
            out[k++] = *p;
    out[k] = '\0';
}

static void tap_name(const vm *v, size_t i, char out[16])
{
    kh_manager_tap_name(v->spec->nics[i].mac, out);
}

/* The VM's taps, named kh<the MAC's 12 hex digits> (unique on the host,
 * within IFNAMSIZ, and stable when other NICs come and go), on their
 * networks' bridges; QEMU inherits them (it cannot open /dev/net/tun
 * itself): Q queues each (multiqueue when Q > 1), and as many
 * /dev/vhost-net fds when the host has it. */
static int open_nics(vm *v, int *fds, int *nic_fds, int *nic_vhost_fds, kh_err *err)
{
    const kh_vm_spec *spec = v->spec;
    uint64_t t0 = kh_now_ns();
    if (spec->nnics && !v->mgr->cfg.net) {
        kh_err_set(err, KH_E_UNAVAILABLE, "nics: networks are not available on this daemon");
        return -1;
    }
    unsigned queues = kh_qemu_nic_queues(spec);
    for (size_t i = 0; i < spec->nnics; i++) {
        char ifname[16];
        int tfd[KH_QEMU_NIC_QUEUES_MAX];
        tap_name(v, i, ifname);
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
               spec->nnics, queues, (unsigned long long)((kh_now_ns() - t0) / 1000));
    return 0;
}

/* limits.nic inbound_bps: a tbf qdisc on each tap's egress (what the
 * guest receives); NICs whose limit went away get their default qdisc
 * back. (outbound_bps is policed in nftables: sync_bindings.) */
static int apply_nic_rates(vm *v, const kh_limits *old, const kh_limits *now, kh_err *err)
{
    for (size_t i = 0; i < v->spec->nnics; i++) {
        const kh_nic_limits *o = kh_limits_nic(old, (unsigned)i);
        const kh_nic_limits *n = kh_limits_nic(now, (unsigned)i);
        char tap[16];
        tap_name(v, i, tap);
        int rc = 0;
        if (n && n->inbound_bps) {
            if (!o || o->inbound_bps != n->inbound_bps || o->inbound_burst != n->inbound_burst)
                rc = kh_link_rate_set(tap, n->inbound_bps,
                                      kh_limits_nic_burst(n->inbound_bps, n->inbound_burst), err);
        } else if (o && o->inbound_bps) {
            rc = kh_link_rate_clear(tap, err);
        }
        if (rc < 0) {
            kh_err_prefix(err, "limits.nic[%zu]", i);
            return -1;
        }
    }
    return 0;
}

/* Create the run dir, sockets and fds, build the argv, spawn QEMU. */
static void start_spawn(vm *v, const char *kernel_file)
{
    kh_manager *mgr = v->mgr;
    kh_err err = KH_ERR_INIT;
    int fds[FD_END];
    for (size_t i = 0; i < KH_ARRAY_LEN(fds); i++)
        fds[i] = -1;
    int disk_fds[KH_VM_DISKS_MAX];
    int backing_fds[KH_VM_DISKS_MAX][KH_DISK_BACKING_MAX];
    const int *backing_ptrs[KH_VM_DISKS_MAX] = { NULL };
    int secret_fds[KH_VM_DISKS_MAX];
    int bsecret_fds[KH_VM_DISKS_MAX][KH_DISK_BACKING_MAX];
    const int *bsecret_ptrs[KH_VM_DISKS_MAX] = { NULL };
    kh_vm_spec *rs = kh_vm_spec_dup(v->spec); /* volumes resolved to files */
    int nic_fds[KH_VM_NICS_MAX * KH_QEMU_NIC_QUEUES_MAX];
    int nic_vhost_fds[KH_VM_NICS_MAX * KH_QEMU_NIC_QUEUES_MAX];
    int dirfd = -1, log_fd = -1, qmp_conn = -1, serial_conn = -1;
    char *run = vm_run_path(v, NULL), *state = vm_state_path(v, NULL);
    char *pidfile = vm_run_path(v, "qemu.pid"), *vnc = vm_run_path(v, "vnc.sock");
    char *log_path = vm_state_path(v, "qemu.log");
    char *kernel_arg = NULL, *initrd_arg = NULL;
    kh_strv *argv = NULL;

    disk_nodes_reset(v);
    if (kh_fs_mkdir_p(state, 0700, &err) < 0)
        goto fail;
    kh_fs_rm_rf(run, NULL);
    if (kh_fs_mkdir_p(run, 0700, &err) < 0)
        goto fail;
    if (mgr->cfg.drop_privileges && chown(run, mgr->cfg.uid, mgr->cfg.gid) < 0) {
        kh_err_errno(&err, KH_E_INTERNAL, errno, "chown %s", run);
        goto fail;
    }
    boot_record(v);
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
    if (resolve_volumes(mgr, v, rs, KH_E_CONFLICT, &err) < 0)
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
    }
    if (open_nics(v, fds, nic_fds, nic_vhost_fds, &err) < 0 ||
        apply_nic_rates(v, NULL, v->spec->limits, &err) < 0)
        goto fail;
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
                  O_TRUNC, 0600);

    kh_argv_env env = {
        .binary = mgr->qemu_binary,
        .vm_id = v->id,
        .accel = mgr->cfg.accel,
        .tsc_khz = kh_proc_cpu_khz(),
        .qmp_fd = FD_QMP,
        .serial_fd = v->spec->serial ? FD_SERIAL : -1,
        .pidfile = pidfile,
        .vnc_socket = vnc,
        .kernel_file = kernel_arg,
        .initrd_file = initrd_arg,
        .disk_fds = disk_fds,
        .backing_fds = backing_ptrs,
        .secret_fds = secret_fds,
        .backing_secret_fds = bsecret_ptrs,
        .nic_fds = nic_fds,
        .nic_vhost_fds = nic_vhost_fds,
    };
    argv = kh_qemu_argv_build(rs, &mgr->cfg.caps, &env, &err);
    if (!argv)
        goto fail;
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

    kh_process_fd pfds[KH_ARRAY_LEN(fds)];
    size_t npfds = 0;
    for (int i = 0; i < (int)KH_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            pfds[npfds++] = (kh_process_fd){ fds[i], i };
    kh_process_spec ps = {
        .argv = argv->v,
        .fds = pfds,
        .nfds = npfds,
        .log_fd = log_fd,
        .drop_privileges = mgr->cfg.drop_privileges,
        .uid = mgr->cfg.uid,
        .gid = mgr->cfg.gid,
        .groups = mgr->groups,
        .ngroups = mgr->cfg.ngroups,
        .cgroups = mgr->cfg.cgroups,
        .vm_id = v->id,
    };
    if (v->task)
        kh_task_progress(v->task, 40, "starting QEMU");
    pid_t pid = kh_process_spawn(&ps, &err);
    if (pid < 0)
        goto fail;
    v->pid = pid;
    v->is_child = true;
    v->pid_start = kh_proc_start_time(pid);
    v->accel = mgr->cfg.accel;
    v->started_at = kh_wall_time();
    /* Recorded before anything else can fail: a daemon crash from here on
     * finds this QEMU and kills or adopts it. */
    persist_runtime(v);
    {
        char *line = kh_strv_join(argv, " ");
        kh_log(KH_LOG_INFO, "vm.spawn", "vm=%s pid=%d accel=%s", v->spec->name, (int)pid,
               kh_accel_name(v->accel));
        kh_log(KH_LOG_DEBUG, "vm.argv", "vm=%s argv=\"%s\"", v->spec->name, line);
        free(line);
    }
    if (watch_pid(v, &err) < 0)
        goto fail_running;

    /* The listening sockets accept our connection through their backlog
     * even before QEMU runs its main loop. */
    qmp_conn = kh_sock_connect_at(dirfd, "qmp.sock", &err);
    if (qmp_conn < 0)
        goto fail_running;
    qmp_open(v);
    v->qmp = kh_qmp_new(mgr->loop, &qmp_cbs, v->qlink);
    if (kh_qmp_attach_fd(v->qmp, qmp_conn, &err) < 0)
        goto fail_running;
    qmp_conn = -1;
    if (v->spec->serial) {
        char *clog = vm_state_path(v, "console.log");
        v->console = kh_console_new(mgr->loop, clog, CONSOLE_LOG_MAX);
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
    if (v->task)
        kh_task_progress(v->task, 60, "waiting for QEMU");
    timer_start(v, mgr->cfg.start_timeout_ms, start_deadline);
    goto out;

fail_running:
    if (qmp_conn >= 0)
        close(qmp_conn);
    if (serial_conn >= 0)
        close(serial_conn);
    start_fail(v, &err);
    goto out;
fail:
    kh_err_prefix(&err, "starting vm %s", v->spec->name);
    if (v->pid <= 0)
        cgroup_remove(v); /* made above, and no QEMU ever ran in it */
    start_fail(v, &err);
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
    free(state);
    free(pidfile);
    free(vnc);
    free(log_path);
    free(kernel_arg);
    free(initrd_arg);
}

static void start_resolve_work(uv_work_t *w)
{
    start_job *job = w->data;
    job->kernel_out = kh_kernel_resolve(job->kernel_in, job->cache_dir, &job->err);
}

static void start_job_free(start_job *job)
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
static const char *kernel_memo_get(kh_manager *mgr, const char *path)
{
    struct stat st, out;
    if (stat(path, &st) < 0)
        return NULL;
    for (kernel_memo *m = mgr->kernels; m; m = m->next)
        if (strcmp(m->in, path) == 0 && same_file(m, &st) && stat(m->out, &out) == 0)
            return m->out;
    return NULL;
}

static void kernel_memo_put(kh_manager *mgr, const char *path, const char *resolved)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    for (kernel_memo **pp = &mgr->kernels; *pp; pp = &(*pp)->next) {
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
    m->next = mgr->kernels;
    mgr->kernels = m;
}

static void start_resolve_done(uv_work_t *w, int status)
{
    start_job *job = w->data;
    if (job->cancelled) {
        /* Abandoned (kill, delete, shutdown): the VM may be gone. */
        start_job_free(job);
        return;
    }
    vm *v = job->v;
    v->start_job = NULL;
    if (job->kernel_out)
        kernel_memo_put(v->mgr, job->kernel_in, job->kernel_out);
    if (status == UV_ECANCELED || v->state != VM_STARTING || v->pid > 0) {
        /* nothing left to do */
    } else if (!job->kernel_out) {
        kh_err_prefix(&job->err, "starting vm %s", v->spec->name);
        start_fail(v, &job->err);
    } else {
        start_spawn(v, job->kernel_out);
    }
    start_job_free(job);
}

static void start_prepare(vm *v)
{
    if (!v->spec->kernel) {
        start_spawn(v, NULL);
        return;
    }
    const char *known = kernel_memo_get(v->mgr, v->spec->kernel);
    if (known) {
        char *file = xstrdup(known); /* start_spawn may reach kernel_memo_put */
        start_spawn(v, file);
        free(file);
        return;
    }
    kh_task_progress(v->task, 10, "preparing the kernel");
    /* Decompressing a kernel once takes a second: off the loop thread. */
    start_job *job = xcalloc(1, sizeof(*job));
    job->v = v;
    job->kernel_in = xstrdup(v->spec->kernel);
    job->cache_dir = xstrdup(v->mgr->kernel_cache);
    job->work.data = job;
    v->start_job = job;
    uv_queue_work(v->mgr->loop, &job->work, start_resolve_work, start_resolve_done);
}

static void action_start(vm *v)
{
    set_state(v, VM_STARTING, "starting");
    KH_FREE(v->going_down);
    if (v->mgr->cfg.accel_pending) {
        v->await_accel = true;
        kh_task_progress(v->task, 5, "waiting for the accelerator probe");
        return;
    }
    start_prepare(v);
}

void kh_manager_set_accel(kh_manager *mgr, kh_accel accel)
{
    mgr->cfg.accel = accel;
    mgr->cfg.accel_pending = false;
    for (vm *v = mgr->vms; v; v = v->next) {
        if (v->await_accel && v->state == VM_STARTING) {
            v->await_accel = false;
            start_prepare(v);
        }
    }
}

/* ---- other actions ---- */

static void stop_deadline(uv_timer_t *t)
{
    vm *v = t->data;
    KH_FREE(v->going_down);
    going_down(v, "stopped: killed after the stop timeout");
    kill_qemu(v);
}

static void on_powerdown(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    vm *v = link_vm(opaque);
    if (v && err && v->state == VM_STOPPING) {
        /* QMP failed: no graceful path left. */
        KH_FREE(v->going_down);
        going_down(v, "stopped: killed (ACPI power-down failed)");
        kill_qemu(v);
    }
}

static void on_simple_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    vm *v = link_vm(opaque);
    if (!v || !v->task)
        return;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "%s: %s", kh_vm_action_name(v->task_action), err->msg);
        task_finish_err(v, &e);
        return;
    }
    switch (v->task_action) {
    case KH_ACTION_PAUSE:
        set_state(v, VM_PAUSED, "paused");
        break;
    case KH_ACTION_RESUME:
        set_state(v, VM_RUNNING, "resumed");
        break;
    case KH_ACTION_REBOOT:
        kh_events_publish(v->mgr->events, "vm.reset", v->spec->name, NULL);
        break;
    default:
        break;
    }
    task_finish_ok(v);
}

static int stop_timeout(const json_t *opts, unsigned *out, kh_err *err)
{
    *out = STOP_TIMEOUT_DEFAULT;
    json_t *t = opts ? json_object_get(opts, "timeout") : NULL;
    if (!t)
        return 0;
    if (!json_is_integer(t) || json_integer_value(t) < 0 ||
        json_integer_value(t) > STOP_TIMEOUT_MAX) {
        kh_err_set(err, KH_E_INVALID, "timeout: must be an integer from 0 to %d seconds",
                   STOP_TIMEOUT_MAX);
        return -1;
    }
    *out = (unsigned)json_integer_value(t);
    return 0;
}

static int check_action(const vm *v, kh_vm_action action, kh_err *err)
{
    const char *name = v->spec->name, *st = state_names[v->state];
    if (action == KH_ACTION_KILL) {
        if (v->state == VM_STOPPED && !v->task) {
            kh_err_set(err, KH_E_CONFLICT, "vm %s is not running", name);
            return -1;
        }
        if (v->kill_task) {
            kh_err_set(err, KH_E_CONFLICT, "vm %s is already being killed", name);
            return -1;
        }
        return 0;
    }
    if (v->task) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: %s is in progress", name,
                   kh_vm_action_name(v->task_action));
        return -1;
    }
    if (v->disk_busy) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: a disk attach or detach is in progress",
                   name);
        return -1;
    }
    if (action == KH_ACTION_START && kh_storage_is_template(v->mgr->cfg.storage, v->id)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is a template: create a clone of it and start that",
                   name);
        return -1;
    }
    bool ok = false;
    switch (action) {
    case KH_ACTION_START: ok = v->state == VM_STOPPED; break;
    case KH_ACTION_STOP: ok = v->state == VM_RUNNING || v->state == VM_PAUSED; break;
    case KH_ACTION_REBOOT:
    case KH_ACTION_PAUSE: ok = v->state == VM_RUNNING; break;
    case KH_ACTION_RESUME: ok = v->state == VM_PAUSED; break;
    case KH_ACTION_KILL: ok = true; break;
    }
    if (!ok) {
        kh_err_set(err, KH_E_CONFLICT, "cannot %s vm %s: it is %s",
                   kh_vm_action_name(action) + 3, name, st);
        return -1;
    }
    if (action == KH_ACTION_START && v->spec->hugepages) {
        unsigned long need = (unsigned long)(v->spec->memory_mib * 1024 / KH_VM_HUGEPAGE_KIB);
        unsigned long have = kh_proc_hugepages_free(KH_VM_HUGEPAGE_KIB);
        if (have < need) {
            kh_err_set(err, KH_E_CONFLICT,
                       "cannot start vm %s: it needs %lu free huge pages of 2 MiB and the host "
                       "has %lu (raise /proc/sys/vm/nr_hugepages)", name, need, have);
            return -1;
        }
    }
    return 0;
}

kh_task *kh_manager_action(kh_manager *mgr, const char *name, kh_vm_action action,
                           const json_t *opts, kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return NULL;
    unsigned timeout = 0;
    if (action == KH_ACTION_STOP && stop_timeout(opts, &timeout, err) < 0)
        return NULL;
    if (check_action(v, action, err) < 0)
        return NULL;
    kh_task *task = kh_task_new(mgr->tasks, kh_vm_action_name(action), name);

    if (action == KH_ACTION_KILL) {
        v->kill_task = task;
        KH_FREE(v->going_down);
        going_down(v, "killed");
        if (v->pid > 0) {
            kill_qemu(v);
        } else {
            /* Still preparing (no QEMU yet): the start is abandoned. */
            kh_err e = KH_ERR_INIT;
            kh_err_set(&e, KH_E_CONFLICT, "vm %s was killed while starting", name);
            release_runtime(v);
            set_state(v, VM_STOPPED, "killed");
            task_finish_err(v, &e);
            v->kill_task = NULL;
            kh_task_succeed(task, vm_json(v));
        }
        return task;
    }

    v->task = task;
    v->task_action = action;
    switch (action) {
    case KH_ACTION_START:
        action_start(v);
        break;
    case KH_ACTION_STOP:
        set_state(v, VM_STOPPING, "stopping: ACPI power-down requested");
        if (timeout == 0) {
            going_down(v, "stopped: killed (timeout 0)");
            kill_qemu(v);
            break;
        }
        kh_task_progress(task, 20, "waiting for the guest to power off");
        timer_start(v, (uint64_t)timeout * 1000, stop_deadline);
        qmp_send(v, "cont", NULL); /* a paused guest cannot see the button */
        qmp_send(v, "system_powerdown", on_powerdown);
        break;
    case KH_ACTION_REBOOT:
        qmp_send(v, "system_reset", on_simple_reply);
        break;
    case KH_ACTION_PAUSE:
        qmp_send(v, "stop", on_simple_reply);
        break;
    case KH_ACTION_RESUME:
        qmp_send(v, "cont", on_simple_reply);
        break;
    case KH_ACTION_KILL:
        break;
    }
    return task;
}

/* ---- reattach ---- */

static void reattach_status(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    vm *v = link_vm(opaque);
    if (!v)
        return;
    v->reattaching = false;
    if (err) {
        kh_log(KH_LOG_WARN, "vm.reattach", "vm=%s error=\"%s\"", v->spec->name, err->msg);
        return;
    }
    const char *status = json_string_value(json_object_get(ret, "status"));
    bool running = json_is_true(json_object_get(ret, "running"));
    if (!status)
        status = "unknown";
    if (strcmp(status, "prelaunch") == 0) {
        /* A start the previous daemon never finished: kill, do not guess. */
        going_down(v, "start interrupted by a daemon restart");
        kill_qemu(v);
    } else if (strcmp(status, "shutdown") == 0) {
        going_down(v, "guest shut down while the daemon was down");
        qmp_send(v, "quit", NULL);
    } else {
        if (running) {
            set_state(v, VM_RUNNING, "reattached after a daemon restart");
        } else {
            char why[128];
            snprintf(why, sizeof(why), "reattached after a daemon restart (QEMU status: %s)",
                     status);
            set_state(v, VM_PAUSED, why);
        }
        json_t *data = json_pack("{s:s}", "vm", v->spec->name);
        hooks_call(v, KH_MANAGER_EVENT_REATTACHED, data);
        json_decref(data);
    }
}

/* Kill any process left in the VM's cgroup that is not the recorded QEMU. */
static void kill_strays(vm *v)
{
    pid_t *pids = NULL;
    int n = kh_cgroups_vm_pids(v->mgr->cfg.cgroups, v->id, &pids, NULL);
    for (int i = 0; i < n; i++) {
        if (pids[i] == v->pid)
            continue;
        kh_log(KH_LOG_WARN, "vm.stray", "vm=%s pid=%d action=kill", v->spec->name, (int)pids[i]);
        kill(pids[i], SIGKILL);
    }
    free(pids);
}

/* The node map a hot-plug left (disks.json), else the identity. */
static void disk_nodes_load(vm *v)
{
    disk_nodes_reset(v);
    char *path = vm_run_path(v, "disks.json");
    json_t *j = kh_fs_read_json(path, 65536, NULL);
    free(path);
    json_t *nodes = json_object_get(j, "nodes");
    if (json_is_array(nodes) && json_array_size(nodes) == v->spec->ndisks) {
        for (size_t i = 0; i < v->spec->ndisks; i++) {
            json_t *n = json_array_get(nodes, i);
            if (json_is_integer(n) && json_integer_value(n) >= 0 &&
                json_integer_value(n) < 1000)
                v->disk_node[i] = (int)json_integer_value(n);
        }
    } else if (j) {
        kh_log(KH_LOG_WARN, "vm.disks", "vm=%s disks.json does not match the spec",
               v->spec->name);
    }
    json_decref(j);
}

static void reattach(vm *v)
{
    kh_err err = KH_ERR_INIT;
    bool alive = v->pid > 0 && kh_proc_alive(v->pid, v->pid_start) &&
                 kh_proc_cmdline_has(v->pid, v->id);
    if (!alive) {
        bool had = v->pid > 0 || v->state != VM_STOPPED;
        v->pid = 0;
        v->pid_start = 0;
        kill_strays(v);
        cgroup_remove(v);
        char *run = vm_run_path(v, NULL);
        kh_fs_rm_rf(run, NULL);
        free(run);
        if (had)
            set_state(v, VM_STOPPED, v->state == VM_STARTING && !v->started_at
                                         ? "start interrupted by a daemon restart"
                                         : "QEMU exited while the daemon was down");
        return;
    }
    kill_strays(v);
    v->is_child = false;
    v->reattaching = true;
    char *run = vm_run_path(v, NULL);
    int dirfd = open(run, O_PATH | O_DIRECTORY | O_CLOEXEC);
    free(run);
    if (watch_pid(v, &err) < 0 || dirfd < 0)
        goto fail;
    int fd = kh_sock_connect_at(dirfd, "qmp.sock", &err);
    if (fd < 0)
        goto fail;
    qmp_open(v);
    v->qmp = kh_qmp_new(v->mgr->loop, &qmp_cbs, v->qlink);
    if (kh_qmp_attach_fd(v->qmp, fd, &err) < 0)
        goto fail;
    if (v->spec->serial) {
        char *clog = vm_state_path(v, "console.log");
        v->console = kh_console_new(v->mgr->loop, clog, CONSOLE_LOG_MAX);
        free(clog);
        fd = kh_sock_connect_at(dirfd, "serial.sock", &err);
        if (fd < 0 || kh_console_attach_fd(v->console, fd, &err) < 0) {
            if (fd >= 0)
                close(fd);
            kh_log(KH_LOG_WARN, "vm.reattach", "vm=%s console=\"%s\"", v->spec->name, err.msg);
        }
    }
    close(dirfd);
    disk_nodes_load(v);
    boot_load(v);
    kh_log(KH_LOG_INFO, "vm.reattach", "vm=%s pid=%d", v->spec->name, (int)v->pid);
    return;
fail:
    if (dirfd >= 0)
        close(dirfd);
    /* A QEMU we cannot talk to is of no use and would hold the disks. */
    kh_log(KH_LOG_ERROR, "vm.reattach", "vm=%s pid=%d error=\"%s\" action=kill", v->spec->name,
           (int)v->pid, err.msg);
    going_down(v, "killed: could not reattach after a daemon restart");
    kill_qemu(v);
    if (v->pidfd < 0)
        process_ended(v, -1);
}

/* ---- create, load, delete ---- */

static vm *vm_new(kh_manager *mgr, const char *id, kh_vm_spec *spec)
{
    vm *v = xcalloc(1, sizeof(*v));
    v->mgr = mgr;
    snprintf(v->id, sizeof(v->id), "%s", id);
    v->spec = spec;
    v->pidfd = -1;
    disk_nodes_reset(v);
    boot_reset(v);
    /* Keep the list in name order. */
    vm **pp = &mgr->vms;
    while (*pp && strcmp((*pp)->spec->name, spec->name) < 0)
        pp = &(*pp)->next;
    v->next = *pp;
    *pp = v;
    mgr->count++;
    return v;
}

static void vm_free(vm *v)
{
    release_runtime(v);
    kh_vm_spec_free(v->spec);
    free(v->reason);
    free(v->going_down);
    free(v);
}

static int load_row(const kh_vm_row *row, void *opaque)
{
    kh_manager *mgr = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *j = json_loads(row->spec_json, 0, NULL);
    kh_vm_spec *spec = j ? kh_vm_spec_from_json(j, &err) : NULL;
    json_decref(j);
    if (!spec) {
        kh_log(KH_LOG_ERROR, "vm.load", "id=%s error=\"%s\"", row->id,
               err.msg[0] ? err.msg : "unreadable spec");
        return 0;
    }
    vm *v = vm_new(mgr, row->id, spec);
    for (int s = 0; s < (int)KH_ARRAY_LEN(state_names); s++)
        if (row->state && strcmp(row->state, state_names[s]) == 0)
            v->state = (vm_state)s;
    v->reason = xstrdup(row->state_reason);
    v->pid = (pid_t)row->pid;
    v->pid_start = row->pid_start;
    v->accel = row->accel && strcmp(row->accel, "kvm") == 0 ? KH_ACCEL_KVM : KH_ACCEL_TCG;
    v->created_at = row->created_at;
    v->updated_at = row->updated_at;
    v->started_at = row->started_at;
    return 0;
}

/* Tell the network manager every VM's NICs (reservations, "in use"). */
static void sync_bindings(kh_manager *mgr)
{
    if (!mgr->cfg.net)
        return;
    size_t n = 0;
    for (vm *v = mgr->vms; v; v = v->next)
        n += v->spec->nnics;
    kh_net_binding *b = xcalloc(n + 1, sizeof(*b));
    char (*taps)[16] = xcalloc(n + 1, sizeof(*taps));
    size_t k = 0;
    for (vm *v = mgr->vms; v; v = v->next) {
        for (size_t i = 0; i < v->spec->nnics; i++) {
            const kh_nic_spec *nic = &v->spec->nics[i];
            tap_name(v, i, taps[k]);
            const kh_nic_limits *nl = kh_limits_nic(v->spec->limits, (unsigned)i);
            uint64_t out = nl ? nl->outbound_bps : 0;
            b[k] = (kh_net_binding){ v->spec->name, nic->network, nic->mac, nic->ip, taps[k],
                                     nic->security_groups, out,
                                     out ? kh_limits_nic_burst(out, nl->outbound_burst) : 0 };
            k++;
        }
    }
    kh_netmgr_set_bindings(mgr->cfg.net, b, k);
    free(b);
    free(taps);
}

static bool mac_taken(kh_manager *mgr, const char *vm_id, const kh_vm_spec *spec, size_t upto,
                      const char *mac)
{
    for (vm *o = mgr->vms; o; o = o->next) {
        if (strcmp(o->id, vm_id) == 0)
            continue;
        for (size_t i = 0; i < o->spec->nnics; i++)
            if (o->spec->nics[i].mac && strcmp(o->spec->nics[i].mac, mac) == 0)
                return true;
    }
    for (size_t i = 0; i < spec->nnics; i++)
        if (i != upto && spec->nics[i].mac && strcmp(spec->nics[i].mac, mac) == 0)
            return true;
    return false;
}

/* Check a spec's NICs against the networks and give each a MAC: the
 * user's (unique on this host) or a stable one from the VM id. */
static int nics_prepare(kh_manager *mgr, const char *vm_id, kh_vm_spec *spec, kh_err *err)
{
    if (spec->nnics && !mgr->cfg.net) {
        kh_err_set(err, KH_E_UNAVAILABLE, "nics: networks are not available on this daemon");
        return -1;
    }
    for (size_t i = 0; i < spec->nnics; i++) {
        kh_nic_spec *nic = &spec->nics[i];
        if (kh_netmgr_nic_check(mgr->cfg.net, spec->name, nic->network, nic->ip, err) < 0 ||
            kh_netmgr_groups_check(mgr->cfg.net, nic->security_groups, err) < 0) {
            kh_err_prefix(err, "nics[%zu]", i);
            return -1;
        }
        for (size_t j = 0; j < i && nic->ip; j++) {
            if (spec->nics[j].ip && strcmp(spec->nics[j].ip, nic->ip) == 0 &&
                strcmp(spec->nics[j].network, nic->network) == 0) {
                kh_err_set(err, KH_E_INVALID, "nics[%zu].ip: same address as nics[%zu]", i, j);
                return -1;
            }
        }
        if (nic->mac) {
            if (mac_taken(mgr, vm_id, spec, i, nic->mac)) {
                kh_err_set(err, KH_E_CONFLICT, "nics[%zu].mac: %s is used by another NIC", i,
                           nic->mac);
                return -1;
            }
            continue;
        }
        char mac[KH_MAC_STRLEN];
        unsigned attempt = 0;
        do
            kh_inet_mac_generate(vm_id, (unsigned)i, attempt++, mac);
        while (mac_taken(mgr, vm_id, spec, i, mac) && attempt < 1000);
        nic->mac = xstrdup(mac);
    }
    return 0;
}

kh_manager *kh_manager_new(uv_loop_t *loop, kh_store *store, kh_events *events,
                           kh_tasks *tasks, const kh_manager_config *cfg, kh_err *err)
{
    kh_manager *mgr = xcalloc(1, sizeof(*mgr));
    mgr->loop = loop;
    mgr->store = store;
    mgr->events = events;
    mgr->tasks = tasks;
    mgr->cfg = *cfg;
    if (!mgr->cfg.start_timeout_ms)
        mgr->cfg.start_timeout_ms = 30000;
    mgr->state_dir = xstrdup(cfg->state_dir);
    mgr->run_dir = xstrdup(cfg->run_dir);
    mgr->qemu_binary = xstrdup(cfg->qemu_binary);
    mgr->kernel_cache = xasprintf("%s/cache/kernels", cfg->state_dir);
    if (cfg->ngroups) {
        mgr->groups = xcalloc(cfg->ngroups, sizeof(gid_t));
        memcpy(mgr->groups, cfg->groups, cfg->ngroups * sizeof(gid_t));
    }
    mgr->cfg.state_dir = mgr->state_dir;
    mgr->cfg.run_dir = mgr->run_dir;
    mgr->cfg.qemu_binary = mgr->qemu_binary;
    mgr->cfg.groups = mgr->groups;

    char *vms_dir = xasprintf("%s/vms", mgr->run_dir);
    int rc = kh_fs_mkdir_p(vms_dir, 0711, err);
    if (rc == 0 && chmod(vms_dir, 0711) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "chmod %s", vms_dir);
        rc = -1;
    }
    free(vms_dir);
    if (rc < 0 || kh_fs_mkdir_p(mgr->kernel_cache, 0755, err) < 0 ||
        kh_store_vm_foreach(store, load_row, mgr, err) < 0) {
        kh_manager_free(mgr);
        return NULL;
    }
    for (vm *v = mgr->vms; v; v = v->next)
        reattach(v);
    if (mgr->cfg.storage) {
        kh_storage_set_users(mgr->cfg.storage, volume_users, mgr);
        kh_storage_set_live_resize(mgr->cfg.storage, volume_live_resize, mgr);
    }
    sync_bindings(mgr);
    return mgr;
}

void kh_manager_free(kh_manager *mgr)
{
    if (!mgr)
        return;
    if (mgr->cfg.storage) {
        kh_storage_set_users(mgr->cfg.storage, NULL, NULL);
        kh_storage_set_live_resize(mgr->cfg.storage, NULL, NULL);
    }
    for (vm *v = mgr->vms, *n; v; v = n) {
        n = v->next;
        /* Tasks in flight end with the daemon; the store marks them failed
         * at the next start. QEMU keeps running. */
        vm_free(v);
    }
    free(mgr->state_dir);
    free(mgr->run_dir);
    free(mgr->qemu_binary);
    free(mgr->kernel_cache);
    for (kernel_memo *m = mgr->kernels, *n; m; m = n) {
        n = m->next;
        free(m->in);
        free(m->out);
        free(m);
    }
    free(mgr->groups);
    free(mgr);
}

json_t *kh_manager_list_json(kh_manager *mgr)
{
    json_t *arr = json_array();
    for (vm *v = mgr->vms; v; v = v->next)
        json_array_append_new(arr, vm_json(v));
    return arr;
}

json_t *kh_manager_vm_json(kh_manager *mgr, const char *name, kh_err *err)
{
    vm *v = find(mgr, name, err);
    return v ? vm_json(v) : NULL;
}

/* Host-side checks the pure spec validation cannot do: the files exist, are
 * what the spec says, and a qcow2 has no backing file of its own. */
static int check_files(const kh_vm_spec *spec, kh_err *err)
{
    struct stat st;
    const char *files[2] = { spec->kernel, spec->initrd };
    const char *what[2] = { "boot.kernel", "boot.initrd" };
    for (int i = 0; i < 2; i++) {
        if (!files[i])
            continue;
        if (stat(files[i], &st) < 0 || !S_ISREG(st.st_mode)) {
            kh_err_set(err, KH_E_INVALID, "%s: %s is not a readable file", what[i], files[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < spec->ndisks; i++) {
        const kh_disk_spec *d = &spec->disks[i];
        if (d->volume)
            continue; /* checked against the storage records */
        if (stat(d->path, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu].path: %s is not a file or block device", i,
                       d->path);
            return -1;
        }
        if (d->format != KH_DISK_QCOW2)
            continue;
        unsigned char hdr[24];
        int fd = open(d->path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? pread(fd, hdr, sizeof(hdr), 0) : -1;
        if (fd >= 0)
            close(fd);
        if (n != (ssize_t)sizeof(hdr) || memcmp(hdr, "QFI\xfb", 4) != 0) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: %s is not a qcow2 image", i, d->path);
            return -1;
        }
        uint64_t backing = 0;
        for (int b = 8; b < 16; b++)
            backing = (backing << 8) | hdr[b];
        if (backing) {
            kh_err_set(err, KH_E_INVALID,
                       "disks[%zu]: %s has a backing file; images with backing files are "
                       "not accepted as plain disks", i, d->path);
            return -1;
        }
    }
    return 0;
}

/* Volume disks must exist and be attachable as asked (checked on a copy:
 * the stored spec keeps the references, never the files). */
static int check_volumes(kh_manager *mgr, const kh_vm_spec *spec, kh_err *err)
{
    kh_vm_spec *copy = kh_vm_spec_dup(spec);
    int rc = resolve_volumes(mgr, NULL, copy, KH_E_INVALID, err);
    kh_vm_spec_free(copy);
    return rc;
}

json_t *kh_manager_create(kh_manager *mgr, const json_t *body, kh_err *err)
{
    kh_vm_spec *spec = kh_vm_spec_from_json(body, err);
    if (!spec)
        return NULL;
    for (vm *o = mgr->vms; o; o = o->next) {
        if (strcmp(o->spec->name, spec->name) == 0) {
            kh_err_set(err, KH_E_CONFLICT, "a vm named %s already exists", spec->name);
            kh_vm_spec_free(spec);
            return NULL;
        }
    }
    char id[37];
    kh_uuid_generate(id);
    if (check_files(spec, err) < 0 || check_volumes(mgr, spec, err) < 0 ||
        kh_quota_check_host(spec->limits, err) < 0 ||
        nics_prepare(mgr, id, spec, err) < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    json_t *sj = kh_vm_spec_to_json(spec);
    char *text = json_dumps(sj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sj);
    double now = kh_wall_time();
    kh_vm_row row;
    memset(&row, 0, sizeof(row));
    memcpy(row.id, id, sizeof(id));
    row.name = spec->name;
    row.spec_json = text;
    row.state = (char *)(uintptr_t)"stopped";
    row.state_reason = (char *)(uintptr_t)"created";
    row.created_at = row.updated_at = now;
    int rc = kh_store_vm_insert(mgr->store, &row, err);
    free(text);
    if (rc < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    vm *v = vm_new(mgr, id, spec);
    v->reason = xstrdup("created");
    v->created_at = v->updated_at = now;
    sync_bindings(mgr);
    kh_log(KH_LOG_INFO, "vm.create", "vm=%s id=%s", spec->name, id);
    json_t *j = vm_json(v);
    kh_events_publish(mgr->events, "vm.created", spec->name, json_incref(j));
    return j;
}

/* Persist next as v's spec, then make it v's spec (next is stolen: freed on
 * failure). The spec it replaces goes to *prev for the caller to free, or is
 * freed when prev is NULL. -1 with err (v unchanged) when the store fails. */
static int spec_store_swap(kh_manager *mgr, vm *v, kh_vm_spec *next, kh_vm_spec **prev,
                           kh_err *err)
{
    json_t *sj = kh_vm_spec_to_json(next);
    char *text = json_dumps(sj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sj);
    double now = kh_wall_time();
    int rc = kh_store_vm_update_spec(mgr->store, v->id, text, now, err);
    free(text);
    if (rc < 0) {
        kh_vm_spec_free(next);
        return -1;
    }
    if (prev)
        *prev = v->spec;
    else
        kh_vm_spec_free(v->spec);
    v->spec = next;
    v->updated_at = now;
    return 0;
}

json_t *kh_manager_patch(kh_manager *mgr, const char *name, const json_t *patch, kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return NULL;
    if (v->disk_busy && json_object_get(patch, "disks")) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: a disk attach or detach is in progress",
                   name);
        return NULL;
    }
    if (v->state != VM_STOPPED || v->task) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)(uintptr_t)patch, key, val) {
            bool live = strcmp(key, "limits") == 0 && !v->task &&
                        (v->state == VM_RUNNING || v->state == VM_PAUSED);
            if (strcmp(key, "description") != 0 && !live) {
                char q[256]; /* the key is the user's: quoted when odd */
                kh_schema_quote_key(q, sizeof(q), key, strlen(key));
                kh_err_set(err, KH_E_CONFLICT,
                           "vm %s is %s: only description%s can change now; stop it to "
                           "change %s", name, state_names[v->state],
                           v->state == VM_RUNNING || v->state == VM_PAUSED ? " and limits" : "",
                           q);
                return NULL;
            }
        }
    }
    kh_vm_spec *next = kh_vm_spec_dup(v->spec);
    if (kh_vm_spec_patch(next, patch, err) < 0 || check_files(next, err) < 0 ||
        check_volumes(mgr, next, err) < 0 ||
        kh_quota_check_host(next->limits, err) < 0 ||
        nics_prepare(mgr, v->id, next, err) < 0) {
        kh_vm_spec_free(next);
        return NULL;
    }
    bool live_limits = v->pid > 0 && json_object_get(patch, "limits");
    if (live_limits &&
        (kh_quota_apply_cgroup(mgr->cfg.cgroups, v->id, next->limits, err) < 0 ||
         apply_nic_rates(v, v->spec->limits, next->limits, err) < 0)) {
        /* Put back what was there; the spec stays as it was. */
        kh_quota_apply_cgroup(mgr->cfg.cgroups, v->id, v->spec->limits, NULL);
        kh_err e = KH_ERR_INIT;
        apply_nic_rates(v, next->limits, v->spec->limits, &e);
        kh_vm_spec_free(next);
        return NULL;
    }
    kh_vm_spec *prev = NULL;
    if (spec_store_swap(mgr, v, next, &prev, err) < 0)
        return NULL;
    sync_bindings(mgr);
    if (live_limits) {
        send_throttles(v, prev->limits);
        if (!same_affinity(prev->limits, v->spec->limits))
            send_pinning(v);
        if (balloon_of(prev->limits) != balloon_of(v->spec->limits))
            send_balloon(v, false);
        kh_log(KH_LOG_INFO, "vm.limits", "vm=%s live=true", name);
    }
    kh_vm_spec_free(prev);
    json_t *j = vm_json(v);
    kh_events_publish(mgr->events, "vm.updated", name, json_incref(j));
    return j;
}

json_t *kh_manager_set_live_vcpus(kh_manager *mgr, const char *id, unsigned vcpus, kh_err *err)
{
    vm *v = mgr->vms;
    while (v && strcmp(v->id, id) != 0)
        v = v->next;
    if (!v) {
        kh_err_set(err, KH_E_NOTFOUND, "no vm with id %s", id);
        return NULL;
    }
    unsigned max = v->spec->max_vcpus ? v->spec->max_vcpus : v->spec->vcpus;
    if (vcpus < 1 || vcpus > max) {
        kh_err_set(err, KH_E_INVALID, "vcpus: must be from 1 to max_vcpus (%u)", max);
        return NULL;
    }
    kh_vm_spec *next = kh_vm_spec_dup(v->spec);
    if (!next->max_vcpus)
        next->max_vcpus = max;
    next->vcpus = vcpus;
    if (spec_store_swap(mgr, v, next, NULL, err) < 0)
        return NULL;
    const kh_limits *l = v->spec->limits;
    if (v->pid > 0 && l && (l->ncpus || l->nemu_cpus || l->nio_cpus))
        send_pinning(v); /* new vCPU threads take the pinning too (they are born
                          * with the emulator thread's affinity) */
    kh_log(KH_LOG_INFO, "vm.vcpus", "vm=%s vcpus=%u live=true", v->spec->name, vcpus);
    json_t *j = vm_json(v);
    kh_events_publish(mgr->events, "vm.updated", v->spec->name, json_incref(j));
    return j;
}

int kh_manager_delete(kh_manager *mgr, const char *name, kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return -1;
    if (v->state != VM_STOPPED || v->task || v->pid > 0) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: stop it before deleting it", name,
                   state_names[v->state]);
        return -1;
    }
    if (kh_store_vm_delete(mgr->store, v->id, err) < 0)
        return -1;
    kh_storage_template_forget(mgr->cfg.storage, v->id);
    kh_storage_snapshot_forget_vm(mgr->cfg.storage, v->id);
    char *dir = vm_state_path(v, NULL);
    kh_fs_rm_rf(dir, NULL);
    free(dir);
    cgroup_remove(v); /* none should be left; after this no daemon knows the id */
    for (vm **pp = &mgr->vms; *pp; pp = &(*pp)->next) {
        if (*pp == v) {
            *pp = v->next;
            break;
        }
    }
    mgr->count--;
    sync_bindings(mgr);
    kh_log(KH_LOG_INFO, "vm.delete", "vm=%s id=%s", name, v->id);
    kh_events_publish(mgr->events, "vm.deleted", name, json_pack("{s:s}", "id", v->id));
    vm_free(v);
    return 0;
}

kh_console *kh_manager_console(kh_manager *mgr, const char *name, kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return NULL;
    if (!v->console || v->pid <= 0) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has no console now: it is %s%s", name,
                   state_names[v->state], v->spec->serial ? "" : " (serial is off)");
        return NULL;
    }
    return v->console;
}

char *kh_manager_console_log(kh_manager *mgr, const char *name, size_t tail, size_t *len,
                             kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return NULL;
    char *path = vm_state_path(v, "console.log");
    char *text = kh_console_log_read(path, tail, len, err);
    free(path);
    return text;
}

char *kh_manager_qemu_file(kh_manager *mgr, const char *id, const char *file)
{
    for (vm *v = mgr->vms; v; v = v->next)
        if (strcmp(v->id, id) == 0)
            return v->pid > 0 ? vm_run_path(v, file) : NULL;
    return NULL;
}

char *kh_manager_vnc_path(kh_manager *mgr, const char *name, kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return NULL;
    if (v->spec->graphics != KH_GRAPHICS_VNC) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has no display (graphics is \"none\")", name);
        return NULL;
    }
    if (v->pid <= 0 || (v->state != VM_RUNNING && v->state != VM_PAUSED)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has no display now: it is %s", name,
                   state_names[v->state]);
        return NULL;
    }
    return vm_run_path(v, "vnc.sock");
}

void kh_manager_counts(const kh_manager *mgr, unsigned *total, unsigned *running)
{
    *total = mgr->count;
    *running = 0;
    for (const vm *v = mgr->vms; v; v = v->next)
        *running += v->state == VM_RUNNING || v->state == VM_PAUSED;
}

void kh_manager_foreach(kh_manager *mgr, kh_manager_vm_fn fn, void *opaque)
{
    for (const vm *v = mgr->vms; v; v = v->next) {
        kh_vm_info info = {
            .name = v->spec->name,
            .id = v->id,
            .state = state_names[v->state],
            .pid = v->pid,
            .started_at = v->pid > 0 ? v->started_at : 0,
            .spec = v->spec,
            .qmp_ready = v->qmp != NULL && (v->state == VM_RUNNING || v->state == VM_PAUSED),
            .qmp_rtt_us = v->qmp ? kh_qmp_last_rtt_us(v->qmp) : 0,
        };
        fn(&info, opaque);
    }
}

int kh_manager_qmp(kh_manager *mgr, const char *id, const char *command, json_t *args,
                   kh_qmp_reply_cb cb, void *opaque, kh_err *err)
{
    for (vm *v = mgr->vms; v; v = v->next) {
        if (strcmp(v->id, id) != 0)
            continue;
        if (!v->qmp || (v->state != VM_RUNNING && v->state != VM_PAUSED)) {
            json_decref(args);
            kh_err_set(err, KH_E_CONFLICT, "vm %s is %s", v->spec->name,
                       state_names[v->state]);
            return -1;
        }
        return kh_qmp_command(v->qmp, command, args, cb, opaque, err);
    }
    json_decref(args);
    kh_err_set(err, KH_E_NOTFOUND, "no vm with id %s", id);
    return -1;
}

/* ---- disk changes (vm/disk.c) ---- */

int kh_manager_add_event_hook(kh_manager *mgr, kh_manager_event_fn fn, void *opaque)
{
    for (size_t i = 0; i < KH_MANAGER_EVENT_HOOKS; i++) {
        if (!mgr->event_hooks[i].fn) {
            mgr->event_hooks[i].fn = fn;
            mgr->event_hooks[i].opaque = opaque;
            return 0;
        }
    }
    return -1;
}

void kh_manager_remove_event_hook(kh_manager *mgr, kh_manager_event_fn fn, void *opaque)
{
    for (size_t i = 0; i < KH_MANAGER_EVENT_HOOKS; i++)
        if (mgr->event_hooks[i].fn == fn && mgr->event_hooks[i].opaque == opaque)
            mgr->event_hooks[i].fn = NULL;
}

static vm *find_id(kh_manager *mgr, const char *id)
{
    for (vm *v = mgr->vms; v; v = v->next)
        if (strcmp(v->id, id) == 0)
            return v;
    return NULL;
}

int kh_manager_qmp_fd(kh_manager *mgr, const char *id, const char *command, json_t *args,
                      int fd, kh_qmp_reply_cb cb, void *opaque, kh_err *err)
{
    vm *v = find_id(mgr, id);
    if (!v || !v->qmp || (v->state != VM_RUNNING && v->state != VM_PAUSED)) {
        json_decref(args);
        if (fd >= 0)
            close(fd);
        kh_err_set(err, KH_E_CONFLICT, "vm %s is not running", v ? v->spec->name : id);
        return -1;
    }
    return kh_qmp_command_fd(v->qmp, command, args, fd, cb, opaque, err);
}

int kh_manager_disk_begin(kh_manager *mgr, const char *name, kh_vm_disks *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    vm *v = find(mgr, name, err);
    if (!v)
        return -1;
    if (v->disk_busy || v->task) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: %s is in progress", name,
                   v->disk_busy ? "a disk attach or detach" : kh_vm_action_name(v->task_action));
        return -1;
    }
    bool live = v->pid > 0;
    if (live && (!v->qmp || (v->state != VM_RUNNING && v->state != VM_PAUSED))) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: wait until it runs or stops", name,
                   state_names[v->state]);
        return -1;
    }
    if (kh_storage_is_template(mgr->cfg.storage, v->id)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is a template: its disks do not change", name);
        return -1;
    }
    snprintf(out->id, sizeof(out->id), "%s", v->id);
    out->live = live;
    out->spec = kh_vm_spec_dup(v->spec);
    memcpy(out->node, v->disk_node, sizeof(out->node));
    v->disk_busy = true;
    return 0;
}

void kh_manager_disk_end(kh_manager *mgr, const char *id)
{
    vm *v = find_id(mgr, id);
    if (v)
        v->disk_busy = false;
}

int kh_manager_disk_node(kh_manager *mgr, const char *id, size_t i)
{
    vm *v = find_id(mgr, id);
    return v && i < KH_VM_DISKS_MAX ? v->disk_node[i] : (int)i;
}

json_t *kh_manager_volume_users(kh_manager *mgr, const char *ref)
{
    return volume_users(mgr, ref);
}

json_t *kh_manager_disk_commit(kh_manager *mgr, const char *id, kh_vm_spec *spec,
                               const int *node, kh_err *err)
{
    vm *v = find_id(mgr, id);
    if (!v) {
        kh_vm_spec_free(spec);
        kh_err_set(err, KH_E_NOTFOUND, "the vm is gone");
        return NULL;
    }
    if (check_volumes(mgr, spec, err) < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    if (spec_store_swap(mgr, v, spec, NULL, err) < 0)
        return NULL;
    if (node && v->pid > 0) {
        disk_nodes_reset(v);
        json_t *arr = json_array();
        for (size_t i = 0; i < spec->ndisks; i++) {
            v->disk_node[i] = node[i];
            json_array_append_new(arr, json_integer(node[i]));
        }
        json_t *doc = json_pack("{s:o}", "nodes", arr);
        char *dtext = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        char *path = vm_run_path(v, "disks.json");
        kh_err werr = KH_ERR_INIT;
        if (kh_fs_write_atomic(path, dtext, strlen(dtext), 0600, &werr) < 0)
            kh_log(KH_LOG_ERROR, "vm.disks", "vm=%s error=\"%s\"", v->spec->name, werr.msg);
        free(path);
        free(dtext);
    }
    sync_bindings(mgr);
    json_t *j = vm_json(v);
    kh_events_publish(mgr->events, "vm.updated", v->spec->name, json_incref(j));
    return j;
}

/* ---- NIC changes (vm/nic.c) ---- */

/* The spec with its NIC list replaced and checked (MACs assigned). */
static kh_vm_spec *nics_replaced(kh_manager *mgr, vm *v, const json_t *nics, int removed,
                                 kh_err *err)
{
    kh_vm_spec *next = kh_vm_spec_dup(v->spec);
    json_t *patch = json_pack("{s:O}", "nics", nics);
    if (removed >= 0 && v->spec->limits && v->spec->limits->nnics) {
        /* the NIC's bandwidth limit goes with it; later NICs move down */
        kh_limits *l = kh_limits_dup(v->spec->limits);
        kh_limits_nic_removed(l, (unsigned)removed);
        json_t *lj = kh_limits_to_json(l);
        json_t *nl = json_object_get(lj, "nic");
        json_object_set_new(patch, "limits",
                            json_pack("{s:O}", "nic", nl ? nl : json_null()));
        json_decref(lj);
        kh_limits_free(l);
    }
    int rc = kh_vm_spec_patch(next, patch, err);
    json_decref(patch);
    if (rc < 0 || nics_prepare(mgr, v->id, next, err) < 0) {
        kh_vm_spec_free(next);
        return NULL;
    }
    return next;
}

json_t *kh_manager_nics_check(kh_manager *mgr, const char *name, const json_t *nics,
                              int removed, kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return NULL;
    kh_vm_spec *next = nics_replaced(mgr, v, nics, removed, err);
    if (!next)
        return NULL;
    json_t *sj = kh_vm_spec_to_json(next);
    json_t *out = json_object_get(sj, "nics");
    out = out ? json_incref(out) : json_array();
    json_decref(sj);
    kh_vm_spec_free(next);
    return out;
}

int kh_manager_nics_commit(kh_manager *mgr, const char *name, const json_t *nics, int removed,
                           kh_err *err)
{
    vm *v = find(mgr, name, err);
    if (!v)
        return -1;
    if (v->state == VM_STARTING || v->state == VM_STOPPING) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: its NICs cannot change now", name,
                   state_names[v->state]);
        return -1;
    }
    kh_vm_spec *next = nics_replaced(mgr, v, nics, removed, err);
    if (!next)
        return -1;
    if (spec_store_swap(mgr, v, next, NULL, err) < 0)
        return -1;
    sync_bindings(mgr);
    kh_events_publish(mgr->events, "vm.updated", name, vm_json(v));
    return 0;
}
