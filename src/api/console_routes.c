/* console_routes.c - the serial console over WebSocket, and its log.
 *
 * Lifetimes: a viewer context lives from the upgrade to the WebSocket's
 * on_close. When the VM stops first, the console tells the viewer
 * (on_closed) and the context forgets the console before closing the socket.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "util/mem.h"

typedef struct viewer_ctx {
    kh_api *api;
    char *vm_name;
    kh_ws *ws;
    kh_console *console;
    kh_console_viewer *viewer;
} viewer_ctx;

static void on_output(const void *data, size_t len, void *opaque)
{
    viewer_ctx *c = opaque;
    if (c->ws)
        kh_ws_send(c->ws, true, data, len);
}

static void on_console_closed(void *opaque)
{
    viewer_ctx *c = opaque;
    c->console = NULL;
    c->viewer = NULL;
    if (c->ws)
        kh_ws_close(c->ws);
}

static const kh_console_viewer_cbs viewer_cbs = { on_output, on_console_closed };

static void ws_open(kh_ws *ws, void *opaque)
{
    viewer_ctx *c = opaque;
    c->ws = ws;
    kh_err err = KH_ERR_INIT;
    /* The VM may have stopped between the request and the upgrade. */
    c->console = kh_manager_console(c->api->mgr, c->vm_name, &err);
    if (!c->console) {
        kh_ws_close(ws);
        return;
    }
    c->viewer = kh_console_add_viewer(c->console, &viewer_cbs, c);
}

static void ws_message(kh_ws *ws, bool binary, const void *data, size_t len, void *opaque)
{
    (void)ws;
    (void)binary;
    viewer_ctx *c = opaque;
    if (c->console)
        kh_console_write(c->console, data, len);
}

static void ws_close(kh_ws *ws, void *opaque)
{
    (void)ws;
    viewer_ctx *c = opaque;
    if (c->console && c->viewer)
        kh_console_remove_viewer(c->console, c->viewer);
    free(c->vm_name);
    free(c);
}

static const kh_ws_callbacks ws_cbs = { ws_open, ws_message, ws_close };

void kh_console_routes_ws(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    const char *name = kh_http_req_param(req, "name");
    if (!kh_manager_console(api->mgr, name, &err)) {
        kh_http_reply_error(req, &err);
        return;
    }
    viewer_ctx *c = xcalloc(1, sizeof(*c));
    c->api = api;
    c->vm_name = xstrdup(name);
    kh_http_reply_websocket(req, &ws_cbs, c);
}

void kh_console_routes_log(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    size_t tail = 0;
    const char *t = kh_http_req_query(req, "tail");
    if (t) {
        char *end;
        unsigned long long v = strtoull(t, &end, 10);
        if (!*t || *end || t[0] == '-') {
            kh_err_set(&err, KH_E_INVALID, "tail: must be a number of bytes");
            kh_http_reply_error(req, &err);
            return;
        }
        tail = (size_t)v;
    }
    size_t len = 0;
    char *text = kh_manager_console_log(api->mgr, kh_http_req_param(req, "name"), tail, &len,
                                        &err);
    if (!text) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_data(req, 200, "text/plain; charset=utf-8", text, len);
    free(text);
}
