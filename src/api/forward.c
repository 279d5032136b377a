/* forward.c - the API's check before every handler (kh_http_config.pre): a
 * request on a per-VM route (KH_ROUTE_VM) for a VM another host of the
 * cluster owns is sent on to that host (cluster/forward.c: mutual TLS) and
 * its answer relayed as it is. The caller was authenticated here; the owner
 * trusts this host's certificate. A forwarded request (KH-Forwarded) is
 * never forwarded again. WebSocket routes (console, VNC) are relayed: the
 * client's WebSocket is accepted here, and one opened to the owner's route
 * with this host's certificate (http/wsclient.c); frames go both ways, and
 * either side closing closes the other.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "cluster/cluster.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/mem.h"

typedef struct fwd_req {
    kh_http_req *req; /* NULL once the client left */
} fwd_req;

static void on_abort(kh_http_req *req, void *opaque)
{
    (void)req;
    fwd_req *f = opaque;
    f->req = NULL;
}

static void on_answer(void *opaque, int status, const char *content_type, const char *body,
                      size_t len, const kh_err *err)
{
    fwd_req *f = opaque;
    if (f->req) {
        kh_http_req_on_abort(f->req, NULL, NULL);
        if (err)
            kh_http_reply_error(f->req, err);
        else
            kh_http_reply_data(f->req, status, content_type ? content_type : "application/json",
                               body, len);
    }
    free(f);
}

/* ---- the WebSocket relay ---- */

typedef struct relay {
    kh_api *api;
    char *url, *target, *host, *principal;
    kh_ws *down, *up;         /* the client's, the owner's (NULL when not open) */
    bool up_started, down_done, up_done;
    kh_buf pending;           /* the client's bytes before the owner's side is open */
    bool pending_binary;
} relay;

static void relay_release(relay *r)
{
    if (!r->down_done || !r->up_done)
        return;
    kh_buf_release(&r->pending);
    free(r->url);
    free(r->target);
    free(r->host);
    free(r->principal);
    free(r);
}

static void up_open(kh_ws *ws, void *opaque)
{
    relay *r = opaque;
    r->up = ws;
    if (r->pending.len)
        kh_ws_send(ws, r->pending_binary, r->pending.p, r->pending.len);
    kh_buf_reset(&r->pending);
    if (r->down_done)
        kh_ws_close(ws);
}

static void up_message(kh_ws *ws, bool binary, const void *data, size_t len, void *opaque)
{
    (void)ws;
    relay *r = opaque;
    if (r->down)
        kh_ws_send(r->down, binary, data, len);
}

static void up_close(kh_ws *ws, void *opaque)
{
    (void)ws; /* NULL when the owner could not be reached */
    relay *r = opaque;
    r->up = NULL;
    r->up_done = true;
    if (r->down)
        kh_ws_close(r->down);
    relay_release(r);
}

static const kh_ws_callbacks up_cbs = { up_open, up_message, up_close };

static void down_open(kh_ws *ws, void *opaque)
{
    relay *r = opaque;
    r->down = ws;
    char *ca = NULL, *cert = NULL, *key = NULL;
    kh_err err = KH_ERR_INIT;
    const char *why = NULL;
    if (kh_cluster_peer_tls(r->api->cluster, &ca, &cert, &key, &err) == 0) {
        char *fwd = kh_audit_forwarded_header(kh_cluster_host_name(r->api->cluster),
                                              r->principal);
        char *hdr = xasprintf("%s\r\n", fwd);
        kh_ws_connect_opts o = { .url = r->url, .path = r->target, .ca = ca, .cert = cert,
                                 .key = key, .header = hdr };
        if (kh_ws_connect(r->api->loop, &o, &up_cbs, r, &why) == 0)
            r->up_started = true;
        free(hdr);
        free(fwd);
    } else {
        why = err.msg;
    }
    if (!r->up_started) {
        kh_log(KH_LOG_WARN, "ws.relay", "host=%s error=\"%s\"", r->host, why ? why : "?");
        r->up_done = true;
        kh_ws_close(ws);
    }
    free(ca);
    free(cert);
    free(key);
}

static void down_message(kh_ws *ws, bool binary, const void *data, size_t len, void *opaque)
{
    (void)ws;
    relay *r = opaque;
    if (r->up) {
        kh_ws_send(r->up, binary, data, len);
    } else if (r->pending.len + len <= 64 * 1024) {
        r->pending_binary = r->pending_binary || binary;
        kh_buf_add(&r->pending, data, len);
    }
}

static void down_close(kh_ws *ws, void *opaque)
{
    (void)ws;
    relay *r = opaque;
    r->down = NULL;
    r->down_done = true;
    if (!r->up_started)
        r->up_done = true;
    if (r->up)
        kh_ws_close(r->up);
    relay_release(r);
}

static const kh_ws_callbacks down_cbs = { down_open, down_message, down_close };

bool kh_api_forward_pre(kh_http_req *req, void *app)
{
    kh_api *api = app;
    const kh_route *route = kh_http_req_route(req);
    kh_auth_pre(req); /* a new object's project, before its creation's events */
    if (!route || !(route->flags & KH_ROUTE_VM) || !kh_cluster_enabled(api->cluster) ||
        kh_http_req_header(req, "KH-Forwarded"))
        return false;
    const char *name = kh_http_req_param(req, "name");
    char *host = NULL, *url = NULL;
    if (!name || kh_cluster_vm_remote(api->cluster, name, &host, &url) != 1)
        return false;
    kh_err err = KH_ERR_INIT;
    if (!url) {
        kh_err_set(&err, KH_E_UNAVAILABLE, "vm %s is on host %s, which has no host-to-host "
                   "URL now (offline?)", name, host);
    } else if (route->flags & KH_ROUTE_WEBSOCKET) {
        relay *r = xcalloc(1, sizeof(*r));
        r->api = api;
        r->url = url;
        r->host = host;
        r->target = xstrdup(kh_http_req_target(req));
        const char *who = kh_auth_principal(req);
        r->principal = who ? xstrdup(who) : NULL;
        kh_http_reply_websocket(req, &down_cbs, r);
        return true;
    } else {
        size_t len = 0;
        const char *body = kh_http_req_body(req, &len);
        fwd_req *f = xcalloc(1, sizeof(*f));
        f->req = req;
        char *fwd_hdr = kh_audit_forwarded_header(kh_cluster_host_name(api->cluster),
                                                  kh_auth_principal(req));
        if (kh_cluster_forward(api->cluster, url, kh_http_req_method(req),
                               kh_http_req_target(req), kh_http_req_header(req, "Content-Type"),
                               fwd_hdr, body, len, on_answer, f, &err) == 0) {
            kh_http_req_on_abort(req, on_abort, f);
            free(fwd_hdr);
            free(host);
            free(url);
            return true;
        }
        free(f);
        free(fwd_hdr);
    }
    kh_http_reply_error(req, &err);
    free(host);
    free(url);
    return true;
}
