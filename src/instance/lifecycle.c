/* lifecycle.c - owns the state machine of an instance: the actions (start,
 * stop, kill, reboot, pause, resume) as tasks, the checks that admit them,
 * the start and stop deadlines, the watch on the process (pidfd) and what
 * its end means, and the notifications drivers give (instance_int.h). The
 * work that differs between a VM and a container goes through the
 * instance's driver (instance/driver.h): no monitor, no fork here. */
#include "instance/lifecycle.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/proc.h"
#include "host/spawn.h"
#include "instance/instance_int.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define STOP_TIMEOUT_DEFAULT 60
#define STOP_TIMEOUT_MAX 3600
/* The ACPI power-down request is sent again this often while a stop waits:
 * a guest early in boot (no ACPI handler yet) misses the first one. */
#define STOP_RESEND_MS 3000

static const char *const state_names[KH_INST_STATES] = { "stopped", "starting", "running",
                                                          "paused", "stopping" };

const char *kh_lifecycle_state_name(kh_inst_state s)
{
    return (unsigned)s < KH_INST_STATES ? state_names[s] : "unknown";
}

const char *kh_lifecycle_action_name(kh_vm_action action)
{
    static const char *const names[] = { "vm.start", "vm.stop", "vm.kill", "vm.reboot",
                                         "vm.pause", "vm.resume" };
    return (unsigned)action < KH_ARRAY_LEN(names) ? names[action] : "vm.action";
}

void kh_lifecycle_set_state(kh_inst *v, kh_inst_state state, const char *reason)
{
    kh_inst_state prev = v->state;
    v->state = state;
    if (reason) {
        free(v->reason);
        v->reason = xstrdup(reason);
    }
    kh_runtime_persist(v);
    char q[300];
    kh_log(KH_LOG_INFO, "vm.state", "vm=%s state=%s previous=%s reason=%s", v->spec->name,
           state_names[state], state_names[prev], kh_log_quote(q, sizeof(q), v->reason));
    kh_events_publish(v->mgr->events, "vm.state", v->spec->name,
                      json_pack("{s:s, s:s, s:s?}", "state", state_names[state], "previous",
                                state_names[prev], "reason", v->reason));
    kh_manager_cluster_changed(v);
}

void kh_lifecycle_going_down(kh_inst *v, const char *why)
{
    /* The first cause wins: a guest power-off after a stop is still a stop. */
    if (!v->going_down)
        v->going_down = xstrdup(why);
}

/* A new cause replaces the one recorded (a timeout, a failed request). */
static void going_down_now(kh_inst *v, const char *why)
{
    KH_FREE(v->going_down);
    kh_lifecycle_going_down(v, why);
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void timer_stop(kh_inst *v)
{
    if (v->timer) {
        uv_close((uv_handle_t *)v->timer, timer_closed);
        v->timer = NULL;
    }
    if (v->resend) {
        uv_close((uv_handle_t *)v->resend, timer_closed);
        v->resend = NULL;
    }
}

static void timer_start(kh_inst *v, uint64_t ms, uv_timer_cb cb)
{
    timer_stop(v);
    v->timer = xcalloc(1, sizeof(*v->timer));
    uv_timer_init(v->mgr->loop, v->timer);
    v->timer->data = v;
    uv_timer_start(v->timer, cb, ms, 0);
}

static void task_finish_ok(kh_inst *v)
{
    if (v->task) {
        kh_task *t = v->task;
        v->task = NULL;
        kh_task_succeed(t, kh_manager_json(v));
    }
}

/* A stop that ended in a kill (timeout, failed request) still succeeds -
 * the VM is stopped - but its message says so ("forced: ..."), as
 * Proxmox's shutdown --forceStop logs the kill. */
static void task_finish_stop(kh_inst *v)
{
    char *forced = v->stop_forced;
    v->stop_forced = NULL;
    if (v->task && forced) {
        kh_task *t = v->task;
        v->task = NULL;
        char *msg = xasprintf("forced: %s", forced);
        kh_task_succeed_message(t, kh_manager_json(v), msg);
        free(msg);
    }
    task_finish_ok(v);
    free(forced);
}

static void task_finish_err(kh_inst *v, const kh_err *err)
{
    if (v->task) {
        kh_task *t = v->task;
        v->task = NULL;
        kh_task_fail(t, err);
    }
}

/* ---- process end ---- */

static void pidfd_closed(uv_handle_t *h)
{
    free(h);
}

void kh_lifecycle_release(kh_inst *v)
{
    timer_stop(v);
    kh_runtime_disk_nodes_reset(v);
    kh_runtime_boot_reset(v);
    v->await_accel = false;
    if (v->drv)
        v->drv->release(v);
    if (v->pidfd_poll) {
        uv_close((uv_handle_t *)v->pidfd_poll, pidfd_closed);
        v->pidfd_poll = NULL;
    }
    if (v->pidfd >= 0) {
        close(v->pidfd);
        v->pidfd = -1;
    }
    if (v->console) {
        kh_console *c = v->console;
        v->console = NULL;
        kh_console_free(c);
    }
    json_decref(v->guest);
    v->guest = NULL;
    v->guest_due = 0;
}

/* The process is gone: release everything and settle the state. status < 0
 * when unknown (not our child). */
void kh_lifecycle_process_ended(kh_inst *v, int status)
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
    kh_inst_state was = v->state;
    kh_lifecycle_release(v);
    v->pid = 0;
    v->pid_start = 0;
    v->is_child = false;
    KH_FREE(v->going_down);
    KH_FREE(v->incoming_host); /* migration: a target's QEMU that ended */
    KH_FREE(v->incoming_tls_dir);
    v->incoming_cpu[0] = '\0';
    v->incoming_port = 0;
    v->incoming_nbd_port = 0;
    v->incoming_nbd_disks = 0;

    kh_err err = KH_ERR_INIT;
    kh_runtime_cgroup_remove(v);
    kh_runtime_clear(v);

    kh_err *start_err = v->start_err;
    v->start_err = NULL;
    if (start_err) {
        kh_lifecycle_set_state(v, KH_INST_STOPPED, why);
        task_finish_err(v, start_err);
        free(start_err);
    } else if (was == KH_INST_STARTING && v->task && v->task_action == KH_ACTION_START) {
        char *tail = kh_runtime_log_tail(v);
        kh_err_set(&err, KH_E_QEMU, "QEMU exited during start (%s)%s%s", why,
                   *tail ? ": " : "", tail);
        free(tail);
        kh_lifecycle_set_state(v, KH_INST_STOPPED, why);
        task_finish_err(v, &err);
    } else {
        kh_lifecycle_set_state(v, KH_INST_STOPPED, why);
        if (v->task && v->task_action == KH_ACTION_STOP) {
            task_finish_stop(v);
        } else if (v->task && v->task_action == KH_ACTION_KILL) {
            task_finish_ok(v);
        } else if (v->task) {
            kh_err_set(&err, KH_E_CONFLICT, "vm %s stopped (%s) during %s", v->spec->name, why,
                       kh_lifecycle_action_name(v->task_action));
            task_finish_err(v, &err);
        }
    }
    if (v->kill_task) {
        kh_task *t = v->kill_task;
        v->kill_task = NULL;
        kh_task_succeed(t, kh_manager_json(v));
    }
    KH_FREE(v->stop_forced);
}

static void pidfd_ready(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    kh_inst *v = h->data;
    int wstatus = -1;
    if (v->is_child) {
        pid_t r = waitpid(v->pid, &wstatus, WNOHANG);
        if (r == 0)
            return; /* not yet: spurious wake-up */
        if (r < 0)
            wstatus = -1; /* already reaped by the SIGCHLD path */
    }
    kh_lifecycle_process_ended(v, wstatus);
}

void kh_lifecycle_child_exited(kh_manager *mgr, pid_t pid, int status)
{
    for (kh_inst *v = mgr->vms; v; v = v->next) {
        if (v->pid == pid && v->is_child) {
            kh_lifecycle_process_ended(v, status);
            return;
        }
    }
}

int kh_lifecycle_watch_pid(kh_inst *v, int pidfd, kh_err *err)
{
    v->pidfd = pidfd >= 0 ? pidfd : kh_spawn_pidfd_open(v->pid);
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

/* ---- start ---- */

void kh_lifecycle_start_fail(kh_inst *v, const kh_err *err)
{
    /* Kill whatever was started; the process end settles the rest. If no
     * process exists yet, settle here. */
    kh_err copy = *err;
    if (v->pid > 0 && err->code == KH_E_QEMU && strstr(err->msg, "QMP connection closed")) {
        /* QMP closed or QEMU refused: QEMU's own words are in qemu.log
         * ("Failed to get \"write\" lock"), the QMP error says little. */
        char *tail = kh_runtime_log_tail(v);
        if (*tail) {
            kh_err_clear(&copy);
            kh_err_set(&copy, KH_E_QEMU, "QEMU: %s (%s)", tail, err->msg);
        }
        free(tail);
    }
    if (v->pid > 0) {
        /* The task ends when the process has: its answer then finds the VM
         * stopped, not still starting. */
        kh_lifecycle_going_down(v, "start failed");
        if (!v->start_err)
            v->start_err = xmalloc(sizeof(*v->start_err));
        *v->start_err = copy;
        timer_stop(v);
        v->drv->kill(v);
        return;
    }
    kh_lifecycle_release(v);
    kh_lifecycle_set_state(v, KH_INST_STOPPED, "start failed");
    task_finish_err(v, &copy);
}

static void start_deadline(uv_timer_t *t)
{
    kh_inst *v = t->data;
    kh_err err = KH_ERR_INIT;
    kh_err_set(&err, KH_E_TIMEOUT, "QEMU did not become ready within %u ms",
               v->mgr->cfg.start_timeout_ms);
    kh_lifecycle_start_fail(v, &err);
}

void kh_lifecycle_launched(kh_inst *v)
{
    if (v->task)
        kh_task_progress(v->task, 60, "waiting for QEMU");
    timer_start(v, v->mgr->cfg.start_timeout_ms, start_deadline);
}

void kh_lifecycle_started(kh_inst *v)
{
    if (v->state != KH_INST_STARTING || v->start_err)
        return;
    timer_stop(v);
    v->started_at = kh_wall_time();
    kh_lifecycle_set_state(v, KH_INST_RUNNING, "started");
    task_finish_ok(v);
}

static void action_start(kh_inst *v)
{
    v->start_us = kh_now_us();
    kh_lifecycle_set_state(v, KH_INST_STARTING, "starting");
    KH_FREE(v->going_down);
    if (v->mgr->cfg.accel_pending) {
        v->await_accel = true;
        kh_task_progress(v->task, 5, "waiting for the accelerator probe");
        return;
    }
    v->drv->start(v);
}

/* ---- migration target (instance/migrate.c) ---- */

int kh_lifecycle_start_incoming(kh_inst *v, const char *host, unsigned port, kh_err *err)
{
    if (kh_inst_active(v) || v->task) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s", v->spec->name,
                   kh_lifecycle_state_name(v->state));
        return -1;
    }
    free(v->incoming_host);
    v->incoming_host = xstrdup(host);
    v->incoming_port = port;
    /* a task of its own, as any start: it ends when QEMU listens */
    v->task = kh_task_new(v->mgr->tasks, "vm.incoming", v->spec->name);
    v->task_action = KH_ACTION_START;
    action_start(v);
    return 0;
}

void kh_lifecycle_incoming(kh_inst *v, const kh_err *err)
{
    if (err) {
        kh_lifecycle_start_fail(v, err);
        return;
    }
    timer_stop(v); /* the start deadline: the source decides from here */
    kh_lifecycle_set_state(v, KH_INST_STARTING, "incoming");
    task_finish_ok(v);
}

typedef struct commit_ref {
    kh_manager *mgr;
    char id[37];
    unsigned tries;
} commit_ref;

/* A commit's query-status answers before the incoming migration ended. */
#define COMMIT_TRIES 100000

static void on_commit_cont(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    commit_ref *r = opaque;
    kh_inst *v = kh_manager_find_id(r->mgr, r->id);
    free(r);
    if (!v || v->state != KH_INST_STARTING)
        return;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "cont after migration: %s", err->msg);
        kh_lifecycle_start_fail(v, &e);
        return;
    }
    KH_FREE(v->incoming_host);
    KH_FREE(v->incoming_tls_dir);
    v->incoming_cpu[0] = '\0';
    v->incoming_port = 0;
    v->incoming_nbd_port = 0;
    v->incoming_nbd_disks = 0;
    kh_lifecycle_started(v);
}

static int commit_query(kh_inst *v, commit_ref *r, kh_err *err);

/* cont only once this QEMU has loaded all of the guest: the source's
 * "completed" says everything was sent, not that it was loaded here, and a
 * cont while still "inmigrate" activates the disks and starts the guest on
 * QEMU's own at the end of the load (a guest seen crashing right after such
 * a switch): ask until the incoming side is done. */
static void on_commit_status(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    commit_ref *r = opaque;
    kh_inst *v = kh_manager_find_id(r->mgr, r->id);
    if (!v || v->state != KH_INST_STARTING) {
        free(r);
        return;
    }
    kh_err e = KH_ERR_INIT;
    const char *st = err ? NULL : json_string_value(json_object_get(ret, "status"));
    if (st && strcmp(st, "inmigrate") == 0 && ++r->tries < COMMIT_TRIES) {
        if (commit_query(v, r, &e) < 0) {
            free(r);
            kh_lifecycle_start_fail(v, &e);
        }
        return;
    }
    if (r->tries)
        kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s commit: the incoming load ended after %u "
               "status queries", v->spec->name, r->tries);
    /* local disks: the exports go first (an export left open would keep
     * the disk writable from outside and block this QEMU's own migration
     * later); nbd-server-stop closes every NBD export */
    if ((v->incoming_nbd_port &&
         v->drv->command(v, "nbd-server-stop", NULL, -1, NULL, NULL, &e) < 0) ||
        v->drv->command(v, "cont", NULL, -1, on_commit_cont, r, &e) < 0) {
        free(r);
        kh_lifecycle_start_fail(v, &e);
    }
}

static int commit_query(kh_inst *v, commit_ref *r, kh_err *err)
{
    return v->drv->command(v, "query-status", NULL, -1, on_commit_status, r, err);
}

int kh_lifecycle_incoming_commit(kh_inst *v, kh_err *err)
{
    if (!v->incoming_port || v->state != KH_INST_STARTING) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is not waiting for a migration", v->spec->name);
        return -1;
    }
    commit_ref *r = xcalloc(1, sizeof(*r));
    r->mgr = v->mgr;
    memcpy(r->id, v->id, sizeof(r->id));
    if (commit_query(v, r, err) < 0) {
        free(r);
        return -1;
    }
    return 0;
}

void kh_lifecycle_set_accel(kh_manager *mgr, kh_accel accel)
{
    mgr->cfg.accel = accel;
    mgr->cfg.accel_pending = false;
    for (kh_inst *v = mgr->vms; v; v = v->next) {
        if (v->await_accel && v->state == KH_INST_STARTING) {
            v->await_accel = false;
            v->drv->start(v);
        }
    }
}

/* ---- other actions ---- */

static void stop_forced(kh_inst *v, const char *why)
{
    free(v->stop_forced);
    v->stop_forced = xstrdup(why);
}

static void stop_deadline(uv_timer_t *t)
{
    kh_inst *v = t->data;
    char why[128];
    snprintf(why, sizeof(why), "did not power off within %u s and was killed", v->stop_timeout);
    kh_log(KH_LOG_WARN, "vm.stop_forced", "vm=%s timeout=%u", v->spec->name, v->stop_timeout);
    stop_forced(v, why);
    going_down_now(v, "stopped: killed after the stop timeout");
    v->drv->kill(v);
}

/* The power-down request again, until the guest goes down or the deadline
 * kills it. */
static void stop_resend(uv_timer_t *t)
{
    kh_inst *v = t->data;
    if (v->state == KH_INST_STOPPING && !v->going_down)
        v->drv->stop(v);
}

void kh_lifecycle_stop_failed(kh_inst *v)
{
    /* Already going down (the guest powered off; a resent request lost
     * its reply when QEMU quit): nothing failed. */
    if (v->state != KH_INST_STOPPING || v->going_down)
        return;
    /* The request failed: no graceful path left. */
    kh_log(KH_LOG_WARN, "vm.stop_forced", "vm=%s reason=\"ACPI power-down request failed\"",
           v->spec->name);
    stop_forced(v, "was killed: the ACPI power-down request failed");
    going_down_now(v, "stopped: killed (ACPI power-down failed)");
    v->drv->kill(v);
}

void kh_lifecycle_action_done(kh_inst *v, const kh_err *err)
{
    if (!v->task)
        return;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "%s: %s", kh_lifecycle_action_name(v->task_action), err->msg);
        task_finish_err(v, &e);
        return;
    }
    switch (v->task_action) {
    case KH_ACTION_PAUSE:
        kh_lifecycle_set_state(v, KH_INST_PAUSED, "paused");
        break;
    case KH_ACTION_RESUME:
        kh_lifecycle_set_state(v, KH_INST_RUNNING, "resumed");
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

static int check_action(const kh_inst *v, kh_vm_action action, kh_err *err)
{
    const char *name = v->spec->name, *st = state_names[v->state];
    if (action == KH_ACTION_KILL) {
        if (v->state == KH_INST_STOPPED && !v->task) {
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
                   kh_lifecycle_action_name(v->task_action));
        return -1;
    }
    if (v->disk_busy) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: a disk attach or detach is in progress",
                   name);
        return -1;
    }
    if ((action == KH_ACTION_START || action == KH_ACTION_RESUME) && v->mgr->cluster &&
        v->mgr->cluster->may_run(v->mgr->cluster_opaque, v->id, name, err) < 0)
        return -1;
    if (action == KH_ACTION_START) {
        int tpl = kh_storage_template_get(v->mgr->cfg.storage, v->id, err);
        if (tpl < 0)
            return -1;
        if (tpl) {
            kh_err_set(err, KH_E_CONFLICT,
                       "vm %s is a template: create a clone of it and start that", name);
            return -1;
        }
    }
    bool ok = false;
    switch (action) {
    case KH_ACTION_START: ok = v->state == KH_INST_STOPPED; break;
    case KH_ACTION_STOP: ok = v->state == KH_INST_RUNNING || v->state == KH_INST_PAUSED; break;
    case KH_ACTION_REBOOT:
    case KH_ACTION_PAUSE: ok = v->state == KH_INST_RUNNING; break;
    case KH_ACTION_RESUME: ok = v->state == KH_INST_PAUSED; break;
    case KH_ACTION_KILL: ok = true; break;
    }
    if (!ok) {
        kh_err_set(err, KH_E_CONFLICT, "cannot %s vm %s: it is %s",
                   kh_lifecycle_action_name(action) + 3, name, st);
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

kh_task *kh_lifecycle_action(kh_manager *mgr, const char *name, kh_vm_action action,
                             const json_t *opts, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    unsigned timeout = 0;
    if (action == KH_ACTION_STOP && stop_timeout(opts, &timeout, err) < 0)
        return NULL;
    if (check_action(v, action, err) < 0)
        return NULL;
    kh_task *task = kh_task_new(mgr->tasks, kh_lifecycle_action_name(action), name);

    if (action == KH_ACTION_KILL) {
        v->kill_task = task;
        going_down_now(v, "killed");
        if (v->pid > 0) {
            v->drv->kill(v);
        } else {
            /* Still preparing (no process yet): the start is abandoned. */
            kh_err e = KH_ERR_INIT;
            kh_err_set(&e, KH_E_CONFLICT, "vm %s was killed while starting", name);
            kh_lifecycle_release(v);
            kh_lifecycle_set_state(v, KH_INST_STOPPED, "killed");
            task_finish_err(v, &e);
            v->kill_task = NULL;
            kh_task_succeed(task, kh_manager_json(v));
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
        kh_lifecycle_set_state(v, KH_INST_STOPPING, "stopping: ACPI power-down requested");
        if (timeout == 0) {
            kh_lifecycle_going_down(v, "stopped: killed (timeout 0)");
            v->drv->kill(v);
            break;
        }
        kh_task_progress(task, 20, "waiting for the guest to power off");
        KH_FREE(v->stop_forced);
        v->stop_timeout = timeout;
        timer_start(v, (uint64_t)timeout * 1000, stop_deadline);
        v->resend = xcalloc(1, sizeof(*v->resend));
        uv_timer_init(v->mgr->loop, v->resend);
        v->resend->data = v;
        uv_timer_start(v->resend, stop_resend, STOP_RESEND_MS, STOP_RESEND_MS);
        v->drv->stop(v);
        break;
    case KH_ACTION_REBOOT:
        v->drv->reboot(v);
        break;
    case KH_ACTION_PAUSE:
        v->drv->pause(v);
        break;
    case KH_ACTION_RESUME:
        v->drv->resume(v);
        break;
    case KH_ACTION_KILL:
        break;
    }
    return task;
}

/* ---- what the guest did ---- */

void kh_lifecycle_guest_shutdown(kh_inst *v, bool guest, const char *reason)
{
    if (v->state == KH_INST_STOPPING) {
        kh_lifecycle_going_down(v, "stopped: guest powered off on ACPI request");
    } else if (guest) {
        kh_lifecycle_going_down(v, "guest shut down");
    } else {
        char why[128];
        snprintf(why, sizeof(why), "shut down (%s)", reason ? reason : "host");
        kh_lifecycle_going_down(v, why);
    }
}

void kh_lifecycle_guest_paused(kh_inst *v)
{
    if (!v->task && v->state == KH_INST_RUNNING)
        kh_lifecycle_set_state(v, KH_INST_PAUSED, "paused by QEMU");
}

void kh_lifecycle_guest_resumed(kh_inst *v)
{
    if (!v->task && v->state == KH_INST_PAUSED)
        kh_lifecycle_set_state(v, KH_INST_RUNNING, "resumed");
}

void kh_lifecycle_guest_reset(kh_inst *v)
{
    kh_events_publish(v->mgr->events, "vm.reset", v->spec->name, NULL);
}

void kh_lifecycle_reattached(kh_inst *v, bool running, const char *status)
{
    if (running) {
        kh_lifecycle_set_state(v, KH_INST_RUNNING, "reattached after a daemon restart");
    } else {
        char why[128];
        snprintf(why, sizeof(why), "reattached after a daemon restart (QEMU status: %s)",
                 status);
        kh_lifecycle_set_state(v, KH_INST_PAUSED, why);
    }
    json_t *data = json_pack("{s:s}", "vm", v->spec->name);
    kh_manager_hooks_call(v, KH_MANAGER_EVENT_REATTACHED, data);
    json_decref(data);
}
