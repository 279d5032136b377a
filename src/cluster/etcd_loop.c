/* etcd_loop.c - the asynchronous half of etcd.h: libcurl's multi interface
 * on a libuv loop (uv_poll per socket, one uv_timer for libcurl's timeout),
 * and its users: the watch stream (kh_etcd_watch_*), the periodic lease
 * keep-alive (kh_etcd_keeper_*), and one-shot requests that must not block
 * the loop (kh_etcd_request_async).
 *
 * libcurl forbids removing a transfer from inside its own callbacks, and the
 * users' callbacks run there: a watch or keeper that is cancelled is only
 * marked, and reaped (transfer removed, handles closed, memory freed) once
 * libcurl has returned.
 */
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd_int.h"
#include "util/mem.h"
#include "util/misc.h"

#define WATCH_BACKOFF_MIN_MS 100
#define WATCH_BACKOFF_MAX_MS 2000
#define KEEPER_RETRY_MS 100

typedef struct poll_ctx {
    uv_poll_t h;
    kh_etcd *e;
    curl_socket_t fd;
    struct poll_ctx *next, *prev;
} poll_ctx;

struct kh_etcd_watch {
    kh_etcd *e;
    kh_etcd_xfer x;
    kh_buf buf;
    char *key;
    bool prefix;
    int64_t next_rev;        /* 0 until the first reply when started "from now" */
    size_t ep;
    uv_timer_t *retry;
    uint64_t backoff_ms;
    kh_etcd_watch_cb cb;
    void *opaque;
    bool canceled, finished;
    kh_etcd_watch *next;
};

struct kh_etcd_keeper {
    kh_etcd *e;
    kh_etcd_xfer x;
    kh_buf buf;
    int64_t id;
    uint64_t interval_ms;
    uv_timer_t *timer;
    size_t ep;
    uint64_t sent_ms, expiry_ms;
    kh_etcd_keeper_cb cb;
    void *opaque;
    bool canceled;
    kh_etcd_keeper *next;
};

typedef struct kh_etcd_async {
    kh_etcd *e;
    kh_etcd_xfer x;
    kh_buf buf;
    char *path, *body;
    size_t ep, tried;
    kh_etcd_async_cb cb;
    void *opaque;
    bool finished;
    struct kh_etcd_async *next;
} kh_etcd_async;

/* The loop's state beyond struct kh_etcd: the open sockets and the depth of
 * libcurl calls we are in (reaping waits until it is 0). */
typedef struct loop_state {
    kh_etcd *e;
    poll_ctx *polls;
    int depth;
} loop_state;

/* libcurl's timer and, behind it, the loop state (freed with the timer). */
typedef struct loop_timer {
    uv_timer_t t;
    loop_state st;
} loop_timer;

static void close_free(uv_handle_t *h)
{
    free(h);
}

static void reap(kh_etcd *e);

/* ---- libcurl multi on libuv ---- */

static loop_state *state(kh_etcd *e)
{
    return e->timer->data;
}

static void check_done(kh_etcd *e)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(e->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        kh_etcd_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(e->multi, easy);
        if (x)
            x->done(x, rc);
    }
}

static void action(kh_etcd *e, curl_socket_t s, int flags)
{
    loop_state *st = state(e);
    int running = 0;
    st->depth++;
    curl_multi_socket_action(e->multi, s, flags, &running);
    check_done(e);
    st->depth--;
    reap(e);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    poll_ctx *p = h->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    action(p->e, p->fd, flags);
}

static void on_timeout(uv_timer_t *t)
{
    action(((loop_state *)t->data)->e, CURL_SOCKET_TIMEOUT, 0);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    kh_etcd *e = userp;
    loop_state *st = state(e);
    poll_ctx *p = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (p) {
            if (p->prev)
                p->prev->next = p->next;
            else
                st->polls = p->next;
            if (p->next)
                p->next->prev = p->prev;
            uv_poll_stop(&p->h);
            uv_close((uv_handle_t *)&p->h, close_free);
            curl_multi_assign(e->multi, s, NULL);
        }
        return 0;
    }
    if (!p) {
        p = xcalloc(1, sizeof(*p));
        p->e = e;
        p->fd = s;
        if (uv_poll_init_socket(e->loop, &p->h, s) != 0) {
            free(p);
            return -1;
        }
        p->h.data = p;
        p->next = st->polls;
        if (st->polls)
            st->polls->prev = p;
        st->polls = p;
        curl_multi_assign(e->multi, s, p);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&p->h, ev, on_poll);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    kh_etcd *e = userp;
    if (timeout_ms < 0)
        uv_timer_stop(e->timer);
    else
        uv_timer_start(e->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

int kh_etcd_loop_init(kh_etcd *e, kh_err *err)
{
    e->multi = curl_multi_init();
    if (!e->multi) {
        kh_err_set(err, KH_E_INTERNAL, "etcd: cannot initialise libcurl's multi interface");
        return -1;
    }
    /* the timer carries the loop state and, through it, finds e */
    loop_timer *lt = xcalloc(1, sizeof(*lt));
    e->timer = &lt->t;
    uv_timer_init(e->loop, e->timer);
    loop_state *st = &lt->st;
    st->e = e;
    e->timer->data = st;
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    return 0;
}

void kh_etcd_loop_fini(kh_etcd *e)
{
    if (!e->multi)
        return;
    for (kh_etcd_watch *w = e->watches; w; w = w->next)
        w->canceled = true;
    for (kh_etcd_keeper *k = e->keepers; k; k = k->next)
        k->canceled = true;
    kh_err cancelled = KH_ERR_INIT;
    kh_err_set(&cancelled, KH_E_UNAVAILABLE, "etcd: the client is closing");
    for (kh_etcd_async *a = e->asyncs; a; a = a->next) {
        if (!a->finished && a->cb)
            a->cb(NULL, &cancelled, a->opaque); /* its owner frees what it gave */
        a->finished = true;
    }
    reap(e);
    loop_state *st = state(e);
    while (st->polls) {
        poll_ctx *p = st->polls;
        st->polls = p->next;
        curl_multi_assign(e->multi, p->fd, NULL);
        uv_poll_stop(&p->h);
        uv_close((uv_handle_t *)&p->h, close_free);
    }
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, NULL);
    curl_multi_cleanup(e->multi);
    e->multi = NULL;
    uv_timer_stop(e->timer);
    uv_close((uv_handle_t *)e->timer, close_free);
    e->timer = NULL;
}

void kh_etcd_loop_add(kh_etcd *e, kh_etcd_xfer *x)
{
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *)x);
    curl_multi_add_handle(e->multi, x->easy);
}

void kh_etcd_loop_remove(kh_etcd *e, kh_etcd_xfer *x)
{
    if (!x->easy)
        return;
    curl_multi_remove_handle(e->multi, x->easy);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
}

/* ---- watch ---- */

static void watch_open(kh_etcd_watch *w);

static void watch_destroy(kh_etcd_watch *w)
{
    kh_etcd_loop_remove(w->e, &w->x);
    uv_timer_stop(w->retry);
    uv_close((uv_handle_t *)w->retry, close_free);
    kh_buf_release(&w->buf);
    free(w->key);
    free(w);
}

static void watch_finish(kh_etcd_watch *w, const kh_err *err)
{
    w->finished = true;
    w->cb(w, NULL, err, w->opaque);
}

/* One message of the stream. */
static void watch_message(kh_etcd_watch *w, const char *line, size_t len)
{
    kh_err err = KH_ERR_INIT;
    json_t *j = kh_etcd_reply_parse(200, line, len, &err);
    if (!j)
        return; /* an error in the stream: it ends, and is reopened */
    const json_t *r = json_object_get(j, "result");
    w->backoff_ms = WATCH_BACKOFF_MIN_MS;
    if (json_is_true(json_object_get(r, "canceled"))) {
        int64_t compact = kh_etcd_jint(r, "compact_revision");
        if (compact)
            kh_err_set(&err, KH_E_CONFLICT, "etcd: watch of %.200s: revision %lld is compacted "
                       "(the oldest is %lld)", w->key, (long long)w->next_rev, (long long)compact);
        else
        {
            const char *why = json_string_value(json_object_get(r, "cancel_reason"));
            kh_err_set(&err, KH_E_UNAVAILABLE, "etcd: watch of %.200s canceled: %.200s", w->key,
                       why ? why : "no reason");
        }
        json_decref(j);
        watch_finish(w, &err);
        return;
    }
    if (w->next_rev == 0 && json_is_true(json_object_get(r, "created")))
        w->next_rev = kh_etcd_jint(json_object_get(r, "header"), "revision") + 1;
    const json_t *evs = json_object_get(r, "events");
    /* every event of a revision comes in one message: a txn's several keys
     * share its revision, so the floor is the one before this message */
    int64_t floor = w->next_rev;
    for (size_t i = 0; i < json_array_size(evs) && !w->canceled && !w->finished; i++) {
        const json_t *ev = json_array_get(evs, i);
        kh_etcd_kv kv;
        if (kh_etcd_kv_parse(json_object_get(ev, "kv"), &kv, &err) < 0) {
            watch_finish(w, &err);
            break;
        }
        if (kv.mod_revision >= floor) { /* a reopened stream repeats nothing */
            const char *type = json_string_value(json_object_get(ev, "type"));
            kh_etcd_event e = { type && strcmp(type, "DELETE") == 0 ? KH_ETCD_EV_DELETE
                                                                   : KH_ETCD_EV_PUT, &kv };
            if (kv.mod_revision + 1 > w->next_rev)
                w->next_rev = kv.mod_revision + 1;
            w->cb(w, &e, NULL, w->opaque);
        }
        kh_etcd_kv_clear(&kv);
    }
    json_decref(j);
}

static size_t watch_write(char *p, size_t size, size_t n, void *userdata)
{
    kh_etcd_watch *w = userdata;
    if (w->canceled || w->finished)
        return 0;
    kh_buf_add(&w->buf, p, size * n);
    /* the gateway ends each message of a stream with a newline */
    char *nl;
    while (!w->canceled && !w->finished && (nl = memchr(w->buf.p, '\n', w->buf.len))) {
        size_t len = (size_t)(nl - w->buf.p);
        if (len > 0)
            watch_message(w, w->buf.p, len);
        memmove(w->buf.p, nl + 1, w->buf.len - len - 1);
        w->buf.len -= len + 1;
        w->buf.p[w->buf.len] = '\0';
    }
    return (w->canceled || w->finished) ? 0 : size * n;
}

static void watch_retry(uv_timer_t *t)
{
    watch_open(t->data);
}

static void watch_done(kh_etcd_xfer *x, CURLcode rc)
{
    kh_etcd_watch *w = (kh_etcd_watch *)((char *)x - offsetof(kh_etcd_watch, x));
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    if (w->canceled || w->finished)
        return;
    /* the stream broke: reopen it on the next endpoint, after a pause */
    w->ep = (w->ep + 1) % w->e->n_endpoints;
    uv_timer_start(w->retry, watch_retry, w->backoff_ms, 0);
    w->backoff_ms = w->backoff_ms * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS
                                                            : w->backoff_ms * 2;
}

static void watch_open(kh_etcd_watch *w)
{
    if (w->canceled || w->finished || w->x.easy)
        return;
    json_t *create = json_object();
    json_object_set_new(create, "key", kh_etcd_key_json(w->key));
    if (w->prefix)
        json_object_set_new(create, "range_end", kh_etcd_prefix_end_json(w->key));
    if (w->next_rev > 0)
        json_object_set_new(create, "start_revision", kh_etcd_jint_new(w->next_rev));
    json_t *req = json_pack("{so}", "create_request", create);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    kh_buf_reset(&w->buf);
    w->x.easy = curl_easy_init();
    kh_etcd_easy_setup(w->e, w->x.easy, w->ep, "/v3/watch", body, 0);
    free(body);
    curl_easy_setopt(w->x.easy, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(w->x.easy, CURLOPT_WRITEDATA, w);
    kh_etcd_loop_add(w->e, &w->x);
}

kh_etcd_watch *kh_etcd_watch_start(kh_etcd *e, const char *key, bool prefix, int64_t start_rev,
                                   kh_etcd_watch_cb cb, void *opaque, kh_err *err)
{
    if (!e->multi) {
        kh_err_set(err, KH_E_INTERNAL, "etcd: a watch needs a client made with a loop");
        return NULL;
    }
    kh_etcd_watch *w = xcalloc(1, sizeof(*w));
    w->e = e;
    w->key = xstrdup(key);
    w->prefix = prefix;
    w->next_rev = start_rev > 0 ? start_rev : 0;
    w->ep = e->cur;
    w->backoff_ms = WATCH_BACKOFF_MIN_MS;
    w->cb = cb;
    w->opaque = opaque;
    w->x.done = watch_done;
    w->retry = xcalloc(1, sizeof(*w->retry));
    uv_timer_init(e->loop, w->retry);
    w->retry->data = w;
    w->next = e->watches;
    e->watches = w;
    watch_open(w);
    return w;
}

void kh_etcd_watch_cancel(kh_etcd_watch *w)
{
    if (!w)
        return;
    w->canceled = true;
    reap(w->e);
}

int64_t kh_etcd_watch_next_revision(const kh_etcd_watch *w)
{
    return w->next_rev;
}

/* ---- keeper ---- */

static void keeper_destroy(kh_etcd_keeper *k)
{
    kh_etcd_loop_remove(k->e, &k->x);
    uv_timer_stop(k->timer);
    uv_close((uv_handle_t *)k->timer, close_free);
    kh_buf_release(&k->buf);
    free(k);
}

static void keeper_tick(uv_timer_t *t)
{
    kh_etcd_keeper *k = t->data;
    if (k->canceled || k->x.easy)
        return; /* the previous one is still on its way */
    char body[64];
    snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", (long long)k->id);
    kh_buf_reset(&k->buf);
    k->x.easy = curl_easy_init();
    kh_etcd_easy_setup(k->e, k->x.easy, k->ep, "/v3/lease/keepalive", body, k->e->timeout_ms);
    curl_easy_setopt(k->x.easy, CURLOPT_WRITEFUNCTION, kh_buf_curl_write);
    curl_easy_setopt(k->x.easy, CURLOPT_WRITEDATA, &k->buf);
    k->sent_ms = kh_now_ms();
    kh_etcd_loop_add(k->e, &k->x);
}

static void keeper_done(kh_etcd_xfer *x, CURLcode rc)
{
    kh_etcd_keeper *k = (kh_etcd_keeper *)((char *)x - offsetof(kh_etcd_keeper, x));
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    if (k->canceled)
        return;
    kh_err err = KH_ERR_INIT;
    int64_t ttl = 0;
    json_t *j = NULL;
    if (rc != CURLE_OK)
        kh_err_set(&err, KH_E_UNAVAILABLE, "etcd: lease keep-alive to %s: %s",
                   k->e->endpoints[k->ep], curl_easy_strerror(rc));
    else
        j = kh_etcd_reply_parse(status, k->buf.p, k->buf.len, &err);
    if (j) {
        ttl = kh_etcd_jint(json_object_get(j, "result"), "TTL");
        json_decref(j);
        if (ttl > 0) {
            k->expiry_ms = k->sent_ms + (uint64_t)ttl * 1000;
        } else {
            ttl = 0;
            kh_err_set(&err, KH_E_NOTFOUND, "etcd: lease %lld is gone (expired or revoked)",
                       (long long)k->id);
            uv_timer_stop(k->timer);
        }
    } else if (err.code == KH_E_NOTFOUND) {
        uv_timer_stop(k->timer);
    } else {
        /* the next member, soon: one member down must not cost an interval */
        k->ep = (k->ep + 1) % k->e->n_endpoints;
        uv_timer_start(k->timer, keeper_tick, KEEPER_RETRY_MS, k->interval_ms);
    }
    if (k->cb)
        k->cb(k, ttl, kh_err_isset(&err) ? &err : NULL, k->opaque);
}

kh_etcd_keeper *kh_etcd_keeper_start(kh_etcd *e, int64_t id, uint64_t interval_ms,
                                     kh_etcd_keeper_cb cb, void *opaque, kh_err *err)
{
    if (!e->multi) {
        kh_err_set(err, KH_E_INTERNAL, "etcd: a lease keeper needs a client made with a loop");
        return NULL;
    }
    kh_etcd_keeper *k = xcalloc(1, sizeof(*k));
    k->e = e;
    k->id = id;
    k->interval_ms = interval_ms ? interval_ms : 1000;
    k->ep = e->cur;
    k->cb = cb;
    k->opaque = opaque;
    k->x.done = keeper_done;
    k->timer = xcalloc(1, sizeof(*k->timer));
    uv_timer_init(e->loop, k->timer);
    k->timer->data = k;
    uv_timer_start(k->timer, keeper_tick, 0, k->interval_ms);
    k->next = e->keepers;
    e->keepers = k;
    return k;
}

void kh_etcd_keeper_stop(kh_etcd_keeper *k)
{
    if (!k)
        return;
    k->canceled = true;
    reap(k->e);
}

uint64_t kh_etcd_keeper_expiry_ms(const kh_etcd_keeper *k)
{
    return k->expiry_ms;
}

uint64_t kh_etcd_keeper_waiting_ms(const kh_etcd_keeper *k)
{
    return k && k->x.easy ? kh_now_ms() - k->sent_ms : 0;
}

/* ---- one-shot requests ---- */

static void async_destroy(kh_etcd_async *a)
{
    kh_etcd_loop_remove(a->e, &a->x);
    kh_buf_release(&a->buf);
    free(a->path);
    free(a->body);
    free(a);
}

static void async_send(kh_etcd_async *a)
{
    kh_buf_reset(&a->buf);
    a->x.easy = curl_easy_init();
    kh_etcd_easy_setup(a->e, a->x.easy, a->ep, a->path, a->body, a->e->timeout_ms);
    curl_easy_setopt(a->x.easy, CURLOPT_WRITEFUNCTION, kh_buf_curl_write);
    curl_easy_setopt(a->x.easy, CURLOPT_WRITEDATA, &a->buf);
    a->tried++;
    kh_etcd_loop_add(a->e, &a->x);
}

static void async_done(kh_etcd_xfer *x, CURLcode rc)
{
    kh_etcd_async *a = (kh_etcd_async *)((char *)x - offsetof(kh_etcd_async, x));
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    if (a->finished)
        return;
    kh_err err = KH_ERR_INIT;
    json_t *j = NULL;
    if (rc != CURLE_OK)
        kh_err_set(&err, KH_E_UNAVAILABLE, "etcd unreachable: %s: %s", a->e->endpoints[a->ep],
                   curl_easy_strerror(rc));
    else
        j = kh_etcd_reply_parse(status, a->buf.p, a->buf.len, &err);
    if (!j && err.code == KH_E_UNAVAILABLE && a->tried < a->e->n_endpoints) {
        a->ep = (a->ep + 1) % a->e->n_endpoints;
        async_send(a); /* added from the done callback: libcurl allows adding */
        return;
    }
    a->finished = true;
    if (j)
        a->e->cur = a->ep; /* as a synchronous call: the next ones start there */
    if (a->cb)
        a->cb(j, j ? NULL : &err, a->opaque);
    json_decref(j);
}

int kh_etcd_request_async(kh_etcd *e, const char *path, json_t *body, kh_etcd_async_cb cb,
                          void *opaque, kh_err *err)
{
    if (!e) { /* the client is gone (the cluster stops, or this host left) */
        json_decref(body);
        kh_err_set(err, KH_E_UNAVAILABLE, "etcd: this host has no etcd client now");
        return -1;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!e->multi || !text) {
        free(text);
        kh_err_set(err, KH_E_INTERNAL, "etcd: an asynchronous request needs a client made "
                   "with a loop");
        return -1;
    }
    kh_etcd_async *a = xcalloc(1, sizeof(*a));
    a->e = e;
    a->path = xstrdup(path);
    a->body = text;
    a->ep = e->cur;
    a->cb = cb;
    a->opaque = opaque;
    a->x.done = async_done;
    a->next = e->asyncs;
    e->asyncs = a;
    async_send(a);
    return 0;
}

/* ---- reaping ---- */

static void reap(kh_etcd *e)
{
    if (e->timer && state(e)->depth > 0)
        return;
    for (kh_etcd_watch **pw = &e->watches; *pw;) {
        kh_etcd_watch *w = *pw;
        if (w->canceled) {
            *pw = w->next;
            watch_destroy(w);
        } else {
            pw = &w->next;
        }
    }
    for (kh_etcd_async **pa = &e->asyncs; *pa;) {
        kh_etcd_async *a = *pa;
        if (a->finished) {
            *pa = a->next;
            async_destroy(a);
        } else {
            pa = &a->next;
        }
    }
    for (kh_etcd_keeper **pk = &e->keepers; *pk;) {
        kh_etcd_keeper *k = *pk;
        if (k->canceled) {
            *pk = k->next;
            keeper_destroy(k);
        } else {
            pk = &k->next;
        }
    }
}
