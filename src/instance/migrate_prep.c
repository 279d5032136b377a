/* migrate_prep.c - owns the prepare phase of a live migration on the
 * source: the dirty-rate forecast (qemu/migrate.c kh_qmig_decide) and the
 * target's start, at once. Both wait on different things (QEMU's
 * calc-dirty-rate takes whole seconds; the target makes its disks and
 * starts its QEMU), so they run side by side: one timer (prep_tick) asks
 * the target how far it got and QEMU for the measurement once it is due;
 * PREPARED is fed once both are in (a forecast that refuses rolls back at
 * once, which aborts the target's prepare). A guest paused for the copy
 * is not measured: its forecast is made at the first tick. */
#include <stdio.h>
#include <string.h>

#include "instance/migrate_int.h"
#include "qemu/argv.h"
#include "util/log.h"
#include "util/misc.h"

#define PREPARE_TIMEOUT_MS 60000
#define DIRTY_CALC_S 1
#define DIRTY_POLLS 50
#define DIRTY_REPOLL_MS 20 /* the measurement due but not in yet: ask again */
#define PREP_TICK_MS 20

static void on_dirty(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque);

/* Both halves in: on to the disks or the memory. */
static void prep_check(kh_migration *m)
{
    if (m->phase != KH_MIG_PREPARE || m->finished || !m->target_ready || !m->dirty_done)
        return;
    kh_migrate_timer_stop(m);
    kh_migrate_feed(m, KH_MIG_EV_PREPARED);
}

static void decide(kh_migration *m, int64_t rate)
{
    kh_inst *v = kh_migrate_vm(m);
    kh_qmig_forecast_in in = {
        .dirty_mbps = rate,
        .bandwidth = m->opts.max_bandwidth,
        .ram_bytes = v ? (uint64_t)v->spec->memory_mib << 20 : 0,
        .downtime_ms = m->opts.downtime_ms,
        .downtime_cap_ms = m->opts.max_downtime_ms,
        .force = m->opts.force,
        .paused = m->paused_copy,
    };
    kh_qmig_decide(&in, &m->plan);
    m->dirty_ms = kh_now_ms();
    kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s forecast=%d downtime_ms=%u auto_converge=%d why=\"%s\"",
           m->name, (int)m->plan.verdict, m->plan.downtime_ms, m->plan.auto_converge,
           m->plan.why);
    if (m->plan.verdict == KH_QMIG_REFUSE) {
        kh_err_set(&m->err, KH_E_CONFLICT, "%s", m->plan.why);
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_DIRTY_HIGH);
        return;
    }
    if (m->task)
        kh_task_progress(m->task, 4, m->plan.why);
    m->dirty_done = true;
    prep_check(m);
}

static void on_dirty(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_migration *m = opaque;
    m->dirty_asking = false;
    if (m->phase != KH_MIG_PREPARE || m->finished || m->dirty_done)
        return;
    int64_t rate = err ? -1 : kh_qmig_dirty_rate_parse(ret);
    if (rate < 0 && !err && ++m->dirty_polls < DIRTY_POLLS) {
        m->dirty_due_ms = kh_now_ms() + DIRTY_REPOLL_MS; /* prep_tick asks again */
        return;
    }
    decide(m, rate); /* an error or no answer: not measured, go */
}

static void on_calc_dirty(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_migration *m = opaque;
    if (m->phase != KH_MIG_PREPARE || m->finished)
        return;
    if (err) { /* e.g. a QEMU without it: go without a forecast */
        decide(m, -1);
        return;
    }
    m->dirty_due_ms = kh_now_ms() + DIRTY_CALC_S * 1000;
}

void kh_migrate_dirty_rate(kh_migration *m)
{
    if (m->paused_copy) /* nothing to measure: prep_tick's first tick decides */
        return;
    if (m->task)
        kh_task_progress(m->task, 2, "measuring the guest's dirty rate");
    m->dirty_polls = 0;
    m->dirty_done = false;
    m->dirty_asking = false;
    m->dirty_due_ms = 0;
    (void)kh_migrate_qmp(m, "calc-dirty-rate", kh_qmig_calc_dirty_rate(DIRTY_CALC_S), on_calc_dirty);
}

/* The target's half: false when the tick must end (failed, fed). */
static bool prep_target(kh_migration *m)
{
    json_t *st = NULL;
    kh_err err = KH_ERR_INIT;
    if (kh_migrate_peer_call(m, "status", NULL, &st, &err) < 0) {
        kh_migrate_timer_stop(m);
        m->err = err;
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
        return false;
    }
    const char *state = json_string_value(json_object_get(st, "state"));
    const char *reason = json_string_value(json_object_get(st, "reason"));
    bool ready = state && reason && strcmp(state, "starting") == 0 &&
                 strcmp(reason, "incoming") == 0;
    bool dead = state && strcmp(state, "stopped") == 0;
    if (ready) {
        m->target_ready = true;
        m->ready_ms = kh_now_ms();
    } else if (dead || kh_now_ms() > m->poll_deadline_ms) {
        kh_migrate_timer_stop(m);
        kh_err_set(&m->err, KH_E_UNAVAILABLE, "%s: the target's QEMU %s (%s)", m->peer.name,
                   dead ? "stopped" : "did not get ready", reason ? reason : "");
        json_decref(st);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
        return false;
    }
    json_decref(st);
    return true;
}

static void prep_tick(uv_timer_t *t)
{
    kh_migration *m = t->data;
    if (m->paused_copy && !m->dirty_done) {
        /* here, not in the action: a refusal feeds the machine, which the
         * running batch (the target's prepare after it) must not see */
        decide(m, -1);
        if (m->phase != KH_MIG_PREPARE || m->finished || !m->dirty_done)
            return;
    }
    if (!m->target_ready && kh_now_ms() >= m->target_next_ms) {
        m->target_next_ms = kh_now_ms() + PREP_TICK_MS;
        if (!prep_target(m))
            return;
    }
    if (!m->dirty_done && !m->dirty_asking && m->dirty_due_ms && kh_now_ms() >= m->dirty_due_ms) {
        m->dirty_asking = true;
        if (kh_migrate_qmp(m, "query-dirty-rate", NULL, on_dirty) < 0) {
            kh_migrate_timer_stop(m);
            kh_migrate_feed(m, KH_MIG_EV_FAILED);
            return;
        }
    }
    prep_check(m);
}

void kh_migrate_prepare(kh_migration *m)
{
    kh_inst *v = kh_migrate_vm(m);
    if (!v) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_NOTFOUND, "vm %s went away", m->name);
        kh_migrate_fail(m, &e);
        return;
    }
    json_t *body = json_pack("{s:o, s:s, s:s}", "spec", kh_vm_spec_to_json(v->spec), "address",
                             m->peer.address, "source", m->peer.self_id);
    if (m->ndisks) {
        json_t *disks = json_array();
        for (unsigned i = 0; i < m->ndisks; i++)
            json_array_append_new(disks, json_pack("{s:i, s:s, s:s, s:I}", "index",
                                                   (int)m->disks[i].index, "volume",
                                                   m->disks[i].ref, "format", m->disks[i].format,
                                                   "size", (json_int_t)m->disks[i].size));
        json_object_set_new(body, "disks", disks);
    }
    if (m->tls_dir[0])
        json_object_set_new(body, "tls", json_true());
    /* the guest keeps its CPU: the incoming QEMU gets the same -cpu */
    json_object_set_new(body, "cpu", json_string(v->boot_cpu[0] ? v->boot_cpu
                                                 : kh_qemu_cpu_unrecorded(m->mgr->cfg.accel)));
    json_t *out = NULL;
    kh_err err = KH_ERR_INIT;
    int rc = kh_migrate_peer_call(m, "prepare", body, &out, &err);
    json_decref(body);
    if (rc < 0) {
        kh_migrate_fail(m, &err);
        return;
    }
    m->port = (unsigned)json_integer_value(json_object_get(out, "port"));
    m->nbd_port = (unsigned)json_integer_value(json_object_get(out, "nbd_port"));
    json_decref(out);
    if (m->task)
        kh_task_progress(m->task, 5, m->ndisks ? "target: making the disks, QEMU starting"
                                                : "target QEMU starting");
    m->poll_deadline_ms = kh_now_ms() + PREPARE_TIMEOUT_MS;
    m->target_ready = false;
    m->target_next_ms = kh_now_ms() + PREP_TICK_MS;
    kh_migrate_timer_start(m, prep_tick, PREP_TICK_MS, PREP_TICK_MS);
}
