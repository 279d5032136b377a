/* async.c - the cluster-wide writes of API handlers that must not block
 * the loop: a join token (lease grant, then the token's key on it),
 * `cluster remove` and the etcd half of `cluster leave` (etcd's member
 * list, the member's removal, then the txn retiring its records) and the
 * admit of a joining host (the token read, the certificate signed, the
 * token consumed in a txn, the etcd member added), each a chain of
 * kh_etcd_request_async calls; the
 * caller's callback runs on the loop once, with the outcome. Every step is
 * harmless to send twice (a request that may have reached etcd is repeated
 * on the next endpoint): a second grant leaves a lease that expires, a
 * member removed twice answers "member not found" (taken as done), the
 * retire txn is idempotent.
 */
#include "cluster/cluster_int.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd_int.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/strv.h"

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
    bool self;                /* leave (form.c logs it) */
} remove_job;

static void remove_end(remove_job *j, const kh_err *err)
{
    if (j->self && err) /* still a member: its removed/<id> would be another host's */
        j->c->leaving = false;
    if (!err && !j->self)
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

static int retire_start(kh_cluster *c, char *hid, bool self, kh_cluster_done_cb cb,
                        void *opaque, kh_err *err)
{
    remove_job *j = xcalloc(1, sizeof(*j));
    *j = (remove_job){ c, hid, cb, opaque, self };
    c->leaving = c->leaving || self;
    int rc = kh_cluster_is_local(c)
             ? kh_etcd_request_async(c->etcd, "/v3/cluster/member/list", json_object(),
                                     on_member_list, j, err)
             : kh_etcd_request_async(c->etcd, "/v3/kv/txn", kh_cluster_retire_txn(c, hid),
                                     on_retired, j, err);
    if (rc < 0) {
        if (self)
            c->leaving = false;
        free(j->host_id);
        free(j);
    }
    return rc;
}

int kh_cluster_retire_async(kh_cluster *c, const char *host_id, kh_cluster_done_cb cb,
                            void *opaque, kh_err *err)
{
    return retire_start(c, xstrdup(host_id), true, cb, opaque, err);
}

int kh_cluster_remove_async(kh_cluster *c, const char *host, kh_cluster_done_cb cb,
                            void *opaque, kh_err *err)
{
    char *hid = kh_cluster_remove_target(c, host, err);
    return hid ? retire_start(c, hid, false, cb, opaque, err) : -1;
}

/* ---- admit: the member's side of a join ---- */

typedef struct admit_job {
    kh_cluster *c;
    char *token, *host_id, *peer, *name, *csr, *address;
    char *cert, *ca;          /* signed once the token is known valid */
    json_t *out;              /* the answer being built */
    kh_err give_back;         /* the error once the token is given back */
    kh_cluster_admit_cb cb;
    void *opaque;
} admit_job;

static void admit_job_free(admit_job *j)
{
    if (!j)
        return;
    OPENSSL_cleanse(j->token, strlen(j->token));
    free(j->token);
    free(j->host_id);
    free(j->peer);
    free(j->name);
    free(j->csr);
    free(j->address);
    free(j->cert);
    free(j->ca);
    json_decref(j->out);
    free(j);
}

static void admit_end(admit_job *j, json_t *out, const kh_err *err)
{
    j->cb(j->opaque, out, out ? NULL : err);
    admit_job_free(j);
}

static void token_invalid(admit_job *j)
{
    kh_err e = KH_ERR_INIT;
    kh_err_set(&e, KH_E_UNAUTHORIZED, "the join token is not valid (unknown, used or "
               "expired): make one with 'kvmhost cluster token' on a member");
    admit_end(j, NULL, &e);
}

static void on_given_back(json_t *reply, const kh_err *err, void *opaque)
{
    (void)reply;
    (void)err;
    admit_job *j = opaque;
    admit_end(j, NULL, &j->give_back);
}

static void on_give_back_lease(json_t *reply, const kh_err *err, void *opaque)
{
    (void)err;
    admit_job *j = opaque;
    const char *id = reply ? json_string_value(json_object_get(reply, "ID")) : NULL;
    kh_err e = KH_ERR_INIT;
    char *key = kh_cluster_token_key(j->token);
    json_t *body = id ? put_body(key, "{}", id) : NULL;
    free(key);
    if (!body || kh_etcd_request_async(j->c->etcd, "/v3/kv/put", body, on_given_back, j, &e) < 0)
        admit_end(j, NULL, &j->give_back);
}

static void on_member_added(json_t *reply, const kh_err *err, void *opaque)
{
    admit_job *j = opaque;
    if (!reply && strstr(err->msg, "unhealthy cluster")) {
        /* etcd counts a member that joined moments ago only after 5 s: give
         * the token back (on a short lease) and let the joiner retry */
        kh_err_set(&j->give_back, KH_E_UNAVAILABLE, "etcd cannot add a member yet (a member "
                   "that joined moments ago counts after 5 s): " KH_CLUSTER_RETRY_HINT);
        kh_err e = KH_ERR_INIT;
        json_t *body = json_object();
        json_object_set_new(body, "TTL", kh_etcd_jint_new(120));
        if (kh_etcd_request_async(j->c->etcd, "/v3/lease/grant", body, on_give_back_lease, j,
                                  &e) < 0)
            admit_end(j, NULL, &j->give_back);
        return;
    }
    if (!reply) {
        admit_end(j, NULL, err);
        return;
    }
    json_t *eps = json_array();
    const char *new_id = json_string_value(json_object_get(json_object_get(reply, "member"),
                                                           "ID"));
    kh_strv *initial = kh_strv_new();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(reply, "members"), i, m) {
        const char *id = json_string_value(json_object_get(m, "ID"));
        const char *name = json_string_value(json_object_get(m, "name"));
        bool is_new = id && new_id && strcmp(id, new_id) == 0;
        json_t *purls = json_object_get(m, "peerURLs");
        for (size_t k = 0; k < json_array_size(purls); k++)
            kh_strv_addf(initial, "%s=%s", is_new ? j->host_id : name ? name : "",
                         json_string_value(json_array_get(purls, k)));
        json_t *curls = json_object_get(m, "clientURLs");
        for (size_t k = 0; k < json_array_size(curls); k++)
            json_array_append(eps, json_array_get(curls, k));
    }
    char *ic = kh_strv_join(initial, ",");
    kh_strv_free(initial);
    json_t *out = j->out;
    j->out = NULL;
    json_object_set_new(out, "initial_cluster", json_string(ic));
    json_object_set_new(out, "endpoints", eps);
    free(ic);
    kh_log(KH_LOG_INFO, "cluster.admit", "host_id=%s name=%s peer=%s", j->host_id,
           j->name ? j->name : "", j->peer ? j->peer : "");
    admit_end(j, out, NULL);
}

static void on_token_consumed(json_t *reply, const kh_err *err, void *opaque)
{
    admit_job *j = opaque;
    kh_etcd_txn_result res = { 0 };
    kh_err e = KH_ERR_INIT;
    if (!reply || kh_etcd_txn_parse(reply, &res, &e) < 0) {
        admit_end(j, NULL, reply ? &e : err);
        return;
    }
    bool ok = res.succeeded;
    kh_etcd_txn_result_clear(&res);
    if (!ok) { /* another joiner consumed it first */
        token_invalid(j);
        return;
    }
    kh_cluster *c = j->c;
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s}", "cluster", c->conf.name, "cluster_id",
                            c->conf.cluster_id, "mode", c->conf.mode, "certificate", j->cert,
                            "ca", j->ca);
    if (!kh_cluster_is_local(c)) {
        json_object_set_new(out, "endpoints", json_pack("[s]", c->conf.endpoints));
        kh_log(KH_LOG_INFO, "cluster.admit", "host_id=%s name=%s mode=external", j->host_id,
               j->name ? j->name : "");
        admit_end(j, out, NULL);
        return;
    }
    j->out = out;
    if (kh_etcd_request_async(c->etcd, "/v3/cluster/member/add",
                              json_pack("{s:[s]}", "peerURLs", j->peer), on_member_added, j,
                              &e) < 0)
        admit_end(j, NULL, &e);
}

/* The token is there: sign the host's certificate, then consume the token
 * (exactly one joiner can). */
static void on_token_read(json_t *reply, const kh_err *err, void *opaque)
{
    admit_job *j = opaque;
    if (!reply) {
        admit_end(j, NULL, err);
        return;
    }
    if (json_array_size(json_object_get(reply, "kvs")) == 0) {
        token_invalid(j);
        return;
    }
    kh_cluster *c = j->c;
    kh_err e = KH_ERR_INIT;
    char *ca_key_path = kh_cluster_tls_path(c, "ca.key"), *ca_path = kh_cluster_tls_path(c, "ca.pem");
    char *ca_key = kh_fs_read(ca_key_path, 1 << 20, NULL, NULL);
    j->ca = kh_fs_read(ca_path, 1 << 20, NULL, NULL);
    free(ca_key_path);
    free(ca_path);
    if (!ca_key || !j->ca)
        kh_err_set(&e, KH_E_CONFLICT, "this host does not hold the cluster CA key: join "
                   "through the host that created the cluster");
    else if (!j->csr || !j->address)
        kh_err_set(&e, KH_E_INVALID, "csr and address are required (a host certificate is "
                   "issued at join)");
    else
        j->cert = kh_pki_sign(j->ca, ca_key, j->csr, j->address, &e);
    if (ca_key)
        OPENSSL_cleanse(ca_key, strlen(ca_key));
    free(ca_key);
    if (!j->cert) {
        admit_end(j, NULL, &e);
        return;
    }
    char *key = kh_cluster_token_key(j->token);
    kh_etcd_cmp cmp = { .key = key, .target = KH_ETCD_VERSION, .result = KH_ETCD_GREATER,
                        .number = 0 };
    kh_etcd_op del = { .type = KH_ETCD_OP_DELETE, .key = key };
    json_t *body = kh_etcd_txn_json(&cmp, 1, &del, 1, NULL, 0);
    free(key);
    if (kh_etcd_request_async(c->etcd, "/v3/kv/txn", body, on_token_consumed, j, &e) < 0)
        admit_end(j, NULL, &e);
}

static char *str_dup(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? xstrdup(s) : NULL;
}

int kh_cluster_admit_async(kh_cluster *c, const char *token, const json_t *body,
                           kh_cluster_admit_cb cb, void *opaque, kh_err *err)
{
    if (kh_cluster_writable(c, err) < 0)
        return -1;
    const char *host_id = json_string_value(json_object_get(body, "host_id"));
    const char *peer = json_string_value(json_object_get(body, "peer_url"));
    if (!host_id || !kh_check_uuid(host_id)) {
        kh_err_set(err, KH_E_INVALID, "host_id: must be a uuid");
        return -1;
    }
    const char *scheme = c->etcd_tls ? "https://" : "http://";
    if (kh_cluster_is_local(c) && (!peer || strncmp(peer, scheme, strlen(scheme)) != 0)) {
        kh_err_set(err, KH_E_INVALID, "peer_url: must be an %s URL (this cluster runs its own "
                   "etcd members%s)", scheme, c->etcd_tls ? ", over mutual TLS" : "");
        return -1;
    }
    admit_job *j = xcalloc(1, sizeof(*j));
    j->c = c;
    j->token = xstrdup(token);
    j->host_id = xstrdup(host_id);
    j->peer = peer ? xstrdup(peer) : NULL;
    j->name = str_dup(body, "name");
    j->csr = str_dup(body, "csr");
    j->address = str_dup(body, "address");
    j->cb = cb;
    j->opaque = opaque;
    /* A token that is not (or no longer) valid is told so first; it is
     * consumed only once the certificate is signed. */
    char *key = kh_cluster_token_key(token);
    json_t *req = json_pack("{s:o}", "key", kh_etcd_key_json(key));
    free(key);
    if (kh_etcd_request_async(c->etcd, "/v3/kv/range", req, on_token_read, j, err) < 0) {
        admit_job_free(j);
        return -1;
    }
    return 0;
}
