/* vms.c - ownership of VMs in a cluster and the cluster-wide VM view.
 *
 * Keys (etcd):
 *   /kvmhost/vms/<vm-id>/owner   <host-id>   (claimed by a txn: only when absent)
 *   /kvmhost/vms/<vm-id>/spec    the VM's view as its owner last saw it,
 *                                 plus "host" (name) and "host_id"
 *   /kvmhost/vm-names/<name>     <vm-id>     (claimed in the same txn: names are
 *                                 unique cluster-wide)
 * The owner writes spec on create, patch and state changes (queued and
 * flushed on the loop, guarded by a txn comparing the owner), and deletes
 * the three keys on delete. A watch of /kvmhost/vms/ keeps c->vms (vm id ->
 * {owner, spec}), from which the API lists other hosts' VMs and finds the
 * owner to forward a request to, and tells the local event bus of other
 * hosts' VM changes (c->event). The instance layer calls these through
 * kh_manager_cluster_ops (the daemon wires them; a single host has none).
 *
 * Start and resume (kh_cluster_vm_may_run) need this host's lease alive
 * (not fenced) and a linearizable read saying the owner is this host.
 */
#include "cluster/cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd_int.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define VMS_PREFIX KH_CLUSTER_PREFIX "vms/"
#define NAMES_PREFIX KH_CLUSTER_PREFIX "vm-names/"
/* How long an async may-run "yes" stands in for the start's own read. */
#define MAY_RUN_FRESH_MS 3000

static char *owner_key(const char *id)
{
    return xasprintf(VMS_PREFIX "%s/owner", id);
}

static char *spec_key(const char *id)
{
    return xasprintf(VMS_PREFIX "%s/spec", id);
}

static char *name_key(const char *name)
{
    return xasprintf(NAMES_PREFIX "%s", name);
}

/* The name of host id from the hosts cache (id itself when unknown). */
static const char *host_name_of(const kh_cluster *c, const char *id)
{
    if (c->enabled && strcmp(id, c->conf.host_id) == 0)
        return c->host_name;
    const char *n = json_string_value(json_object_get(json_object_get(c->hosts.map, id), "name"));
    return n ? n : id;
}

/* ---- the cache of /kvmhost/vms/ ---- */

static json_t *entry(kh_cluster *c, const char *id, size_t idlen)
{
    char *k = xstrndup(id, idlen);
    json_t *e = json_object_get(c->vms, k);
    if (!e) {
        e = json_object();
        json_object_set_new(c->vms, k, e);
    }
    free(k);
    return e;
}

/* Another host's VM changed (from the watch, not the first listing): tell
 * the local event bus, as its own VMs' changes are. */
static void notify(kh_cluster *c, const char *owner, const json_t *before, const json_t *after)
{
    if (!c->event || !owner || strcmp(owner, c->conf.host_id) == 0)
        return;
    const char *host = host_name_of(c, owner);
    const json_t *v = after ? after : before;
    const char *name = json_string_value(json_object_get(v, "name"));
    if (!name)
        return;
    const char *s0 = json_string_value(json_object_get(before, "state"));
    const char *s1 = json_string_value(json_object_get(after, "state"));
    if (!before)
        c->event(c->event_opaque, "vm.created", name,
                 json_pack("{s:s, s:s?}", "host", host, "state", s1));
    else if (!after)
        c->event(c->event_opaque, "vm.deleted", name,
                 json_pack("{s:s, s:O?}", "host", host, "id", json_object_get(before, "id")));
    else if (s0 && s1 && strcmp(s0, s1) != 0)
        c->event(c->event_opaque, "vm.state", name,
                 json_pack("{s:s, s:s, s:s, s:O?}", "state", s1, "previous", s0, "host", host,
                           "reason", json_object_get(after, "reason")));
}

static void cache_apply(kh_cluster *c, const char *key, const char *value, size_t len, bool put,
                        bool watched)
{
    kh_cluster_vms_view_stale(c);
    const char *rest = key + strlen(VMS_PREFIX);
    const char *slash = strchr(rest, '/');
    if (!slash)
        return;
    json_t *e = entry(c, rest, (size_t)(slash - rest));
    const char *what = slash + 1;
    if (strcmp(what, "owner") == 0) {
        /* a delete removes owner, then spec (one txn): the spec's delete
         * still needs to know whose VM it was */
        if (!put && json_object_get(e, "owner") && json_object_get(e, "spec"))
            json_object_set(e, "was_owner", json_object_get(e, "owner"));
        json_object_del(e, "owner");
        if (put)
            json_object_set_new(e, "owner", json_stringn(value, len));
    } else if (strcmp(what, "spec") == 0) {
        json_t *spec = put ? json_loadb(value, len, 0, NULL) : NULL;
        json_t *before = json_incref(json_object_get(e, "spec"));
        if (!json_is_object(spec)) {
            json_decref(spec);
            spec = NULL;
        }
        const char *owner = json_string_value(json_object_get(e, "owner"));
        if (watched)
            notify(c, owner ? owner : json_string_value(json_object_get(e, "was_owner")), before,
                   spec);
        json_decref(before);
        if (spec)
            json_object_set_new(e, "spec", spec);
        else
            json_object_del(e, "spec");
        json_object_del(e, "was_owner");
    }
    if (json_object_size(e) == 0) {
        char *id = xstrndup(rest, (size_t)(slash - rest));
        json_object_del(c->vms, id);
        free(id);
    }
}

static void on_vms_watch(kh_etcd_watch *w, const kh_etcd_event *ev, const kh_err *err,
                         void *opaque)
{
    kh_cluster *c = opaque;
    if (!ev) {
        kh_log(KH_LOG_WARN, "cluster.watch", "prefix=%s error=\"%s\" note=\"listing again\"",
               VMS_PREFIX, err ? err->msg : "ended");
        kh_etcd_watch_cancel(w);
        c->vms_watch = NULL;
        return;
    }
    cache_apply(c, ev->kv->key, ev->kv->value, ev->kv->value_len, ev->type == KH_ETCD_EV_PUT,
                true);
    kh_cluster_mirror_event(c, VMS_PREFIX, ev->kv, ev->type == KH_ETCD_EV_PUT);
}

static void load_one(kh_cluster *c, const kh_etcd_kv *kv)
{
    cache_apply(c, kv->key, kv->value, kv->value_len, true, false);
}

void kh_cluster_vms_load(kh_cluster *c)
{
    c->vms_resume_rev = kh_cluster_mirror_load(c, VMS_PREFIX, load_one);
}

int kh_cluster_vms_watch(kh_cluster *c, kh_err *err)
{
    if (c->vms_resume_rev) {
        int64_t from = c->vms_resume_rev + 1;
        c->vms_resume_rev = 0;
        kh_log(KH_LOG_INFO, "cluster.watch", "prefix=%s from_revision=%lld note=\"resumed from "
               "the mirror\"", VMS_PREFIX, (long long)from);
        c->vms_watch = kh_etcd_watch_start(c->etcd, VMS_PREFIX, true, from, on_vms_watch, c,
                                           err);
        return c->vms_watch ? 0 : -1;
    }
    kh_etcd_kvs kvs = { 0 };
    if (kh_etcd_range(c->etcd, VMS_PREFIX, NULL, 0, &kvs, err) < 0)
        return -1;
    json_object_clear(c->vms);
    for (size_t i = 0; i < kvs.n; i++)
        cache_apply(c, kvs.kv[i].key, kvs.kv[i].value, kvs.kv[i].value_len, true, false);
    int64_t rev = kvs.revision;
    kh_cluster_mirror_replace(c, VMS_PREFIX, &kvs);
    kh_etcd_kvs_clear(&kvs);
    c->vms_watch = kh_etcd_watch_start(c->etcd, VMS_PREFIX, true, rev + 1, on_vms_watch, c, err);
    return c->vms_watch ? 0 : -1;
}

/* ---- claims ---- */

/* The claim of id and name for this host: both keys must not exist yet;
 * then the owner key names this host and the name key the id. */
static void claim_ops(const kh_cluster *c, const char *id, char *okey, char *nk,
                      kh_etcd_cmp cmp[2], kh_etcd_op ops[2])
{
    cmp[0] = (kh_etcd_cmp){ .key = okey, .target = KH_ETCD_CREATE, .result = KH_ETCD_EQUAL };
    cmp[1] = (kh_etcd_cmp){ .key = nk, .target = KH_ETCD_CREATE, .result = KH_ETCD_EQUAL };
    ops[0] = (kh_etcd_op){ .type = KH_ETCD_OP_PUT, .key = okey, .value = c->conf.host_id };
    ops[1] = (kh_etcd_op){ .type = KH_ETCD_OP_PUT, .key = nk, .value = id };
}

/* Claim id and name for this host in one txn. 1 won, 0 lost (*held_by gets
 * the vm id that has the name, or NULL when it is the id that is owned), -1. */
static int claim_txn(kh_cluster *c, const char *id, const char *name, char **held_by,
                     kh_err *err)
{
    char *ok_key = owner_key(id), *nk = name_key(name);
    kh_etcd_cmp cmp[2];
    kh_etcd_op ops[2];
    claim_ops(c, id, ok_key, nk, cmp, ops);
    kh_etcd_op get = { .type = KH_ETCD_OP_GET, .key = nk };
    kh_etcd_txn_result res = { 0 };
    int rc = kh_etcd_txn(c->etcd, cmp, 2, ops, 2, &get, 1, &res, err);
    *held_by = NULL;
    if (rc == 0) {
        if (!res.succeeded && res.kvs.n == 1 && strcmp(res.kvs.kv[0].value, id) != 0)
            *held_by = xstrdup(res.kvs.kv[0].value);
        rc = res.succeeded ? 1 : 0;
        kh_etcd_txn_result_clear(&res);
    }
    free(ok_key);
    free(nk);
    return rc;
}

/* The owner of id now (linearizable): a new string, NULL when unowned or on
 * error (*failed then set). */
static char *owner_now(kh_cluster *c, const char *id, bool *failed, kh_err *err)
{
    char *k = owner_key(id);
    kh_etcd_kv kv = { 0 };
    int rc = kh_etcd_get(c->etcd, k, &kv, NULL, err);
    free(k);
    *failed = rc < 0;
    char *out = rc == 1 ? xstrdup(kv.value) : NULL;
    kh_etcd_kv_clear(&kv);
    return out;
}

/* The host that owns the vm named name (host name, a new string), or NULL. */
static char *owner_host_of_vm(kh_cluster *c, const char *vm_id)
{
    bool failed;
    char *o = owner_now(c, vm_id, &failed, NULL);
    char *h = o ? xstrdup(host_name_of(c, o)) : NULL;
    free(o);
    return h;
}

int kh_cluster_vm_claim(void *opaque, const char *id, const char *name, kh_err *err)
{
    kh_cluster *c = opaque;
    if (!kh_cluster_enabled(c))
        return 0;
    if (kh_cluster_writable(c, err) < 0) {
        kh_err_prefix(err, "cannot create vm %s", name);
        return -1;
    }
    char *held = NULL;
    int rc = claim_txn(c, id, name, &held, err);
    if (rc == 1)
        return 0;
    if (rc == 0) {
        char *host = held ? owner_host_of_vm(c, held) : NULL;
        kh_err_set(err, KH_E_CONFLICT, "a vm named %s already exists on host %s", name,
                   host ? host : "(another host)");
        free(host);
    }
    free(held);
    return -1;
}

void kh_cluster_vm_unclaim(void *opaque, const char *id, const char *name)
{
    kh_cluster *c = opaque;
    if (!kh_cluster_enabled(c))
        return;
    json_object_set_new(c->vms_pending, id, json_pack("{s:s}", "deleted", name));
    kh_cluster_vms_kick(c);
}

int kh_cluster_vm_may_run(void *opaque, const char *id, const char *name, kh_err *err)
{
    kh_cluster *c = opaque;
    if (!kh_cluster_enabled(c))
        return 0;
    if (!kh_cluster_quorum(c)) {
        kh_err_set(err, KH_E_UNAVAILABLE, "this host's cluster lease is not alive (no quorum "
                   "from here: %s): it may not start or resume vm %s until it is back",
                   c->last_error[0] ? c->last_error : "etcd not reachable", name);
        return -1;
    }
    json_t *yes = json_object_get(c->may_run_ok, id);
    bool recent = yes && kh_now_ms() - (uint64_t)json_integer_value(yes) <= MAY_RUN_FRESH_MS;
    json_object_del(c->may_run_ok, id); /* one start per check */
    if (recent)
        return 0; /* read just now, off the loop (kh_cluster_vm_may_run_async) */
    bool failed;
    kh_err e = KH_ERR_INIT;
    char *owner = owner_now(c, id, &failed, &e);
    if (failed) {
        kh_err_set(err, KH_E_UNAVAILABLE, "cannot check this host's claim on vm %s: %s", name,
                   e.msg);
        return -1;
    }
    if (!owner || strcmp(owner, c->conf.host_id) != 0) {
        if (owner)
            kh_err_set(err, KH_E_CONFLICT, "vm %s is owned by host %s in the cluster: this "
                       "host has no current claim on it and may not start or resume it", name,
                       host_name_of(c, owner));
        else
            kh_err_set(err, KH_E_CONFLICT, "vm %s is not claimed by this host in the cluster: "
                       "it may not start or resume it", name);
        free(owner);
        return -1;
    }
    free(owner);
    return 0;
}

/* ---- the same off the loop ---- */

typedef struct vm_job {
    kh_cluster *c;
    char id[37];
    char *name;
    kh_cluster_vm_done_cb done;
    void *opaque;
} vm_job;

static vm_job *job_new(kh_cluster *c, const char *id, const char *name,
                       kh_cluster_vm_done_cb done, void *opaque)
{
    vm_job *j = xcalloc(1, sizeof(*j));
    j->c = c;
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->name = xstrdup(name);
    j->done = done;
    j->opaque = opaque;
    return j;
}

static void job_end(vm_job *j, const kh_err *err)
{
    j->done(j->opaque, err);
    free(j->name);
    free(j);
}

/* The host name of the owner of vm id from the watched view ("another
 * host" when unknown): no etcd read. */
static const char *cached_host_of(kh_cluster *c, const char *vm_id)
{
    const char *o = json_string_value(json_object_get(json_object_get(c->vms, vm_id), "owner"));
    return o ? host_name_of(c, o) : "(another host)";
}

static void on_claim(json_t *reply, const kh_err *err, void *opaque)
{
    vm_job *j = opaque;
    kh_err e = KH_ERR_INIT;
    kh_etcd_txn_result res = { 0 };
    if (!reply) {
        e = *err;
        kh_err_prefix(&e, "cannot create vm %s", j->name);
        job_end(j, &e);
        return;
    }
    if (kh_etcd_txn_parse(reply, &res, &e) < 0) {
        job_end(j, &e);
        return;
    }
    /* lost: unless it is our own txn sent again (a failover repeats it) */
    const char *name_holder = NULL, *owner = NULL;
    char *nk = name_key(j->name), *ok = owner_key(j->id);
    for (size_t i = 0; i < res.kvs.n; i++) {
        if (strcmp(res.kvs.kv[i].key, nk) == 0)
            name_holder = res.kvs.kv[i].value;
        else if (strcmp(res.kvs.kv[i].key, ok) == 0)
            owner = res.kvs.kv[i].value;
    }
    bool won = res.succeeded || (name_holder && owner && strcmp(name_holder, j->id) == 0 &&
                                 strcmp(owner, j->c->conf.host_id) == 0);
    if (!won)
        kh_err_set(&e, KH_E_CONFLICT, "a vm named %s already exists on host %s", j->name,
                   name_holder && strcmp(name_holder, j->id) != 0
                       ? cached_host_of(j->c, name_holder) : "(another host)");
    free(nk);
    free(ok);
    kh_etcd_txn_result_clear(&res);
    job_end(j, won ? NULL : &e);
}

int kh_cluster_vm_claim_async(void *opaque, const char *id, const char *name,
                              kh_cluster_vm_done_cb done, void *done_opaque, kh_err *err)
{
    kh_cluster *c = opaque;
    if (!kh_cluster_enabled(c)) {
        done(done_opaque, NULL);
        return 0;
    }
    if (kh_cluster_writable(c, err) < 0) {
        kh_err_prefix(err, "cannot create vm %s", name);
        return -1;
    }
    char *okey = owner_key(id), *nk = name_key(name);
    kh_etcd_cmp cmp[2];
    kh_etcd_op ops[2];
    claim_ops(c, id, okey, nk, cmp, ops);
    kh_etcd_op get[2] = { { .type = KH_ETCD_OP_GET, .key = nk },
                          { .type = KH_ETCD_OP_GET, .key = okey } };
    json_t *body = kh_etcd_txn_json(cmp, 2, ops, 2, get, 2);
    free(okey);
    free(nk);
    vm_job *j = job_new(c, id, name, done, done_opaque);
    if (kh_etcd_request_async(c->etcd, "/v3/kv/txn", body, on_claim, j, err) < 0) {
        free(j->name);
        free(j);
        return -1;
    }
    return 0;
}

static void on_owner(json_t *reply, const kh_err *err, void *opaque)
{
    vm_job *j = opaque;
    kh_cluster *c = j->c;
    kh_err e = KH_ERR_INIT;
    kh_etcd_kv kv = { 0 };
    if (!reply) {
        kh_err_set(&e, KH_E_UNAVAILABLE, "cannot check this host's claim on vm %s: %s", j->name,
                   err->msg);
        job_end(j, &e);
        return;
    }
    const json_t *kvs = json_object_get(reply, "kvs");
    if (json_array_size(kvs) == 1 && kh_etcd_kv_parse(json_array_get(kvs, 0), &kv, &e) < 0) {
        job_end(j, &e);
        return;
    }
    const char *owner = kv.value;
    if (owner && strcmp(owner, c->conf.host_id) == 0 && kh_cluster_quorum(c)) {
        json_object_set_new(c->may_run_ok, j->id, json_integer((json_int_t)kh_now_ms()));
        kh_etcd_kv_clear(&kv);
        job_end(j, NULL);
        return;
    }
    if (!kh_cluster_quorum(c))
        kh_err_set(&e, KH_E_UNAVAILABLE, "this host's cluster lease is not alive: it may not "
                   "start or resume vm %s until it is back", j->name);
    else if (owner)
        kh_err_set(&e, KH_E_CONFLICT, "vm %s is owned by host %s in the cluster: this host has "
                   "no current claim on it and may not start or resume it", j->name,
                   host_name_of(c, owner));
    else
        kh_err_set(&e, KH_E_CONFLICT, "vm %s is not claimed by this host in the cluster: it "
                   "may not start or resume it", j->name);
    kh_etcd_kv_clear(&kv);
    job_end(j, &e);
}

int kh_cluster_vm_may_run_async(void *opaque, const char *id, const char *name,
                                kh_cluster_vm_done_cb done, void *done_opaque, kh_err *err)
{
    kh_cluster *c = opaque;
    if (!kh_cluster_enabled(c)) {
        done(done_opaque, NULL);
        return 0;
    }
    if (!kh_cluster_quorum(c)) {
        kh_err_set(err, KH_E_UNAVAILABLE, "this host's cluster lease is not alive (no quorum "
                   "from here: %s): it may not start or resume vm %s until it is back",
                   c->last_error[0] ? c->last_error : "etcd not reachable", name);
        return -1;
    }
    char *k = owner_key(id);
    json_t *body = json_pack("{s:o}", "key", kh_etcd_key_json(k));
    free(k);
    vm_job *j = job_new(c, id, name, done, done_opaque);
    if (kh_etcd_request_async(c->etcd, "/v3/kv/range", body, on_owner, j, err) < 0) {
        free(j->name);
        free(j);
        return -1;
    }
    return 0;
}

void kh_cluster_vm_changed(void *opaque, const char *id, const json_t *vm)
{
    kh_cluster *c = opaque;
    if (!kh_cluster_enabled(c))
        return;
    json_t *spec = json_deep_copy(vm);
    json_object_set_new(spec, "host", json_string(c->host_name));
    json_object_set_new(spec, "host_id", json_string(c->conf.host_id));
    json_object_set_new(c->vms_pending, id, spec);
    kh_cluster_vms_kick(c);
}

void kh_cluster_vm_deleted(void *opaque, const char *id, const char *name)
{
    kh_cluster_vm_unclaim(opaque, id, name);
}

/* ---- writing what changed ---- */

static int flush_one(kh_cluster *c, const char *id, json_t *what, kh_err *err)
{
    char *ok = owner_key(id), *sk = spec_key(id);
    kh_etcd_cmp cmp = { .key = ok, .target = KH_ETCD_VALUE, .result = KH_ETCD_EQUAL,
                        .value = c->conf.host_id };
    kh_etcd_txn_result res = { 0 };
    int rc;
    const char *deleted = json_string_value(json_object_get(what, "deleted"));
    if (deleted) {
        kh_etcd_op ops[2] = { { .type = KH_ETCD_OP_DELETE, .key = ok },
                              { .type = KH_ETCD_OP_DELETE, .key = sk } };
        rc = kh_etcd_txn(c->etcd, &cmp, 1, ops, 2, NULL, 0, &res, err);
        bool owned = rc == 0 && res.succeeded;
        if (rc == 0)
            kh_etcd_txn_result_clear(&res);
        if (!owned) {
            /* another host owns it now (a migration moved it): its keys stay */
            free(ok);
            free(sk);
            return rc;
        }
        char *nk = name_key(deleted);
        kh_etcd_cmp ncmp = { .key = nk, .target = KH_ETCD_VALUE, .result = KH_ETCD_EQUAL,
                             .value = id };
        kh_etcd_op nop = { .type = KH_ETCD_OP_DELETE, .key = nk };
        if (rc == 0 && (rc = kh_etcd_txn(c->etcd, &ncmp, 1, &nop, 1, NULL, 0, &res, err)) == 0)
            kh_etcd_txn_result_clear(&res);
        free(nk);
    } else {
        char *text = json_dumps(what, JSON_COMPACT | JSON_SORT_KEYS);
        kh_etcd_op put = { .type = KH_ETCD_OP_PUT, .key = sk, .value = text };
        rc = kh_etcd_txn(c->etcd, &cmp, 1, &put, 1, NULL, 0, &res, err);
        if (rc == 0) {
            if (!res.succeeded)
                kh_log(KH_LOG_WARN, "cluster.vm.spec", "vm_id=%s note=\"not the owner: the "
                       "view is not written\"", id);
            kh_etcd_txn_result_clear(&res);
        }
        free(text);
    }
    free(ok);
    free(sk);
    return rc;
}

void kh_cluster_vms_flush(kh_cluster *c)
{
    if (!c->etcd || kh_cluster_etcd_stalled(c) || kh_cluster_fenced(c))
        return; /* kept until etcd answers again */
    const char *id;
    json_t *what;
    void *tmp;
    json_object_foreach_safe(c->vms_pending, tmp, id, what) {
        kh_err err = KH_ERR_INIT;
        if (flush_one(c, id, what, &err) < 0) {
            kh_log(KH_LOG_WARN, "cluster.vm.write", "vm_id=%s error=\"%s\"", id, err.msg);
            return; /* the next tick tries again */
        }
        json_object_del(c->vms_pending, id);
    }
}

static void on_kick(uv_timer_t *t)
{
    kh_cluster_vms_flush(t->data);
}

void kh_cluster_vms_kick(kh_cluster *c)
{
    if (c->vms_timer)
        uv_timer_start(c->vms_timer, on_kick, 0, 0);
}

/* After registering: claim the VMs this host already has (a join with
 * VMs), and write their views. A VM another host owns is reported. */
void kh_cluster_vms_claim_local(kh_cluster *c)
{
    if (!c->local_vms)
        return;
    json_t *vms = c->local_vms(c->local_vms_opaque);
    size_t i;
    json_t *vm;
    json_array_foreach(vms, i, vm) {
        const char *id = json_string_value(json_object_get(vm, "id"));
        const char *name = json_string_value(json_object_get(vm, "name"));
        if (!id || !name)
            continue;
        kh_err err = KH_ERR_INIT;
        char *held = NULL;
        int rc = claim_txn(c, id, name, &held, &err);
        if (rc < 0) {
            kh_log(KH_LOG_WARN, "cluster.vm.claim", "vm=%s error=\"%s\"", name, err.msg);
            continue;
        }
        bool failed;
        char *owner = rc == 1 ? xstrdup(c->conf.host_id) : owner_now(c, id, &failed, NULL);
        if (held || (owner && strcmp(owner, c->conf.host_id) != 0)) {
            char *h = held ? owner_host_of_vm(c, held) : xstrdup(host_name_of(c, owner));
            kh_log(KH_LOG_ERROR, "cluster.vm.conflict", "vm=%s id=%s %s=%s note=\"this host "
                   "will not start it: rename or delete one of them\"", name, id,
                   held ? "name_taken_on_host" : "owned_by_host", h ? h : "?");
            free(h);
        } else if (!owner) {
            /* the name is ours but the owner key went: claim again */
            kh_etcd_set_owner(c->etcd, id, c->conf.host_id, 0, NULL, NULL, NULL);
        }
        free(owner);
        free(held);
        if (rc == 1)
            kh_log(KH_LOG_INFO, "cluster.vm.claim", "vm=%s id=%s", name, id);
        kh_cluster_vm_changed(c, id, vm);
    }
    json_decref(vms);
    kh_cluster_vms_flush(c);
}

/* ---- the view ---- */

void kh_cluster_vms_view_stale(kh_cluster *c)
{
    json_decref(c->vms_view);
    c->vms_view = NULL;
    free(c->vms_view_text);
    c->vms_view_text = NULL;
}

/* The view, built when stale: each other host's VM once, with its host's
 * name, as objects and as text. */
static json_t *view(kh_cluster *c)
{
    if (c->vms_view)
        return c->vms_view;
    json_t *arr = json_array();
    kh_buf text = { 0 };
    kh_buf_add(&text, "", 0);
    const char *id;
    json_t *e;
    json_object_foreach(c->vms, id, e) {
        const char *owner = json_string_value(json_object_get(e, "owner"));
        json_t *spec = json_object_get(e, "spec");
        if (!owner || !spec || strcmp(owner, c->conf.host_id) == 0)
            continue;
        json_t *vm = json_deep_copy(spec);
        json_object_set_new(vm, "host", json_string(host_name_of(c, owner)));
        json_object_del(vm, "host_id");
        char *s = json_dumps(vm, JSON_COMPACT);
        if (s) {
            if (text.len)
                kh_buf_add(&text, ",", 1);
            kh_buf_add(&text, s, strlen(s));
            free(s);
        }
        json_array_append_new(arr, vm);
    }
    c->vms_view = arr;
    c->vms_view_text = text.p;
    return arr;
}

json_t *kh_cluster_vms_remote(kh_cluster *c, const char *host)
{
    json_t *arr = json_array();
    if (!kh_cluster_enabled(c))
        return arr;
    size_t i;
    json_t *vm;
    json_array_foreach(view(c), i, vm) {
        const char *h = json_string_value(json_object_get(vm, "host"));
        if (!host || (h && strcmp(host, h) == 0))
            json_array_append(arr, vm);
    }
    return arr;
}

const char *kh_cluster_vms_remote_text(kh_cluster *c)
{
    if (!kh_cluster_enabled(c))
        return "";
    view(c);
    return c->vms_view_text ? c->vms_view_text : "";
}

const char *kh_cluster_host_name(const kh_cluster *c)
{
    return c ? c->host_name : "";
}

int kh_cluster_vm_remote(kh_cluster *c, const char *name, char **host, char **url)
{
    *host = *url = NULL;
    if (!kh_cluster_enabled(c))
        return 0;
    const char *id;
    json_t *e;
    json_object_foreach(c->vms, id, e) {
        const char *owner = json_string_value(json_object_get(e, "owner"));
        const char *n = json_string_value(json_object_get(json_object_get(e, "spec"), "name"));
        if (!owner || !n || strcmp(n, name) != 0 || strcmp(owner, c->conf.host_id) == 0)
            continue;
        json_t *rec = json_object_get(c->live.map, owner);
        if (!rec)
            rec = json_object_get(c->hosts.map, owner);
        const char *u = json_string_value(json_object_get(rec, "cluster_url"));
        *host = xstrdup(host_name_of(c, owner));
        *url = u ? xstrdup(u) : NULL;
        return 1;
    }
    return 0;
}
