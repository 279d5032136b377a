/* peer.c - what a live migration (instance/migrate.c, via the API layer)
 * needs from the cluster: a member found by name (its host id, address,
 * api_url and cluster_url), this host's id, the migration record
 * /kvmhost/migrations/<vm-id>, the owner move of /kvmhost/vms/<id>/owner
 * and the fence /kvmhost/migrations/<vm-id>/fenced that the move compares
 * (absent), so a side that fenced while the owner was still the source
 * can roll back knowing the move can no longer win.
 * Synchronous etcd calls on the loop thread (the owner move and the fence
 * are the commit point: their answer decides the next step), except the
 * migration record's later phases (below). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/cluster_int.h"
#include "cluster/etcd_int.h"
#include "util/log.h"
#include "util/mem.h"

#define MIGRATIONS KH_CLUSTER_PREFIX "migrations/"

int kh_cluster_member_find(kh_cluster *c, const char *name, kh_cluster_member *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!c->enabled || !c->hosts.map) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster");
        return -1;
    }
    const char *id;
    json_t *rec;
    json_object_foreach(c->hosts.map, id, rec) {
        const char *n = json_string_value(json_object_get(rec, "name"));
        if ((n && strcmp(n, name) == 0) || strcmp(id, name) == 0) {
            const char *addr = json_string_value(json_object_get(rec, "address"));
            const char *url = json_string_value(json_object_get(rec, "api_url"));
            if (!addr || !url) {
                kh_err_set(err, KH_E_UNAVAILABLE, "host %s has no api_url", name);
                return -1;
            }
            snprintf(out->host_id, sizeof(out->host_id), "%s", id);
            snprintf(out->name, sizeof(out->name), "%s", n ? n : id);
            snprintf(out->address, sizeof(out->address), "%s", addr);
            snprintf(out->api_url, sizeof(out->api_url), "%s", url);
            const char *cu = json_string_value(json_object_get(rec, "cluster_url"));
            snprintf(out->cluster_url, sizeof(out->cluster_url), "%s", cu ? cu : "");
            out->self = strcmp(id, c->conf.host_id) == 0;
            out->online = c->live.map && json_object_get(c->live.map, id) != NULL;
            return 0;
        }
    }
    kh_err_set(err, KH_E_NOTFOUND, "no host %s in the cluster", name);
    return -1;
}

const char *kh_cluster_host_id(const kh_cluster *c)
{
    return c->enabled ? c->conf.host_id : NULL;
}

/* ---- the migration record ----
 * "prepare" is written at once (the target checks the token against it
 * before it answers); the later phases go off the loop (the switch's are in
 * the guest's downtime and nobody decides on them: each side's restart
 * reads its own SQLite row and the owner key), one at a time per VM, the
 * latest waiting for the one on its way, each a txn comparing the
 * mod_revision the chain last wrote: a late write of an older migration
 * cannot overwrite the next one's record. */

typedef struct put_job {
    kh_cluster *c;
    char vm_id[40];
} put_job;

static void chain_send(kh_cluster *c, const char *vm_id, json_t *e);

static void on_chain_put(json_t *reply, const kh_err *err, void *opaque)
{
    put_job *j = opaque;
    kh_cluster *c = j->c;
    json_t *e = json_object_get(c->mig_puts, j->vm_id);
    if (!reply) { /* etcd down or closing: the chain stops (the next prepare starts one) */
        kh_log(KH_LOG_WARN, "vm.migrate", "vm_id=%s record error=\"%s\"", j->vm_id,
               err ? err->msg : "?");
        json_object_del(c->mig_puts, j->vm_id);
        free(j);
        return;
    }
    if (e) {
        int64_t rev = kh_etcd_jint(json_object_get(reply, "header"), "revision");
        json_object_set_new(e, "busy", json_false());
        if (json_is_true(json_object_get(reply, "succeeded")) &&
            rev > json_integer_value(json_object_get(e, "rev")))
            json_object_set_new(e, "rev", json_integer(rev));
        if (json_object_get(e, "next"))
            chain_send(c, j->vm_id, e);
    }
    free(j);
}

static void chain_send(kh_cluster *c, const char *vm_id, json_t *e)
{
    char *key = xasprintf(MIGRATIONS "%s", vm_id);
    char *text = xstrdup(json_string_value(json_object_get(e, "next")));
    json_object_del(e, "next");
    kh_etcd_cmp cmp = { key, KH_ETCD_MOD, KH_ETCD_EQUAL,
                        json_integer_value(json_object_get(e, "rev")), NULL };
    kh_etcd_op op = { KH_ETCD_OP_PUT, key, text, 0, false };
    json_t *body = kh_etcd_txn_json(&cmp, 1, &op, 1, NULL, 0);
    free(text);
    free(key);
    put_job *j = xcalloc(1, sizeof(*j));
    j->c = c;
    snprintf(j->vm_id, sizeof(j->vm_id), "%s", vm_id);
    kh_err err = KH_ERR_INIT;
    json_object_set_new(e, "busy", json_true());
    if (kh_etcd_request_async(c->etcd, "/v3/kv/txn", body, on_chain_put, j, &err) < 0) {
        kh_log(KH_LOG_WARN, "vm.migrate", "vm_id=%s record error=\"%s\"", vm_id, err.msg);
        json_object_del(c->mig_puts, vm_id);
        free(j);
    }
}

static void chain_start(kh_cluster *c, const char *vm_id, int64_t rev)
{
    json_object_set_new(c->mig_puts, vm_id, json_pack("{s:I, s:b}", "rev", (json_int_t)rev,
                                                      "busy", 0));
}

int kh_cluster_migration_put(kh_cluster *c, const char *vm_id, const json_t *rec, kh_err *err)
{
    if (!c->enabled || !c->etcd) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster");
        return -1;
    }
    const char *phase = json_string_value(json_object_get(rec, "phase"));
    json_t *e = json_object_get(c->mig_puts, vm_id);
    char *text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    if (e && !(phase && strcmp(phase, "prepare") == 0)) {
        json_object_set_new(e, "next", json_string(text)); /* replaces one not sent yet */
        free(text);
        if (!json_is_true(json_object_get(e, "busy")))
            chain_send(c, vm_id, e);
        return 0;
    }
    char *key = xasprintf(MIGRATIONS "%s", vm_id);
    int rc;
    int64_t rev = 0;
    if (phase && strcmp(phase, "prepare") == 0) { /* a new migration: no fence yet */
        char *fkey = xasprintf(MIGRATIONS "%s/fenced", vm_id);
        kh_etcd_op del[] = { { KH_ETCD_OP_DELETE, fkey, NULL, 0, false },
                             { KH_ETCD_OP_PUT, key, text, 0, false } };
        kh_etcd_txn_result res = { 0 };
        rc = kh_etcd_txn(c->etcd, NULL, 0, del, 2, NULL, 0, &res, err);
        rev = res.revision;
        kh_etcd_txn_result_clear(&res);
        free(fkey);
    } else { /* no chain (a restart): at once, and a chain from here */
        rc = kh_etcd_put(c->etcd, key, text, (size_t)-1, 0, &rev, err);
    }
    if (rc == 0)
        chain_start(c, vm_id, rev);
    free(text);
    free(key);
    return rc;
}

json_t *kh_cluster_migration_get(kh_cluster *c, const char *vm_id, kh_err *err)
{
    if (!c->enabled || !c->etcd) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster");
        return NULL;
    }
    char *key = xasprintf(MIGRATIONS "%s", vm_id);
    kh_etcd_kv kv = { 0 };
    int rc = kh_etcd_get(c->etcd, key, &kv, NULL, err);
    free(key);
    if (rc <= 0) {
        if (rc == 0)
            kh_err_set(err, KH_E_NOTFOUND, "no migration of vm %s", vm_id);
        return NULL;
    }
    json_t *j = json_loadb(kv.value, kv.value_len, 0, NULL);
    kh_etcd_kv_clear(&kv);
    if (!j)
        kh_err_set(err, KH_E_INTERNAL, "migration record of vm %s is not JSON", vm_id);
    return j;
}

int kh_cluster_owner_get(kh_cluster *c, const char *vm_id, char *owner, size_t size,
                         kh_err *err)
{
    if (size)
        owner[0] = 0;
    if (!c->enabled || !c->etcd) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster");
        return -1;
    }
    char *okey = xasprintf(KH_CLUSTER_PREFIX "vms/%s/owner", vm_id);
    kh_etcd_kv kv = { 0 };
    int rc = kh_etcd_get(c->etcd, okey, &kv, NULL, err);
    free(okey);
    if (rc < 0)
        return -1;
    if (rc > 0 && size)
        snprintf(owner, size, "%s", kv.value);
    kh_etcd_kv_clear(&kv);
    return 0;
}

int kh_cluster_owner_move(kh_cluster *c, const char *vm_id, const char *to, char *owner_out,
                          size_t owner_size, kh_err *err)
{
    if (owner_out && owner_size)
        owner_out[0] = 0;
    if (!c->enabled || !c->etcd) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster");
        return -1;
    }
    const char *from = c->conf.host_id;
    /* the VM has its owner key since its claim (a start needs it) */
    char *okey = xasprintf(KH_CLUSTER_PREFIX "vms/%s/owner", vm_id);
    char *fkey = xasprintf(MIGRATIONS "%s/fenced", vm_id);
    kh_etcd_cmp cmp[] = { { okey, KH_ETCD_VALUE, KH_ETCD_EQUAL, 0, from },
                          { fkey, KH_ETCD_VERSION, KH_ETCD_EQUAL, 0, NULL } };
    kh_etcd_op ok[] = { { KH_ETCD_OP_PUT, okey, to, 0, false } };
    kh_etcd_op fail[] = { { KH_ETCD_OP_GET, okey, NULL, 0, false } };
    kh_etcd_txn_result res = { 0 };
    int rc = kh_etcd_txn(c->etcd, cmp, 2, ok, 1, fail, 1, &res, err);
    if (rc == 0) {
        const char *owner = res.succeeded ? to : (res.kvs.n ? res.kvs.kv[0].value : "");
        if (owner_out)
            snprintf(owner_out, owner_size, "%s", owner);
        kh_etcd_txn_result_clear(&res);
    }
    free(okey);
    free(fkey);
    return rc;
}

int kh_cluster_migration_fence(kh_cluster *c, const char *vm_id, const char *source,
                               char *owner_out, size_t owner_size, kh_err *err)
{
    if (owner_out && owner_size)
        owner_out[0] = 0;
    if (!c->enabled || !c->etcd) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster");
        return -1;
    }
    char *okey = xasprintf(KH_CLUSTER_PREFIX "vms/%s/owner", vm_id);
    char *fkey = xasprintf(MIGRATIONS "%s/fenced", vm_id);
    kh_etcd_cmp cmp[] = { { okey, KH_ETCD_VALUE, KH_ETCD_EQUAL, 0, source } };
    kh_etcd_op ok[] = { { KH_ETCD_OP_PUT, fkey, c->conf.host_id, 0, false } };
    kh_etcd_op fail[] = { { KH_ETCD_OP_GET, okey, NULL, 0, false } };
    kh_etcd_txn_result res = { 0 };
    int rc = kh_etcd_txn(c->etcd, cmp, 1, ok, 1, fail, 1, &res, err);
    if (rc == 0) {
        const char *owner = res.succeeded ? source : (res.kvs.n ? res.kvs.kv[0].value : "");
        if (owner_out)
            snprintf(owner_out, owner_size, "%s", owner);
        kh_etcd_txn_result_clear(&res);
    }
    free(okey);
    free(fkey);
    return rc;
}
