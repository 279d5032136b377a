/* forward.c - the API's check before every handler (kh_http_config.pre): a
 * request on a per-VM route (KH_ROUTE_VM) for a VM another host of the
 * cluster owns is sent on to that host (cluster/forward.c: mutual TLS) and
 * its answer relayed as it is. The caller was authenticated here; the owner
 * trusts this host's certificate. A forwarded request (KH-Forwarded) is
 * never forwarded again. WebSocket routes (console, VNC) are not relayed:
 * they answer 409 naming the owner.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "cluster/cluster.h"
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
        kh_err_set(&err, KH_E_CONFLICT, "vm %s is on host %s: open its console on that host "
                   "(consoles are not relayed between hosts)", name, host);
    } else {
        size_t len = 0;
        const char *body = kh_http_req_body(req, &len);
        fwd_req *f = xcalloc(1, sizeof(*f));
        f->req = req;
        if (kh_cluster_forward(api->cluster, url, kh_http_req_method(req),
                               kh_http_req_target(req), kh_http_req_header(req, "Content-Type"),
                               body, len, on_answer, f, &err) == 0) {
            kh_http_req_on_abort(req, on_abort, f);
            free(host);
            free(url);
            return true;
        }
        free(f);
    }
    kh_http_reply_error(req, &err);
    free(host);
    free(url);
    return true;
}
