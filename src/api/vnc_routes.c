/* vnc_routes.c - GET /api/v1/vms/{name}/vnc: the VM's graphical console as
 * a WebSocket (binary frames both ways) relayed to and from QEMU's VNC unix
 * socket (RUN_DIR/vms/<id>/qemu/vnc.sock), for noVNC in the browser.
 *
 * Lifetimes: a link has two owners, the WebSocket (until its on_close) and
 * the pipe to QEMU (from uv_pipe_init until its close callback); the last
 * one frees it. Either side ending closes the other. Flow control: the
 * pipe is not read while more than RELAY_HIGH bytes wait for the browser
 * (kh_ws_send would give up at 1 MiB); a timer resumes it below RELAY_LOW.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "util/log.h"
#include "util/mem.h"

#define RELAY_CHUNK (64u * 1024u)
#define RELAY_HIGH (512u * 1024u)
#define RELAY_LOW (128u * 1024u)
#define RELAY_POLL_MS 10u
#define RELAY_TO_QEMU_MAX (1024u * 1024u)

typedef struct vnc_link {
    char *path;
    char *vm;
    uv_loop_t *loop;
    kh_ws *ws;
    uv_pipe_t pipe;
    uv_connect_t connect;
    uv_timer_t timer;
    int refs;           /* the WebSocket, the pipe, the timer */
    bool pipe_open, closing, connected, reading;
} vnc_link;

typedef struct relay_write {
    uv_write_t req;
    char data[];
} relay_write;

static void link_unref(vnc_link *l)
{
    if (--l->refs > 0)
        return;
    free(l->path);
    free(l->vm);
    free(l);
}

static void handle_closed(uv_handle_t *h)
{
    link_unref(h->data);
}

/* Close the QEMU side (once); the WebSocket too if it is still open. */
static void link_close(vnc_link *l)
{
    if (!l->closing) {
        l->closing = true;
        if (l->pipe_open) {
            uv_close((uv_handle_t *)&l->pipe, handle_closed);
            uv_close((uv_handle_t *)&l->timer, handle_closed);
        }
    }
    if (l->ws) {
        kh_ws *ws = l->ws;
        l->ws = NULL;
        kh_ws_close(ws);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    buf->base = xmalloc(RELAY_CHUNK);
    buf->len = RELAY_CHUNK;
}

static void on_timer(uv_timer_t *t);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    vnc_link *l = s->data;
    if (n > 0 && l->ws && !l->closing) {
        if (kh_ws_send(l->ws, true, buf->base, (size_t)n) != 0) {
            link_close(l);
        } else if (kh_ws_queued(l->ws) > RELAY_HIGH) {
            uv_read_stop(s);
            l->reading = false;
            uv_timer_start(&l->timer, on_timer, RELAY_POLL_MS, RELAY_POLL_MS);
        }
    } else if (n < 0) {
        if (n != UV_EOF)
            kh_log(KH_LOG_DEBUG, "vnc.read", "vm=%s error=\"%s\"", l->vm, uv_strerror((int)n));
        link_close(l);
    }
    free(buf->base);
}

static void on_timer(uv_timer_t *t)
{
    vnc_link *l = t->data;
    if (l->closing || !l->ws)
        return;
    if (kh_ws_queued(l->ws) < RELAY_LOW) {
        uv_timer_stop(t);
        if (!l->reading && uv_read_start((uv_stream_t *)&l->pipe, on_alloc, on_read) == 0)
            l->reading = true;
    }
}

static void on_connect(uv_connect_t *c, int status)
{
    vnc_link *l = c->data;
    if (l->closing)
        return;
    if (status < 0) {
        kh_log(KH_LOG_WARN, "vnc.connect", "vm=%s error=\"%s\"", l->vm, uv_strerror(status));
        link_close(l);
        return;
    }
    l->connected = true;
    if (uv_read_start((uv_stream_t *)&l->pipe, on_alloc, on_read) != 0) {
        link_close(l);
        return;
    }
    l->reading = true;
}

static void ws_open(kh_ws *ws, void *opaque)
{
    vnc_link *l = opaque;
    l->ws = ws;
    uv_pipe_init(l->loop, &l->pipe, 0);
    l->pipe.data = l;
    uv_timer_init(l->loop, &l->timer);
    l->timer.data = l;
    l->refs += 2;
    l->pipe_open = true;
    l->connect.data = l;
    uv_pipe_connect(&l->connect, &l->pipe, l->path, on_connect);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status; /* a failed write shows up as a read error too */
    free(w);
}

static void ws_message(kh_ws *ws, bool binary, const void *data, size_t len, void *opaque)
{
    (void)ws;
    (void)binary;
    vnc_link *l = opaque;
    if (l->closing || !l->connected || len == 0)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&l->pipe) > RELAY_TO_QEMU_MAX) {
        link_close(l); /* QEMU stopped reading: give up rather than grow */
        return;
    }
    relay_write *w = xmalloc(sizeof(*w) + len);
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned int)len);
    if (uv_write(&w->req, (uv_stream_t *)&l->pipe, &b, 1, on_written) != 0) {
        free(w);
        link_close(l);
    }
}

static void ws_close(kh_ws *ws, void *opaque)
{
    (void)ws;
    vnc_link *l = opaque;
    l->ws = NULL;
    link_close(l);
    link_unref(l);
}

static const kh_ws_callbacks ws_cbs = { ws_open, ws_message, ws_close };

void kh_vnc_routes_ws(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    const char *name = kh_http_req_param(req, "name");
    char *path = kh_manager_vnc_path(api->mgr, name, &err);
    if (!path) {
        kh_http_reply_error(req, &err);
        return;
    }
    vnc_link *l = xcalloc(1, sizeof(*l));
    l->path = path;
    l->vm = xstrdup(name);
    l->loop = api->loop;
    l->refs = 1;
    kh_http_reply_websocket(req, &ws_cbs, l);
}
