/* migrate_target.c - owns the target's side of a live migration: the work
 * behind the host-to-host routes /api/v1/migrations/{vm-id}/... that the
 * source (instance/migrate.c) calls. prepare makes the empty copies of the
 * source's local disks in the pools of the same names (qemu-img, in the
 * background), then defines the VM with the same id and starts its QEMU
 * `-incoming defer` with the disks exported over NBD (qemu/driver.c);
 * status tells the source how far it got; commit runs the guest here; abort
 * kills the incoming QEMU, forgets the VM and deletes the disk copies it
 * made (listed in migration_disks, so a restart can finish the job). */
#include "instance/migrate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sqlite3.h>

#include "instance/config.h"
#include "instance/instance_int.h"
#include "instance/migrate_int.h"
#include "qemu/argv.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "store/store.h"

#define FORGET_TRIES 100

/* An incoming migration whose disks are being made. */
typedef struct tprep {
    kh_manager *mgr;
    char id[37];
    json_t *spec;
    char *address;
    char *source;
    char *tls_dir;     /* QEMU's TLS files, NULL: plain */
    char cpu[128];     /* the source's -cpu */
    kh_migrate_ops ops;
    unsigned port, nbd_port;
    uint64_t nbd_disks;
    size_t pending;    /* volume creates under way */
    json_t *made;      /* ["pool/name", ...] made so far */
    kh_err err;
    bool failed, aborted, started;
    bool issuing;      /* disks_make is still starting creates */
} tprep;

static tprep *preps[64];

/* The target's timers (abort jobs, watches), closed at shutdown. */
static uv_timer_t *timers[128];

static void timer_track(uv_timer_t *t)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(timers); i++)
        if (!timers[i]) {
            timers[i] = t;
            return;
        }
}

static void timer_untrack(const uv_timer_t *t)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(timers); i++)
        if (timers[i] == t)
            timers[i] = NULL;
}

static tprep *prep_find(const char *id)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(preps); i++)
        if (preps[i] && strcmp(preps[i]->id, id) == 0)
            return preps[i];
    return NULL;
}

static void prep_free(tprep *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < KH_ARRAY_LEN(preps); i++)
        if (preps[i] == p)
            preps[i] = NULL;
    json_decref(p->spec);
    json_decref(p->made);
    free(p->address);
    free(p->source);
    free(p->tls_dir);
    free(p);
}

static unsigned free_port(const char *address)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    if (inet_pton(AF_INET, address, &a.sin_addr) != 1)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    socklen_t len = sizeof(a);
    unsigned port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Delete the disk copies listed (refs), then the row. */
static void disks_delete(kh_manager *mgr, const char *vm_id, const json_t *refs)
{
    size_t i;
    const json_t *r;
    json_array_foreach(refs, i, r) {
        char *pool = NULL, *name = NULL;
        kh_err err = KH_ERR_INIT;
        if (kh_volume_ref_parse(json_string_value(r), &pool, &name, &err) < 0 ||
            kh_storage_volume_delete(mgr->cfg.storage, pool, name, &err) < 0)
            kh_log(err.code == KH_E_NOTFOUND ? KH_LOG_DEBUG : KH_LOG_WARN, "vm.migrate",
                   "vm=%s disk=%s delete error=\"%s\"", vm_id, json_string_value(r), err.msg);
        else
            kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s disk=%s deleted (copy of a migration)",
                   vm_id, json_string_value(r));
        free(pool);
        free(name);
    }
    kh_migrate_disks_save(mgr, vm_id, NULL);
}

static void watch_start(kh_manager *mgr, const kh_migrate_ops *ops, const char *vm_id,
                        const char *source, bool restarted);
static void abort_vm(kh_manager *mgr, const char *vm_id, kh_inst *v);

/* Every disk is made: define the VM, start it -incoming with the exports. */
static void prep_start(tprep *p)
{
    kh_err err = KH_ERR_INIT;
    json_t *vm = kh_config_create_id(p->mgr, p->spec, p->id, &err);
    kh_inst *v = vm ? kh_manager_find_id(p->mgr, p->id) : NULL;
    json_decref(vm);
    if (v) {
        v->incoming_nbd_port = p->nbd_port;
        v->incoming_nbd_disks = p->nbd_disks;
        free(v->incoming_tls_dir);
        v->incoming_tls_dir = p->tls_dir ? xstrdup(p->tls_dir) : NULL;
        snprintf(v->incoming_cpu, sizeof(v->incoming_cpu), "%s", p->cpu);
    }
    if (!v || kh_lifecycle_start_incoming(v, p->address, p->port, &err) < 0) {
        if (v) {
            (void)kh_config_delete(p->mgr, v->spec->name, NULL);
            v = NULL;
        }
        p->failed = true;
        p->err = err;
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s incoming error=\"%s\"", p->id, err.msg);
        disks_delete(p->mgr, p->id, p->made);
        return;
    }
    p->started = true;
    watch_start(p->mgr, &p->ops, p->id, p->source, false);
    kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s incoming=%s:%u nbd=%u", v->spec->name,
           p->address, p->port, p->nbd_port);
    prep_free(p);
}

static void prep_settle(tprep *p);

static void on_disk_made(json_t *result, const kh_err *err, void *opaque)
{
    tprep *p = opaque;
    p->pending--;
    if (err) {
        if (!p->failed)
            p->err = *err;
        p->failed = true;
    } else {
        const char *pool = json_string_value(json_object_get(result, "pool"));
        const char *name = json_string_value(json_object_get(result, "name"));
        if (pool && name) {
            json_array_append_new(p->made, json_sprintf("%s/%s", pool, name));
            kh_migrate_disks_save(p->mgr, p->id, p->made);
        }
    }
    json_decref(result);
    if (!p->pending && !p->issuing)
        prep_settle(p);
}

/* No create is under way any more: start, or undo. */
static void prep_settle(tprep *p)
{
    if (p->failed || p->aborted) {
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s disks error=\"%s\"", p->id,
               p->aborted ? "aborted" : p->err.msg);
        disks_delete(p->mgr, p->id, p->made);
        if (p->aborted)
            prep_free(p);
        return;
    }
    prep_start(p);
}

/* Make the empty copies (sizes and formats from the source), in the
 * background; -1 with err if one cannot even begin (no such pool here, a
 * volume of that name already exists). */
static int disks_make(tprep *p, const json_t *disks, kh_err *err)
{
    size_t i;
    const json_t *d;
    json_array_foreach(disks, i, d) {
        const char *ref = json_string_value(json_object_get(d, "volume"));
        json_int_t index = json_integer_value(json_object_get(d, "index"));
        char *pool = NULL, *name = NULL;
        if (kh_volume_ref_parse(ref, &pool, &name, err) < 0)
            return -1;
        json_t *body = json_pack("{s:s, s:O, s:O}", "name", name, "format",
                                 json_object_get(d, "format"), "size",
                                 json_object_get(d, "size"));
        p->pending++;
        int rc = body && index >= 0 && index < 64
                     ? kh_storage_volume_create(p->mgr->cfg.storage, pool, body, on_disk_made, p,
                                                err)
                     : -1;
        if (!body || index < 0 || index >= 64)
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: needs index, volume, format, size", i);
        json_decref(body);
        free(pool);
        free(name);
        if (rc < 0) {
            p->pending--;
            kh_err_prefix(err, "disk %s", ref ? ref : "?");
            return -1;
        }
        p->nbd_disks |= 1ull << index;
    }
    return 0;
}

json_t *kh_migrate_target_prepare(kh_manager *mgr, const char *vm_id, const json_t *body,
                                  const kh_migrate_ops *ops, kh_err *err)
{
    const char *address = json_string_value(json_object_get(body, "address"));
    json_t *spec = json_object_get(body, "spec");
    const json_t *disks = json_object_get(body, "disks");
    if (!address || !json_is_object(spec)) {
        kh_err_set(err, KH_E_INVALID, "prepare needs spec and address");
        return NULL;
    }
    /* no cpu: a source from before it was sent, whose QEMU got what
     * kvmhost gave then */
    const char *cpu = json_string_value(json_object_get(body, "cpu"));
    if (!cpu)
        cpu = kh_qemu_cpu_unrecorded(mgr->cfg.accel);
    if (!kh_vm_cpu_model_valid(cpu)) {
        kh_err_set(err, KH_E_INVALID, "prepare: cpu is not a model and feature list");
        return NULL;
    }
    if (kh_manager_find_id(mgr, vm_id)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is already on this host", vm_id);
        return NULL;
    }
    tprep *old = prep_find(vm_id);
    if (old && old->pending) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: a migration to this host is being prepared",
                   vm_id);
        return NULL;
    }
    prep_free(old);
    size_t slot = KH_ARRAY_LEN(preps);
    for (size_t i = 0; i < KH_ARRAY_LEN(preps); i++)
        if (!preps[i]) {
            slot = i;
            break;
        }
    unsigned port = free_port(address);
    unsigned nbd_port = json_array_size(disks) ? free_port(address) : 0;
    for (int tries = 0; nbd_port && nbd_port == port && tries < 10; tries++)
        nbd_port = free_port(address);
    if (!port || (json_array_size(disks) && (!nbd_port || nbd_port == port))) {
        kh_err_set(err, KH_E_INVALID, "cannot listen on %s", address);
        return NULL;
    }
    if (slot == KH_ARRAY_LEN(preps)) {
        kh_err_set(err, KH_E_UNAVAILABLE, "too many incoming migrations at once");
        return NULL;
    }
    char *tls_dir = NULL;
    if (json_is_true(json_object_get(body, "tls"))) {
        kh_err e = KH_ERR_INIT;
        tls_dir = ops && ops->qemu_tls ? ops->qemu_tls(ops->opaque, mgr->cfg.gid, &e) : NULL;
        if (!tls_dir) {
            if (e.code != KH_OK)
                *err = e;
            else
                kh_err_set(err, KH_E_CONFLICT, "TLS asked for, but this host has no "
                                               "certificate of the cluster");
            return NULL;
        }
    }
    tprep *p = xcalloc(1, sizeof(*p));
    p->mgr = mgr;
    snprintf(p->id, sizeof(p->id), "%s", vm_id);
    p->spec = json_deep_copy(spec);
    p->address = xstrdup(address);
    const char *source = json_string_value(json_object_get(body, "source"));
    p->source = xstrdup(source ? source : "");
    p->port = port;
    p->nbd_port = nbd_port;
    p->tls_dir = tls_dir;
    snprintf(p->cpu, sizeof(p->cpu), "%s", cpu);
    if (ops)
        p->ops = *ops;
    p->made = json_array();
    p->err = (kh_err)KH_ERR_INIT;
    preps[slot] = p;
    const char *name = json_string_value(json_object_get(spec, "name"));
    kh_migrate_persist(mgr, vm_id, name ? name : vm_id, "target", "prepare", p->source, NULL);
    p->issuing = true;
    int rc = disks_make(p, disks, err);
    p->issuing = false;
    if (rc < 0) {
        kh_migrate_persist(mgr, vm_id, name ? name : vm_id, "target", "aborted", p->source,
                           err->msg);
        p->aborted = true; /* the creates begun delete their volume at the end */
        if (!p->pending)
            prep_settle(p);
        return NULL;
    }
    json_t *out = json_pack("{s:i}", "port", (int)port);
    if (nbd_port)
        json_object_set_new(out, "nbd_port", json_integer(nbd_port));
    if (!p->pending)
        prep_settle(p);
    return out;
}

json_t *kh_migrate_target_status(kh_manager *mgr, const char *vm_id, kh_err *err)
{
    tprep *p = prep_find(vm_id);
    if (p && p->failed)
        return json_pack("{s:s, s:s}", "state", "stopped", "reason", p->err.msg);
    if (p)
        return json_pack("{s:s, s:s}", "state", "starting", "reason", "disks");
    kh_inst *v = kh_manager_find_id(mgr, vm_id);
    if (!v) {
        kh_err_set(err, KH_E_NOTFOUND, "no vm %s here", vm_id);
        return NULL;
    }
    return json_pack("{s:s, s:s?}", "state", kh_lifecycle_state_name(v->state), "reason",
                     v->reason);
}

/* ---- commit: cont once the incoming load ended ----
 *
 * The source's "completed" says everything was sent, not that this QEMU
 * loaded it; a cont during the load would make QEMU start the guest on its
 * own at the end. A commit waits for this QEMU's MIGRATION event
 * "completed" (sent once the run state is set: kh_migrate_target_loaded),
 * with a query-status every COMMIT_POLL_MS in case the event went by. */
#define COMMIT_POLL_MS 20
#define COMMIT_TRIES 3000 /* a minute of polls */

typedef struct tcommit {
    kh_manager *mgr;
    char id[37];
    uv_timer_t *timer;
    bool asking;
    unsigned tries;
} tcommit;

static tcommit *commits[64];

static tcommit *commit_find(const char *id)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(commits); i++)
        if (commits[i] && strcmp(commits[i]->id, id) == 0)
            return commits[i];
    return NULL;
}

static void commit_closed(uv_handle_t *h)
{
    timer_untrack((uv_timer_t *)h);
    free(h);
}

static void commit_end(tcommit *c)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(commits); i++)
        if (commits[i] == c)
            commits[i] = NULL;
    if (c->timer) {
        uv_timer_stop(c->timer);
        c->timer->data = NULL;
        uv_close((uv_handle_t *)c->timer, commit_closed);
    }
    free(c);
}

/* The load ended: the exports go, cont (instance/lifecycle.c). */
static void commit_now(tcommit *c)
{
    kh_manager *mgr = c->mgr;
    char id[37];
    memcpy(id, c->id, sizeof(id));
    unsigned tries = c->tries;
    commit_end(c);
    kh_inst *v = kh_manager_find_id(mgr, id);
    kh_err err = KH_ERR_INIT;
    if (!v || v->state != KH_INST_STARTING || !v->incoming_port)
        return;
    kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s commit: the incoming load ended (%u polls)",
           v->spec->name, tries);
    if (kh_lifecycle_incoming_commit(v, &err) < 0)
        kh_log(KH_LOG_ERROR, "vm.migrate", "vm=%s commit error=\"%s\"", v->spec->name, err.msg);
}

typedef struct commit_ask {
    kh_manager *mgr;
    char id[37];
} commit_ask;

static void on_commit_status(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    commit_ask *a = opaque;
    tcommit *c = commit_find(a->id);
    free(a);
    if (!c)
        return; /* done meanwhile */
    c->asking = false;
    const char *st = err ? NULL : json_string_value(json_object_get(ret, "status"));
    if (st && strcmp(st, "inmigrate") != 0)
        commit_now(c);
}

static void commit_ask_status(tcommit *c)
{
    kh_inst *v = kh_manager_find_id(c->mgr, c->id);
    if (!v || v->state != KH_INST_STARTING || ++c->tries > COMMIT_TRIES) {
        if (v)
            kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s commit: the incoming load did not end",
                   c->id);
        commit_end(c);
        return;
    }
    if (c->asking)
        return;
    commit_ask *a = xcalloc(1, sizeof(*a));
    a->mgr = c->mgr;
    memcpy(a->id, c->id, sizeof(a->id));
    kh_err err = KH_ERR_INIT;
    if (v->drv->command(v, "query-status", NULL, -1, on_commit_status, a, &err) < 0) {
        free(a);
        return; /* the next tick asks again */
    }
    c->asking = true;
}

static void commit_tick(uv_timer_t *t)
{
    if (t->data)
        commit_ask_status(t->data);
}

void kh_migrate_target_loaded(kh_manager *mgr, const char *vm_id)
{
    tcommit *c = mgr ? commit_find(vm_id) : NULL;
    if (c && c->mgr == mgr)
        commit_now(c);
}

int kh_migrate_target_commit(kh_manager *mgr, const char *vm_id, kh_err *err)
{
    kh_inst *v = kh_manager_find_id(mgr, vm_id);
    if (!v) {
        kh_err_set(err, KH_E_NOTFOUND, "no vm %s here", vm_id);
        return -1;
    }
    if (v->state == KH_INST_RUNNING || commit_find(vm_id))
        return 0; /* repeated */
    if (!v->incoming_port || v->state != KH_INST_STARTING) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is not waiting for a migration", v->spec->name);
        return -1;
    }
    size_t slot = KH_ARRAY_LEN(commits);
    for (size_t i = 0; i < KH_ARRAY_LEN(commits); i++)
        if (!commits[i]) {
            slot = i;
            break;
        }
    if (slot == KH_ARRAY_LEN(commits)) { /* no room to wait: the lifecycle asks itself */
        if (kh_lifecycle_incoming_commit(v, err) < 0)
            return -1;
    } else {
        kh_migrate_hook(mgr);
        tcommit *c = xcalloc(1, sizeof(*c));
        c->mgr = mgr;
        memcpy(c->id, vm_id, sizeof(c->id));
        c->timer = xcalloc(1, sizeof(*c->timer));
        uv_timer_init(mgr->loop, c->timer);
        c->timer->data = c;
        timer_track(c->timer);
        commits[slot] = c;
        uv_timer_start(c->timer, commit_tick, COMMIT_POLL_MS, COMMIT_POLL_MS);
        commit_ask_status(c); /* the load may have ended already */
    }
    kh_migrate_persist(mgr, vm_id, v->spec->name, "target", "done", "", NULL);
    kh_migrate_disks_save(mgr, vm_id, NULL); /* the copies are the VM's disks now */
    return 0;
}

typedef struct abort_job {
    kh_manager *mgr;
    char id[37];
    unsigned tries;
} abort_job;

static void abort_closed(uv_handle_t *h)
{
    timer_untrack((uv_timer_t *)h);
    free(h->data);
    free(h);
}

static void abort_try(uv_timer_t *t)
{
    abort_job *j = t->data;
    kh_inst *v = kh_manager_find_id(j->mgr, j->id);
    if (!v || kh_config_delete(j->mgr, v->spec->name, NULL) == 0 || ++j->tries > FORGET_TRIES) {
        if (!kh_manager_find_id(j->mgr, j->id)) {
            json_t *refs = kh_migrate_disks_load(j->mgr, j->id);
            disks_delete(j->mgr, j->id, refs);
            json_decref(refs);
        }
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, abort_closed);
    }
}

/* Kill v's incoming QEMU (if any) and forget it and its disk copies. */
static void abort_vm(kh_manager *mgr, const char *vm_id, kh_inst *v)
{
    if (v && v->state == KH_INST_STARTING) {
        /* also before QEMU exists (the start still preparing): abandoned */
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_CONFLICT, "migration aborted");
        kh_lifecycle_start_fail(v, &e);
    } else if (v && v->pid > 0) {
        kh_lifecycle_going_down(v, "migration aborted");
        v->drv->kill(v);
    }
    abort_job *j = xcalloc(1, sizeof(*j));
    j->mgr = mgr;
    memcpy(j->id, vm_id, sizeof(j->id));
    uv_timer_t *t = xcalloc(1, sizeof(*t));
    uv_timer_init(mgr->loop, t);
    t->data = j;
    timer_track(t);
    uv_timer_start(t, abort_try, 0, 50);
}

int kh_migrate_target_abort(kh_manager *mgr, const char *vm_id, kh_err *err)
{
    tprep *p = prep_find(vm_id);
    if (p) {
        kh_migrate_persist(mgr, vm_id, vm_id, "target", "aborted", "", NULL);
        if (p->pending) {
            p->aborted = true; /* on_disk_made deletes them and frees p */
        } else {
            disks_delete(mgr, vm_id, p->made);
            prep_free(p);
        }
        return 0;
    }
    kh_inst *v = kh_manager_find_id(mgr, vm_id);
    if (!v) {
        json_t *refs = kh_migrate_disks_load(mgr, vm_id);
        disks_delete(mgr, vm_id, refs); /* a repeat after a restart */
        json_decref(refs);
        kh_err_set(err, KH_E_NOTFOUND, "no vm %s here", vm_id);
        return -1;
    }
    if (v->state == KH_INST_RUNNING || (!v->incoming_port && v->state != KH_INST_STOPPED)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s here: not an incoming migration",
                   v->spec->name, kh_lifecycle_state_name(v->state));
        return -1;
    }
    kh_migrate_persist(mgr, vm_id, v->spec->name, "target", "aborted", "", NULL);
    abort_vm(mgr, vm_id, v);
    return 0;
}

/* ---- resolution: a restarted target, a source that died ---- */

/* Every incoming migration left pending (after this daemon's restart) or
 * whose source went offline is settled by the fence: while the owner is
 * still the source the migration is fenced (its owner move can no longer
 * win) and this side rolls back; if the owner moved here first, the guest
 * runs here. Watched every WATCH_MS while the VM is incoming. */
#define WATCH_MS 2000
#define WATCH_OFFLINE 3   /* checks in a row with the source offline */
#define WATCH_TRIES 300   /* with etcd unreachable: give up after 10 min */

typedef struct twatch {
    kh_manager *mgr;
    kh_migrate_ops ops;
    char id[37];
    char source[64];
    bool restarted;       /* resolve at once (the daemon restarted) */
    unsigned offline, tries;
} twatch;

static void watch_closed(uv_handle_t *h)
{
    timer_untrack((uv_timer_t *)h);
    free(h->data);
    free(h);
}

static void watch_end(uv_timer_t *t)
{
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, watch_closed);
}

static void watch_tick(uv_timer_t *t)
{
    twatch *w = t->data;
    kh_inst *v = kh_manager_find_id(w->mgr, w->id);
    if (++w->tries > WATCH_TRIES) {
        kh_log(KH_LOG_ERROR, "vm.migrate", "vm=%s incoming unresolved: resolve by hand", w->id);
        watch_end(t);
        return;
    }
    if (prep_find(w->id))
        return; /* disks still being made */
    if (!w->restarted) {
        /* a live incoming: watch its source */
        if (!v || v->state != KH_INST_STARTING || !v->incoming_port) {
            watch_end(t);
            return;
        }
        kh_migrate_peer src;
        kh_err e = KH_ERR_INIT;
        bool off = w->ops.peer_find &&
                   w->ops.peer_find(w->ops.opaque, w->source, &src, &e) == 0 && !src.online;
        w->offline = off ? w->offline + 1 : 0;
        if (w->offline < WATCH_OFFLINE)
            return;
        kh_log(KH_LOG_WARN, "vm.migrate", "vm=%s source=%s offline: resolving", w->id,
               w->source);
    } else if (v && v->pid > 0 && (!v->drv->monitor_ready(v) || v->state == KH_INST_STARTING)) {
        return; /* not reattached yet */
    }
    char owner[64];
    kh_err err = KH_ERR_INIT;
    if (!w->ops.fence ||
        w->ops.fence(w->ops.opaque, w->id, w->source, owner, sizeof(owner), &err) < 0)
        return; /* unknown: nothing is started nor killed; later */
    const char *self = NULL;
    kh_migrate_peer me;
    if (w->ops.peer_find && w->ops.peer_find(w->ops.opaque, w->source, &me, &err) == 0)
        self = me.self_id;
    if (self && strcmp(owner, self) == 0) {
        /* moved here: the guest runs here (it may be paused since the
         * restart: resumed) */
        kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s resolved: the owner moved here", w->id);
        if (v && v->state == KH_INST_STARTING && v->incoming_port)
            (void)kh_migrate_target_commit(w->mgr, w->id, &err);
        else if (v && v->state == KH_INST_PAUSED) {
            kh_task *rt = kh_lifecycle_action(w->mgr, v->spec->name, KH_ACTION_RESUME, NULL, &err);
            (void)rt;
        }
        if (v)
            kh_migrate_persist(w->mgr, w->id, v->spec->name, "target", "done", w->source, NULL);
        kh_migrate_disks_save(w->mgr, w->id, NULL);
    } else {
        kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s resolved: fenced, the owner is %s: rolling back",
               w->id, owner[0] ? owner : "none");
        kh_migrate_persist(w->mgr, w->id, v ? v->spec->name : w->id, "target", "aborted",
                           w->source, "resolved by the fence");
        abort_vm(w->mgr, w->id, v);
    }
    watch_end(t);
}

static void watch_start(kh_manager *mgr, const kh_migrate_ops *ops, const char *vm_id,
                        const char *source, bool restarted)
{
    if (!ops || !ops->fence)
        return;
    twatch *w = xcalloc(1, sizeof(*w));
    w->mgr = mgr;
    w->ops = *ops;
    snprintf(w->id, sizeof(w->id), "%s", vm_id);
    snprintf(w->source, sizeof(w->source), "%s", source ? source : "");
    w->restarted = restarted;
    uv_timer_t *t = xcalloc(1, sizeof(*t));
    uv_timer_init(mgr->loop, t);
    t->data = w;
    timer_track(t);
    uv_timer_start(t, watch_tick, restarted ? 500 : WATCH_MS, restarted ? 1000 : WATCH_MS);
}

void kh_migrate_target_restart(kh_manager *mgr, const kh_migrate_ops *ops)
{
    sqlite3_stmt *s = kh_store_prep(mgr->store,
                                    "SELECT vm_id, peer FROM migrations WHERE role = 'target' "
                                    "AND phase NOT IN ('done', 'aborted', 'none')",
                                    NULL);
    if (!s)
        return;
    while (sqlite3_step(s) == SQLITE_ROW) {
        char *id = kh_store_col_text(s, 0), *peer = kh_store_col_text(s, 1);
        if (id && strlen(id) == 36) {
            kh_log(KH_LOG_INFO, "vm.migrate", "vm=%s incoming pending at restart: resolving",
                   id);
            watch_start(mgr, ops, id, peer, true);
        }
        free(id);
        free(peer);
    }
    sqlite3_finalize(s);
}

void kh_migrate_target_shutdown(kh_manager *mgr)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(commits); i++)
        if (commits[i] && commits[i]->mgr == mgr)
            commit_end(commits[i]);
    for (size_t i = 0; i < KH_ARRAY_LEN(timers); i++) {
        uv_timer_t *t = timers[i];
        if (!t || t->loop != mgr->loop || uv_is_closing((uv_handle_t *)t))
            continue;
        uv_timer_stop(t);
        /* both kinds free their data the same way */
        uv_close((uv_handle_t *)t, watch_closed);
    }
    for (size_t i = 0; i < KH_ARRAY_LEN(preps); i++)
        if (preps[i] && preps[i]->mgr == mgr && !preps[i]->pending)
            prep_free(preps[i]); /* (one with creates under way is freed by them) */
}
