/* upgrade.c - the HTTP side of WebSockets: the handshake
 * (kh_http_reply_websocket), MHD's hand-over of the upgraded socket to
 * ws.c, and closing it again (behind TLS, after the last bytes went out).
 */
#include "http/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/sockios.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* Case-insensitive search for a comma-separated token in a header value. */
static bool header_has_token(const char *value, const char *token)
{
    if (!value)
        return false;
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0)
            return true;
    }
    return false;
}

/* ---- WebSocket hand-over ---- */

/* Hand the upgraded connection back to MHD for closing. Behind TLS, MHD
 * keeps relaying until the client closes its side too, so the client's
 * socket is shut down here, once MHD has relayed what we wrote last. */
static void link_close(ws_link *link)
{
    if (link->raw_fd >= 0)
        shutdown(link->raw_fd, SHUT_RDWR);
    MHD_upgrade_action(link->urh, MHD_UPGRADE_ACTION_CLOSE);
    kh_listen_kick(link->lis);
    free(link);
}

void kh_upgrade_linger_cb(uv_timer_t *t)
{
    kh_http_server *srv = t->data;
    uint64_t now = kh_now_ms();
    ws_link *next;
    for (ws_link *l = srv->lingering; l; l = next) {
        next = l->next;
        int queued = 0;
        if (ioctl(l->app_fd, SIOCOUTQ, &queued) != 0)
            queued = 0;
        if (queued > 0 && now < l->linger_until && !srv->freeing)
            continue;
        DL_REMOVE(srv->lingering, l);
        link_close(l);
    }
    if (!srv->lingering)
        uv_timer_stop(t);
}

static void ws_gone(kh_ws *ws, void *ctx)
{
    (void)ws;
    ws_link *link = ctx;
    kh_http_server *srv = link->lis->srv;
    DL_REMOVE(srv->links, link);
    if (link->raw_fd < 0 || srv->freeing) {
        link_close(link);
        return;
    }
    link->linger_until = kh_now_ms() + WS_LINGER_MS;
    DL_INSERT(srv->lingering, link);
    kh_listen_kick(link->lis);
    uv_timer_start(&srv->linger, kh_upgrade_linger_cb, 5, 5);
}

static void on_upgrade(void *cls, struct MHD_Connection *conn, void *con_cls,
                       const char *extra_in, size_t extra_in_size, MHD_socket sock,
                       struct MHD_UpgradeResponseHandle *urh)
{
    listener *lis = cls;
    kh_http_req *req = con_cls;
    kh_ws *ws = req ? req->ws : NULL;
    if (!ws || lis->srv->freeing) {
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    req->ws = NULL;
    guard_conn *g = kh_guard_of(conn);
    if (g) { /* a WebSocket now: no head or body clock any more */
        g->phase = GUARD_HANDLER;
        g->upgraded = true;
    }
    ws_link *link = xcalloc(1, sizeof(*link));
    link->lis = lis;
    link->ws = ws;
    link->urh = urh;
    DL_INSERT(lis->srv->links, link);
    int hup = -1;
    if (lis->tls) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        hup = ci ? ci->connect_fd : -1;
    }
    link->raw_fd = hup;
    link->app_fd = sock;
    kh_ws__attach(ws, sock, hup, extra_in, extra_in_size, ws_gone, link);
}

/* Browsers send Origin; on TCP it must name the host the page came from
 * (cross-site WebSocket hijacking). Non-browser clients send none. */
bool kh_http_req_same_origin(const kh_http_req *req)
{
    if (req->lis->local)
        return true;
    return kh_http_origin_same(kh_http_req_header(req, "Origin"),
                               kh_http_req_header(req, MHD_HTTP_HEADER_HOST));
}

bool kh_http_origin_same(const char *origin, const char *host)
{
    if (!origin)
        return true;
    const char *p = strstr(origin, "://");
    if (!host || !p)
        return false;
    p += 3;
    size_t n = strcspn(p, "/");
    if (p[n] == '/' && p[n + 1] != '\0')
        return false;
    return n == strlen(host) && strncasecmp(p, host, n) == 0;
}

void kh_http_reply_websocket(kh_http_req *req, const kh_ws_callbacks *cbs, void *opaque)
{
    kh_ws *ws = kh_ws__new(req->srv ? req->srv->loop : NULL, cbs, opaque);
    kh_err err = KH_ERR_INIT;
    char accept[29];
    if (!req->conn || req->peer_gone || req->replied) {
        kh_ws__shutdown(ws); /* on_close; the request is gone */
        if (!req->replied)
            kh_http_reply_error(req, NULL);
        return;
    }
    if (strcmp(req->method, "GET") != 0 ||
        !header_has_token(kh_http_req_header(req, MHD_HTTP_HEADER_UPGRADE), "websocket") ||
        !header_has_token(kh_http_req_header(req, MHD_HTTP_HEADER_CONNECTION), "upgrade")) {
        kh_err_set(&err, KH_E_INVALID, "a WebSocket upgrade request is expected here");
    } else if (!kh_http_req_header(req, "Sec-WebSocket-Version") ||
               strcmp(kh_http_req_header(req, "Sec-WebSocket-Version"), "13") != 0) {
        kh_http_req_add_header(req, "Sec-WebSocket-Version", "13");
        kh_err_set(&err, KH_E_INVALID, "unsupported WebSocket version (13 is spoken)");
    } else if (!kh_ws__accept_key(kh_http_req_header(req, "Sec-WebSocket-Key"), accept)) {
        kh_err_set(&err, KH_E_INVALID, "missing or malformed Sec-WebSocket-Key");
    } else if (!kh_http_req_same_origin(req)) {
        kh_err_set(&err, KH_E_FORBIDDEN, "the Origin does not match the Host");
    }
    if (kh_err_isset(&err)) {
        kh_http_reply_error(req, &err);
        kh_ws__shutdown(ws);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_for_upgrade(on_upgrade, req->lis);
    if (!resp) {
        kh_err_set(&err, KH_E_INTERNAL, "cannot create the upgrade response");
        kh_http_reply_error(req, &err);
        kh_ws__shutdown(ws);
        return;
    }
    kh_reply_header(resp, MHD_HTTP_HEADER_UPGRADE, "websocket");
    kh_reply_header(resp, "Sec-WebSocket-Accept", accept);
    MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    req->ws = ws;
    kh_reply_set(req, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
}

void kh_upgrade_close_all(kh_http_server *srv)
{
    /* ws_gone moves each link off `links` (onto `lingering` or freed); the
     * analyzer cannot follow that through the callback and reports a
     * use-after-free here. The ASan unit test frees a server with WebSocket
     * sessions open, lingering and not, to prove the lists stay sound. */
    // NOLINTBEGIN(clang-analyzer-unix.Malloc)
    while (srv->links)
        kh_ws__shutdown(srv->links->ws);
    while (srv->lingering) {
        ws_link *l = srv->lingering;
        DL_REMOVE(srv->lingering, l);
        link_close(l);
    }
    // NOLINTEND(clang-analyzer-unix.Malloc)
}
