/* form.c - `cluster create`, `cluster join` and `cluster leave` as jobs
 * that never block the daemon's loop: each step is an asynchronous etcd
 * request (kh_etcd_request_async) or a timer on the loop; the one step
 * that is a chain of blocking calls to another host's API (join: the
 * member's CA, then the admit POST with its retries) runs on a worker
 * thread of libuv's pool.
 *
 * Ownership: a job (struct kh_cluster_form) is the cluster's while it runs
 * (c->forming: at most one; a second create, join or leave is refused).
 * The worker thread gets copies of what it needs and writes only the
 * job's output fields; it touches nothing of the kh_cluster, and the loop
 * reads those fields only in the work's after-callback. Every change of
 * the kh_cluster (its files, its configuration, start and stop) is made on
 * the loop, outside etcd's callbacks: the end of a job is deferred to a
 * timer callback (kh_etcd_free may not run inside one of its callbacks).
 * The job counts what is on its way (busy: etcd requests, the worker); it
 * is freed once it ended and nothing is on its way. kh_cluster_free ends
 * the job under way (kh_cluster_form_abort): its callback runs with a 503,
 * the requests still on their way end with kh_etcd_free.
 *
 * Create: (local etcd) the CA and certificates, start etcd, probe it every
 * 200 ms until it answers (20 s at most), lease grant, the member record
 * and its keeper, the cluster's identity (a txn: ours or the one there),
 * the CA certificate to /kvmhost/ca, then the configuration (SQLite).
 * Join: (worker) the member's CA checked against the token's pin, a CSR,
 * the admit POST; (loop) the certificates, start etcd, probe (30 s), lease,
 * record, configuration. Leave: the retire chain of async.c for this host
 * (etcd member removal, records), then the local teardown.
 */
#include "cluster/cluster_int.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/etcd_int.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

#define PROBE_MS 200
#define CREATE_WAIT_MS 20000
#define JOIN_WAIT_MS 30000
#define JOIN_RETRY_S 30

typedef enum form_kind { FORM_CREATE, FORM_JOIN, FORM_LEAVE } form_kind;

typedef struct kh_cluster_form form;
struct kh_cluster_form {
    kh_cluster *c;
    form_kind kind;
    kh_cluster_done_cb cb;
    void *opaque;
    uv_timer_t *timer;       /* the probes of etcd, the deferred steps */
    uint64_t deadline_ms, sent_ms;
    unsigned wait_ms;
    unsigned busy;           /* etcd requests and the worker on their way */
    int64_t lease;           /* granted, the record not yet written */
    bool started;            /* kh_cluster_start ran: a failure stops it */
    bool probing, ending, ended;
    kh_err err;              /* the outcome (deferred end) */
    char last[600];          /* why the last probe failed */
    /* join: the worker's inputs (copies) and outputs */
    uv_work_t work;
    char *address, *token, *peer, *host_name, *advertise, *host_id;
    char *ca_pem, *key_pem;
    json_t *answer;
    kh_err werr;
};

static void handle_free(uv_handle_t *h)
{
    free(h);
}

static form *form_new(kh_cluster *c, form_kind kind, kh_cluster_done_cb cb, void *opaque)
{
    form *j = xcalloc(1, sizeof(*j));
    j->c = c;
    j->kind = kind;
    j->cb = cb;
    j->opaque = opaque;
    j->timer = xcalloc(1, sizeof(*j->timer));
    uv_timer_init(c->loop, j->timer);
    j->timer->data = j;
    c->forming = j;
    return j;
}

static void form_free(form *j)
{
    free(j->address);
    if (j->token)
        OPENSSL_cleanse(j->token, strlen(j->token));
    free(j->token);
    free(j->peer);
    free(j->host_name);
    free(j->advertise);
    free(j->host_id);
    free(j->ca_pem);
    if (j->key_pem)
        OPENSSL_cleanse(j->key_pem, strlen(j->key_pem));
    free(j->key_pem);
    json_decref(j->answer);
    free(j);
}

/* A request or the worker came back: true when the job already ended (it
 * is freed here once nothing else is on its way): the caller returns. */
static bool release(form *j)
{
    j->busy--;
    if (!j->ended)
        return j->ending;
    if (!j->busy)
        form_free(j);
    return true;
}

/* The callback, once; the timer goes; the job is freed when nothing is on
 * its way. */
static void form_close(form *j, const kh_err *err)
{
    if (j->c)
        j->c->forming = NULL;
    j->ended = true;
    uv_timer_stop(j->timer);
    uv_close((uv_handle_t *)j->timer, handle_free);
    j->timer = NULL;
    j->cb(j->opaque, err);
    if (!j->busy)
        form_free(j);
}

static void leave_teardown(kh_cluster *c, kh_err *err)
{
    char host_id[37];
    snprintf(host_id, sizeof(host_id), "%s", c->conf.host_id);
    bool local = kh_cluster_is_local(c);
    kh_cluster_stop(c, false); /* the retire txn deleted the record on the lease */
    kh_cluster_mirror_clear(c);
    if (kh_cluster_conf_clear(c->store, err) < 0)
        return;
    if (local)
        kh_cluster_drop_etcd_data(c);
    kh_cluster_tls_drop(c);
    kh_log(KH_LOG_INFO, "cluster.leave", "cluster=%s host_id=%s", c->conf.name, host_id);
    kh_cluster_conf_fini(&c->conf);
}

/* The deferred end, on a timer callback of the loop. */
static void on_finish(uv_timer_t *t)
{
    form *j = t->data;
    kh_cluster *c = j->c;
    kh_err *err = &j->err;
    if (!kh_err_isset(err)) {
        if (j->kind == FORM_LEAVE) {
            leave_teardown(c, err);
        } else if (kh_cluster_conf_save(c->store, &c->conf, err) == 0) {
            if (j->kind == FORM_CREATE)
                kh_log(KH_LOG_INFO, "cluster.create", "cluster=%s id=%s host_id=%s mode=%s",
                       c->conf.name, c->conf.cluster_id, c->conf.host_id, c->conf.mode);
            else
                kh_log(KH_LOG_INFO, "cluster.join", "cluster=%s host_id=%s via=%s",
                       c->conf.name, c->conf.host_id, j->address);
        }
    }
    if (kh_err_isset(err) && j->kind != FORM_LEAVE) { /* nothing half-made stays */
        if (j->started) /* (the lease, if any, expires: no blocking revoke) */
            kh_cluster_stop(c, false);
        kh_cluster_conf_fini(&c->conf);
        kh_cluster_tls_drop(c);
        kh_log(KH_LOG_WARN, j->kind == FORM_CREATE ? "cluster.create" : "cluster.join",
               "error=\"%s\"", err->msg);
    }
    form_close(j, kh_err_isset(err) ? err : NULL);
}

/* End the job (err NULL: done): the rest runs from the loop (on_finish). */
static void form_end(form *j, const kh_err *err)
{
    if (j->ending)
        return;
    j->ending = true;
    if (err)
        kh_err_copy(&j->err, err);
    uv_timer_start(j->timer, on_finish, 0, 0);
}

void kh_cluster_form_abort(kh_cluster *c)
{
    form *j = c->forming;
    if (!j)
        return;
    kh_err err = KH_ERR_INIT;
    kh_err_set(&err, KH_E_UNAVAILABLE, "kvmhostd is stopping: the cluster %s did not end",
               j->kind == FORM_CREATE ? "create" : j->kind == FORM_JOIN ? "join" : "leave");
    j->c = NULL;
    c->forming = NULL;
    form_close(j, &err);
}

/* ---- bring-up: etcd, then the member's lease and record ---- */

static void on_info(json_t *reply, const kh_err *err, void *opaque);

static void on_register(uv_timer_t *t)
{
    form *j = t->data;
    kh_cluster *c = j->c;
    kh_err err = KH_ERR_INIT;
    /* etcd answered the grant just now: the record's put is quick */
    if (kh_cluster_register_on(c, j->lease, j->sent_ms, &err) < 0) {
        form_end(j, &err);
        return;
    }
    j->lease = 0;
    kh_cluster_tick_start(c);
    if (j->kind == FORM_JOIN) {
        form_end(j, NULL);
        return;
    }
    /* create: the cluster's identity, ours or (external etcd) the one there */
    kh_cluster_conf *f = &c->conf;
    json_t *info = json_pack("{s:s, s:s, s:f}", "name", f->name, "id", f->cluster_id,
                             "created_at", f->created_at);
    char *text = json_dumps(info, JSON_COMPACT);
    json_decref(info);
    kh_etcd_cmp cmp = { .key = KH_CLUSTER_INFO, .target = KH_ETCD_CREATE,
                        .result = KH_ETCD_EQUAL, .number = 0 };
    kh_etcd_op put = { .type = KH_ETCD_OP_PUT, .key = KH_CLUSTER_INFO, .value = text };
    kh_etcd_op get = { .type = KH_ETCD_OP_GET, .key = KH_CLUSTER_INFO };
    json_t *body = kh_etcd_txn_json(&cmp, 1, &put, 1, &get, 1);
    free(text);
    j->busy++;
    if (kh_etcd_request_async(c->etcd, "/v3/kv/txn", body, on_info, j, &err) < 0) {
        j->busy--;
        form_end(j, &err);
    }
}

static void on_granted(json_t *reply, const kh_err *err, void *opaque)
{
    form *j = opaque;
    if (release(j))
        return;
    j->lease = reply ? kh_etcd_jint(reply, "ID") : 0;
    if (!j->lease) {
        kh_err e = KH_ERR_INIT;
        if (!err)
            kh_err_set(&e, KH_E_INTERNAL, "etcd: lease grant: no ID in the reply");
        form_end(j, err ? err : &e);
        return;
    }
    uv_timer_start(j->timer, on_register, 0, 0); /* out of etcd's callback */
}

static void on_probe(json_t *reply, const kh_err *err, void *opaque)
{
    form *j = opaque;
    j->probing = false;
    if (release(j))
        return;
    kh_cluster *c = j->c;
    char *own = kh_cluster_client_url(c);
    bool local = strcmp(c->conf.mode, "local") == 0;
    /* With a local member, wait for it (the first endpoint): the watches
     * and the keeper then start on it, not on a member that a partition
     * could cut off from this host. */
    if (reply && (!local || strcmp(kh_etcd_endpoint(c->etcd), own) == 0)) {
        uv_timer_stop(j->timer);
        json_t *req = json_pack("{s:o}", "TTL", kh_etcd_jint_new(c->ttl_s));
        kh_err e = KH_ERR_INIT;
        j->sent_ms = kh_now_ms();
        j->busy++;
        if (kh_etcd_request_async(c->etcd, "/v3/lease/grant", req, on_granted, j, &e) < 0) {
            j->busy--;
            form_end(j, &e);
        }
    } else if (reply) {
        snprintf(j->last, sizeof(j->last), "the local etcd member at %s does not answer", own);
    } else {
        snprintf(j->last, sizeof(j->last), "%.500s", err->msg);
    }
    free(own);
}

static void on_probe_timer(uv_timer_t *t)
{
    form *j = t->data;
    kh_cluster *c = j->c;
    if (j->probing || j->ending)
        return;
    kh_err err = KH_ERR_INIT;
    if (kh_now_ms() >= j->deadline_ms) {
        kh_err_set(&err, KH_E_UNAVAILABLE, "etcd did not answer within %u s: %s",
                   j->wait_ms / 1000, j->last[0] ? j->last : "no answer");
        form_end(j, &err);
        return;
    }
    kh_etcd_prefer_first(c->etcd);
    json_t *body = json_pack("{s:o}", "key", kh_etcd_key_json(KH_CLUSTER_INFO));
    j->probing = true;
    j->busy++;
    if (kh_etcd_request_async(c->etcd, "/v3/kv/range", body, on_probe, j, &err) < 0) {
        j->probing = false;
        j->busy--;
        form_end(j, &err);
    }
}

/* Start what c->conf says (etcd, the client) and wait for etcd on the loop. */
static void bring_up(form *j, unsigned wait_ms)
{
    kh_err err = KH_ERR_INIT;
    /* the certificates are there: the member record carries their
     * fingerprint and serial from its first write */
    kh_cluster_tls_load(j->c);
    if (kh_cluster_start(j->c, &err) < 0) {
        j->started = true; /* (a part may have started) */
        form_end(j, &err);
        return;
    }
    j->started = true;
    j->wait_ms = wait_ms;
    j->deadline_ms = kh_now_ms() + wait_ms;
    uv_timer_start(j->timer, on_probe_timer, 0, PROBE_MS);
}

/* ---- create ---- */

static void on_ca_put(json_t *reply, const kh_err *err, void *opaque)
{
    form *j = opaque;
    if (release(j))
        return;
    form_end(j, reply ? NULL : err);
}

static void on_info(json_t *reply, const kh_err *err, void *opaque)
{
    form *j = opaque;
    if (release(j))
        return;
    kh_cluster *c = j->c;
    kh_etcd_txn_result res = { 0 };
    kh_err e = KH_ERR_INIT;
    if (!reply || kh_etcd_txn_parse(reply, &res, &e) < 0) {
        form_end(j, reply ? &e : err);
        return;
    }
    kh_cluster_conf *f = &c->conf;
    bool won = res.succeeded;
    if (!won && res.kvs.n) {
        json_t *have = json_loadb(res.kvs.kv[0].value, res.kvs.kv[0].value_len, 0, NULL);
        const char *name = json_string_value(json_object_get(have, "name"));
        const char *id = json_string_value(json_object_get(have, "id"));
        snprintf(f->name, sizeof(f->name), "%s", name ? name : "?");
        snprintf(f->cluster_id, sizeof(f->cluster_id), "%s", id ? id : "");
        json_decref(have);
    }
    kh_etcd_txn_result_clear(&res);
    if (!won) {
        form_end(j, NULL);
        return;
    }
    /* the cluster is ours: its CA certificate to /kvmhost/ca (its key stays
     * here); with an external etcd, the CA is made now */
    if (!kh_cluster_is_local(c)) {
        if (kh_cluster_make_ca(c, &e) < 0) {
            form_end(j, &e);
            return;
        }
        kh_cluster_tls_load(c); /* the tick's next record write carries it */
    }
    char *path = kh_cluster_tls_path(c, "ca.pem");
    char *ca = kh_fs_read(path, 1 << 20, NULL, &e);
    free(path);
    if (!ca) {
        form_end(j, &e);
        return;
    }
    char *k = kh_etcd_b64_encode(KH_CLUSTER_PREFIX "ca", strlen(KH_CLUSTER_PREFIX "ca"));
    char *v = kh_etcd_b64_encode(ca, strlen(ca));
    free(ca);
    json_t *body = json_pack("{s:s, s:s}", "key", k, "value", v);
    free(k);
    free(v);
    j->busy++;
    if (kh_etcd_request_async(c->etcd, "/v3/kv/put", body, on_ca_put, j, &e) < 0) {
        j->busy--;
        form_end(j, &e);
    }
}

int kh_cluster_create_async(kh_cluster *c, const char *name, kh_cluster_done_cb cb,
                            void *opaque, kh_err *err)
{
    bool local = kh_cluster_is_local(c);
    if (kh_cluster_refuse_member(c, err) < 0 || (local && kh_cluster_need_advertise(c, err) < 0))
        return -1;
    kh_cluster_conf *f = &c->conf;
    snprintf(f->name, sizeof(f->name), "%s", name && *name ? name : "kvmhost");
    kh_uuid_generate(f->cluster_id);
    kh_uuid_generate(f->host_id);
    f->created_at = kh_wall_time();
    c->etcd_tls = local;
    if (local) {
        snprintf(f->mode, sizeof(f->mode), "local");
        /* the certificates first: the local etcd member speaks mutual TLS */
        if (kh_cluster_make_ca(c, err) < 0) {
            kh_cluster_tls_drop(c);
            kh_cluster_conf_fini(f);
            return -1;
        }
        char *peer = kh_cluster_peer_url(c);
        f->initial_cluster = xasprintf("%s=%s", f->host_id, peer);
        free(peer);
        f->endpoints = kh_cluster_client_url(c);
        kh_cluster_drop_etcd_data(c);
    } else {
        snprintf(f->mode, sizeof(f->mode), "external");
        f->endpoints = xstrdup(c->ext_endpoints);
    }
    bring_up(form_new(c, FORM_CREATE, cb, opaque), CREATE_WAIT_MS);
    return 0;
}

/* ---- join ---- */

/* The worker thread: the blocking calls to the member (they touch nothing
 * but the job's own fields). */
static void join_work(uv_work_t *w)
{
    form *j = w->data;
    char *member = kh_cluster_pinned_ca(j->address, j->token, &j->ca_pem, &j->werr);
    char *csr = NULL;
    if (!member || kh_pki_make_csr(j->host_name, &j->key_pem, &csr, &j->werr) < 0) {
        free(member);
        return;
    }
    json_t *body = json_pack("{s:s, s:s, s:s*, s:s, s:s}", "host_id", j->host_id, "name",
                             j->host_name, "peer_url", j->peer, "csr", csr, "address",
                             j->advertise);
    free(csr);
    char *url = xasprintf("%s/api/v1/cluster/members", member);
    free(member);
    json_t *ans = NULL;
    for (unsigned tries = 0; !ans; tries++) {
        kh_err_clear(&j->werr);
        ans = kh_cluster_ask_member(url, j->address, j->token, body, j->ca_pem, NULL, &j->werr);
        if (ans || j->werr.code != KH_E_UNAVAILABLE ||
            !strstr(j->werr.msg, KH_CLUSTER_RETRY_HINT) || tries >= JOIN_RETRY_S)
            break;
        sleep(1); /* the member asked for it (an etcd member joined moments ago) */
    }
    json_decref(body);
    free(url);
    j->answer = ans;
}

/* Back on the loop: the certificates and the configuration, then etcd. */
static void join_after(uv_work_t *w, int status)
{
    form *j = w->data;
    if (release(j))
        return;
    kh_cluster *c = j->c;
    kh_err err = KH_ERR_INIT;
    if (status < 0) {
        kh_err_set(&err, KH_E_INTERNAL, "join: %s", uv_strerror(status));
        form_end(j, &err);
        return;
    }
    if (!j->answer) {
        form_end(j, &j->werr);
        return;
    }
    bool local = kh_cluster_is_local(c);
    const json_t *ans = j->answer;
    const char *cert = json_string_value(json_object_get(ans, "certificate"));
    const char *mode = json_string_value(json_object_get(ans, "mode"));
    const char *ic = json_string_value(json_object_get(ans, "initial_cluster"));
    if (!cert) {
        kh_err_set(&err, KH_E_INTERNAL, "the member issued no host certificate");
    } else if (!mode || (strcmp(mode, "local") == 0) != local || (local && !ic)) {
        kh_err_set(&err, KH_E_INVALID, "the cluster at %s %s an etcd of its own; start this "
                   "daemon %s", j->address, mode && strcmp(mode, "external") == 0
                   ? "does not run" : "runs",
                   local ? "with its --etcd-endpoints" : "without --etcd-endpoints");
    }
    if (kh_err_isset(&err) || kh_cluster_tls_write(c, "ca.pem", j->ca_pem, &err) < 0 ||
        kh_cluster_tls_write(c, "host.pem", cert, &err) < 0 ||
        kh_cluster_tls_write(c, "host.key", j->key_pem, &err) < 0) {
        form_end(j, &err);
        return;
    }
    kh_cluster_conf *f = &c->conf;
    snprintf(f->name, sizeof(f->name), "%s", json_string_value(json_object_get(ans, "cluster")));
    snprintf(f->cluster_id, sizeof(f->cluster_id), "%s",
             json_string_value(json_object_get(ans, "cluster_id")));
    snprintf(f->mode, sizeof(f->mode), "%s", mode);
    f->created_at = kh_wall_time();
    kh_strv *eps = kh_strv_new();
    if (local) {
        f->initial_cluster = xstrdup(ic);
        kh_strv_add_steal(eps, kh_cluster_client_url(c));
        kh_cluster_drop_etcd_data(c);
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ans, "endpoints"), i, e)
        if (json_string_value(e))
            kh_strv_add(eps, json_string_value(e));
    f->endpoints = kh_strv_join(eps, ",");
    kh_strv_free(eps);
    bring_up(j, JOIN_WAIT_MS);
}

int kh_cluster_join_async(kh_cluster *c, const char *address, const char *token,
                          kh_cluster_done_cb cb, void *opaque, kh_err *err)
{
    bool local = kh_cluster_is_local(c);
    if (kh_cluster_refuse_member(c, err) < 0 || (local && kh_cluster_need_advertise(c, err) < 0))
        return -1;
    kh_cluster_conf *f = &c->conf;
    kh_uuid_generate(f->host_id);
    c->etcd_tls = local; /* (a member of a cluster made before TLS cannot join one) */
    form *j = form_new(c, FORM_JOIN, cb, opaque);
    j->address = xstrdup(address);
    j->token = xstrdup(token);
    j->peer = c->advertise ? kh_cluster_peer_url(c) : NULL;
    j->host_name = xstrdup(c->host_name);
    j->advertise = c->advertise ? xstrdup(c->advertise) : NULL;
    j->host_id = xstrdup(f->host_id);
    j->work.data = j;
    j->busy++;
    int rc = uv_queue_work(c->loop, &j->work, join_work, join_after);
    if (rc < 0) {
        j->busy--;
        kh_err_set(err, KH_E_INTERNAL, "join: %s", uv_strerror(rc));
        c->forming = NULL;
        uv_close((uv_handle_t *)j->timer, handle_free);
        form_free(j);
        kh_cluster_conf_fini(f);
        return -1;
    }
    return 0;
}

/* ---- leave ---- */

static void on_left(void *opaque, const kh_err *err)
{
    form *j = opaque;
    if (release(j))
        return;
    form_end(j, err);
}

int kh_cluster_leave_async(kh_cluster *c, kh_cluster_done_cb cb, void *opaque, kh_err *err)
{
    if (kh_cluster_writable(c, err) < 0)
        return -1;
    if (c->forming) {
        kh_err_set(err, KH_E_CONFLICT, "a cluster create, join or leave is under way on this "
                   "host");
        return -1;
    }
    form *j = form_new(c, FORM_LEAVE, cb, opaque);
    j->busy++;
    if (kh_cluster_retire_async(c, c->conf.host_id, on_left, j, err) < 0) {
        c->forming = NULL;
        uv_close((uv_handle_t *)j->timer, handle_free);
        form_free(j);
        return -1;
    }
    return 0;
}
