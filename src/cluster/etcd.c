/* etcd.c - the etcd v3 JSON gateway client (etcd.h): the client object, its
 * transport (endpoints, failover, TLS, timeouts), the gateway's base64 and
 * JSON forms, and the synchronous KV, txn and lease calls. The asynchronous
 * watch and keep-alive live in etcd_loop.c.
 */
#include "cluster/etcd.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd_int.h"
#include "util/mem.h"

#define DEFAULT_TIMEOUT_MS 2000
#define DEFAULT_CONNECT_MS 1000
#define OWNER_KEY_MAX 512

/* ---- small pieces ---- */

char *kh_etcd_b64_encode(const void *data, size_t len)
{
    char *out = xmalloc(4 * ((len + 2) / 3) + 1);
    /* EVP_EncodeBlock takes an int length: values are far below 2 GiB */
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

char *kh_etcd_b64_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    if (n % 4 != 0)
        return NULL;
    char *out = xmalloc(n / 4 * 3 + 1);
    int got = n ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n) : 0;
    if (got < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes */
    size_t pad = 0;
    if (n >= 1 && s[n - 1] == '=')
        pad++;
    if (n >= 2 && s[n - 2] == '=')
        pad++;
    size_t m = (size_t)got - pad;
    out[m] = '\0';
    if (len)
        *len = m;
    return out;
}

int64_t kh_etcd_jint(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v))
        return (int64_t)strtoll(json_string_value(v), NULL, 10);
    return 0;
}

json_t *kh_etcd_jint_new(int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return json_string(buf);
}

static json_t *b64_json(const void *data, size_t len)
{
    char *s = kh_etcd_b64_encode(data, len);
    json_t *j = json_string(s);
    free(s);
    return j;
}

json_t *kh_etcd_key_json(const char *key)
{
    return b64_json(key, strlen(key));
}

json_t *kh_etcd_prefix_end_json(const char *key)
{
    /* the smallest key greater than every key that starts with key: the
     * prefix with its last byte below 0xff incremented */
    size_t n = strlen(key);
    unsigned char *end = (unsigned char *)xstrdup(key);
    while (n > 0 && end[n - 1] == 0xff)
        n--;
    json_t *j;
    if (n == 0) {
        j = b64_json("", 1); /* "\0": every key from key on */
    } else {
        end[n - 1]++;
        j = b64_json(end, n);
    }
    free(end);
    return j;
}

static char *b64_field(const json_t *obj, const char *name, size_t *len, kh_err *err)
{
    const json_t *v = json_object_get(obj, name);
    if (!v) {
        if (len)
            *len = 0;
        return xstrdup("");
    }
    char *out = json_is_string(v) ? kh_etcd_b64_decode(json_string_value(v), len) : NULL;
    if (!out)
        kh_err_set(err, KH_E_INTERNAL, "etcd: the %s in a reply is not base64", name);
    return out;
}

int kh_etcd_kv_parse(const json_t *j, kh_etcd_kv *kv, kh_err *err)
{
    memset(kv, 0, sizeof(*kv));
    if (!json_is_object(j)) {
        kh_err_set(err, KH_E_INTERNAL, "etcd: a key-value in a reply is not an object");
        return -1;
    }
    kv->key = b64_field(j, "key", NULL, err);
    kv->value = b64_field(j, "value", &kv->value_len, err);
    if (!kv->key || !kv->value) {
        kh_etcd_kv_clear(kv);
        return -1;
    }
    kv->create_revision = kh_etcd_jint(j, "create_revision");
    kv->mod_revision = kh_etcd_jint(j, "mod_revision");
    kv->version = kh_etcd_jint(j, "version");
    kv->lease = kh_etcd_jint(j, "lease");
    return 0;
}

void kh_etcd_kv_clear(kh_etcd_kv *kv)
{
    if (!kv)
        return;
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof(*kv));
}

void kh_etcd_kvs_clear(kh_etcd_kvs *kvs)
{
    if (!kvs)
        return;
    for (size_t i = 0; i < kvs->n; i++)
        kh_etcd_kv_clear(&kvs->kv[i]);
    free(kvs->kv);
    memset(kvs, 0, sizeof(*kvs));
}

/* Append the kvs of a range reply to out. */
static int kvs_append(kh_etcd_kvs *out, const json_t *reply, kh_err *err)
{
    const json_t *arr = json_object_get(reply, "kvs");
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    out->kv = xreallocarray(out->kv, out->n + n, sizeof(*out->kv));
    for (size_t i = 0; i < n; i++) {
        if (kh_etcd_kv_parse(json_array_get(arr, i), &out->kv[out->n], err) < 0)
            return -1;
        out->n++;
    }
    return 0;
}

/* ---- errors ---- */

void kh_etcd_grpc_err(kh_err *err, int64_t code, const char *msg)
{
    kh_code c;
    switch (code) {
    case 3: /* INVALID_ARGUMENT */
        c = KH_E_INVALID;
        break;
    case 4:  /* DEADLINE_EXCEEDED */
    case 14: /* UNAVAILABLE: no leader, request timed out, stopping */
        c = KH_E_UNAVAILABLE;
        break;
    case 5: /* NOT_FOUND: lease */
        c = KH_E_NOTFOUND;
        break;
    case 6:  /* ALREADY_EXISTS */
    case 9:  /* FAILED_PRECONDITION */
    case 11: /* OUT_OF_RANGE: compacted or future revision */
        c = KH_E_CONFLICT;
        break;
    case 7: /* PERMISSION_DENIED */
        c = KH_E_FORBIDDEN;
        break;
    case 8: /* RESOURCE_EXHAUSTED: too many requests, no space */
        c = KH_E_BUSY;
        break;
    case 16: /* UNAUTHENTICATED */
        c = KH_E_UNAUTHORIZED;
        break;
    default:
        c = KH_E_INTERNAL;
        break;
    }
    kh_err_set(err, c, "etcd: %.400s", msg && *msg ? msg : "error");
}

json_t *kh_etcd_reply_parse(long status, const char *body, size_t len, kh_err *err)
{
    json_error_t jerr;
    json_t *j = json_loadb(body ? body : "", len, 0, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        if (status == 503 || status == 504)
            kh_err_set(err, KH_E_UNAVAILABLE, "etcd: HTTP %ld", status);
        else
            kh_err_set(err, KH_E_INTERNAL, "etcd: HTTP %ld, a reply that is not a JSON object",
                       status);
        return NULL;
    }
    /* a unary error: {"error": "...", "code": N}; a stream's: {"error": {...}} */
    const json_t *e = json_object_get(j, "error");
    if (json_is_object(e)) {
        kh_etcd_grpc_err(err, kh_etcd_jint(e, "grpc_code") ? kh_etcd_jint(e, "grpc_code")
                                                           : kh_etcd_jint(e, "code"),
                         json_string_value(json_object_get(e, "message")));
        json_decref(j);
        return NULL;
    }
    if (e || status < 200 || status > 299) {
        const char *msg = json_string_value(json_object_get(j, "message"));
        kh_etcd_grpc_err(err, kh_etcd_jint(j, "code"), msg ? msg : json_string_value(e));
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ---- the client ---- */

kh_etcd *kh_etcd_new(const kh_etcd_opts *opts, uv_loop_t *loop, kh_err *err)
{
    if (!opts || opts->n_endpoints == 0 || !opts->endpoints) {
        kh_err_set(err, KH_E_INVALID, "etcd: no endpoint");
        return NULL;
    }
    for (size_t i = 0; i < opts->n_endpoints; i++) {
        const char *ep = opts->endpoints[i];
        if (!ep || (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)) {
            kh_err_set(err, KH_E_INVALID, "etcd: endpoint %.200s: must be an http:// or "
                       "https:// URL", ep ? ep : "(null)");
            return NULL;
        }
    }
    static bool curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = true;
    }
    kh_etcd *e = xcalloc(1, sizeof(*e));
    e->endpoints = xcalloc(opts->n_endpoints, sizeof(char *));
    for (size_t i = 0; i < opts->n_endpoints; i++) {
        const char *ep = opts->endpoints[i];
        size_t n = strlen(ep);
        while (n > 0 && ep[n - 1] == '/')
            n--;
        e->endpoints[i] = xstrndup(ep, n);
    }
    e->n_endpoints = opts->n_endpoints;
    e->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    e->connect_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms
                    : e->timeout_ms < DEFAULT_CONNECT_MS ? e->timeout_ms : DEFAULT_CONNECT_MS;
    e->ca_file = xstrdup(opts->ca_file);
    e->cert_file = xstrdup(opts->cert_file);
    e->key_file = xstrdup(opts->key_file);
    e->headers = curl_slist_append(NULL, "Content-Type: application/json");
    e->easy = curl_easy_init();
    if (!e->headers || !e->easy) {
        kh_err_set(err, KH_E_INTERNAL, "etcd: cannot initialise libcurl");
        kh_etcd_free(e);
        return NULL;
    }
    e->loop = loop;
    if (loop && kh_etcd_loop_init(e, err) < 0) {
        kh_etcd_free(e);
        return NULL;
    }
    return e;
}

void kh_etcd_free(kh_etcd *e)
{
    if (!e)
        return;
    kh_etcd_loop_fini(e);
    for (size_t i = 0; i < e->n_endpoints; i++)
        free(e->endpoints[i]);
    free(e->endpoints);
    free(e->ca_file);
    free(e->cert_file);
    free(e->key_file);
    curl_slist_free_all(e->headers);
    if (e->easy)
        curl_easy_cleanup(e->easy);
    kh_buf_release(&e->reply);
    free(e);
}

void kh_etcd_prefer_first(kh_etcd *e)
{
    e->cur = 0;
}

const char *kh_etcd_endpoint(const kh_etcd *e)
{
    return e->endpoints[e->cur];
}

void kh_etcd_easy_setup(kh_etcd *e, CURL *c, size_t ep, const char *path, const char *body,
                        long timeout_ms)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", e->endpoints[ep], path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->connect_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "kvmhostd");
    curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
    if (e->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file);
    if (e->cert_file)
        curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert_file);
    if (e->key_file)
        curl_easy_setopt(c, CURLOPT_SSLKEY, e->key_file);
}

/* POST body (stolen) to path, with failover. may_repeat: the request may be
 * sent again to another endpoint even if the first one may have received it
 * (everything but a txn). The parsed reply, or NULL with err set. */
static json_t *call(kh_etcd *e, const char *path, json_t *body, bool may_repeat, kh_err *err)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) {
        kh_err_set(err, KH_E_INTERNAL, "etcd: cannot encode a request");
        return NULL;
    }
    kh_err last = KH_ERR_INIT;
    json_t *reply = NULL;
    for (size_t i = 0; i < e->n_endpoints; i++) {
        size_t ep = (e->cur + i) % e->n_endpoints;
        char errbuf[CURL_ERROR_SIZE] = "";
        kh_buf_reset(&e->reply);
        curl_easy_reset(e->easy);
        kh_etcd_easy_setup(e, e->easy, ep, path, text, e->timeout_ms);
        curl_easy_setopt(e->easy, CURLOPT_WRITEFUNCTION, kh_buf_curl_write);
        curl_easy_setopt(e->easy, CURLOPT_WRITEDATA, &e->reply);
        curl_easy_setopt(e->easy, CURLOPT_ERRORBUFFER, errbuf);
        CURLcode rc = curl_easy_perform(e->easy);
        if (rc != CURLE_OK) {
            /* sent (maybe): connected, and past the TLS handshake on https */
            curl_off_t connected = 0;
            curl_easy_getinfo(e->easy, strncmp(e->endpoints[ep], "https://", 8) == 0
                                           ? CURLINFO_APPCONNECT_TIME_T
                                           : CURLINFO_CONNECT_TIME_T, &connected);
            kh_err_clear(&last);
            kh_err_set(&last, KH_E_UNAVAILABLE, "etcd unreachable: %s: %s", e->endpoints[ep],
                       errbuf[0] ? errbuf : curl_easy_strerror(rc));
            if (connected > 0 && !may_repeat) {
                kh_err_prefix(&last, "the outcome of %s is unknown: ", path);
                break;
            }
            continue;
        }
        long status = 0;
        curl_easy_getinfo(e->easy, CURLINFO_RESPONSE_CODE, &status);
        kh_err_clear(&last);
        reply = kh_etcd_reply_parse(status, e->reply.p, e->reply.len, &last);
        /* a member without a leader refuses before proposing: ask another */
        if (!reply && last.code == KH_E_UNAVAILABLE &&
            (may_repeat || strstr(last.msg, "no leader")))
            continue;
        e->cur = ep;
        break;
    }
    free(text);
    if (!reply)
        kh_err_copy(err, &last);
    return reply;
}

json_t *kh_etcd_request(kh_etcd *e, const char *path, json_t *body, bool may_repeat,
                        kh_err *err)
{
    return call(e, path, body, may_repeat, err);
}

/* ---- KV ---- */

static json_t *range_request(const char *key, bool prefix, const char *range_end, int64_t limit)
{
    json_t *req = json_object();
    json_object_set_new(req, "key", kh_etcd_key_json(key));
    if (range_end)
        json_object_set_new(req, "range_end", kh_etcd_key_json(range_end));
    else if (prefix)
        json_object_set_new(req, "range_end", kh_etcd_prefix_end_json(key));
    if (limit > 0)
        json_object_set_new(req, "limit", kh_etcd_jint_new(limit));
    return req;
}

int kh_etcd_get(kh_etcd *e, const char *key, kh_etcd_kv *out, int64_t *revision, kh_err *err)
{
    kh_etcd_kv_clear(out);
    json_t *reply = call(e, "/v3/kv/range", range_request(key, false, NULL, 0), true, err);
    if (!reply)
        return -1;
    if (revision)
        *revision = kh_etcd_jint(json_object_get(reply, "header"), "revision");
    const json_t *arr = json_object_get(reply, "kvs");
    int rc = 0;
    if (json_array_size(arr) > 0)
        rc = kh_etcd_kv_parse(json_array_get(arr, 0), out, err) < 0 ? -1 : 1;
    json_decref(reply);
    return rc;
}

int kh_etcd_range(kh_etcd *e, const char *key, const char *range_end, int64_t limit,
                  kh_etcd_kvs *out, kh_err *err)
{
    kh_etcd_kvs_clear(out);
    json_t *reply = call(e, "/v3/kv/range", range_request(key, !range_end, range_end, limit),
                         true, err);
    if (!reply)
        return -1;
    out->revision = kh_etcd_jint(json_object_get(reply, "header"), "revision");
    out->count = kh_etcd_jint(reply, "count");
    out->more = json_is_true(json_object_get(reply, "more"));
    int rc = kvs_append(out, reply, err);
    json_decref(reply);
    if (rc < 0)
        kh_etcd_kvs_clear(out);
    return rc;
}

static json_t *put_request(const char *key, const char *value, size_t len, int64_t lease)
{
    json_t *req = json_object();
    json_object_set_new(req, "key", kh_etcd_key_json(key));
    json_object_set_new(req, "value", b64_json(value, len == (size_t)-1 ? strlen(value) : len));
    if (lease)
        json_object_set_new(req, "lease", kh_etcd_jint_new(lease));
    return req;
}

int kh_etcd_put(kh_etcd *e, const char *key, const char *value, size_t len, int64_t lease,
                int64_t *revision, kh_err *err)
{
    json_t *reply = call(e, "/v3/kv/put", put_request(key, value, len, lease), true, err);
    if (!reply)
        return -1;
    if (revision)
        *revision = kh_etcd_jint(json_object_get(reply, "header"), "revision");
    json_decref(reply);
    return 0;
}

int kh_etcd_delete(kh_etcd *e, const char *key, bool prefix, int64_t *deleted, kh_err *err)
{
    json_t *req = json_object();
    json_object_set_new(req, "key", kh_etcd_key_json(key));
    if (prefix)
        json_object_set_new(req, "range_end", kh_etcd_prefix_end_json(key));
    json_t *reply = call(e, "/v3/kv/deleterange", req, true, err);
    if (!reply)
        return -1;
    if (deleted)
        *deleted = kh_etcd_jint(reply, "deleted");
    json_decref(reply);
    return 0;
}

/* ---- txn ---- */

static json_t *cmp_json(const kh_etcd_cmp *c)
{
    static const char *const targets[] = { "VERSION", "CREATE", "MOD", "VALUE", "LEASE" };
    static const char *const results[] = { "EQUAL", "GREATER", "LESS", "NOT_EQUAL" };
    static const char *const fields[] = { "version", "create_revision", "mod_revision", "value",
                                          "lease" };
    json_t *j = json_object();
    json_object_set_new(j, "key", kh_etcd_key_json(c->key));
    json_object_set_new(j, "target", json_string(targets[c->target]));
    json_object_set_new(j, "result", json_string(results[c->result]));
    if (c->target == KH_ETCD_VALUE)
        json_object_set_new(j, "value", b64_json(c->value ? c->value : "",
                                                 c->value ? strlen(c->value) : 0));
    else
        json_object_set_new(j, fields[c->target], kh_etcd_jint_new(c->number));
    return j;
}

static json_t *op_json(const kh_etcd_op *op)
{
    json_t *req, *j = json_object();
    switch (op->type) {
    case KH_ETCD_OP_PUT:
        req = put_request(op->key, op->value ? op->value : "", (size_t)-1, op->lease);
        json_object_set_new(j, "request_put", req);
        break;
    case KH_ETCD_OP_DELETE:
        req = json_object();
        json_object_set_new(req, "key", kh_etcd_key_json(op->key));
        if (op->prefix)
            json_object_set_new(req, "range_end", kh_etcd_prefix_end_json(op->key));
        json_object_set_new(j, "request_delete_range", req);
        break;
    case KH_ETCD_OP_GET:
    default:
        json_object_set_new(j, "request_range", range_request(op->key, op->prefix, NULL, 0));
        break;
    }
    return j;
}

static json_t *ops_json(const kh_etcd_op *ops, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, op_json(&ops[i]));
    return arr;
}

json_t *kh_etcd_txn_json(const kh_etcd_cmp *cmp, size_t n_cmp, const kh_etcd_op *ok,
                         size_t n_ok, const kh_etcd_op *fail, size_t n_fail)
{
    json_t *req = json_object();
    json_t *carr = json_array();
    for (size_t i = 0; i < n_cmp; i++)
        json_array_append_new(carr, cmp_json(&cmp[i]));
    json_object_set_new(req, "compare", carr);
    json_object_set_new(req, "success", ops_json(ok, n_ok));
    json_object_set_new(req, "failure", ops_json(fail, n_fail));
    return req;
}

int kh_etcd_txn(kh_etcd *e, const kh_etcd_cmp *cmp, size_t n_cmp, const kh_etcd_op *ok,
                size_t n_ok, const kh_etcd_op *fail, size_t n_fail, kh_etcd_txn_result *res,
                kh_err *err)
{
    kh_etcd_txn_result_clear(res);
    json_t *req = kh_etcd_txn_json(cmp, n_cmp, ok, n_ok, fail, n_fail);
    json_t *reply = call(e, "/v3/kv/txn", req, false, err);
    if (!reply)
        return -1;
    int rc = kh_etcd_txn_parse(reply, res, err);
    json_decref(reply);
    return rc;
}

int kh_etcd_txn_parse(const json_t *reply, kh_etcd_txn_result *res, kh_err *err)
{
    kh_etcd_txn_result_clear(res);
    res->succeeded = json_is_true(json_object_get(reply, "succeeded"));
    res->revision = kh_etcd_jint(json_object_get(reply, "header"), "revision");
    res->kvs.revision = res->revision;
    const json_t *arr = json_object_get(reply, "responses");
    int rc = 0;
    for (size_t i = 0; i < json_array_size(arr) && rc == 0; i++) {
        const json_t *r = json_object_get(json_array_get(arr, i), "response_range");
        if (r)
            rc = kvs_append(&res->kvs, r, err);
    }
    res->kvs.count = (int64_t)res->kvs.n;
    if (rc < 0)
        kh_etcd_txn_result_clear(res);
    return rc;
}

void kh_etcd_txn_result_clear(kh_etcd_txn_result *res)
{
    if (!res)
        return;
    kh_etcd_kvs_clear(&res->kvs);
    memset(res, 0, sizeof(*res));
}

int kh_etcd_cas(kh_etcd *e, const char *key, int64_t expect_rev, const char *value,
                int64_t lease, int64_t *rev, kh_etcd_kv *current, kh_err *err)
{
    kh_etcd_cmp cmp = { .key = key, .target = KH_ETCD_MOD, .result = KH_ETCD_EQUAL,
                        .number = expect_rev };
    kh_etcd_op put = { .type = KH_ETCD_OP_PUT, .key = key, .value = value, .lease = lease };
    kh_etcd_op get = { .type = KH_ETCD_OP_GET, .key = key };
    kh_etcd_txn_result res = { 0 };
    if (current)
        kh_etcd_kv_clear(current);
    if (kh_etcd_txn(e, &cmp, 1, &put, 1, &get, 1, &res, err) < 0)
        return -1;
    int rc = res.succeeded ? 1 : 0;
    if (res.succeeded && rev)
        *rev = res.revision;
    if (!res.succeeded && current && res.kvs.n > 0) {
        *current = res.kvs.kv[0];
        memset(&res.kvs.kv[0], 0, sizeof(res.kvs.kv[0]));
    }
    kh_etcd_txn_result_clear(&res);
    return rc;
}

int kh_etcd_set_owner(kh_etcd *e, const char *vm_id, const char *host_id, int64_t expect_rev,
                      int64_t *rev, kh_etcd_kv *current, kh_err *err)
{
    char key[OWNER_KEY_MAX];
    if (!vm_id || !*vm_id || strchr(vm_id, '/') ||
        (size_t)snprintf(key, sizeof(key), "/kvmhost/vms/%s/owner", vm_id) >= sizeof(key)) {
        kh_err_set(err, KH_E_INVALID, "etcd: owner: a VM id must be a non-empty name without '/'");
        return -1;
    }
    return kh_etcd_cas(e, key, expect_rev, host_id, 0, rev, current, err);
}

/* ---- leases ---- */

static json_t *lease_request(int64_t id)
{
    json_t *req = json_object();
    json_object_set_new(req, "ID", kh_etcd_jint_new(id));
    return req;
}

int kh_etcd_lease_grant(kh_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_ttl,
                        kh_err *err)
{
    json_t *req = json_object();
    json_object_set_new(req, "TTL", kh_etcd_jint_new(ttl_s));
    json_t *reply = call(e, "/v3/lease/grant", req, true, err);
    if (!reply)
        return -1;
    int rc = 0;
    const char *gerr = json_string_value(json_object_get(reply, "error"));
    if (gerr && *gerr) {
        kh_err_set(err, KH_E_UNAVAILABLE, "etcd: lease grant: %.400s", gerr);
        rc = -1;
    } else if (!kh_etcd_jint(reply, "ID")) {
        kh_err_set(err, KH_E_INTERNAL, "etcd: lease grant: no ID in the reply");
        rc = -1;
    } else {
        if (id)
            *id = kh_etcd_jint(reply, "ID");
        if (granted_ttl)
            *granted_ttl = kh_etcd_jint(reply, "TTL");
    }
    json_decref(reply);
    return rc;
}

int kh_etcd_lease_revoke(kh_etcd *e, int64_t id, kh_err *err)
{
    json_t *reply = call(e, "/v3/lease/revoke", lease_request(id), true, err);
    json_decref(reply);
    return reply ? 0 : -1;
}

int kh_etcd_lease_ttl(kh_etcd *e, int64_t id, int64_t *ttl, kh_err *err)
{
    json_t *reply = call(e, "/v3/lease/timetolive", lease_request(id), true, err);
    if (!reply)
        return -1;
    int64_t t = kh_etcd_jint(reply, "TTL");
    json_decref(reply);
    if (ttl)
        *ttl = t > 0 ? t : 0;
    return t > 0 ? 1 : 0;
}

int kh_etcd_lease_keepalive_once(kh_etcd *e, int64_t id, int64_t *ttl, kh_err *err)
{
    json_t *reply = call(e, "/v3/lease/keepalive", lease_request(id), true, err);
    if (!reply)
        return -1;
    /* a stream's one message: {"result": {"ID", "TTL"}}; no TTL = gone */
    int64_t t = kh_etcd_jint(json_object_get(reply, "result"), "TTL");
    json_decref(reply);
    if (ttl)
        *ttl = t > 0 ? t : 0;
    return t > 0 ? 1 : 0;
}
