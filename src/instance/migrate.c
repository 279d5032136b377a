/* migrate.c - owns the orchestration of a live migration on the source:
 * one kh_migration per VM runs the phase machine (migrate_fsm.c) on the
 * loop: each event gives the next phase (recorded in etcd through
 * ops->record and in the migrations table before its actions run) and the
 * actions, run here in the order of their bits: calc-dirty-rate and the
 * forecast with the target's prepare (migrate_prep.c), the target's
 * host-to-host routes (migrate_peer.c), the QMP sequence through the driver's command (local
 * disks: NBD nodes and blockdev-mirror until ready; at the switch the
 * mirrors are cancelled, which completes them consistently while the
 * guest is paused before the switch-over), the owner move through
 * ops->owner_move. The task can be cancelled before the switch.
 * The target's side is migrate_target.c.
 *
 * At daemon start kh_migrate_restart() feeds RESTART to every source row
 * left pending (and has migrate_target.c resolve the target rows); in the
 * switch the fence (ops->fence, a CAS the owner move compares) decides. */
#include "instance/migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance/config.h"
#include "instance/instance_int.h"
#include "instance/migrate_fsm.h"
#include "instance/migrate_int.h"
#include "qemu/migrate.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "store/store.h"

#include <sqlite3.h>

#define FORGET_TRIES 100
#define CONFIRM_POLL_MS 5       /* finish: is the guest running on the target yet */
#define CONFIRM_TIMEOUT_MS 10000    /* prepare's timer (the target is asked every POLL_MS) */
#define DEFAULT_MAX_DOWNTIME_MS 2000

static kh_migration *migrations[64];

static kh_migration *mig_find(const char *id)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(migrations); i++)
        if (migrations[i] && !migrations[i]->finished && strcmp(migrations[i]->id, id) == 0)
            return migrations[i];
    return NULL;
}

/* Free a finished m once nothing refers to it (timer closed, no QMP reply due). */
static void mig_release(kh_migration *m)
{
    if (!m->finished || m->timer || m->timer_closing || m->inflight)
        return;
    for (size_t i = 0; i < KH_ARRAY_LEN(migrations); i++)
        if (migrations[i] == m)
            migrations[i] = NULL;
    kh_migrate_peer_close(m);
    free(m);
}

static void timer_closed(uv_handle_t *h)
{
    kh_migration *m = h->data;
    free(h);
    m->timer_closing = false;
    mig_release(m);
}

void kh_migrate_timer_start(kh_migration *m, uv_timer_cb cb, uint64_t ms, uint64_t repeat)
{
    if (!m->timer) {
        m->timer = xcalloc(1, sizeof(*m->timer));
        uv_timer_init(m->mgr->loop, m->timer);
        m->timer->data = m;
    }
    uv_timer_start(m->timer, cb, ms, repeat);
}

void kh_migrate_timer_stop(kh_migration *m)
{
    if (m->timer)
        uv_timer_stop(m->timer);
}

/* ---- the source's machine ---- */

void kh_migrate_fail(kh_migration *m, const kh_err *err)
{
    if (err && m->err.code == KH_OK)
        m->err = *err;
    m->pending = KH_MIG_EV_FAILED;
}

kh_inst *kh_migrate_vm(kh_migration *m)
{
    return kh_manager_find_id(m->mgr, m->id);
}

static void qmp_ignore(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_migration *m = opaque;
    if (err)
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s qmp error=\"%s\"", m->name, err->msg);
}

typedef struct qmp_call {
    kh_migration *m;
    kh_qmp_reply_cb cb;
} qmp_call;

static void qmp_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    qmp_call *c = opaque;
    kh_migration *m = c->m;
    kh_qmp_reply_cb cb = c->cb;
    free(c);
    if (!m->finished)
        cb(q, ret, err, m); /* still counted: m cannot go inside */
    m->inflight--;
    mig_release(m);
}

int kh_migrate_qmp(kh_migration *m, const char *cmd, json_t *args, kh_qmp_reply_cb cb)
{
    kh_err err = KH_ERR_INIT;
    kh_inst *v = kh_migrate_vm(m);
    if (!v || v->pid <= 0) {
        json_decref(args);
        kh_err_set(&err, KH_E_CONFLICT, "vm %s has no QEMU any more", m->name);
        kh_migrate_fail(m, &err);
        return -1;
    }
    qmp_call *c = xcalloc(1, sizeof(*c));
    c->m = m;
    c->cb = cb ? cb : qmp_ignore;
    if (v->drv->command(v, cmd, args, -1, qmp_reply, c, &err) < 0) {
        free(c);
        kh_migrate_fail(m, &err);
        return -1;
    }
    m->inflight++;
    return 0;
}

/* The migrations row (migrate_schema.c), written before a phase's
 * actions; a failure is logged (etcd has the record too). */
void kh_migrate_persist(kh_manager *mgr, const char *vm_id, const char *name, const char *role,
                    const char *phase, const char *peer, const char *error)
{
    kh_err err = KH_ERR_INIT;
    sqlite3_stmt *s = kh_store_prep(
        mgr->store,
        "INSERT INTO migrations (vm_id, vm_name, role, phase, peer, error, started_at, "
        "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT (vm_id) DO UPDATE SET "
        "vm_name = ?2, role = ?3, phase = ?4, peer = ?5, error = ?6, updated_at = ?7, "
        "started_at = CASE WHEN ?4 = 'prepare' THEN ?7 ELSE started_at END",
        &err);
    if (s) {
        kh_store_bind_text(s, 1, vm_id);
        kh_store_bind_text(s, 2, name);
        kh_store_bind_text(s, 3, role);
        kh_store_bind_text(s, 4, phase);
        kh_store_bind_text(s, 5, peer);
        kh_store_bind_text(s, 6, error);
        sqlite3_bind_double(s, 7, kh_wall_time());
    }
    if (!s || kh_store_step_done(mgr->store, s, "saving a migration phase", &err) < 0)
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s store error=\"%s\"", name, err.msg);
}

static void record(kh_migration *m)
{
    kh_migrate_persist(m->mgr, m->id, m->name, "source", kh_migrate_fsm_phase_name(m->phase),
            m->peer.host_id, m->err.code != KH_OK ? m->err.msg : NULL);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:f}", "source", m->peer.self_id,
                            "target", m->peer.host_id, "phase",
                            kh_migrate_fsm_phase_name(m->phase), "token", m->token, "vm",
                            m->name, "updated_at", kh_wall_time());
    kh_err err = KH_ERR_INIT;
    if (m->ops.record(m->ops.opaque, m->id, rec, &err) < 0)
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s record error=\"%s\"", m->name, err.msg);
    json_decref(rec);
}

static void on_query(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_migration *m = opaque;
    kh_qmig_status st;
    bool parsed = !err && kh_qmig_status_parse(ret, &st) == 0;
    if (parsed && !m->finished)
        m->st = st; /* also after the switch: the result's downtime and totals */
    if (m->finished || (m->phase != KH_MIG_MEMORY && m->phase != KH_MIG_SWITCH))
        return;
    if (err) {
        m->err = *err;
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
        return;
    }
    if (!parsed)
        return;
    if (st.ram_total && m->task) {
        char msg[160];
        int n = snprintf(msg, sizeof(msg), "%s: RAM %llu of %llu MiB", st.status,
                         (unsigned long long)(st.ram_transferred >> 20),
                         (unsigned long long)(st.ram_total >> 20));
        if (m->ndisks && n > 0 && (size_t)n < sizeof(msg))
            snprintf(msg + n, sizeof(msg) - (size_t)n, ", disks in sync (%llu MiB)",
                     (unsigned long long)(m->mirrors.total >> 20));
        uint64_t pct = 10 + 80 * st.ram_transferred / st.ram_total;
        kh_task_progress(m->task, (int)(pct > 90 ? 90 : pct), msg);
    }
    if (kh_qmig_status_failed(&st) || strcmp(st.status, "cancelled") == 0) {
        kh_err_set(&m->err, KH_E_QEMU, "migration %s: %s", st.status, st.error);
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
    } else if (strcmp(st.status, "pre-switchover") == 0 && m->phase == KH_MIG_MEMORY) {
        kh_migrate_feed(m, KH_MIG_EV_PRESWITCHOVER);
    } else if (strcmp(st.status, "completed") == 0) { /* in switch, or memory without pause */
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_COMPLETED);
    }
}

static void poll_qemu(uv_timer_t *t)
{
    kh_migration *m = t->data;
    if (m->wait_mirrors && kh_migrate_disks_switch_poll(m) < 0) {
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
        return;
    }
    if (kh_migrate_qmp(m, "query-migrate", NULL, on_query) < 0) {
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
    }
}

static void on_migrate(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_migration *m = opaque;
    if (m->finished)
        return;
    if (err) {
        m->err = *err;
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
        return;
    }
    kh_migrate_timer_start(m, poll_qemu, POLL_MS, POLL_MS);
}

static void forget_try(uv_timer_t *t)
{
    kh_migration *m = t->data;
    kh_err err = KH_ERR_INIT;
    kh_inst *v = kh_migrate_vm(m);
    if (!v || kh_config_delete(m->mgr, m->name, &err) == 0 || ++m->forget_tries > FORGET_TRIES) {
        if (v && m->forget_tries > FORGET_TRIES)
            kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s forget error=\"%s\"", m->name, err.msg);
        else if (m->delete_disks)
            kh_migrate_disks_drop(m);
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_DONE);
    }
}

static void qmp_silent(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    (void)err;
    (void)opaque;
}

/* The client end of TLS, once per migration (a rolled-back one may have
 * left its object: it goes first, its absence is no error). */
void kh_migrate_tls_setup(kh_migration *m)
{
    if (!m->tls_dir[0] || m->tls_ready)
        return;
    m->tls_ready = true;
    kh_err e = KH_ERR_INIT;
    kh_inst *v = kh_migrate_vm(m);
    char *own = v ? kh_runtime_qemu_tls(v, m->tls_dir, &e) : NULL;
    if (!own) { /* the migrate command then fails on the missing creds */
        kh_log(KH_LOG_WARN, "vm.migrate", "tls=false error=\"%s\"", e.msg);
        return;
    }
    (void)kh_migrate_qmp(m, "object-del", json_pack("{s:s}", "id", KH_QMIG_TLS_ID), qmp_silent);
    (void)kh_migrate_qmp(m, "object-add", kh_qmig_tls_object(own, false), NULL);
    free(own);
}

static void on_params(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_migration *m = opaque;
    const char *creds = err ? NULL : json_string_value(json_object_get(ret, "tls-creds"));
    m->tls_confirmed = creds && strcmp(creds, KH_QMIG_TLS_ID) == 0;
}

static void do_migrate(kh_migration *m)
{
    kh_qmig_opts o = { .bandwidth = m->opts.max_bandwidth,
                       .downtime_ms = m->plan.downtime_ms,
                       .auto_converge = m->plan.auto_converge,
                       /* shared storage: QEMU switches over on its own
                        * (the target stays paused until the commit);
                        * local disks: the pause lets the mirrors complete */
                       .pause_switchover = m->ndisks > 0,
                       .tls_creds = m->tls_dir[0] ? KH_QMIG_TLS_ID : NULL,
                       .tls_hostname = m->peer.address };
    kh_migrate_tls_setup(m);
    if (m->paused_copy) /* the way back's cont undoes it */
        (void)kh_migrate_qmp(m, "stop", NULL, NULL);
    json_t *uri = kh_qmig_uri_args(m->peer.address, m->port);
    if (!uri) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_INVALID, "bad target address %s", m->peer.address);
        kh_migrate_fail(m, &e);
        return;
    }
    m->continued = false;
    json_t *params = kh_qmig_params(&o, true);
    if (!o.tls_creds) /* a QEMU that migrated with TLS before keeps it otherwise */
        json_object_set_new(params, "tls-creds", json_string(""));
    if (kh_migrate_qmp(m, "migrate-set-capabilities", kh_qmig_caps(&o, true), NULL) < 0) {
        json_decref(params);
        json_decref(uri);
    } else if (kh_migrate_qmp(m, "migrate-set-parameters", params, NULL) < 0 ||
               kh_migrate_qmp(m, "query-migrate-parameters", NULL, on_params) < 0) {
        json_decref(uri);
    } else {
        (void)kh_migrate_qmp(m, "migrate", uri, on_migrate);
    }
}

static void do_owner(kh_migration *m)
{
    char owner[64];
    kh_err err = KH_ERR_INIT;
    m->facts.owner_txn_sent = true;
    if (m->ops.owner_move(m->ops.opaque, m->id, m->peer.host_id, owner, sizeof(owner), &err) < 0) {
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s owner txn error=\"%s\"", m->name, err.msg);
        m->err = err;
        m->pending_owner = KH_MIG_OWNER_UNKNOWN;
    } else if (strcmp(owner, m->peer.host_id) == 0) {
        m->pending_owner = KH_MIG_OWNER_TARGET;
    } else if (strcmp(owner, m->peer.self_id) == 0) {
        m->pending_owner = KH_MIG_OWNER_SOURCE;
    } else {
        m->pending_owner = KH_MIG_OWNER_OTHER;
    }
    m->pending = KH_MIG_EV_OWNER;
}

static int run_step(kh_migration *m, uint32_t acts);

/* finish: the target answered the commit; once it says the guest runs
 * there (or after CONFIRM_TIMEOUT_MS: the commit stands either way), the
 * rest of the batch. */
static void confirm_tick(uv_timer_t *t)
{
    kh_migration *m = t->data;
    json_t *st = NULL;
    kh_err err = KH_ERR_INIT;
    bool running = false;
    if (kh_migrate_peer_call(m, "status", NULL, &st, &err) == 0) {
        const char *state = json_string_value(json_object_get(st, "state"));
        running = state && strcmp(state, "running") == 0;
        json_decref(st);
    }
    bool late = kh_now_ms() > m->poll_deadline_ms;
    if (!running && !late)
        return;
    if (!running)
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s the target did not say running within %d ms "
               "of the commit (%s): going on", m->name, CONFIRM_TIMEOUT_MS, err.msg);
    m->running_ms = kh_now_ms();
    kh_migrate_timer_stop(m);
    uint32_t acts = m->resume_acts;
    m->resume_acts = 0;
    int next = run_step(m, acts);
    if (next >= 0 && !m->finished)
        kh_migrate_feed(m, (kh_mig_event)next);
}

static void run_action(kh_migration *m, uint32_t bit)
{
    kh_err err = KH_ERR_INIT;
    kh_inst *v = kh_migrate_vm(m);
    switch (bit) {
    case KH_MIG_A_DIRTY_RATE:
        kh_migrate_dirty_rate(m);
        break;
    case KH_MIG_A_NBD_ADD:
        kh_migrate_disks_nbd_add(m);
        break;
    case KH_MIG_A_MIRROR:
        kh_migrate_disks_mirror(m);
        break;
    case KH_MIG_A_MIRROR_CANCEL:
        kh_migrate_disks_stop(m);
        break;
    case KH_MIG_A_NBD_DEL: /* with the jobs, in do_mirror_stop's cleanup */
        break;
    case KH_MIG_A_DISKS_DELETE:
        m->delete_disks = true; /* once the definition is gone (forget_try) */
        break;
    case KH_MIG_A_T_PREPARE:
        kh_migrate_prepare(m);
        break;
    case KH_MIG_A_MIGRATE:
        do_migrate(m);
        break;
    case KH_MIG_A_CONTINUE:
        if (!m->continued && !m->wait_mirrors) { /* else on_jobs_switch sends it */
            m->continued = true;
            (void)kh_migrate_qmp(m, "migrate-continue", json_pack("{s:s}", "state", "pre-switchover"),
                      NULL);
        }
        break;
    case KH_MIG_A_OWNER_TXN:
        do_owner(m);
        break;
    case KH_MIG_A_MIGRATE_CANCEL:
        kh_migrate_timer_stop(m);
        if (v && v->pid > 0)
            (void)kh_migrate_qmp(m, "migrate_cancel", NULL, NULL);
        break;
    case KH_MIG_A_RESUME:
        if (v && v->pid > 0)
            (void)kh_migrate_qmp(m, "cont", NULL, NULL);
        break;
    case KH_MIG_A_T_ABORT:
    {
        json_t *b = json_object();
        if (kh_migrate_peer_call(m, "abort", b, NULL, &err) < 0)
            kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s abort error=\"%s\"", m->name, err.msg);
        json_decref(b);
        break;
    }
    case KH_MIG_A_T_COMMIT: {
        json_t *b = json_object();
        int rc = kh_migrate_peer_call(m, "commit", b, NULL, &err);
        if (rc == 0 && !m->committed_ms)
            m->committed_ms = kh_now_ms();
        if (rc == 0) {
            /* the rest (this QEMU killed, forgotten) once the target runs
             * the guest: its QEMU may still be loading the last of the
             * stream, which must not be cut */
            m->resume_acts = m->cur_acts & ~(((uint32_t)KH_MIG_A_T_COMMIT << 1) - 1);
            m->stop_batch = true;
            m->poll_deadline_ms = kh_now_ms() + CONFIRM_TIMEOUT_MS;
            kh_migrate_timer_start(m, confirm_tick, CONFIRM_POLL_MS, CONFIRM_POLL_MS);
        }
        if (rc < 0) {
            /* the guest's state is on the target: this QEMU must not go
             * before the target runs it; FAILED retries the batch later */
            kh_log(KH_LOG_ERROR, "vm.migrate", "vm=%s commit error=\"%s\"", m->name, err.msg);
            m->err = err;
            m->stop_batch = true;
            m->pending = KH_MIG_EV_FAILED;
        }
        json_decref(b);
        break;
    }
    case KH_MIG_A_KILL:
        if (v && v->pid > 0) {
            char why[200];
            snprintf(why, sizeof(why), "migrated to %s", m->peer.name);
            kh_lifecycle_going_down(v, why);
            v->drv->kill(v);
        }
        break;
    case KH_MIG_A_FORGET:
        m->forget_tries = 0;
        kh_migrate_timer_start(m, forget_try, 0, 50);
        break;
    case KH_MIG_A_FENCE_TXN: {
        /* the fence (a CAS the owner txn also compares): the owner then
         * cannot move any more; its answer is the owner (unknown: the row
         * retries later; no owner key: no move could win, the source's) */
        char owner[64];
        m->pending = KH_MIG_EV_OWNER;
        if (!m->ops.fence ||
            m->ops.fence(m->ops.opaque, m->id, m->peer.self_id, owner, sizeof(owner), &err) < 0)
            m->pending_owner = KH_MIG_OWNER_UNKNOWN;
        else
            m->pending_owner = strcmp(owner, m->peer.host_id) == 0 ? KH_MIG_OWNER_TARGET
                               : (!owner[0] || strcmp(owner, m->peer.self_id) == 0)
                                   ? KH_MIG_OWNER_SOURCE
                                   : KH_MIG_OWNER_OTHER;
        break;
    }
    case KH_MIG_A_EVENT:
        kh_events_publish(m->mgr->events, "vm.migration", m->name,
                          json_pack("{s:s, s:s}", "phase", kh_migrate_fsm_phase_name(m->phase),
                                    "target", m->peer.name));
        break;
    case KH_MIG_A_REPORT_FAIL:
        if (m->task) {
            if (m->err.code == KH_OK)
                kh_err_set(&m->err, KH_E_INTERNAL, "migration failed");
            kh_err_prefix(&m->err, "migrating vm %s to %s", m->name, m->peer.name);
            kh_task_fail(m->task, &m->err);
            m->task = NULL;
        }
        break;
    default:
        break;
    }
}

/* Seconds from a to b (both set, in order), or -1. */
static double span(uint64_t a, uint64_t b)
{
    return a && b >= a ? (double)(b - a) / 1000.0 : -1.0;
}

/* Where a migration's time went: prepare (the dirty-rate measurement and
 * the target's start side by side), disks (the mirrors to ready), memory
 * (RAM until QEMU completed), switch (the owner txn and commit), finish
 * (the target running the guest, this side's QEMU gone). */
static json_t *phase_times(const kh_migration *m)
{
    const uint64_t *p = m->phase_ms;
    uint64_t after_prepare = p[KH_MIG_DISKS] ? p[KH_MIG_DISKS] : p[KH_MIG_MEMORY];
    json_t *o = json_object();
    json_object_set_new(o, "dirty_rate_s", json_real(span(m->t0_ms, m->dirty_ms)));
    json_object_set_new(o, "target_prepare_s", json_real(span(m->t0_ms, m->ready_ms)));
    json_object_set_new(o, "prepare_s", json_real(span(m->t0_ms, after_prepare)));
    json_object_set_new(o, "disks_s", json_real(span(p[KH_MIG_DISKS], p[KH_MIG_MEMORY])));
    json_object_set_new(o, "memory_s", json_real(span(p[KH_MIG_MEMORY], p[KH_MIG_SWITCH])));
    json_object_set_new(o, "switch_s", json_real(span(p[KH_MIG_SWITCH], p[KH_MIG_FINISH])));
    json_object_set_new(o, "finish_s", json_real(span(p[KH_MIG_FINISH], kh_now_ms())));
    json_object_set_new(o, "target_running_s", json_real(span(m->committed_ms, m->running_ms)));
    return o;
}

static void finish(kh_migration *m)
{
    if (m->task)
        kh_task_set_cancel(m->task, NULL, NULL);
    if (m->phase == KH_MIG_DONE && m->task) {
        double secs = (double)(kh_now_ms() - m->t0_ms) / 1000.0;
        json_t *res = json_pack("{s:s, s:s, s:f, s:I, s:I, s:I}", "vm", m->name, "target",
                                m->peer.name, "total_s", secs, "downtime_ms",
                                (json_int_t)m->st.downtime_ms, "ram_total",
                                (json_int_t)m->st.ram_total, "ram_transferred",
                                (json_int_t)m->st.ram_transferred);
        json_object_set_new(res, "tls", json_boolean(m->tls_confirmed));
        json_object_set_new(res, "disks_copied", json_integer(m->ndisks));
        json_object_set_new(res, "disk_bytes", json_integer((json_int_t)m->mirrors.total));
        json_object_set_new(res, "downtime_limit_ms", json_integer(m->plan.downtime_ms));
        /* the guest's pause as it lives it: from QEMU's STOP event to the
         * target saying it runs the guest (an upper bound: that answer is
         * polled every CONFIRM_POLL_MS); without the event, QEMU's
         * downtime (paused until completed) plus ours after it */
        uint64_t ran = m->running_ms ? m->running_ms : m->committed_ms;
        int64_t sw = m->completed_ms && ran >= m->completed_ms
                         ? (int64_t)(ran - m->completed_ms) : -1;
        int64_t gdt = m->stopped_ms && ran >= m->stopped_ms
                          ? (int64_t)(ran - m->stopped_ms)
                      : sw >= 0 ? m->st.downtime_ms + sw : -1;
        json_object_set_new(res, "switch_ms", json_integer(sw));
        json_object_set_new(res, "guest_downtime_ms", json_integer(gdt));
        json_object_set_new(res, "auto_converge", json_boolean(m->plan.auto_converge));
        json_object_set_new(res, "accel", json_string(kh_accel_name(m->mgr->cfg.accel)));
        json_object_set_new(res, "live", json_boolean(!m->paused_copy));
        json_object_set_new(res, "phases", phase_times(m));
        kh_task_succeed(m->task, res);
        m->task = NULL;
    }
    kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s target=%s phase=%s ms=%llu", m->name, m->peer.name,
           kh_migrate_fsm_phase_name(m->phase), (unsigned long long)(kh_now_ms() - m->t0_ms));
    m->finished = true;
    if (m->timer) {
        m->timer_closing = true;
        uv_close((uv_handle_t *)m->timer, timer_closed);
        m->timer = NULL;
    }
    mig_release(m);
}

#define LATER_MS 1000
#define LATER_TRIES 30

/* Run a step's actions; the event they produced, or -1. */
static int run_step(kh_migration *m, uint32_t acts)
{
    m->pending = -1;
    m->stop_batch = false;
    m->cur_acts = acts;
    for (unsigned b = 0; b < KH_MIG_ACTIONS && !m->stop_batch; b++)
        if (acts & (1u << b))
            run_action(m, 1u << b);
    if (kh_migrate_fsm_terminal(m->phase)) {
        finish(m);
        return -1;
    }
    if ((m->phase == KH_MIG_FINISH || m->phase == KH_MIG_ROLLBACK) && m->pending < 0 &&
        !m->stop_batch && !(acts & KH_MIG_A_FORGET))
        m->pending = KH_MIG_EV_DONE;
    return m->pending;
}

static void later_fire(uv_timer_t *t)
{
    kh_migration *m = t->data;
    uint32_t acts = m->later;
    m->later = 0;
    int next = run_step(m, acts);
    if (next >= 0 && !m->finished)
        kh_migrate_feed(m, (kh_mig_event)next);
}

void kh_migrate_feed(kh_migration *m, kh_mig_event ev)
{
    if (ev == KH_MIG_EV_COMPLETED && !m->completed_ms)
        m->completed_ms = kh_now_ms();
    while (!m->finished) {
        m->facts.owner = m->pending_owner;
        kh_mig_step s = kh_migrate_fsm_step(KH_MIG_SOURCE, m->phase, ev, &m->facts);
        kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s phase=%s event=%s next=%s%s", m->name,
               kh_migrate_fsm_phase_name(m->phase), kh_migrate_fsm_event_name(ev),
               kh_migrate_fsm_phase_name(s.next), s.ignored ? " (ignored)" : "");
        if (s.ignored)
            return;
        bool changed = s.next != m->phase;
        m->phase = s.next;
        if (changed && (unsigned)m->phase < KH_MIG_PHASES)
            m->phase_ms[m->phase] = kh_now_ms();
        if (changed)
            record(m); /* before its actions */
        uint32_t acts = s.actions & ~(uint32_t)KH_MIG_A_RETRY_LATER;
        if (s.actions & KH_MIG_A_RETRY_LATER) {
            if (++m->later_tries > LATER_TRIES) {
                kh_err e = KH_ERR_INIT;
                kh_err_set(&e, KH_E_UNAVAILABLE,
                           "vm %s: phase %s did not settle (%s): resolve by hand", m->name,
                           kh_migrate_fsm_phase_name(m->phase), m->err.msg);
                kh_log(KH_LOG_ERROR, "vm.migrate", "%s", e.msg);
                if (m->task)
                    kh_task_fail(m->task, &e);
                m->task = NULL;
                kh_migrate_timer_stop(m);
                finish(m);
                return;
            }
            m->later = acts;
            kh_migrate_timer_start(m, later_fire, LATER_MS, 0);
            return;
        }
        int next = run_step(m, acts);
        if (next < 0)
            return;
        ev = (kh_mig_event)next;
    }
}

/* QEMU's MIGRATION event (the "events" capability): pre-switchover and
 * completed are acted on at once, from the event itself (the guest is
 * paused meanwhile: no poll's delay, no query's round trip first); the
 * query-migrate sent before brings the figures (and any failure). */
static void on_vm_event(void *opaque, const char *vm_id, const char *event, json_t *data)
{
    (void)opaque;
    if (strcmp(event, "STOP") == 0) { /* the guest's pause begins: the switch-over */
        kh_migration *s = mig_find(vm_id);
        if (s && !s->stopped_ms && (s->phase == KH_MIG_MEMORY || s->phase == KH_MIG_SWITCH))
            s->stopped_ms = kh_now_ms();
        return;
    }
    if (strcmp(event, "JOB_STATUS_CHANGE") == 0) { /* a mirror concluded: no poll's wait */
        kh_migration *s = mig_find(vm_id);
        const char *st = json_string_value(json_object_get(data, "status"));
        if (s && s->wait_mirrors && s->phase == KH_MIG_SWITCH && st &&
            strcmp(st, "concluded") == 0)
            (void)kh_migrate_disks_switch_poll(s);
        else if (s && s->phase == KH_MIG_DISKS && st && strcmp(st, "ready") == 0)
            kh_migrate_disks_check(s); /* maybe the last one: no poll's wait */
        return;
    }
    kh_migration *m = strcmp(event, "MIGRATION") == 0 ? mig_find(vm_id) : NULL;
    if (!m && strcmp(event, "MIGRATION") == 0) { /* an incoming one, maybe */
        const char *st = json_string_value(json_object_get(data, "status"));
        if (st && strcmp(st, "completed") == 0)
            kh_migrate_target_loaded(opaque, vm_id);
        return;
    }
    if (!m || m->finished || !m->timer || !uv_is_active((uv_handle_t *)m->timer) ||
        (m->phase != KH_MIG_MEMORY && m->phase != KH_MIG_SWITCH))
        return;
    if (kh_migrate_qmp(m, "query-migrate", NULL, on_query) < 0)
        return;
    const char *st = json_string_value(json_object_get(data, "status"));
    if (st && strcmp(st, "pre-switchover") == 0 && m->phase == KH_MIG_MEMORY) {
        kh_migrate_feed(m, KH_MIG_EV_PRESWITCHOVER);
    } else if (st && strcmp(st, "completed") == 0 && !m->wait_mirrors) {
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_COMPLETED);
    }
}

void kh_migrate_hook(kh_manager *mgr)
{
    static kh_manager *hooked; /* one manager per daemon */
    if (hooked != mgr && kh_manager_add_event_hook(mgr, on_vm_event, mgr) == 0)
        hooked = mgr;
}

/* The task's cancel hook: before the switch, roll back. */
static int on_cancel(void *opaque, kh_err *err)
{
    kh_migration *m = opaque;
    kh_mig_step s = kh_migrate_fsm_step(KH_MIG_SOURCE, m->phase, KH_MIG_EV_CANCEL, &m->facts);
    if (m->finished || s.ignored) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: too late to cancel, the migration is in phase %s",
                   m->name, kh_migrate_fsm_phase_name(m->phase));
        return -1;
    }
    m->err = (kh_err)KH_ERR_INIT;
    kh_err_set(&m->err, KH_E_CONFLICT, "cancelled in phase %s; the vm runs on here",
               kh_migrate_fsm_phase_name(m->phase));
    kh_migrate_timer_stop(m);
    m->wait_mirrors = false;
    kh_migrate_feed(m, KH_MIG_EV_CANCEL);
    return 0;
}

kh_task *kh_migrate_start(kh_manager *mgr, const char *name, const kh_migrate_peer *peer,
                          const kh_migrate_opts *opts, const kh_migrate_ops *ops, kh_err *err)
{
    kh_migrate_hook(mgr);
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    if (v->state != KH_INST_RUNNING || v->task) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s%s: only a running vm migrates", name,
                   kh_lifecycle_state_name(v->state), v->task ? " (busy)" : "");
        return NULL;
    }
    if (mig_find(v->id)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is already migrating", name);
        return NULL;
    }
    size_t slot = KH_ARRAY_LEN(migrations);
    for (size_t i = 0; i < KH_ARRAY_LEN(migrations); i++)
        if (!migrations[i]) {
            slot = i;
            break;
        }
    if (slot == KH_ARRAY_LEN(migrations)) {
        kh_err_set(err, KH_E_UNAVAILABLE, "too many migrations at once");
        return NULL;
    }
    kh_migration *m = xcalloc(1, sizeof(*m));
    m->mgr = v->mgr;
    memcpy(m->id, v->id, sizeof(m->id));
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->peer = *peer;
    m->ops = *ops;
    m->opts = *opts;
    if (!m->opts.downtime_ms)
        m->opts.downtime_ms = KH_QMIG_DOWNTIME_MS;
    /* QEMU < 9.0 under TCG loses guest writes made while a migration runs
     * (qemu/migrate.h): the guest is paused for the RAM copy there */
    m->paused_copy = kh_qmig_lossy_passes(v->mgr->cfg.accel == KH_ACCEL_TCG,
                                          v->mgr->cfg.caps.version);
    if (m->paused_copy)
        kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s paused for the RAM copy: QEMU %u under TCG "
               "loses writes made during it (qemu/migrate.h)", name, v->mgr->cfg.caps.version);
    if (!m->opts.max_downtime_ms)
        m->opts.max_downtime_ms = DEFAULT_MAX_DOWNTIME_MS;
    if (m->opts.max_downtime_ms < m->opts.downtime_ms)
        m->opts.max_downtime_ms = m->opts.downtime_ms;
    m->plan.downtime_ms = m->opts.downtime_ms;
    if (kh_migrate_disks_collect(m, v, err) < 0) {
        free(m);
        return NULL;
    }
    if (ops->qemu_tls) {
        kh_err e = KH_ERR_INIT;
        char *dir = ops->qemu_tls(ops->opaque, v->mgr->cfg.gid, &e);
        if (!dir && e.code != KH_OK) {
            *err = e;
            free(m);
            return NULL;
        }
        snprintf(m->tls_dir, sizeof(m->tls_dir), "%s", dir ? dir : "");
        free(dir);
    }
    kh_uuid_generate(m->token);
    m->err = (kh_err)KH_ERR_INIT;
    m->pending = -1;
    m->pending_owner = KH_MIG_OWNER_SOURCE;
    m->t0_ms = kh_now_ms();
    m->task = kh_task_new(v->mgr->tasks, "vm.migrate", name);
    kh_task_set_cancel(m->task, on_cancel, m);
    migrations[slot] = m;
    kh_task *t = m->task;
    kh_migrate_feed(m, KH_MIG_EV_START);
    return t;
}

/* ---- restart resolution (source) ---- */

#define RESTART_TRIES 60

static void restart_try(uv_timer_t *t)
{
    kh_migration *m = t->data;
    kh_inst *v = kh_migrate_vm(m);
    kh_err err = KH_ERR_INIT;
    if (++m->forget_tries > RESTART_TRIES) {
        kh_log(KH_LOG_ERROR, "vm.migrate", "vm=%s phase=%s restart unresolved: %s", m->name,
               kh_migrate_fsm_phase_name(m->phase), m->err.msg);
        kh_migrate_timer_stop(m);
        finish(m);
        return;
    }
    bool alive = v && v->pid > 0;
    if (alive && (!v->drv->monitor_ready(v) || v->state == KH_INST_STARTING))
        return; /* not reattached yet */
    json_t *rec = NULL;
    if (m->ops.peer_find(m->ops.opaque, m->peer.host_id, &m->peer, &err) < 0 ||
        !(rec = m->ops.record_get(m->ops.opaque, m->id, &err))) {
        m->err = err;
        return; /* the cluster is not there yet */
    }
    snprintf(m->token, sizeof(m->token), "%s",
             json_string_value(json_object_get(rec, "token")) ?
                 json_string_value(json_object_get(rec, "token")) : "");
    json_decref(rec);
    if (m->phase == KH_MIG_SWITCH) {
        char owner[64];
        if (m->ops.owner_get(m->ops.opaque, m->id, owner, sizeof(owner), &err) < 0) {
            m->err = err;
            return;
        }
        m->pending_owner = strcmp(owner, m->peer.host_id) == 0  ? KH_MIG_OWNER_TARGET
                           : strcmp(owner, m->peer.self_id) == 0 ? KH_MIG_OWNER_SOURCE
                           : !owner[0]                           ? KH_MIG_OWNER_SOURCE
                                                                 : KH_MIG_OWNER_OTHER;
    }
    m->facts.qemu_alive = alive;
    m->ndisks = 0;
    if (v && kh_migrate_disks_collect(m, v, &err) < 0) /* the spec is still here */
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s restart: disks: %s", m->name, err.msg);
    m->err = (kh_err)KH_ERR_INIT;
    kh_err_set(&m->err, KH_E_UNAVAILABLE, "the daemon restarted during the migration");
    kh_migrate_timer_stop(m);
    kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s phase=%s restart: resolving (qemu %s)", m->name,
           kh_migrate_fsm_phase_name(m->phase), alive ? "alive" : "gone");
    kh_migrate_feed(m, KH_MIG_EV_RESTART);
}

void kh_migrate_restart(kh_manager *mgr, const kh_migrate_ops *ops)
{
    kh_err err = KH_ERR_INIT;
    sqlite3_stmt *s = kh_store_prep(mgr->store,
                                    "SELECT vm_id, vm_name, phase, peer FROM migrations WHERE "
                                    "role = 'source' AND phase NOT IN ('done', 'aborted', "
                                    "'none')",
                                    &err);
    if (!s) {
        kh_log(KH_LOG_WARN, "vm.migrate", "restart: %s", err.msg);
        return;
    }
    kh_migrate_hook(mgr);
    while (sqlite3_step(s) == SQLITE_ROW) {
        char *id = kh_store_col_text(s, 0), *name = kh_store_col_text(s, 1);
        char *phase = kh_store_col_text(s, 2), *peer = kh_store_col_text(s, 3);
        int ph = phase ? kh_migrate_fsm_phase_parse(phase) : -1;
        size_t slot = KH_ARRAY_LEN(migrations);
        for (size_t i = 0; i < KH_ARRAY_LEN(migrations); i++)
            if (!migrations[i]) {
                slot = i;
                break;
            }
        if (id && name && peer && ph > 0 && slot < KH_ARRAY_LEN(migrations) &&
            strlen(id) == 36) {
            kh_migration *m = xcalloc(1, sizeof(*m));
            m->mgr = mgr;
            memcpy(m->id, id, sizeof(m->id));
            snprintf(m->name, sizeof(m->name), "%s", name);
            snprintf(m->peer.host_id, sizeof(m->peer.host_id), "%s", peer);
            snprintf(m->peer.name, sizeof(m->peer.name), "%s", peer);
            m->ops = *ops;
            m->phase = (kh_mig_phase)ph;
            m->err = (kh_err)KH_ERR_INIT;
            m->pending = -1;
            m->pending_owner = KH_MIG_OWNER_SOURCE;
            m->t0_ms = kh_now_ms();
            migrations[slot] = m;
            kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s phase=%s restart: pending", name, phase);
            kh_migrate_timer_start(m, restart_try, 500, 1000);
        }
        free(id);
        free(name);
        free(phase);
        free(peer);
    }
    sqlite3_finalize(s);
    kh_migrate_target_restart(mgr, ops);
}

void kh_migrate_shutdown(kh_manager *mgr)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(migrations); i++) {
        kh_migration *m = migrations[i];
        if (!m || m->mgr != mgr)
            continue;
        m->task = NULL; /* the tasks end with the daemon */
        m->finished = true; /* QMP replies due come (with an error) as it closes */
        if (m->timer) {
            uv_timer_stop(m->timer);
            m->timer_closing = true;
            uv_close((uv_handle_t *)m->timer, timer_closed);
            m->timer = NULL;
        } else {
            mig_release(m);
        }
    }
    kh_migrate_disks_shutdown(mgr);
    kh_migrate_target_shutdown(mgr);
}
