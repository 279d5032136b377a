/* etcd.h - a client of etcd's v3 JSON gateway (etcd 3.4, HTTP POST to /v3/...).
 *
 * One kh_etcd holds the endpoints, timeouts and TLS files. Two kinds of call:
 *
 *  - synchronous (get, range, put, delete, txn, cas, lease grant/revoke/ttl/
 *    keepalive_once): one blocking HTTP request with a short per-request
 *    timeout. On a connection failure the next endpoint is tried; a request
 *    that may have reached etcd (a timeout after connecting) is retried only
 *    when repeating it is harmless (everything but txn/cas).
 *  - asynchronous, on a libuv loop (kh_etcd_new with a loop): the watch
 *    stream and the periodic lease keep-alive run on libcurl's multi interface
 *    driven by uv_poll and uv_timer; their callbacks run on the loop.
 *
 * Keys are C strings (kvmhost keys are text); values are bytes with a length
 * and are also NUL-terminated for convenience. The gateway's base64 lives in
 * one place (kh_etcd_b64_*). Revisions, lease ids and TTLs are int64_t.
 *
 * Errors: etcd unreachable on every endpoint, no leader or a request timed
 * out -> KH_E_UNAVAILABLE; unknown lease -> KH_E_NOTFOUND; compacted
 * revision -> KH_E_CONFLICT; bad request -> KH_E_INVALID; anything else ->
 * KH_E_INTERNAL. Not thread-safe: one kh_etcd belongs to one thread (the
 * daemon's loop thread).
 */
#ifndef KH_CLUSTER_ETCD_H
#define KH_CLUSTER_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "util/err.h"

typedef struct kh_etcd kh_etcd;

typedef struct kh_etcd_opts {
    const char *const *endpoints; /* "http://10.0.0.1:2379", ...; at least one */
    size_t n_endpoints;
    long timeout_ms;          /* per request (and per attempt); 0 = 2000 */
    long connect_timeout_ms;  /* per connection attempt; 0 = min(timeout, 1000) */
    const char *ca_file;      /* optional, for https:// endpoints */
    const char *cert_file;    /* optional client certificate (mutual TLS) */
    const char *key_file;     /* its key */
} kh_etcd_opts;

/* A client. loop may be NULL (synchronous calls only: no watch, no keeper).
 * The options are copied. NULL with err set on bad options. */
kh_etcd *kh_etcd_new(const kh_etcd_opts *opts, uv_loop_t *loop, kh_err *err);
/* Cancels every watch and keeper of e (without calling their callbacks) and
 * frees e. The loop must run once more to close the handles (uv_run). Not
 * from inside a kh_etcd callback. NULL is fine. */
void kh_etcd_free(kh_etcd *e);
/* The endpoint the last successful request went to (the next one starts there). */
const char *kh_etcd_endpoint(const kh_etcd *e);

/* One key-value as etcd stores it. */
typedef struct kh_etcd_kv {
    char *key;
    char *value;       /* value_len bytes, plus a NUL */
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
} kh_etcd_kv;

typedef struct kh_etcd_kvs {
    kh_etcd_kv *kv;
    size_t n;
    int64_t revision;  /* the store's revision when it was read */
    int64_t count;     /* keys in the range (may exceed n with a limit) */
    bool more;
} kh_etcd_kvs;

void kh_etcd_kv_clear(kh_etcd_kv *kv);
void kh_etcd_kvs_clear(kh_etcd_kvs *kvs);

/* The value of one key into *out (cleared first). 1 found, 0 absent (out
 * zeroed), -1 error. *revision (may be NULL) gets the store's revision. */
int kh_etcd_get(kh_etcd *e, const char *key, kh_etcd_kv *out, int64_t *revision, kh_err *err);
/* Keys in [key, range_end), sorted by key, at most limit (0 = all). range_end
 * NULL: the keys that start with key (a prefix). 0 or -1. */
int kh_etcd_range(kh_etcd *e, const char *key, const char *range_end, int64_t limit,
                  kh_etcd_kvs *out, kh_err *err);
/* Set key to value (len bytes; len (size_t)-1 = strlen), attached to lease
 * (0 = none). *revision (may be NULL) gets the new revision. 0 or -1. */
int kh_etcd_put(kh_etcd *e, const char *key, const char *value, size_t len, int64_t lease,
                int64_t *revision, kh_err *err);
/* Delete key, or every key under it when prefix. *deleted (may be NULL) gets
 * how many went. 0 or -1. */
int kh_etcd_delete(kh_etcd *e, const char *key, bool prefix, int64_t *deleted, kh_err *err);

/* Transactions: if every compare holds, the success ops run, else the failure ops. */
typedef enum kh_etcd_target {
    KH_ETCD_VERSION, KH_ETCD_CREATE, KH_ETCD_MOD, KH_ETCD_VALUE, KH_ETCD_LEASE,
} kh_etcd_target;
typedef enum kh_etcd_result {
    KH_ETCD_EQUAL, KH_ETCD_GREATER, KH_ETCD_LESS, KH_ETCD_NOT_EQUAL,
} kh_etcd_result;
typedef struct kh_etcd_cmp {
    const char *key;
    kh_etcd_target target;
    kh_etcd_result result;
    int64_t number;      /* VERSION, CREATE, MOD (0 = the key does not exist), LEASE */
    const char *value;   /* VALUE (a string) */
} kh_etcd_cmp;
typedef enum kh_etcd_op_type { KH_ETCD_OP_GET, KH_ETCD_OP_PUT, KH_ETCD_OP_DELETE } kh_etcd_op_type;
typedef struct kh_etcd_op {
    kh_etcd_op_type type;
    const char *key;
    const char *value;   /* PUT: a string */
    int64_t lease;       /* PUT */
    bool prefix;         /* GET, DELETE: every key under key */
} kh_etcd_op;
typedef struct kh_etcd_txn_result {
    bool succeeded;
    int64_t revision;    /* the store's revision after the txn */
    kh_etcd_kvs kvs;     /* what the GET ops of the branch taken found, in order */
} kh_etcd_txn_result;

/* One transaction. Never retried on another endpoint once it may have
 * reached etcd. res is cleared first; free with kh_etcd_txn_result_clear.
 * 0 (see res->succeeded) or -1. */
int kh_etcd_txn(kh_etcd *e, const kh_etcd_cmp *cmp, size_t n_cmp, const kh_etcd_op *ok,
                size_t n_ok, const kh_etcd_op *fail, size_t n_fail, kh_etcd_txn_result *res,
                kh_err *err);
void kh_etcd_txn_result_clear(kh_etcd_txn_result *res);

/* Compare-and-swap: set key to value (attached to lease, 0 = none) only if
 * its mod_revision is expect_rev (0: only if it does not exist). 1 set (*rev
 * gets the new mod_revision), 0 lost (current gets what is there now, zeroed
 * if absent), -1 error. rev and current may be NULL. */
int kh_etcd_cas(kh_etcd *e, const char *key, int64_t expect_rev, const char *value,
                int64_t lease, int64_t *rev, kh_etcd_kv *current, kh_err *err);
/* The ownership invariant: /kvmhost/vms/<vm_id>/owner := host_id only if its
 * mod_revision is expect_rev (0 = unowned). As kh_etcd_cas. */
int kh_etcd_set_owner(kh_etcd *e, const char *vm_id, const char *host_id, int64_t expect_rev,
                      int64_t *rev, kh_etcd_kv *current, kh_err *err);

/* Leases. grant: *id and *granted_ttl (may be NULL). 0 or -1. */
int kh_etcd_lease_grant(kh_etcd *e, int64_t ttl_s, int64_t *id, int64_t *granted_ttl,
                        kh_err *err);
/* Revoke (deletes its keys now). 0, or -1 (KH_E_NOTFOUND if unknown). */
int kh_etcd_lease_revoke(kh_etcd *e, int64_t id, kh_err *err);
/* Seconds left: 1 with *ttl set, 0 expired or unknown, -1 error. */
int kh_etcd_lease_ttl(kh_etcd *e, int64_t id, int64_t *ttl, kh_err *err);
/* One synchronous keep-alive: 1 renewed (*ttl set, may be NULL), 0 the lease
 * is gone, -1 error. */
int kh_etcd_lease_keepalive_once(kh_etcd *e, int64_t id, int64_t *ttl, kh_err *err);

/* ---- asynchronous, on the loop given to kh_etcd_new ---- */

typedef enum kh_etcd_event_type { KH_ETCD_EV_PUT, KH_ETCD_EV_DELETE } kh_etcd_event_type;
typedef struct kh_etcd_event {
    kh_etcd_event_type type;
    const kh_etcd_kv *kv;  /* borrowed for the callback; DELETE: key and mod_revision */
} kh_etcd_event;

typedef struct kh_etcd_watch kh_etcd_watch;
/* Called with an event, or with ev NULL and err set when the watch ended for
 * good (the start revision was compacted, or etcd canceled it): the watch is
 * then finished and the callback must still call kh_etcd_watch_cancel. A
 * broken stream is reopened by itself (next endpoint, from the revision after
 * the last event), so events are never lost or repeated. */
typedef void (*kh_etcd_watch_cb)(kh_etcd_watch *w, const kh_etcd_event *ev, const kh_err *err,
                                 void *opaque);
/* Watch key (or every key under it when prefix) from start_rev (0 = from
 * now). NULL with err set if e has no loop. */
kh_etcd_watch *kh_etcd_watch_start(kh_etcd *e, const char *key, bool prefix, int64_t start_rev,
                                   kh_etcd_watch_cb cb, void *opaque, kh_err *err);
/* Stop and free; no callback after it. May be called from the callback. NULL is fine. */
void kh_etcd_watch_cancel(kh_etcd_watch *w);
/* The revision the watch will resume from if its stream breaks. */
int64_t kh_etcd_watch_next_revision(const kh_etcd_watch *w);

typedef struct kh_etcd_keeper kh_etcd_keeper;
/* After each keep-alive attempt: ttl > 0 renewed; ttl 0 with err set
 * (KH_E_NOTFOUND: the lease is gone, the keeper stops; KH_E_UNAVAILABLE:
 * this attempt failed, the next one goes to the next endpoint). */
typedef void (*kh_etcd_keeper_cb)(kh_etcd_keeper *k, int64_t ttl, const kh_err *err,
                                  void *opaque);
/* Renew lease id now and every interval_ms (e.g. a third of its TTL). cb may
 * be NULL. NULL with err set if e has no loop. */
kh_etcd_keeper *kh_etcd_keeper_start(kh_etcd *e, int64_t id, uint64_t interval_ms,
                                     kh_etcd_keeper_cb cb, void *opaque, kh_err *err);
/* Stop and free; no callback after it. May be called from the callback. NULL is fine. */
void kh_etcd_keeper_stop(kh_etcd_keeper *k);
/* The monotonic time (kh_now_ms) by which the lease may expire, counted from
 * the sending of the last successful keep-alive: the self-fence deadline
 * (0 before the first renewal). */
uint64_t kh_etcd_keeper_expiry_ms(const kh_etcd_keeper *k);

/* ---- the gateway's base64 (exposed for tests) ---- */
/* Encode len bytes; the caller frees. */
char *kh_etcd_b64_encode(const void *data, size_t len);
/* Decode a base64 string into a new buffer (NUL-terminated, *len bytes).
 * NULL if it is not base64. */
char *kh_etcd_b64_decode(const char *s, size_t *len);

#endif
