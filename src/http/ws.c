/* ws.c - WebSocket sessions (RFC 6455) over an upgraded socket.
 *
 * http.c does the handshake and hands over the socket MHD gives it; this
 * file does the framing with wslay (server side: incoming frames must be
 * masked, outgoing ones are not), answers pings and closes, and drives the
 * socket with a uv_poll_t on the daemon's loop.
 *
 * Life of a kh_ws:
 *   PENDING  created by kh_http_reply_websocket; messages may be queued.
 *   OPEN     kh_ws__attach got the socket; on_open ran.
 *   DEAD     on_close ran (exactly once, from ws_finish); the app must not
 *            use the pointer any more. If the session was attached, its two
 *            uv handles are closing and the memory goes with the last close
 *            callback; gone() has told http.c to let MHD close the socket.
 * on_close never runs inside kh_ws_send/kh_ws_close: a failure found there
 * is acted on from the session's timer, on a later loop iteration.
 */
#define KH_HTTP_INTERNAL
#include "http/ws.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define WS_QUEUE_MAX (1024u * 1024u)   /* outgoing bytes queued before we give up */
#define WS_MSG_MAX (1024u * 1024u)     /* largest incoming message */
#define WS_READ_BUDGET (256u * 1024u)  /* bytes read per readiness event (fairness) */
#define WS_TICK_MS 5000u
#define WS_PING_MS 30000u
#define WS_IDLE_MS 90000u              /* nothing heard (not even a pong): dead peer */
#define WS_CLOSE_WAIT_MS 5000u         /* wait for the peer's close frame */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

enum ws_state { WS_PENDING, WS_OPEN, WS_DEAD };

struct kh_ws {
    uv_loop_t *loop;
    wslay_event_context_ptr ctx;
    kh_ws_callbacks cbs;
    void *opaque;
    enum ws_state state;
    int fd;
    bool attached;     /* poll and timer initialised */
    uv_poll_t poll;
    uv_timer_t timer;
    uv_poll_t hup;     /* the client's socket behind a TLS relay */
    bool has_hup;
    int open_handles;
    unsigned char *extra;  /* bytes MHD read past the handshake */
    size_t extra_len, extra_off;
    size_t read_budget;
    bool in_io;        /* inside wslay_event_recv/send: no finishing */
    bool failed;       /* drop the connection without further ado */
    uint64_t last_recv_ms, last_ping_ms, close_sent_ms;
    void (*gone)(kh_ws *ws, void *ctx);
    void *gone_ctx;
};

static void ws_update(kh_ws *ws, bool may_finish);

/* ---- wslay callbacks ---- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
    (void)flags;
    kh_ws *ws = user;
    if (ws->failed || ws->state != WS_OPEN) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (ws->extra_off < ws->extra_len) {
        size_t n = ws->extra_len - ws->extra_off;
        if (n > len)
            n = len;
        memcpy(buf, ws->extra + ws->extra_off, n);
        ws->extra_off += n;
        ws->last_recv_ms = kh_now_ms();
        return (ssize_t)n;
    }
    if (ws->read_budget == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > ws->read_budget)
        len = ws->read_budget;
    ssize_t n;
    do
        n = recv(ws->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        ws->read_budget -= (size_t)n;
        ws->last_recv_ms = kh_now_ms();
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE); /* EOF or error */
    return -1;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *user)
{
    (void)flags;
    kh_ws *ws = user;
    if (ws->state != WS_OPEN) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    ssize_t n;
    do
        n = send(ws->fd, data, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

/* True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
bool kh_ws__utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    kh_ws *ws = user;
    if (ws->state != WS_OPEN || ws->failed)
        return;
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
        return; /* ping/pong/close: wslay answers them itself */
    if (arg->opcode == WSLAY_TEXT_FRAME && !kh_ws__utf8_valid(arg->msg, arg->msg_length)) {
        wslay_event_queue_close(ctx, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA, NULL, 0);
        return;
    }
    if (wslay_event_get_close_sent(ctx))
        return;
    if (ws->cbs.on_message)
        ws->cbs.on_message(ws, arg->opcode == WSLAY_BINARY_FRAME, arg->msg, arg->msg_length,
                           ws->opaque);
}

/* ---- life cycle ---- */

static void ws_free(kh_ws *ws)
{
    wslay_event_context_free(ws->ctx);
    free(ws->extra);
    free(ws);
}

static void ws_handle_closed(uv_handle_t *h)
{
    kh_ws *ws = h->data;
    if (--ws->open_handles == 0)
        ws_free(ws);
}

/* The one way out: on_close exactly once, stop watching the socket, tell
 * http.c (gone) so MHD closes it; memory follows the handles' close. */
static void ws_finish(kh_ws *ws)
{
    if (ws->state == WS_DEAD)
        return;
    bool attached = ws->attached;
    ws->state = WS_DEAD;
    if (attached) {
        uv_poll_stop(&ws->poll);
        uv_timer_stop(&ws->timer);
        if (ws->has_hup)
            uv_poll_stop(&ws->hup);
    }
    if (ws->cbs.on_close)
        ws->cbs.on_close(ws, ws->opaque);
    if (!attached) {
        ws_free(ws);
        return;
    }
    /* uv_close on a poll handle removes the fd from the loop at once, so
     * the socket may be closed by MHD right after. */
    uv_close((uv_handle_t *)&ws->poll, ws_handle_closed);
    uv_close((uv_handle_t *)&ws->timer, ws_handle_closed);
    if (ws->has_hup)
        uv_close((uv_handle_t *)&ws->hup, ws_handle_closed);
    if (ws->gone)
        ws->gone(ws, ws->gone_ctx);
}

static void ws_io(kh_ws *ws, int status, int events)
{
    if (ws->state != WS_OPEN)
        return;
    ws->in_io = true;
    if (status < 0) {
        ws->failed = true;
    } else {
        if (events & (UV_READABLE | UV_DISCONNECT) || ws->extra_off < ws->extra_len) {
            ws->read_budget = WS_READ_BUDGET;
            if (wslay_event_recv(ws->ctx) != 0)
                ws->failed = true;
        }
        if (!ws->failed && wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0)
            ws->failed = true;
    }
    ws->in_io = false;
    ws_update(ws, true);
}

static void ws_poll_cb(uv_poll_t *h, int status, int events)
{
    ws_io(h->data, status, events);
}

/* The client hung up behind the TLS relay (which does not pass a
 * one-sided close on to us). */
static void ws_hup_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    kh_ws *ws = h->data;
    if (ws->state != WS_OPEN)
        return;
    ws->failed = true;
    ws_update(ws, true);
}

static void ws_tick(uv_timer_t *t)
{
    kh_ws *ws = t->data;
    if (ws->state != WS_OPEN)
        return;
    uint64_t now = kh_now_ms();
    if (ws->extra_off < ws->extra_len) {
        ws_io(ws, 0, 0); /* bytes that came with the handshake */
        /* A ticking session is attached, so ws_finish() defers the free to
         * the handles' close callbacks: ws is still valid here. */
        if (ws->state != WS_OPEN) // NOLINT(clang-analyzer-unix.Malloc)
            return;
    }
    if (ws->close_sent_ms && now - ws->close_sent_ms >= WS_CLOSE_WAIT_MS) {
        ws->failed = true;
    } else if (now - ws->last_recv_ms >= WS_IDLE_MS) {
        kh_log(KH_LOG_INFO, "ws.timeout", "reason=\"no frame from the peer\"");
        ws->failed = true;
    } else if (now - ws->last_ping_ms >= WS_PING_MS && !wslay_event_get_close_sent(ws->ctx)) {
        struct wslay_event_msg ping = { WSLAY_PING, NULL, 0 };
        wslay_event_queue_msg(ws->ctx, &ping);
        ws->last_ping_ms = now;
    }
    ws_update(ws, true);
}

/* Re-arm the socket watch for what wslay wants; finish when it wants
 * nothing more or the session failed. Finishing is deferred to the timer
 * when !may_finish (the caller is the app, inside one of our API calls). */
static void ws_update(kh_ws *ws, bool may_finish)
{
    if (ws->state != WS_OPEN || ws->in_io)
        return;
    int want_read = wslay_event_want_read(ws->ctx);
    int want_write = wslay_event_want_write(ws->ctx);
    if (ws->failed || (!want_read && !want_write)) {
        if (may_finish)
            ws_finish(ws);
        else
            uv_timer_start(&ws->timer, ws_tick, 0, WS_TICK_MS);
        return;
    }
    if (wslay_event_get_close_sent(ws->ctx) && !ws->close_sent_ms)
        ws->close_sent_ms = kh_now_ms();
    int events = UV_DISCONNECT;
    if (want_read)
        events |= UV_READABLE;
    if (want_write)
        events |= UV_WRITABLE;
    if (uv_poll_start(&ws->poll, events, ws_poll_cb) != 0) {
        ws->failed = true;
        uv_timer_start(&ws->timer, ws_tick, 0, WS_TICK_MS);
    }
}

/* A client masks its frames (RFC 6455 5.3): with unpredictable keys. */
static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx;
    (void)user;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static kh_ws *ws_new(uv_loop_t *loop, const kh_ws_callbacks *cbs, void *opaque, bool client)
{
    static const struct wslay_event_callbacks wcbs = {
        .recv_callback = ws_recv_cb,
        .send_callback = ws_send_cb,
        .genmask_callback = ws_genmask_cb,
        .on_msg_recv_callback = ws_msg_cb,
    };
    kh_ws *ws = xcalloc(1, sizeof(*ws));
    ws->loop = loop;
    if (cbs)
        ws->cbs = *cbs;
    ws->opaque = opaque;
    ws->fd = -1;
    ws->state = WS_PENDING;
    if ((client ? wslay_event_context_client_init(&ws->ctx, &wcbs, ws)
                : wslay_event_context_server_init(&ws->ctx, &wcbs, ws)) != 0) {
        fprintf(stderr, "kvmhost: out of memory (wslay)\n");
        abort();
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, WS_MSG_MAX);
    return ws;
}

kh_ws *kh_ws__new(uv_loop_t *loop, const kh_ws_callbacks *cbs, void *opaque)
{
    return ws_new(loop, cbs, opaque, false);
}

static void client_gone(kh_ws *ws, void *ctx)
{
    (void)ws;
    close((int)(intptr_t)ctx);
}

void kh_ws__client_attach(uv_loop_t *loop, int fd, const kh_ws_callbacks *cbs, void *opaque)
{
    kh_ws__attach(ws_new(loop, cbs, opaque, true), fd, -1, NULL, 0, client_gone,
                  (void *)(intptr_t)fd);
}

void kh_ws__attach(kh_ws *ws, int fd, int hangup_fd, const void *extra, size_t extra_len,
                   void (*gone)(kh_ws *ws, void *ctx), void *ctx)
{
    ws->fd = fd;
    ws->gone = gone;
    ws->gone_ctx = ctx;
    if (extra_len) {
        ws->extra = xmalloc(extra_len);
        memcpy(ws->extra, extra, extra_len);
        ws->extra_len = extra_len;
    }
    uv_timer_init(ws->loop, &ws->timer);
    ws->timer.data = ws;
    ws->open_handles++;
    int rc = uv_poll_init(ws->loop, &ws->poll, fd);
    if (rc != 0) {
        /* Cannot watch this socket: close at once (memory via the timer). */
        kh_log(KH_LOG_WARN, "ws.error", "reason=\"cannot poll socket: %s\"", uv_strerror(rc));
        ws->state = WS_DEAD;
        if (ws->cbs.on_close)
            ws->cbs.on_close(ws, ws->opaque);
        uv_close((uv_handle_t *)&ws->timer, ws_handle_closed);
        if (gone)
            gone(ws, ctx);
        return;
    }
    ws->poll.data = ws;
    ws->open_handles++;
    ws->attached = true;
    if (hangup_fd >= 0 && hangup_fd != fd && uv_poll_init(ws->loop, &ws->hup, hangup_fd) == 0) {
        ws->hup.data = ws;
        ws->open_handles++;
        ws->has_hup = true;
        uv_poll_start(&ws->hup, UV_DISCONNECT, ws_hup_cb);
    }
    ws->state = WS_OPEN;
    uint64_t now = kh_now_ms();
    ws->last_recv_ms = now;
    ws->last_ping_ms = now;
    if (ws->cbs.on_open)
        ws->cbs.on_open(ws, ws->opaque);
    if (ws->state != WS_OPEN)
        return;
    /* First tick at once: it feeds the extra bytes and acts on anything
     * queued while pending; never finish inside MHD's upgrade callback. */
    uv_timer_start(&ws->timer, ws_tick, 0, WS_TICK_MS);
    ws_update(ws, false);
}

void kh_ws__shutdown(kh_ws *ws)
{
    if (!ws)
        return;
    ws->failed = true;
    ws_finish(ws);
}

int kh_ws_send(kh_ws *ws, bool binary, const void *data, size_t len)
{
    if (!ws || ws->state == WS_DEAD || ws->failed)
        return -1;
    if (wslay_event_get_close_sent(ws->ctx))
        return -1;
    size_t queued = wslay_event_get_queued_msg_length(ws->ctx);
    if (len > WS_QUEUE_MAX || queued > WS_QUEUE_MAX - len) {
        kh_log(KH_LOG_WARN, "ws.overflow", "queued=%zu reason=\"peer too slow, closing\"", queued);
        ws->failed = true;
        if (ws->state == WS_OPEN)
            uv_timer_start(&ws->timer, ws_tick, 0, WS_TICK_MS);
        return -1;
    }
    struct wslay_event_msg msg = {
        binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, data, len,
    };
    if (wslay_event_queue_msg(ws->ctx, &msg) != 0)
        return -1;
    ws_update(ws, false);
    return 0;
}

size_t kh_ws_queued(const kh_ws *ws)
{
    if (!ws || !ws->ctx || ws->state == WS_DEAD)
        return 0;
    return wslay_event_get_queued_msg_length(ws->ctx);
}

void kh_ws_close(kh_ws *ws)
{
    if (!ws || ws->state == WS_DEAD)
        return;
    if (!wslay_event_get_close_sent(ws->ctx))
        wslay_event_queue_close(ws->ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    ws_update(ws, false);
}

bool kh_ws__accept_key(const char *key, char out[29])
{
    /* 16 random bytes in base64: 22 characters and "==". */
    size_t len = key ? strlen(key) : 0;
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        char c = key[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return false;
    }
    unsigned char buf[24 + sizeof(ws_guid)];
    memcpy(buf, key, 24);
    memcpy(buf + 24, ws_guid, sizeof(ws_guid) - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(buf, 24 + sizeof(ws_guid) - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        return false;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == 28;
}
