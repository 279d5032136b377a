/* cluster_routes.c - /api/v1/cluster and /api/v1/hosts: handlers only (the
 * work is in src/cluster). POST /api/v1/cluster/members is the join route:
 * the one route that accepts "Authorization: KH-Join <token>" (auth.c); the
 * token is checked and consumed by kh_cluster_admit_async. The cluster's
 * writes answer from their callbacks: none waits for etcd on the loop. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "cluster/cluster.h"
#include "schema/schema.h"
#include "util/mem.h"

#define TOKEN_TTL_S 3600

/* The body checked against schema (an empty body is {}), or NULL after
 * replying with the error. */
static json_t *body_of(kh_http_req *req, const char *schema)
{
    kh_err err = KH_ERR_INIT;
    size_t len = 0;
    kh_http_req_body(req, &len);
    /* the request keeps its parsed body: take a reference of our own */
    json_t *body = len ? json_incref(kh_http_req_json(req, &err)) : json_object();
    if (body && kh_schema_check(schema, body, "", &err) < 0) {
        json_decref(body);
        body = NULL;
    }
    if (!body)
        kh_http_reply_error(req, &err);
    return body;
}

static void reply_status(kh_http_req *req, kh_api *api, int status, int rc, const kh_err *err)
{
    if (rc < 0)
        kh_http_reply_error(req, err);
    else
        kh_http_reply_json(req, status, kh_cluster_status_json(api->cluster));
}

void kh_cluster_routes_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_http_reply_json(req, 200, kh_cluster_status_json(api->cluster));
}

void kh_cluster_routes_hosts(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_http_reply_json(req, 200, kh_cluster_hosts_json(api->cluster));
}

/* A request answered later, when etcd has (the cluster's writes do not
 * block the loop); req is NULL once the client left. */
typedef struct pending {
    kh_http_req *req;
    kh_api *api;
    json_int_t ttl;
    int status;               /* on success: the cluster's status with it */
} pending;

static void on_abort(kh_http_req *req, void *opaque)
{
    (void)req;
    pending *p = opaque;
    p->req = NULL;
}

static pending *pending_new(kh_http_req *req, kh_api *api)
{
    pending *p = xcalloc(1, sizeof(*p));
    p->req = req;
    p->api = api;
    return p;
}

/* The call started (rc 0): follow the client; else answer err now. */
static void started(kh_http_req *req, pending *p, int rc, const kh_err *err)
{
    if (rc < 0) {
        free(p);
        kh_http_reply_error(req, err);
        return;
    }
    kh_http_req_on_abort(req, on_abort, p);
}

/* The client is still there: stop watching for its leaving; true. */
static bool pending_take(pending *p)
{
    if (!p->req)
        return false;
    kh_http_req_on_abort(p->req, NULL, NULL);
    return true;
}

static void on_token(void *opaque, const char *tok, const kh_err *err)
{
    pending *p = opaque;
    if (pending_take(p) && !tok) {
        kh_http_reply_error(p->req, err);
    } else if (p->req) {
        json_t *st = kh_cluster_status_json(p->api->cluster);
        const char *addr = NULL;
        size_t i;
        json_t *h;
        json_array_foreach(json_object_get(st, "members"), i, h)
            if (json_is_true(json_object_get(h, "self")))
                addr = json_string_value(json_object_get(h, "api_url"));
        kh_http_reply_json(p->req, 201, json_pack("{s:s, s:I, s:s?}", "token", tok, "ttl_s",
                                                  p->ttl, "address", addr));
        json_decref(st);
    }
    free(p);
}

void kh_cluster_routes_token(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *body = body_of(req, "ClusterTokenSpec");
    if (!body)
        return;
    json_int_t ttl = json_integer_value(json_object_get(body, "ttl_s"));
    json_decref(body);
    kh_err err = KH_ERR_INIT;
    pending *p = pending_new(req, api);
    p->ttl = ttl ? ttl : TOKEN_TTL_S;
    if (kh_cluster_token_async(api->cluster, p->ttl, on_token, p, &err) < 0) {
        free(p);
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_req_on_abort(req, on_abort, p);
}

static void on_admitted(void *opaque, json_t *answer, const kh_err *err)
{
    pending *p = opaque;
    if (pending_take(p)) {
        if (answer)
            kh_http_reply_json(p->req, 200, answer);
        else
            kh_http_reply_error(p->req, err);
    } else {
        json_decref(answer);
    }
    free(p);
}

void kh_cluster_routes_admit(kh_http_req *req, void *app)
{
    kh_api *api = app;
    const char *auth = kh_http_req_header(req, "Authorization");
    kh_err err = KH_ERR_INIT;
    if (!auth || strncmp(auth, "KH-Join ", 8) != 0) {
        kh_err_set(&err, KH_E_UNAUTHORIZED, "joining needs \"Authorization: KH-Join <token>\"");
        kh_http_reply_error(req, &err);
        return;
    }
    json_t *body = body_of(req, "ClusterAdmit");
    if (!body)
        return;
    pending *p = pending_new(req, api);
    int rc = kh_cluster_admit_async(api->cluster, auth + 8, body, on_admitted, p, &err);
    json_decref(body);
    started(req, p, rc, &err);
}

/* create, join, leave: the cluster's status when done */
static void on_done(void *opaque, const kh_err *err)
{
    pending *p = opaque;
    if (pending_take(p))
        reply_status(p->req, p->api, p->status, err ? -1 : 0, err);
    free(p);
}

void kh_cluster_routes_create(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *body = body_of(req, "ClusterCreate");
    if (!body)
        return;
    kh_err err = KH_ERR_INIT;
    pending *p = pending_new(req, api);
    p->status = 201;
    int rc = kh_cluster_create_async(api->cluster,
                                     json_string_value(json_object_get(body, "name")), on_done,
                                     p, &err);
    json_decref(body);
    started(req, p, rc, &err);
}

void kh_cluster_routes_join(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *body = body_of(req, "ClusterJoin");
    if (!body)
        return;
    kh_err err = KH_ERR_INIT;
    pending *p = pending_new(req, api);
    p->status = 200;
    int rc = kh_cluster_join_async(api->cluster,
                                   json_string_value(json_object_get(body, "address")),
                                   json_string_value(json_object_get(body, "token")), on_done,
                                   p, &err);
    json_decref(body);
    started(req, p, rc, &err);
}

void kh_cluster_routes_leave(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    pending *p = pending_new(req, api);
    p->status = 200;
    started(req, p, kh_cluster_leave_async(api->cluster, on_done, p, &err), &err);
}

static void on_removed(void *opaque, const kh_err *err)
{
    pending *p = opaque;
    if (pending_take(p)) {
        if (err)
            kh_http_reply_error(p->req, err);
        else
            kh_http_reply_data(p->req, 204, "application/json", "", 0);
    }
    free(p);
}

void kh_cluster_routes_remove(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    pending *p = pending_new(req, api);
    if (kh_cluster_remove_async(api->cluster, kh_http_req_param(req, "host"), on_removed, p,
                                &err) < 0) {
        free(p);
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_req_on_abort(req, on_abort, p);
}

void kh_cluster_routes_ca(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *j = kh_cluster_ca_json(api->cluster, &err);
    if (!j)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, j);
}

void kh_cluster_routes_ca_export(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *body = body_of(req, "ClusterCaExport");
    if (!body)
        return;
    kh_err err = KH_ERR_INIT;
    json_t *j = kh_cluster_ca_export(api->cluster,
                                     json_string_value(json_object_get(body, "passphrase")), &err);
    json_decref(body);
    if (!j)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, j);
}

void kh_cluster_routes_ca_import(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *body = body_of(req, "ClusterCaImport");
    if (!body)
        return;
    kh_err err = KH_ERR_INIT;
    int rc = kh_cluster_ca_import(api->cluster, json_string_value(json_object_get(body, "ca")),
                                  json_string_value(json_object_get(body, "key")),
                                  json_string_value(json_object_get(body, "passphrase")), &err);
    json_decref(body);
    reply_status(req, api, 200, rc, &err);
}

void kh_cluster_routes_crl(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!kh_http_req_peer_verified(req)) {
        kh_err_set(&err, KH_E_FORBIDDEN, "only another host of the cluster (mutual TLS, on "
                   "the host-to-host listener) asks for a signed CRL");
        kh_http_reply_error(req, &err);
        return;
    }
    json_t *body = body_of(req, "ClusterCrlSign");
    if (!body)
        return;
    json_t *j = kh_cluster_crl_sign(api->cluster, json_object_get(body, "serials"), &err);
    json_decref(body);
    if (!j)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, j);
}
