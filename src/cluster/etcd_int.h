/* etcd_int.h - what etcd.c (the client, its transport and the synchronous
 * calls) shares with etcd_loop.c (libcurl multi on libuv: watch, keeper).
 * Not for use outside src/cluster.
 */
#ifndef KH_CLUSTER_ETCD_INT_H
#define KH_CLUSTER_ETCD_INT_H

#include <curl/curl.h>
#include <jansson.h>

#include "cluster/etcd.h"
#include "util/buf.h"


/* A transfer on the multi handle: done runs on the loop once it ended,
 * after the easy handle left the multi handle (the owner cleans it up). */
typedef struct kh_etcd_xfer kh_etcd_xfer;
struct kh_etcd_xfer {
    CURL *easy;
    void (*done)(kh_etcd_xfer *x, CURLcode rc);
};

struct kh_etcd {
    char **endpoints;
    size_t n_endpoints;
    size_t cur;                 /* where the next synchronous request starts */
    long timeout_ms, connect_ms;
    char *ca_file, *cert_file, *key_file;
    struct curl_slist *headers; /* Content-Type: application/json */
    CURL *easy;                 /* the synchronous calls' handle (keeps its connection) */
    kh_buf reply;
    /* the asynchronous half (etcd_loop.c) */
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t *timer;          /* libcurl's timeout */
    kh_etcd_watch *watches;
    kh_etcd_keeper *keepers;
    struct kh_etcd_async *asyncs;
};


/* Set c up to POST body to endpoint ep + path (timeout_ms 0: no overall
 * timeout, a stream). The body is copied. */
void kh_etcd_easy_setup(kh_etcd *e, CURL *c, size_t ep, const char *path, const char *body,
                        long timeout_ms);
/* Parse a gateway reply (HTTP status and body): the JSON object, or NULL with
 * err set from etcd's error ({"error", "code"}, top level or in a stream). */
json_t *kh_etcd_reply_parse(long status, const char *body, size_t len, kh_err *err);
/* Map a gRPC status code and message to a kh_err. */
void kh_etcd_grpc_err(kh_err *err, int64_t code, const char *msg);
/* An int64 field that the gateway writes as a string (or a number); 0 if absent. */
int64_t kh_etcd_jint(const json_t *obj, const char *key);
/* A JSON string holding an int64 (the gateway's form). */
json_t *kh_etcd_jint_new(int64_t v);
/* Fill kv from the gateway's {"key", "value", ...} (base64). -1 with err if malformed. */
int kh_etcd_kv_parse(const json_t *j, kh_etcd_kv *kv, kh_err *err);
/* Base64 of key, and of the end of the range of keys under it ("\0" = all). */
json_t *kh_etcd_key_json(const char *key);
json_t *kh_etcd_prefix_end_json(const char *key);

/* POST body (stolen) to a gateway path with the synchronous calls'
 * failover (may_repeat: harmless to send twice). The parsed reply, or NULL
 * with err. For the calls etcd.h has no wrapper for (cluster/member/...). */
json_t *kh_etcd_request(kh_etcd *e, const char *path, json_t *body, bool may_repeat,
                        kh_err *err);

/* A txn's reply (the gateway's, borrowed) into res (cleared first); 0 or -1. */
int kh_etcd_txn_parse(const json_t *reply, kh_etcd_txn_result *res, kh_err *err);
/* The gateway's body of a txn (what kh_etcd_txn sends): a new object. */
json_t *kh_etcd_txn_json(const kh_etcd_cmp *cmp, size_t n_cmp, const kh_etcd_op *ok,
                         size_t n_ok, const kh_etcd_op *fail, size_t n_fail);

/* Send the next synchronous request (and the watches and keepers started
 * after it) to the first endpoint first again. */
void kh_etcd_prefer_first(kh_etcd *e);

/* etcd_loop.c */
/* One request on the loop (it never blocks it): body (stolen) POSTed to
 * path, failing over to the next endpoint on an error (it must be harmless
 * to send twice). cb runs on the loop with the parsed reply (borrowed) or
 * NULL and err; kh_etcd_free runs the ones still on their way (err says
 * the client is closing). */
typedef void (*kh_etcd_async_cb)(json_t *reply, const kh_err *err, void *opaque);
int kh_etcd_request_async(kh_etcd *e, const char *path, json_t *body, kh_etcd_async_cb cb,
                          void *opaque, kh_err *err);
/* How long the keeper's current renewal has been waiting for its answer
 * (0: none on its way). A renewal answers in milliseconds when etcd has a
 * leader: one that waits long says etcd is stalled before it times out. */
uint64_t kh_etcd_keeper_waiting_ms(const kh_etcd_keeper *k);
int kh_etcd_loop_init(kh_etcd *e, kh_err *err);
void kh_etcd_loop_fini(kh_etcd *e);
void kh_etcd_loop_add(kh_etcd *e, kh_etcd_xfer *x);
void kh_etcd_loop_remove(kh_etcd *e, kh_etcd_xfer *x);

#endif
