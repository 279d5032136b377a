/* migrate_disks.c - owns the local disks of a live migration on the
 * source: which disks are copied (those not on a shared pool), the NBD
 * nodes on the target's exports and one blockdev-mirror job per disk until
 * every one is ready, their consistent end at the switch (block-job-cancel
 * of a ready mirror while the guest is paused before the switch-over, then
 * migrate-continue once all concluded), their forced end and cleanup on
 * the way back, and the deletion of this host's copies once the VM runs on
 * the target. Also the migration_disks rows (both sides). */
#include "instance/migrate_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "instance/instance_int.h"
#include "qemu/migrate.h"
#include "store/store.h"
#include "util/log.h"
#include "util/mem.h"

void kh_migrate_disks_save(kh_manager *mgr, const char *vm_id, const json_t *refs)
{
    kh_err err = KH_ERR_INIT;
    char *text = refs && json_array_size(refs) ? json_dumps(refs, JSON_COMPACT) : NULL;
    sqlite3_stmt *s = kh_store_prep(
        mgr->store,
        text ? "INSERT INTO migration_disks (vm_id, disks) VALUES (?1, ?2) "
               "ON CONFLICT (vm_id) DO UPDATE SET disks = ?2"
             : "DELETE FROM migration_disks WHERE vm_id = ?1",
        &err);
    if (s) {
        kh_store_bind_text(s, 1, vm_id);
        if (text)
            kh_store_bind_text(s, 2, text);
    }
    if (!s || kh_store_step_done(mgr->store, s, "saving a migration's disks", &err) < 0)
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s store error=\"%s\"", vm_id, err.msg);
    free(text);
}

json_t *kh_migrate_disks_load(kh_manager *mgr, const char *vm_id)
{
    json_t *out = NULL;
    sqlite3_stmt *s = kh_store_prep(mgr->store,
                                    "SELECT disks FROM migration_disks WHERE vm_id = ?", NULL);
    if (s) {
        kh_store_bind_text(s, 1, vm_id);
        if (sqlite3_step(s) == SQLITE_ROW) {
            char *text = kh_store_col_text(s, 0);
            out = text ? json_loads(text, 0, NULL) : NULL;
            free(text);
        }
        sqlite3_finalize(s);
    }
    if (!json_is_array(out)) {
        json_decref(out);
        out = json_array();
    }
    return out;
}


static void disk_nodes(const kh_migration *m, unsigned i, char *dev, char *node, size_t size)
{
    snprintf(dev, size, "disk%d", m->disks[i].node);
    snprintf(node, size, "disk%u", m->disks[i].index);
}

/* Switch: the cancelled mirrors (ready, so a cancel completes them with
 * the target's copy equal to the source's; the guest is paused) must all
 * have concluded before the RAM's last pass and the switch-over. */
static void on_jobs_switch(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_migration *m = opaque;
    if (!m->wait_mirrors || m->phase != KH_MIG_SWITCH)
        return;
    size_t i;
    const json_t *j;
    unsigned left = 0;
    json_array_foreach(err ? NULL : ret, i, j) {
        const char *dev = json_string_value(json_object_get(j, "device"));
        const char *status = json_string_value(json_object_get(j, "status"));
        const char *e = json_string_value(json_object_get(j, "error"));
        if (!dev || strncmp(dev, "mig-", 4) != 0)
            continue;
        if (e) {
            m->wait_mirrors = false;
            kh_err_set(&m->err, KH_E_QEMU, "mirror %s: %s", dev, e);
            kh_migrate_timer_stop(m);
            kh_migrate_feed(m, KH_MIG_EV_FAILED);
            return;
        }
        if (!status || strcmp(status, "concluded") != 0)
            left++;
    }
    if (err || left)
        return; /* the next poll asks again */
    m->wait_mirrors = false;
    for (unsigned d = 0; d < m->ndisks; d++) {
        char dev[32], node[32], job[64];
        disk_nodes(m, d, dev, node, sizeof(dev));
        kh_qmig_node_name(node, job, sizeof(job));
        (void)kh_migrate_qmp(m, "job-dismiss", json_pack("{s:s}", "id", job), NULL);
    }
    m->continued = true;
    (void)kh_migrate_qmp(m, "migrate-continue", json_pack("{s:s}", "state", "pre-switchover"), NULL);
}

/* Disks phase: until every mirror is ready (or one failed). */
static void on_jobs(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_migration *m = opaque;
    if (m->phase != KH_MIG_DISKS)
        return;
    if (err) {
        m->err = *err;
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
        return;
    }
    kh_qmig_mirrors_parse(ret, &m->mirrors);
    const kh_qmig_mirrors *x = &m->mirrors;
    if (x->failed || x->jobs < m->ndisks) {
        if (x->failed)
            kh_err_set(&m->err, KH_E_QEMU, "disk copy failed: %s", x->error);
        else
            kh_err_set(&m->err, KH_E_QEMU, "a disk copy job went away");
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
        return;
    }
    if (m->task && x->total) {
        char msg[128];
        snprintf(msg, sizeof(msg), "disks: %llu of %llu MiB", (unsigned long long)(x->done >> 20),
                 (unsigned long long)(x->total >> 20));
        kh_task_progress(m->task, (int)(5 + 45 * (x->done > x->total ? 1.0 :
                                                  (double)x->done / (double)x->total)), msg);
    }
    if (x->ready == m->ndisks) {
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_DISKS_READY);
    }
}

void kh_migrate_disks_check(kh_migration *m)
{
    if (m->phase == KH_MIG_DISKS && kh_migrate_qmp(m, "query-block-jobs", NULL, on_jobs) < 0) {
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
    }
}

static void poll_mirrors(uv_timer_t *t)
{
    kh_migration *m = t->data;
    if (kh_migrate_qmp(m, "query-block-jobs", NULL, on_jobs) < 0) {
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
    }
}

static void on_mirror(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    kh_migration *m = opaque;
    if (err && m->phase == KH_MIG_DISKS) {
        m->err = *err;
        kh_err_prefix(&m->err, "disk copy");
        kh_migrate_timer_stop(m);
        kh_migrate_feed(m, KH_MIG_EV_FAILED);
    }
}

void kh_migrate_disks_nbd_add(kh_migration *m)
{
    kh_migrate_tls_setup(m);
    for (unsigned i = 0; i < m->ndisks; i++) {
        char dev[32], node[32];
        disk_nodes(m, i, dev, node, sizeof(dev));
        json_t *a = kh_qmig_nbd_node(node, m->peer.address, m->nbd_port,
                                     m->tls_dir[0] ? KH_QMIG_TLS_ID : NULL);
        if (kh_migrate_qmp(m, "blockdev-add", a, on_mirror) < 0)
            return;
    }
}

void kh_migrate_disks_mirror(kh_migration *m)
{
    for (unsigned i = 0; i < m->ndisks; i++) {
        char dev[32], node[32];
        disk_nodes(m, i, dev, node, sizeof(dev));
        json_t *a = kh_qmig_mirror(dev, node);
        if (m->opts.max_bandwidth)
            json_object_set_new(a, "speed", json_integer((json_int_t)m->opts.max_bandwidth));
        if (kh_migrate_qmp(m, "blockdev-mirror", a, on_mirror) < 0)
            return;
    }
    if (m->task)
        kh_task_progress(m->task, 5, "disks: copying");
    kh_migrate_timer_start(m, poll_mirrors, POLL_MS, POLL_MS);
}

/* The way back: the mirrors stop (force: no completion), their jobs are
 * dismissed and the NBD nodes deleted, on a timer of its own (the
 * migration may end first): a cancelled job takes a moment to conclude. */
typedef struct mirror_cleanup {
    kh_manager *mgr;
    char id[37];
    unsigned n, tries;
    unsigned pending;  /* query-block-jobs replies due (the timer lives until 0) */
    bool dead;         /* done, or the daemon stops: close once nothing is due */
    char nodes[KH_VM_DISKS_MAX][32];
} mirror_cleanup;

static uv_timer_t *cleanups[64];

static void cleanup_closed(uv_handle_t *h)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(cleanups); i++)
        if (cleanups[i] == (uv_timer_t *)h)
            cleanups[i] = NULL;
    free(h->data);
    free(h);
}

void kh_migrate_disks_shutdown(kh_manager *mgr)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(cleanups); i++) {
        uv_timer_t *t = cleanups[i];
        if (t && t->loop == mgr->loop && !uv_is_closing((uv_handle_t *)t)) {
            mirror_cleanup *c = t->data;
            uv_timer_stop(t);
            c->dead = true; /* a reply due (QMP closing) closes it */
            if (!c->pending)
                uv_close((uv_handle_t *)t, cleanup_closed);
        }
    }
}

static void cleanup_jobs(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    uv_timer_t *t = opaque;
    mirror_cleanup *c = t->data;
    c->pending--;
    if (c->dead) {
        if (!c->pending && !uv_is_closing((uv_handle_t *)t))
            uv_close((uv_handle_t *)t, cleanup_closed);
        return;
    }
    kh_inst *v = kh_manager_find_id(c->mgr, c->id);
    unsigned left = 0;
    size_t i;
    const json_t *j;
    json_array_foreach(err ? NULL : ret, i, j) {
        const char *dev = json_string_value(json_object_get(j, "device"));
        const char *status = json_string_value(json_object_get(j, "status"));
        if (!dev || strncmp(dev, "mig-", 4) != 0)
            continue;
        left++;
        if (v && v->pid > 0 && status && strcmp(status, "concluded") == 0)
            (void)v->drv->command(v, "job-dismiss", json_pack("{s:s}", "id", dev), -1, NULL,
                                  NULL, NULL);
    }
    if ((left && !err && c->tries < 100) || !v || v->pid <= 0) {
        if (!v || v->pid <= 0)
            c->tries = 1000;
        return;
    }
    for (unsigned n = 0; n < c->n; n++) {
        char name[64];
        kh_qmig_node_name(c->nodes[n], name, sizeof(name));
        (void)v->drv->command(v, "blockdev-del", json_pack("{s:s}", "node-name", name), -1, NULL,
                              NULL, NULL);
    }
    c->tries = 1000;
}

static void cleanup_tick(uv_timer_t *t)
{
    mirror_cleanup *c = t->data;
    kh_inst *v = kh_manager_find_id(c->mgr, c->id);
    if (c->pending)
        return; /* the last answer first */
    if (++c->tries > 100 || !v || v->pid <= 0 ||
        v->drv->command(v, "query-block-jobs", NULL, -1, cleanup_jobs, t, NULL) < 0) {
        uv_timer_stop(t);
        c->dead = true;
        uv_close((uv_handle_t *)t, cleanup_closed);
        return;
    }
    c->pending++;
}

void kh_migrate_disks_stop(kh_migration *m)
{
    if (!m->ndisks)
        return;
    if (m->phase == KH_MIG_SWITCH) { /* the way forward: complete them */
        for (unsigned i = 0; i < m->ndisks; i++) {
            char dev[32], node[32], job[64];
            disk_nodes(m, i, dev, node, sizeof(dev));
            kh_qmig_node_name(node, job, sizeof(job));
            (void)kh_migrate_qmp(m, "block-job-cancel", json_pack("{s:s}", "device", job), NULL);
        }
        m->wait_mirrors = true;
        return;
    }
    kh_inst *v = kh_migrate_vm(m);
    if (!v || v->pid <= 0)
        return;
    mirror_cleanup *c = xcalloc(1, sizeof(*c));
    c->mgr = m->mgr;
    memcpy(c->id, m->id, sizeof(c->id));
    for (unsigned i = 0; i < m->ndisks; i++) {
        char dev[32], job[64];
        disk_nodes(m, i, dev, c->nodes[c->n], sizeof(dev));
        kh_qmig_node_name(c->nodes[c->n], job, sizeof(job));
        c->n++;
        (void)v->drv->command(v, "block-job-cancel", json_pack("{s:s, s:b}", "device", job,
                                                               "force", 1),
                              -1, NULL, NULL, NULL);
    }
    uv_timer_t *t = xcalloc(1, sizeof(*t));
    uv_timer_init(m->mgr->loop, t);
    t->data = c;
    for (size_t i = 0; i < KH_ARRAY_LEN(cleanups); i++)
        if (!cleanups[i]) {
            cleanups[i] = t;
            break;
        }
    uv_timer_start(t, cleanup_tick, 50, 100);
}

/* After the switch, with the definition gone: this host's copies. */
void kh_migrate_disks_drop(kh_migration *m)
{
    for (unsigned i = 0; i < m->ndisks; i++) {
        char *pool = NULL, *name = NULL;
        kh_err err = KH_ERR_INIT;
        if (kh_volume_ref_parse(m->disks[i].ref, &pool, &name, &err) < 0 ||
            kh_storage_volume_delete(m->mgr->cfg.storage, pool, name, &err) < 0)
            kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s disk=%s delete error=\"%s\"", m->name,
                   m->disks[i].ref, err.msg);
        else
            kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s disk=%s deleted (now on %s)", m->name,
                   m->disks[i].ref, m->peer.name);
        free(pool);
        free(name);
    }
    kh_migrate_disks_save(m->mgr, m->id, NULL);
}

/* The disks that are not on a shared pool: copied to the target (a disk
 * given by path must be at the same path there, as on a shared pool). */
int kh_migrate_disks_collect(kh_migration *m, const kh_inst *v, kh_err *err)
{
    json_t *refs = json_array();
    for (size_t i = 0; i < v->spec->ndisks; i++) {
        const kh_disk_spec *d = &v->spec->disks[i];
        kh_volume_placement pl;
        if (!d->volume || !v->mgr->cfg.storage)
            continue;
        if (kh_storage_volume_placement(v->mgr->cfg.storage, d->volume, &pl, err) < 0) {
            json_decref(refs);
            return -1;
        }
        if (pl.shared)
            continue;
        if (pl.encrypted || pl.readonly || d->readonly) {
            kh_err_set(err, KH_E_CONFLICT, "disk %zu (%s) is %s on a local pool: it cannot be "
                       "copied; put it on a shared pool", i, d->volume,
                       pl.encrypted ? "encrypted" : "read-only");
            json_decref(refs);
            return -1;
        }
        unsigned n = m->ndisks++;
        m->disks[n].index = (unsigned)i;
        m->disks[n].node = v->disk_node[i] >= 0 ? v->disk_node[i] : (int)i;
        snprintf(m->disks[n].ref, sizeof(m->disks[n].ref), "%s", d->volume);
        snprintf(m->disks[n].format, sizeof(m->disks[n].format), "%s", pl.format);
        m->disks[n].size = pl.capacity;
        json_array_append_new(refs, json_string(d->volume));
    }
    m->facts.local_disks = m->ndisks > 0;
    if (m->ndisks)
        kh_migrate_disks_save(m->mgr, m->id, refs);
    json_decref(refs);
    return 0;
}

int kh_migrate_disks_switch_poll(kh_migration *m)
{
    return kh_migrate_qmp(m, "query-block-jobs", NULL, on_jobs_switch);
}
