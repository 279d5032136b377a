/* async.c - the cluster-wide writes of API handlers that must not block
 * the loop: a join token (lease grant, then the token's key on it) and
 * `cluster remove` (etcd's member list, the member's removal, then the txn
 * retiring its records), each a chain of kh_etcd_request_async calls; the
 * caller's callback runs on the loop once, with the outcome. Every step is
 * harmless to send twice (a request that may have reached etcd is repeated
 * on the next endpoint): a second grant leaves a lease that expires, a
 * member removed twice answers "member not found" (taken as done), the
 * retire txn is idempotent.
 */
#include "cluster/cluster_int.h"

#include <stdlib.h>
#include <string.h>

#include "cluster/etcd_int.h"
#include "util/log.h"
#include "util/mem.h"

/* ---- cluster token ---- */

typedef struct token_job {
    kh_cluster *c;
    int64_t ttl_s;
    char *token;
    kh_cluster_token_cb cb;
    void *opaque;
} token_job;

static void token_end(token_job *j, const kh_err *err)
{
    if (!err)
        kh_log(KH_LOG_INFO, "cluster.token", "ttl=%lld", (long long)j->ttl_s);
    j->cb(j->opaque, err ? NULL : j->token, err);
    free(j->token);
    free(j);
}

static void on_token_put(json_t *reply, const kh_err *err, void *opaque)
{
    token_end(opaque, reply ? NULL : err);
}

static json_t *put_body(const char *key, const char *value, const char *lease)
{
    char *k = kh_etcd_b64_encode(key, strlen(key));
    char *v = kh_etcd_b64_encode(value, strlen(value));
    json_t *b = json_pack("{s:s, s:s, s:s}", "key", k, "value", v, "lease", lease);
    free(k);
    free(v);
    return b;
}

static void on_token_lease(json_t *reply, const kh_err *err, void *opaque)
{
    token_job *j = opaque;
    const char *id = reply ? json_string_value(json_object_get(reply, "ID")) : NULL;
    const char *gerr = reply ? json_string_value(json_object_get(reply, "error")) : NULL;
    kh_err e = KH_ERR_INIT;
    if (!id || (gerr && *gerr)) {
        if (reply)
            kh_err_set(&e, gerr && *gerr ? KH_E_UNAVAILABLE : KH_E_INTERNAL,
                       "etcd: lease grant: %.400s", gerr && *gerr ? gerr : "no ID in the reply");
        token_end(j, reply ? &e : err);
        return;
    }
    char *key = kh_cluster_token_key(j->token);
    char *value = kh_cluster_token_value(j->c);
    json_t *body = put_body(key, value, id);
    free(key);
    free(value);
    if (kh_etcd_request_async(j->c->etcd, "/v3/kv/put", body, on_token_put, j, &e) < 0)
        token_end(j, &e);
}

int kh_cluster_token_async(kh_cluster *c, int64_t ttl_s, kh_cluster_token_cb cb, void *opaque,
                           kh_err *err)
{
    if (kh_cluster_writable(c, err) < 0)
        return -1;
    char *token = kh_cluster_token_new(c, err);
    if (!token)
        return -1;
    token_job *j = xcalloc(1, sizeof(*j));
    *j = (token_job){ c, ttl_s, token, cb, opaque };
    json_t *body = json_object();
    json_object_set_new(body, "TTL", kh_etcd_jint_new(ttl_s));
    if (kh_etcd_request_async(c->etcd, "/v3/lease/grant", body, on_token_lease, j, err) < 0) {
        free(j->token);
        free(j);
        return -1;
    }
    return 0;
}

/* ---- cluster remove ---- */

typedef struct remove_job {
    kh_cluster *c;
    char *host_id;
    kh_cluster_done_cb cb;
    void *opaque;
} remove_job;

static void remove_end(remove_job *j, const kh_err *err)
{
    if (!err)
        kh_log(KH_LOG_INFO, "cluster.remove", "host_id=%s", j->host_id);
    j->cb(j->opaque, err);
    free(j->host_id);
    free(j);
}

static void on_retired(json_t *reply, const kh_err *err, void *opaque)
{
    remove_end(opaque, reply ? NULL : err);
}

static void retire(remove_job *j)
{
    kh_err e = KH_ERR_INIT;
    if (kh_etcd_request_async(j->c->etcd, "/v3/kv/txn", kh_cluster_retire_txn(j->c, j->host_id),
                              on_retired, j, &e) < 0)
        remove_end(j, &e);
}

static void on_member_removed(json_t *reply, const kh_err *err, void *opaque)
{
    remove_job *j = opaque;
    if (!reply && !strstr(err->msg, "member not found")) {
        kh_err e = *err;
        if (strstr(e.msg, "unhealthy cluster"))
            kh_err_prefix(&e, "etcd does not change its members while one is catching up "
                          "(a member counts 5 s after it is back): try again; ");
        remove_end(j, &e);
        return;
    }
    retire(j);
}

static void on_member_list(json_t *reply, const kh_err *err, void *opaque)
{
    remove_job *j = opaque;
    if (!reply) {
        remove_end(j, err);
        return;
    }
    json_t *ms = json_object_get(reply, "members");
    const char *id = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (name && strcmp(name, j->host_id) == 0)
            id = json_string_value(json_object_get(m, "ID"));
    }
    if (!id || json_array_size(ms) <= 1) { /* not (or no longer) an etcd member */
        retire(j);
        return;
    }
    kh_err e = KH_ERR_INIT;
    if (kh_etcd_request_async(j->c->etcd, "/v3/cluster/member/remove",
                              json_pack("{s:s}", "ID", id), on_member_removed, j, &e) < 0)
        remove_end(j, &e);
}

int kh_cluster_remove_async(kh_cluster *c, const char *host, kh_cluster_done_cb cb,
                            void *opaque, kh_err *err)
{
    char *hid = kh_cluster_remove_target(c, host, err);
    if (!hid)
        return -1;
    remove_job *j = xcalloc(1, sizeof(*j));
    *j = (remove_job){ c, hid, cb, opaque };
    int rc = kh_cluster_is_local(c)
             ? kh_etcd_request_async(c->etcd, "/v3/cluster/member/list", json_object(),
                                     on_member_list, j, err)
             : kh_etcd_request_async(c->etcd, "/v3/kv/txn", kh_cluster_retire_txn(c, hid),
                                     on_retired, j, err);
    if (rc < 0) {
        free(j->host_id);
        free(j);
    }
    return rc;
}
