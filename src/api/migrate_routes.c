/* migrate_routes.c - live migration: POST /api/v1/vms/{name}/migrate (the
 * user's route, on the source) and the host-to-host routes the source calls
 * on the target, /api/v1/migrations/{id}/{prepare,status,commit,abort}.
 * Those accept "Authorization: KH-Peer <token>" (auth.c, KH_ROUTE_PEER):
 * the token is the one the source wrote into the migration record
 * /kvmhost/migrations/<id> in etcd, and the record must name this host as
 * the target. Handlers only: the work is in instance/migrate.c; the
 * cluster glue (member lookup, record, owner move) is here as its ops. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "cluster/cluster.h"
#include "instance/migrate.h"
#include "schema/schema.h"
#include "util/mem.h"

static int ops_owner_move(void *opaque, const char *vm_id, const char *to, char *owner,
                          size_t owner_size, kh_err *err)
{
    return kh_cluster_owner_move(opaque, vm_id, to, owner, owner_size, err);
}

static int ops_record(void *opaque, const char *vm_id, const json_t *rec, kh_err *err)
{
    return kh_cluster_migration_put(opaque, vm_id, rec, err);
}

static json_t *ops_record_get(void *opaque, const char *vm_id, kh_err *err)
{
    return kh_cluster_migration_get(opaque, vm_id, err);
}

static int ops_owner_get(void *opaque, const char *vm_id, char *owner, size_t size,
                         kh_err *err)
{
    return kh_cluster_owner_get(opaque, vm_id, owner, size, err);
}

static char *ops_qemu_tls(void *opaque, gid_t gid, kh_err *err)
{
    return kh_cluster_qemu_tls_dir(opaque, gid, err);
}

static int ops_fence(void *opaque, const char *vm_id, const char *source, char *owner,
                     size_t size, kh_err *err)
{
    return kh_cluster_migration_fence(opaque, vm_id, source, owner, size, err);
}

static void peer_fill(kh_cluster *c, const kh_cluster_member *mem, kh_migrate_peer *peer)
{
    memset(peer, 0, sizeof(*peer));
    snprintf(peer->host_id, sizeof(peer->host_id), "%s", mem->host_id);
    snprintf(peer->name, sizeof(peer->name), "%s", mem->name);
    snprintf(peer->address, sizeof(peer->address), "%s", mem->address);
    /* host-to-host calls go to the peer's mutual-TLS listener (the cluster
     * CA is the trust, this host's certificate the client's), never to its
     * user-facing API with a certificate no other host trusts */
    char *ca = NULL, *cert = NULL, *key = NULL;
    kh_err err = KH_ERR_INIT;
    if (mem->cluster_url[0] && kh_cluster_peer_tls(c, &ca, &cert, &key, &err) == 0) {
        snprintf(peer->api_url, sizeof(peer->api_url), "%s", mem->cluster_url);
        snprintf(peer->tls_ca, sizeof(peer->tls_ca), "%s", ca);
        snprintf(peer->tls_cert, sizeof(peer->tls_cert), "%s", cert);
        snprintf(peer->tls_key, sizeof(peer->tls_key), "%s", key);
    } else {
        snprintf(peer->api_url, sizeof(peer->api_url), "%s", mem->api_url);
    }
    free(ca);
    free(cert);
    free(key);
    snprintf(peer->self_id, sizeof(peer->self_id), "%s", kh_cluster_host_id(c));
    peer->online = mem->online;
}

static int ops_peer_find(void *opaque, const char *host_id, kh_migrate_peer *peer, kh_err *err)
{
    kh_cluster_member mem;
    if (kh_cluster_member_find(opaque, host_id, &mem, err) < 0)
        return -1;
    peer_fill(opaque, &mem, peer);
    return 0;
}

static kh_migrate_ops ops_of(kh_api *api)
{
    kh_migrate_ops ops = { api->cluster, ops_owner_move, ops_record, ops_record_get,
                           ops_owner_get, ops_peer_find, ops_qemu_tls, ops_fence };
    return ops;
}

void kh_migrate_routes_restart(kh_api *api)
{
    if (!kh_cluster_enabled(api->cluster))
        return;
    kh_migrate_ops ops = ops_of(api);
    kh_migrate_restart(api->mgr, &ops);
}

void kh_migrate_routes_start(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json_or_empty(req, &err);
    if (!body || kh_schema_check("MigrateSpec", body, "", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    const char *target = json_string_value(json_object_get(body, "target"));
    json_int_t wait = json_integer_value(json_object_get(body, "wait"));
    kh_cluster_member mem;
    if (kh_cluster_writable(api->cluster, &err) < 0 ||
        kh_cluster_member_find(api->cluster, target, &mem, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    if (mem.self) {
        kh_err_set(&err, KH_E_INVALID, "%s is this host", target);
        kh_http_reply_error(req, &err);
        return;
    }
    if (!mem.online) {
        kh_err_set(&err, KH_E_UNAVAILABLE, "host %s is offline", target);
        kh_http_reply_error(req, &err);
        return;
    }
    kh_migrate_peer peer;
    peer_fill(api->cluster, &mem, &peer);
    kh_migrate_ops ops = ops_of(api);
    kh_migrate_opts opts = {
        .max_bandwidth = (uint64_t)json_integer_value(json_object_get(body, "max_bandwidth_mib"))
                         << 20,
        .downtime_ms = (unsigned)json_integer_value(json_object_get(body, "downtime_ms")),
        .max_downtime_ms = (unsigned)json_integer_value(json_object_get(body, "max_downtime_ms")),
        .force = json_is_true(json_object_get(body, "force")),
    };
    kh_task *task = kh_migrate_start(api->mgr, kh_http_req_param(req, "name"), &peer, &opts,
                                     &ops, &err);
    if (!task) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_vm_routes_reply_task(req, api, task, (int)wait);
}

/* The tokens checked against etcd, per vm id: the calls after prepare
 * (status, commit, abort) are answered without reading the record again
 * (the commit is in the guest's downtime). A new migration of the same VM
 * brings a new token: not here, checked, and it replaces the old one. */
static struct {
    char id[37];
    char token[37];
} checked[64];
static unsigned checked_next;

static bool checked_has(const char *id, const char *token)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(checked); i++)
        if (checked[i].id[0] && strcmp(checked[i].id, id) == 0)
            return strcmp(checked[i].token, token) == 0;
    return false;
}

static void checked_add(const char *id, const char *token)
{
    size_t slot = checked_next++ % KH_ARRAY_LEN(checked);
    for (size_t i = 0; i < KH_ARRAY_LEN(checked); i++)
        if (strcmp(checked[i].id, id) == 0)
            slot = i;
    snprintf(checked[slot].id, sizeof(checked[slot].id), "%s", id);
    snprintf(checked[slot].token, sizeof(checked[slot].token), "%s", token);
}

/* The KH-Peer token against the migration record; the record must name
 * this host as the target. */
static bool peer_ok(kh_http_req *req, kh_api *api, const char *id)
{
    kh_err err = KH_ERR_INIT;
    const char *auth = kh_http_req_header(req, "Authorization");
    if (!auth || strncmp(auth, "KH-Peer ", 8) != 0) {
        if (kh_http_req_is_local(req))
            return true;
        kh_err_set(&err, KH_E_UNAUTHORIZED, "needs \"Authorization: KH-Peer <token>\"");
        kh_http_reply_error(req, &err);
        return false;
    }
    if (strlen(auth + 8) < sizeof(checked[0].token) && checked_has(id, auth + 8))
        return true;
    json_t *rec = kh_cluster_migration_get(api->cluster, id, &err);
    if (!rec) {
        kh_http_reply_error(req, &err);
        return false;
    }
    const char *tok = json_string_value(json_object_get(rec, "token"));
    const char *tgt = json_string_value(json_object_get(rec, "target"));
    const char *self = kh_cluster_host_id(api->cluster);
    bool ok = tok && tgt && self && strcmp(tok, auth + 8) == 0 && strcmp(tgt, self) == 0;
    if (ok && strlen(id) < sizeof(checked[0].id) && strlen(tok) < sizeof(checked[0].token))
        checked_add(id, tok);
    json_decref(rec);
    if (!ok) {
        kh_err_set(&err, KH_E_UNAUTHORIZED, "no migration of %s to this host with that token",
                   id);
        kh_http_reply_error(req, &err);
    }
    return ok;
}

void kh_migrate_routes_prepare(kh_http_req *req, void *app)
{
    kh_api *api = app;
    const char *id = kh_http_req_param(req, "id");
    if (!peer_ok(req, api, id))
        return;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json_or_empty(req, &err);
    if (!body || kh_schema_check("MigratePrepare", body, "", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_migrate_ops ops = ops_of(api);
    json_t *out = kh_migrate_target_prepare(api->mgr, id, body, &ops, &err);
    if (!out)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, out);
}

void kh_migrate_routes_status(kh_http_req *req, void *app)
{
    kh_api *api = app;
    const char *id = kh_http_req_param(req, "id");
    if (!peer_ok(req, api, id))
        return;
    kh_err err = KH_ERR_INIT;
    json_t *out = kh_migrate_target_status(api->mgr, id, &err);
    if (!out)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, out);
}

static void end_route(kh_http_req *req, void *app, int (*fn)(kh_manager *, const char *, kh_err *))
{
    kh_api *api = app;
    const char *id = kh_http_req_param(req, "id");
    if (!peer_ok(req, api, id))
        return;
    kh_err err = KH_ERR_INIT;
    if (fn(api->mgr, id, &err) < 0)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

void kh_migrate_routes_commit(kh_http_req *req, void *app)
{
    end_route(req, app, kh_migrate_target_commit);
}

void kh_migrate_routes_abort(kh_http_req *req, void *app)
{
    end_route(req, app, kh_migrate_target_abort);
}
