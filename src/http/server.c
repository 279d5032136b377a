/* server.c - the server object (new, free, the bound port) and MHD's
 * per-request callbacks: a request is created at its request line, routed,
 * authenticated through the application's hook, checked against the
 * limits, given to its handler, and completed.
 */
#include "http/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- server memory ---- */

void kh_server_unref(kh_http_server *srv)
{
    if (--srv->refs > 0)
        return;
    for (size_t i = 0; i < srv->nlis; i++)
        kh_listen_free(srv->lis[i]);
    free(srv->web_skip);
    kh_ratelimit_free(srv->ratelimit);
    free(srv);
}

static void srv_handle_closed(uv_handle_t *h)
{
    kh_server_unref(h->data);
}

static void srv_sweep_cb(uv_timer_t *t)
{
    kh_guard_sweep(t->data);
}

/* Static files are the fallback for paths no route knows, except under
 * cfg->web_skip (an API prefix: there a 404 is the answer). */
static bool path_is_skipped(const kh_http_server *srv, const char *path)
{
    if (!srv->web_skip)
        return false;
    size_t n = strlen(srv->web_skip);
    return strncmp(path, srv->web_skip, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Charge the caller's bucket; false when it is empty (429 queued in *ret). */
static bool req_rate_ok(kh_http_req *req, const kh_route *route, enum MHD_Result *ret)
{
    kh_http_server *srv = req->srv;
    if (req->local || !srv->ratelimit)
        return true;
    char key[160];
    kh_ratelimit_key(req, key, sizeof(key));
    unsigned wait = kh_ratelimit_take(srv->ratelimit, key,
                                      route && (route->flags & KH_ROUTE_PRIORITY), kh_now_ms());
    if (!wait)
        return true;
    char v[16];
    snprintf(v, sizeof(v), "%u", wait);
    kh_http_req_add_header(req, "Retry-After", v);
    *ret = kh_reply_fail(req, KH_E_BUSY, "too many requests: retry in %u s", wait);
    return false;
}

/* First call: check the framing, route, authenticate, rate-limit, check
 * the announced body. */
static enum MHD_Result req_begin(kh_http_req *req, const char *method, const char *version)
{
    kh_http_server *srv = req->srv;
    req->method = xstrdup(method);
    kh_err ferr = KH_ERR_INIT;
    unsigned fstatus = 400;
    if (kh_guard_head(req, version, &fstatus, &ferr) != 0) {
        req->early = req->body_pending = false; /* nothing of this connection is trusted */
        return kh_reply_fail_status(req, fstatus, &ferr, true);
    }
    const char *clen = kh_http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    req->body_pending = kh_http_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING) ||
                        (clen && strspn(clen, "0") != strlen(clen));
    const char *t = req->target ? req->target : "";
    size_t plen = strcspn(t, "?#");
    req->path = xstrndup(t, plen);
    if (req->path[0] != '/')
        return kh_reply_fail(req, KH_E_INVALID, "the request target must be an absolute path");

    kh_router_path ps;
    if (kh_router_split(req->path, &ps) != 0)
        return kh_reply_fail(req, KH_E_INVALID, "malformed URL path");

    char allow[128];
    bool path_known = false;
    const kh_route *route =
        kh_router_find(srv->routes, srv->nroutes, &ps, method, &path_known, allow, sizeof(allow));
    enum MHD_Result ret;
    if (!path_known && srv->web_fd >= 0 && !path_is_skipped(srv, req->path)) {
        ret = kh_static_serve(req, &ps);
        kh_router_path_clear(&ps);
        return ret;
    }
    req->route = route;
    if (route) /* the parameters, for the auth hook's per-object checks */
        kh_router_match(route->path, &ps, req->params, &req->nparams);
    kh_router_path_clear(&ps);
    kh_err err = KH_ERR_INIT;
    int arc = srv->auth ? srv->auth(req, route, srv->auth_opaque, &err) : 0;
    if (arc != 0) {
        if (!req_rate_ok(req, NULL, &ret)) /* failed logins count too (by address) */
            return ret;
        if (!kh_err_isset(&err))
            kh_err_set(&err, KH_E_UNAUTHORIZED, "not authenticated");
        if (arc == KH_HTTP_AUTH_MISDIRECTED)
            return kh_reply_fail_status(req, 421, &err, false);
        return kh_reply_fail_err(req, &err);
    }
    if (!req_rate_ok(req, route, &ret))
        return ret;
    if (!route) {
        if (path_known) {
            kh_http_req_add_header(req, MHD_HTTP_HEADER_ALLOW, allow);
            return kh_reply_fail(req, KH_E_METHOD, "method %s not allowed on this path", method);
        }
        return kh_reply_fail(req, KH_E_NOTFOUND, "no such route");
    }
    for (size_t i = 0; i < req->nparams; i++) {
        const char *v = req->params[i].value;
        if (strchr(v, '/'))
            return kh_reply_fail(req, KH_E_INVALID, "invalid path parameter %.*s",
                                 (int)req->params[i].name_len, req->params[i].name);
    }
    if (!kh_limits_announced(req, route, &err))
        return kh_reply_fail_err(req, &err);
    req->state = REQ_BODY;
    kh_guard_phase(req->conn, req->body_pending ? GUARD_BODY : GUARD_HANDLER);
    if (route->flags & KH_ROUTE_STREAM)
        return kh_stream_begin(req);
    return MHD_YES;
}

static enum MHD_Result req_dispatch(kh_http_req *req)
{
    if (req->too_large)
        return kh_reply_fail(req, KH_E_TOOLARGE, "request body over %zu bytes", req->srv->max_body);
    req->state = REQ_WAIT;
    req->app_holds = true;
    kh_guard_phase(req->conn, GUARD_HANDLER);
    if (!req->srv->pre || !req->srv->pre(req, req->srv->app))
        req->route->handler(req, req->srv->app);
    if (req->resp)
        return kh_reply_queue(req);
    if (!req->app_holds)
        return MHD_NO; /* replied, but the reply had to be dropped */
    kh_req_suspend(req);
    return MHD_YES;
}

enum MHD_Result kh_server_on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)cls;
    (void)url; /* MHD's decoded copy: we route on the raw target */
    kh_http_req *req = *con_cls;
    if (!req)
        return MHD_NO;
    switch (req->state) {
    case REQ_NEW:
        req->conn = conn;
        return req_begin(req, method, version);
    case REQ_BODY:
        kh_guard_body_bytes(conn, *upload_data_size);
        if (req->stream_data) {
            if (!*upload_data_size)
                return kh_stream_done(req);
            enum MHD_Result r = kh_stream_data(req, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return r;
        }
        if (*upload_data_size) {
            enum MHD_Result r = kh_limits_body(req, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return r;
        }
        return req_dispatch(req);
    case REQ_WAIT:
        if (req->resp)
            return kh_reply_queue(req);
        if (req->peer_gone || !req->app_holds)
            return MHD_NO;
        kh_req_suspend(req);
        return MHD_YES;
    case REQ_DONE:
        *upload_data_size = 0;
        return MHD_YES;
    }
    return MHD_NO;
}

void *kh_server_on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    listener *lis = cls;
    kh_http_server *srv = lis->srv;
    kh_http_req *req = xcalloc(1, sizeof(*req));
    req->srv = srv;
    req->lis = lis;
    req->local = lis->local;
    req->target = xstrdup(uri ? uri : "");
    req->uri_raw = uri;
    req->too_many_args = kh_guard_uri(uri);
    req->state = REQ_NEW;
    req->start_ms = kh_now_ms();
    req->start_ns = uv_hrtime();
    DL_INSERT(srv->reqs, req);
    return req;
}

void kh_sse_end(kh_sse *sse);

void kh_server_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    kh_http_req *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    kh_req_unwatch(req);
    req->suspended = false;
    if (req->early && req->body_pending && req->srv && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        kh_limits_drain(req->srv, conn);
    kh_guard_phase(conn, GUARD_HEAD); /* keep-alive: the next head's clock starts */
    req->conn = NULL;
    if (req->srv)
        DL_REMOVE(req->srv->reqs, req);
    req->srv = NULL;
    req->lis = NULL;
    if (req->resp) {
        MHD_destroy_response(req->resp);
        req->resp = NULL;
    }
    if (req->sse) {
        kh_sse *sse = req->sse;
        req->sse = NULL;
        sse->req = NULL;
        kh_sse_end(sse);
    }
    if (req->ws) { /* the upgrade never happened */
        kh_ws *ws = req->ws;
        req->ws = NULL;
        kh_ws__shutdown(ws);
    }
    if (req->app_holds && req->abort_cb) {
        if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
            kh_log(KH_LOG_DEBUG, "http.abort", "reason=\"completed without a reply\"");
        req->app_holds = false;
        req->replied = true; /* a reply from inside the callback is dropped */
        req->abort_cb(req, req->abort_opaque);
    }
    if (!req->app_holds)
        kh_req_free(req);
}

void kh_server_on_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512], q[600];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    kh_log(KH_LOG_DEBUG, "http.mhd", "msg=%s", kh_log_quote(q, sizeof(q), msg));
}

kh_http_server *kh_http_server_new(uv_loop_t *loop, const kh_http_config *cfg,
                                   const kh_route *routes, size_t nroutes, void *app,
                                   kh_err *err)
{
    if (!cfg->unix_path && !cfg->tcp_listen) {
        kh_err_set(err, KH_E_INVALID, "no listener configured");
        return NULL;
    }
    if (cfg->tcp_listen && !cfg->auth) {
        kh_err_set(err, KH_E_INVALID, "the TCP listener needs an auth hook");
        return NULL;
    }
    if (!cfg->tls_cert != !cfg->tls_key) {
        kh_err_set(err, KH_E_INVALID, "TLS needs both a certificate and a key");
        return NULL;
    }
    if (kh_router_check(routes, nroutes, err) != 0)
        return NULL;

    kh_http_server *srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->app = app;
    srv->max_body = cfg->max_body ? cfg->max_body : HTTP_DEFAULT_MAX_BODY;
    srv->max_conn = cfg->max_connections ? cfg->max_connections : HTTP_DEFAULT_MAX_CONN;
    srv->idle_timeout = cfg->idle_timeout ? cfg->idle_timeout : HTTP_DEFAULT_IDLE_S;
    srv->per_ip = cfg->per_ip_connections ? cfg->per_ip_connections : HTTP_DEFAULT_PER_IP;
    srv->head_timeout_ms = cfg->head_timeout_ms ? cfg->head_timeout_ms
                                                : HTTP_DEFAULT_HEAD_TIMEOUT_MS;
    if (cfg->rate_limit)
        srv->ratelimit = kh_ratelimit_new(cfg->rate_limit, cfg->rate_burst);
    srv->web_fd = -1;
    srv->refs = 1;
    srv->auth = cfg->auth;
    srv->auth_opaque = cfg->auth_opaque;
    srv->on_reply = cfg->on_reply;
    srv->web_skip = cfg->web_skip ? xstrdup(cfg->web_skip) : NULL;
    srv->on_request = cfg->on_request;
    srv->on_request_opaque = cfg->on_request_opaque;
    srv->pre = cfg->pre;
    uv_timer_init(loop, &srv->keepalive);
    srv->keepalive.data = srv;
    srv->refs++;
    uv_timer_init(loop, &srv->linger);
    srv->linger.data = srv;
    srv->refs++;
    uv_timer_start(&srv->keepalive, kh_sse_keepalive, SSE_KEEPALIVE_MS, SSE_KEEPALIVE_MS);
    uv_unref((uv_handle_t *)&srv->keepalive);
    uv_timer_init(loop, &srv->sweep);
    srv->sweep.data = srv;
    srv->refs++;
    uv_timer_start(&srv->sweep, srv_sweep_cb, 1000, 1000);
    uv_unref((uv_handle_t *)&srv->sweep);

    if (cfg->web_dir) {
        srv->web_fd = open(cfg->web_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (srv->web_fd < 0) {
            kh_err_errno(err, KH_E_INVALID, errno, "web directory %s", cfg->web_dir);
            goto fail;
        }
    }
    if (cfg->unix_path) {
        listener *lis = xcalloc(1, sizeof(*lis));
        lis->srv = srv;
        lis->local = true;
        lis->port = -1;
        srv->lis[srv->nlis++] = lis;
        int fd = kh_listen_unix(cfg->unix_path, cfg->unix_mode ? cfg->unix_mode : 0660, err);
        if (fd < 0)
            goto fail;
        lis->unix_path = xstrdup(cfg->unix_path);
        struct stat st;
        if (stat(cfg->unix_path, &st) == 0) {
            lis->unix_dev = st.st_dev;
            lis->unix_ino = st.st_ino;
        }
        if (kh_listen_start(srv, lis, fd, err) != 0)
            goto fail;
    }
    if (cfg->tcp_listen) {
        listener *lis = xcalloc(1, sizeof(*lis));
        lis->srv = srv;
        lis->port = -1;
        srv->lis[srv->nlis++] = lis;
        if (cfg->tls_cert) {
            lis->tls = true;
            lis->tls_cert = kh_fs_read(cfg->tls_cert, HTTP_TLS_FILE_MAX, NULL, err);
            if (lis->tls_cert)
                lis->tls_key = kh_fs_read(cfg->tls_key, HTTP_TLS_FILE_MAX, NULL, err);
            if (lis->tls_key && cfg->tls_trust)
                lis->tls_trust = kh_fs_read(cfg->tls_trust, HTTP_TLS_FILE_MAX, NULL, err);
            if (!lis->tls_cert || !lis->tls_key || (cfg->tls_trust && !lis->tls_trust)) {
                kh_err_prefix(err, "TLS");
                goto fail;
            }
        }
        int port = -1;
        int fd = kh_listen_tcp(cfg->tcp_listen, &port, err);
        if (fd < 0)
            goto fail;
        lis->port = port;
        if (kh_listen_start(srv, lis, fd, err) != 0)
            goto fail;
    }
    return srv;
fail:
    kh_http_server_free(srv);
    return NULL;
}

int kh_http_server_tcp_port(const kh_http_server *srv)
{
    for (size_t i = 0; srv && i < srv->nlis; i++)
        if (!srv->lis[i]->local && srv->lis[i]->mhd)
            return srv->lis[i]->port;
    return -1;
}

void kh_http_server_free(kh_http_server *srv)
{
    if (!srv || srv->freeing)
        return;
    srv->freeing = true;
    /* Streams first: their on_close runs now, their connections end below. */
    while (srv->sses)
        kh_sse_end(srv->sses);
    kh_upgrade_close_all(srv);
    kh_limits_drain_stop_all(srv);
    /* MHD cannot stop with suspended connections: resume them all. */
    for (kh_http_req *r = srv->reqs; r; r = r->next) {
        if (r->suspended) {
            r->peer_gone = true;
            r->suspended = false;
            kh_req_unwatch(r);
            MHD_resume_connection(r->conn);
        }
    }
    for (size_t i = 0; i < srv->nlis; i++)
        kh_listen_stop(srv->lis[i]);
    uv_close((uv_handle_t *)&srv->keepalive, srv_handle_closed);
    uv_close((uv_handle_t *)&srv->linger, srv_handle_closed);
    uv_close((uv_handle_t *)&srv->sweep, srv_handle_closed);
    if (srv->web_fd >= 0)
        close(srv->web_fd);
    srv->web_fd = -1;
    kh_server_unref(srv);
}
