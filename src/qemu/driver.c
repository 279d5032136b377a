/* driver.c - owns the QEMU driver of the instance layer: the QMP
 * connection of each VM (a link that late replies cannot follow once cut),
 * its events turned into lifecycle notifications, the ops of
 * instance/driver.h (start through qemu/launch.c, power-down, kill,
 * reset, stop/cont, reattach with query-status) and the live limits QEMU
 * applies itself (I/O throttles, vCPU and emulator pinning, balloon). */
#include "qemu/driver.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "host/proc.h"
#include "instance/instance_int.h"
#include "instance/quota.h"
#include "qemu/argv.h"
#include "qemu/launch.h"
#include "qemu/migrate.h"
#include "qemu/qga.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/sock.h"

/* QMP callbacks reach their VM through a link that is cut when the VM lets
 * go of the connection; the link itself is freed by the last callback
 * (on_closed). So a late reply never touches a VM that moved on or is gone. */
struct qmp_link {
    kh_inst *v;
};

kh_qemu_vm *kh_qemu_driver_vm(kh_inst *v)
{
    if (!v->drv_state)
        v->drv_state = xcalloc(1, sizeof(kh_qemu_vm));
    return v->drv_state;
}

static kh_inst *link_vm(void *opaque)
{
    return ((qmp_link *)opaque)->v;
}

static void qmp_ignore_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (!v || !err)
        return;
    /* QEMU on its way out (the guest powered off, or we quit or killed it)
     * closes QMP before it answers what was in flight, e.g. our "quit":
     * expected, not worth a warning. */
    const kh_qemu_vm *qv = v->drv_state;
    bool expected = v->going_down || (qv && qv->shutdown_seen);
    kh_log(expected ? KH_LOG_DEBUG : KH_LOG_WARN, "vm.qmp", "vm=%s error=\"%s\"%s",
           v->spec->name, err->msg, expected ? " expected=true" : "");
}

static void qmp_send(kh_inst *v, const char *cmd, kh_qmp_reply_cb cb)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    kh_err err = KH_ERR_INIT;
    if (!qv->qmp ||
        kh_qmp_command(qv->qmp, cmd, NULL, cb ? cb : qmp_ignore_reply, qv->qlink, &err) < 0) {
        kh_err_set(&err, KH_E_QEMU, "QMP is not connected");
        if (cb) {
            qmp_link tmp = { v };
            cb(NULL, NULL, &err, &tmp);
        }
    }
}

static void on_qmp_event(kh_qmp *q, const char *event, json_t *data, double ts, void *opaque)
{
    (void)q;
    (void)ts;
    kh_inst *v = link_vm(opaque);
    if (!v)
        return;
    kh_log(KH_LOG_DEBUG, "vm.qmp_event", "vm=%s event=%s", v->spec->name, event);
    kh_manager_hooks_call(v, event, data);
    if (strcmp(event, "SHUTDOWN") == 0) {
        kh_qemu_driver_vm(v)->shutdown_seen = true;
        /* With -no-shutdown QEMU stays until told: the reason is ours to keep. */
        kh_lifecycle_guest_shutdown(v, json_is_true(json_object_get(data, "guest")),
                                    json_string_value(json_object_get(data, "reason")));
        qmp_send(v, "quit", NULL);
    } else if (strcmp(event, "STOP") == 0) {
        kh_lifecycle_guest_paused(v);
    } else if (strcmp(event, "RESUME") == 0) {
        kh_lifecycle_guest_resumed(v);
    } else if (strcmp(event, "RESET") == 0) {
        kh_lifecycle_guest_reset(v);
    }
}

static void on_qmp_closed(kh_qmp *q, void *opaque)
{
    qmp_link *link = opaque;
    kh_inst *v = link->v;
    kh_qemu_vm *qv = v ? v->drv_state : NULL;
    if (qv && qv->qmp == q) {
        /* QEMU closed it (it is exiting): the pidfd tells the end. */
        qv->qmp = NULL;
        qv->qlink = NULL;
    }
    free(link);
}

void kh_qemu_driver_step(kh_inst *v, kh_launch_step step)
{
    kh_qemu_driver_vm(v)->t[step] = kh_now_us();
}

/* Where the time of a start went: each step's share in microseconds
 * (state: the action's "starting" record before the driver ran; done: the
 * "running" record and the task's end after cont). */
static void log_start_steps(kh_inst *v, const uint64_t *t, uint64_t done)
{
    static const char *const names[KH_LAUNCH_STEPS] = {
        "state", "kernel", "rundir", "fds", "argv", "cgroup", "spawn", "persist", "connect",
        "qmp", "cont"
    };
    char line[512];
    size_t off = 0;
    uint64_t prev = v->start_us;
    for (int i = 0; i < KH_LAUNCH_STEPS && off < sizeof(line); i++) {
        if (!t[i] || !prev)
            continue;
        int n = snprintf(line + off, sizeof(line) - off, "%s%s=%llu", off ? " " : "", names[i],
                         (unsigned long long)(t[i] - prev));
        off += n > 0 ? (size_t)n : 0;
        prev = t[i];
    }
    kh_log(KH_LOG_DEBUG, "vm.start_steps", "vm=%s %s done=%llu total_us=%llu", v->spec->name,
           line, (unsigned long long)(done - prev),
           (unsigned long long)(v->start_us ? done - v->start_us : 0));
}

static void on_cont(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (!v || v->state != KH_INST_STARTING)
        return;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "cont: %s", err->msg);
        kh_lifecycle_start_fail(v, &e);
        return;
    }
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    qv->t[KH_LAUNCH_CONT] = kh_now_us();
    uint64_t t[KH_LAUNCH_STEPS];
    memcpy(t, qv->t, sizeof(t));
    kh_lifecycle_started(v);
    log_start_steps(v, t, kh_now_us());
}

static void reattach_status(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque);

/* ---- limits QEMU applies ---- */

static void on_throttle_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (v && err) {
        kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, err->msg);
        kh_events_publish(v->mgr->events, "vm.limits_failed", v->spec->name,
                          json_pack("{s:s}", "message", err->msg));
    }
}

static void pin_failed(kh_inst *v, const kh_err *e)
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
    kh_inst *v = link_vm(opaque);
    if (!v || v->pid <= 0)
        return;
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    kh_err e = KH_ERR_INIT;
    pid_t io[64];
    size_t n = err ? 0 : kh_quota_vcpu_threads(ret, io, KH_ARRAY_LEN(io));
    if (err)
        kh_err_set(&e, KH_E_QEMU, "query-iothreads: %s", err->msg);
    else if (kh_quota_pin_others(v->pid, qv->vcpu_tids, qv->nvcpu_tids, io, n, v->spec->limits,
                                 &e) == 0)
        return;
    pin_failed(v, &e);
}

static void on_cpus_pin(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_inst *v = link_vm(opaque);
    if (!v || v->pid <= 0)
        return;
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    kh_err e = KH_ERR_INIT;
    pid_t tids[256];
    size_t n = err ? 0 : kh_quota_vcpu_threads(ret, tids, KH_ARRAY_LEN(tids));
    if (err) {
        kh_err_set(&e, KH_E_QEMU, "query-cpus-fast: %s", err->msg);
    } else if (kh_quota_pin(v->pid, tids, n, v->spec->limits, &e) == 0) {
        free(qv->vcpu_tids);
        qv->vcpu_tids = n ? xcalloc(n, sizeof(*tids)) : NULL;
        if (n)
            memcpy(qv->vcpu_tids, tids, n * sizeof(*tids));
        qv->nvcpu_tids = n;
        return;
    }
    pin_failed(v, &e);
}

/* Pinning: ask QEMU for its vCPU threads, then pin them (and the others). */
static void send_pinning(kh_inst *v)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    kh_err e = KH_ERR_INIT;
    if (qv->qmp && kh_qmp_command(qv->qmp, "query-cpus-fast", NULL, on_cpus_pin, qv->qlink, &e) < 0)
        kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    /* The other threads after the vCPUs (replies come in order, so the
     * vCPU thread ids are known by then); again once after they were
     * unpinned, to let them run anywhere. Both before `cont` at start. */
    const kh_limits *l = v->spec->limits;
    bool others = l && (l->nemu_cpus || l->nio_cpus);
    if (qv->qmp && (others || qv->pinned_others)) {
        qv->pinned_others = others;
        if (kh_qmp_command(qv->qmp, "query-iothreads", NULL, on_iothreads_pin, qv->qlink, &e) < 0)
            kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    }
}

/* The balloon target (q35 only): limits.balloon_mib, or all of the guest's
 * memory when unset. At start the statistics are switched on too. */
static void send_balloon(kh_inst *v, bool starting)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    if (v->spec->machine != KH_MACHINE_Q35 || !qv->qmp)
        return;
    kh_err e = KH_ERR_INIT;
    if (starting)
        (void)kh_qmp_command(qv->qmp, "qom-set",
                             json_pack("{s:s, s:s, s:i}", "path", "/machine/peripheral/balloon0",
                                       "property", "guest-stats-polling-interval", "value", 10),
                             on_throttle_reply, qv->qlink, &e);
    uint64_t mib = v->spec->limits && v->spec->limits->balloon_mib ? v->spec->limits->balloon_mib
                                                                    : v->spec->memory_mib;
    if (starting && mib == v->spec->memory_mib)
        return; /* a fresh balloon is deflated already */
    json_int_t bytes = (json_int_t)mib * 1048576; /* mib <= 16 TiB: no overflow */
    if (kh_qmp_command(qv->qmp, "balloon", json_pack("{s:I}", "value", bytes),
                       on_throttle_reply, qv->qlink, &e) < 0)
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
static void send_throttles(kh_inst *v, const kh_limits *old)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    for (size_t i = 0; i < v->spec->ndisks && qv->qmp; i++) {
        const kh_disk_limits *now = kh_limits_disk(v->spec->limits, (unsigned)i);
        const kh_disk_limits *was = old ? kh_limits_disk(old, (unsigned)i) : NULL;
        if (!old && !now)
            continue;
        if (old && ((!now && !was) ||
                    (now && was && memcmp(now->v, was->v, sizeof(now->v)) == 0)))
            continue;
        kh_err e = KH_ERR_INIT;
        if (kh_qmp_command(qv->qmp, "block_set_io_throttle",
                           kh_quota_throttle_args((unsigned)v->disk_node[i],
                                                  v->spec->machine == KH_MACHINE_Q35, now),
                           on_throttle_reply, qv->qlink,
                           &e) < 0)
            kh_log(KH_LOG_WARN, "vm.limits", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    }
}

/* NICs with "link": "down" lose their carrier before the guest runs. */
static void send_links(kh_inst *v)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    for (size_t i = 0; i < v->spec->nnics && qv->qmp; i++) {
        if (!v->spec->nics[i].link_down)
            continue;
        char id[40];
        snprintf(id, sizeof(id), "net%zu-dev", i);
        kh_err e = KH_ERR_INIT;
        if (kh_qmp_command(qv->qmp, "set_link", json_pack("{s:s, s:b}", "name", id, "up", 0),
                           qmp_ignore_reply, qv->qlink, &e) < 0)
            kh_log(KH_LOG_WARN, "vm.nic_link", "vm=%s error=\"%s\"", v->spec->name, e.msg);
    }
}

/* ---- migration target (instance/migrate.c): -incoming defer ---- */

static void on_incoming(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (v && v->state == KH_INST_STARTING)
        kh_lifecycle_incoming(v, err);
}

/* An NBD server or export the source needs failed: the start fails. */
static void on_export(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (v && err && v->state == KH_INST_STARTING && v->incoming_port) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "preparing the incoming side (TLS, NBD): %s", err->msg);
        kh_lifecycle_incoming(v, &e);
    }
}

/* Local disks: the NBD server and a writable export per disk the source
 * mirrors into (block-export-add also activates the node for writes). */
static int send_exports(kh_inst *v, kh_err *err)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    const char *tls = v->incoming_tls_dir ? KH_QMIG_TLS_ID : NULL;
    if (tls) {
        char *own = kh_runtime_qemu_tls(v, v->incoming_tls_dir, err);
        if (!own || kh_qmp_command(qv->qmp, "object-add", kh_qmig_tls_object(own, true),
                                   on_export, qv->qlink, err) < 0) {
            free(own);
            return -1;
        }
        free(own);
    }
    if (!v->incoming_nbd_port)
        return 0;
    if (kh_qmp_command(qv->qmp, "nbd-server-start",
                       kh_qmig_nbd_server(v->incoming_host, v->incoming_nbd_port, tls),
                       on_export, qv->qlink, err) < 0)
        return -1;
    for (unsigned i = 0; i < 64; i++) {
        if (!(v->incoming_nbd_disks & (1ull << i)))
            continue;
        char node[32];
        snprintf(node, sizeof(node), "disk%u", i);
        if (kh_qmp_command(qv->qmp, "block-export-add", kh_qmig_export(node), on_export,
                           qv->qlink, err) < 0)
            return -1;
    }
    return 0;
}

/* Throttles, pinning and links as a normal start; then the NBD exports
 * (local disks), the capabilities and migrate-incoming on the address the
 * migration asked for. QMP keeps the order, so only the last reply is
 * waited for (an export's failure fails the start at once). */
static void start_incoming(kh_inst *v)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    kh_err err = KH_ERR_INIT;
    send_throttles(v, NULL);
    if (v->spec->limits && (v->spec->limits->ncpus || v->spec->limits->nemu_cpus ||
                            v->spec->limits->nio_cpus))
        send_pinning(v);
    send_links(v);
    kh_qmig_opts o = { .tls_creds = v->incoming_tls_dir ? KH_QMIG_TLS_ID : NULL };
    json_t *uri = kh_qmig_uri_args(v->incoming_host, v->incoming_port);
    if (!uri) {
        kh_err_set(&err, KH_E_INVALID, "bad incoming address %s", v->incoming_host);
        kh_lifecycle_incoming(v, &err);
        return;
    }
    if (send_exports(v, &err) < 0 ||
        kh_qmp_command(qv->qmp, "migrate-set-capabilities", kh_qmig_caps(&o, false),
                       qmp_ignore_reply, qv->qlink, &err) < 0 ||
        kh_qmp_command(qv->qmp, "migrate-set-parameters", kh_qmig_params(&o, false),
                       qmp_ignore_reply, qv->qlink, &err) < 0 ||
        kh_qmp_command(qv->qmp, "migrate-incoming", uri, on_incoming, qv->qlink, &err) < 0)
        kh_lifecycle_incoming(v, &err);
}

static void on_qmp_ready(kh_qmp *q, const kh_err *err, void *opaque)
{
    kh_inst *v = link_vm(opaque);
    if (!v)
        return;
    if (err) {
        kh_log(KH_LOG_WARN, "vm.qmp", "vm=%s error=\"%s\"", v->spec->name, err->msg);
        if (v->state == KH_INST_STARTING)
            kh_lifecycle_start_fail(v, err);
        return;
    }
    if (kh_qemu_driver_vm(v)->reattaching) {
        kh_err e = KH_ERR_INIT;
        if (kh_qmp_command(q, "query-status", NULL, reattach_status, opaque, &e) < 0)
            kh_log(KH_LOG_WARN, "vm.reattach", "vm=%s error=\"%s\"", v->spec->name, e.msg);
        return;
    }
    if (v->state == KH_INST_STARTING && v->incoming_port) {
        start_incoming(v); /* migration target: listen, no cont */
        return;
    }
    if (v->state == KH_INST_STARTING) {
        kh_qemu_driver_step(v, KH_LAUNCH_QMP);
        if (v->task)
            kh_task_progress(v->task, 80, "starting vCPUs");
        send_throttles(v, NULL); /* queued before cont: the guest never runs unthrottled */
        if (v->spec->limits && (v->spec->limits->ncpus || v->spec->limits->nemu_cpus ||
                                v->spec->limits->nio_cpus))
            send_pinning(v);
        send_links(v);
        qmp_send(v, "cont", on_cont);
        /* After cont: the balloon acts once the guest's driver is up, and
         * the start's reply does not wait for one more round trip. */
        send_balloon(v, true);
    }
}

static const kh_qmp_callbacks qmp_cbs = {
    .on_ready = on_qmp_ready,
    .on_event = on_qmp_event,
    .on_closed = on_qmp_closed,
};

int kh_qemu_driver_connect(kh_inst *v, int dirfd, kh_err *err)
{
    int fd = kh_sock_connect_at(dirfd, "qmp.sock", err);
    if (fd < 0)
        return -1;
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    qv->qlink = xcalloc(1, sizeof(*qv->qlink));
    qv->qlink->v = v;
    qv->qmp = kh_qmp_new(v->mgr->loop, &qmp_cbs, qv->qlink);
    return kh_qmp_attach_fd(qv->qmp, fd, err);
}

/* ---- the operations ---- */

static int qemu_init(kh_manager *mgr, kh_err *err)
{
    return kh_launch_init(mgr, err);
}

static void qemu_fini(kh_manager *mgr)
{
    kh_launch_fini(mgr);
}

static void qemu_kill(kh_inst *v)
{
    if (v->pid <= 0)
        return;
    /* Through the pidfd when we have one: no risk of hitting a reused pid. */
    if (v->pidfd >= 0 && syscall(SYS_pidfd_send_signal, v->pidfd, SIGKILL, NULL, 0) == 0)
        return;
    if (kh_proc_alive(v->pid, v->pid_start))
        kill(v->pid, SIGKILL);
}

static void on_powerdown(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (v && err)
        kh_lifecycle_stop_failed(v);
}

/* guest-shutdown through the guest agent, in the thread pool (an agent
 * that is not there never answers); fire and forget: the process end
 * completes the stop either way. */
typedef struct agent_stop {
    uv_work_t work;
    char *sock;
    char *name;
    kh_err err;
} agent_stop;

static void agent_stop_work(uv_work_t *w)
{
    agent_stop *a = w->data;
    kh_qga *q = kh_qga_open(a->sock, 3000, &a->err);
    if (!q)
        return;
    json_decref(kh_qga_call(q, "guest-shutdown", json_pack("{s:s}", "mode", "powerdown"), true,
                            &a->err));
    kh_qga_close(q);
}

static void agent_stop_done(uv_work_t *w, int status)
{
    (void)status;
    agent_stop *a = w->data;
    kh_log(KH_LOG_INFO, "vm.stop_agent", "vm=%s sent=%s%s%s%s", a->name,
           a->err.code == KH_OK ? "true" : "false", a->err.code == KH_OK ? "" : " error=\"",
           a->err.code == KH_OK ? "" : a->err.msg, a->err.code == KH_OK ? "" : "\"");
    free(a->sock);
    free(a->name);
    free(a);
}

static void qemu_stop(kh_inst *v)
{
    qmp_send(v, "cont", NULL); /* a paused guest cannot see the button */
    qmp_send(v, "system_powerdown", on_powerdown);
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    uint64_t now = uv_now(v->mgr->loop);
    if (now - qv->stop_last_ms > 10000) /* lifecycle.c resends every 3 s */
        qv->stop_requests = 0;
    qv->stop_last_ms = now;
    /* the request again (lifecycle.c resends it): the guest ignores ACPI
     * (no acpid, a boot loader menu...), so its agent is asked as well */
    if (++qv->stop_requests == 2 && v->spec->machine == KH_MACHINE_Q35) {
        agent_stop *a = xcalloc(1, sizeof(*a));
        a->work.data = a;
        a->sock = kh_runtime_run_path(v, "qga.sock");
        a->name = xstrdup(v->spec->name);
        if (uv_queue_work(v->mgr->loop, &a->work, agent_stop_work, agent_stop_done) < 0) {
            free(a->sock);
            free(a->name);
            free(a);
        }
    }
}

static void on_simple_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (v)
        kh_lifecycle_action_done(v, err);
}

static void qemu_reboot(kh_inst *v)
{
    qmp_send(v, "system_reset", on_simple_reply);
}

static void qemu_pause(kh_inst *v)
{
    qmp_send(v, "stop", on_simple_reply);
}

static void qemu_resume(kh_inst *v)
{
    qmp_send(v, "cont", on_simple_reply);
}

static void reattach_status(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_inst *v = link_vm(opaque);
    if (!v)
        return;
    kh_qemu_driver_vm(v)->reattaching = false;
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
        kh_lifecycle_going_down(v, "start interrupted by a daemon restart");
        qemu_kill(v);
    } else if (strcmp(status, "shutdown") == 0) {
        kh_lifecycle_going_down(v, "guest shut down while the daemon was down");
        qmp_send(v, "quit", NULL);
    } else {
        kh_lifecycle_reattached(v, running, status);
    }
}

static int qemu_reattach(kh_inst *v, int dirfd, kh_err *err)
{
    kh_qemu_driver_vm(v)->reattaching = true;
    if (kh_qemu_driver_connect(v, dirfd, err) < 0)
        return -1;
    if (v->spec->serial) {
        char *clog = kh_runtime_state_path(v, "console.log");
        v->console = kh_console_new(v->mgr->loop, clog, KH_CONSOLE_LOG_MAX);
        free(clog);
        /* What the guest wrote while no daemon listened is gone: say so
         * in the log, before anything new arrives. */
        kh_console_note_gap(v->console, time(NULL));
        int fd = kh_sock_connect_at(dirfd, "serial.sock", err);
        if (fd < 0 || kh_console_attach_fd(v->console, fd, err) < 0) {
            if (fd >= 0)
                close(fd);
            kh_log(KH_LOG_WARN, "vm.reattach", "vm=%s console=\"%s\"", v->spec->name, err->msg);
        }
    }
    return 0;
}

static void qemu_release(kh_inst *v)
{
    kh_qemu_vm *qv = v->drv_state;
    if (!qv)
        return;
    v->drv_state = NULL;
    free(qv->vcpu_tids);
    if (qv->job)
        kh_launch_cancel(qv->job);
    if (qv->qmp) {
        qv->qlink->v = NULL;
        kh_qmp_close(qv->qmp);
    }
    free(qv);
}

static void qemu_limits_changed(kh_inst *v, const kh_limits *old)
{
    send_throttles(v, old);
    if (!same_affinity(old, v->spec->limits))
        send_pinning(v);
    if (balloon_of(old) != balloon_of(v->spec->limits))
        send_balloon(v, false);
}

static void qemu_vcpus_changed(kh_inst *v)
{
    send_pinning(v);
}

static void on_medium_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_inst *v = link_vm(opaque);
    if (!v)
        return;
    if (err)
        kh_log(KH_LOG_WARN, "vm.cidata", "vm=%s swapped=false error=\"%s\"", v->spec->name,
               err->msg);
    else
        kh_log(KH_LOG_INFO, "vm.cidata", "vm=%s swapped=true", v->spec->name);
}

/* A new seed in the run dir (renamed over the old: QEMU keeps reading its
 * open file until the swap), then blockdev-change-medium on the CD-ROM. */
static int qemu_cidata_changed(kh_inst *v, kh_err *err)
{
    kh_qemu_vm *qv = kh_qemu_driver_vm(v);
    if (!v->spec->cloud_init || !qv || !qv->qmp) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: no cloud-init CD-ROM to change now",
                   v->spec->name);
        return -1;
    }
    char *path = kh_runtime_run_path(v, KH_RUNTIME_QEMU_DIR "/cidata.iso");
    int rc = kh_launch_cidata_write(v, path, err);
    if (rc == 0 &&
        kh_qmp_command(qv->qmp, "blockdev-change-medium",
                       json_pack("{s:s, s:s, s:s, s:s}", "id", KH_QEMU_CIDATA_DEV, "filename",
                                 path, "format", "raw", "read-only-mode", "read-only"),
                       on_medium_reply, qv->qlink, err) < 0)
        rc = -1;
    free(path);
    return rc;
}

static int qemu_command(kh_inst *v, const char *cmd, json_t *args, int fd, kh_qmp_reply_cb cb,
                        void *opaque, kh_err *err)
{
    kh_qemu_vm *qv = v->drv_state;
    if (!qv || !qv->qmp) {
        json_decref(args);
        if (fd >= 0)
            close(fd);
        kh_err_set(err, KH_E_CONFLICT, "vm %s is not running", v->spec->name);
        return -1;
    }
    if (fd >= 0)
        return kh_qmp_command_fd(qv->qmp, cmd, args, fd, cb, opaque, err);
    return kh_qmp_command(qv->qmp, cmd, args, cb, opaque, err);
}

static bool qemu_monitor_ready(const kh_inst *v)
{
    const kh_qemu_vm *qv = v->drv_state;
    return qv && qv->qmp;
}

static unsigned long qemu_monitor_rtt_us(const kh_inst *v)
{
    const kh_qemu_vm *qv = v->drv_state;
    return qv && qv->qmp ? kh_qmp_last_rtt_us(qv->qmp) : 0;
}

const kh_driver kh_qemu_driver = {
    .name = "qemu",
    .init = qemu_init,
    .fini = qemu_fini,
    .start = kh_launch_start,
    .stop = qemu_stop,
    .kill = qemu_kill,
    .reboot = qemu_reboot,
    .pause = qemu_pause,
    .resume = qemu_resume,
    .reattach = qemu_reattach,
    .release = qemu_release,
    .limits_changed = qemu_limits_changed,
    .vcpus_changed = qemu_vcpus_changed,
    .cidata_changed = qemu_cidata_changed,
    .command = qemu_command,
    .monitor_ready = qemu_monitor_ready,
    .monitor_rtt_us = qemu_monitor_rtt_us,
};
