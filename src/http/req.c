/* req.c - a request's lifetime on the server side (suspend while the
 * application holds it, resume on a late reply or a hang-up, free) and
 * what a handler reads from it (kh_http_req_*). See internal.h for the
 * lifetime rules.
 */
#include "http/internal.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- requests: suspend, resume, free ---- */

static void watch_closed(uv_handle_t *h)
{
    free(h);
}

static void watch_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    kh_http_req *req = h->data;
    req->peer_gone = true;
    kh_req_resume(req);
}

/* Park the connection until a reply or an SSE event comes. */
void kh_req_suspend(kh_http_req *req)
{
    if (req->suspended || !req->conn)
        return;
    MHD_suspend_connection(req->conn);
    req->suspended = true;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return;
    uv_poll_t *w = xcalloc(1, sizeof(*w));
    if (uv_poll_init(req->srv->loop, w, ci->connect_fd) != 0) {
        free(w);
        return; /* no hang-up detection; the reply still works */
    }
    w->data = req;
    uv_poll_start(w, UV_DISCONNECT, watch_cb);
    req->watch = w;
}

void kh_req_unwatch(kh_http_req *req)
{
    if (req->watch) {
        /* Removes the fd from the loop at once, while it is surely open. */
        uv_close((uv_handle_t *)req->watch, watch_closed);
        req->watch = NULL;
    }
}

void kh_req_resume(kh_http_req *req)
{
    if (!req->suspended)
        return;
    req->suspended = false;
    kh_req_unwatch(req);
    if (req->conn)
        MHD_resume_connection(req->conn);
    kh_listen_kick(req->lis);
}

void kh_req_free(kh_http_req *req)
{
    free(req->target);
    free(req->method);
    free(req->path);
    for (size_t i = 0; i < req->nparams; i++)
        free(req->params[i].value);
    free(req->body);
    free(req->principal);
    free(req->acting_for);
    json_decref(req->json);
    kh_strv_free(req->hdrs);
    free(req);
}

/* ---- accessors ---- */

/* ---- request accessors and replies ---- */

const char *kh_http_req_method(const kh_http_req *req) { return req->method; }
const char *kh_http_req_path(const kh_http_req *req) { return req->path; }

const char *kh_http_req_param(const kh_http_req *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nparams; i++)
        if (req->params[i].name_len == n && memcmp(req->params[i].name, name, n) == 0)
            return req->params[i].value;
    return NULL;
}

const char *kh_http_req_query(const kh_http_req *req, const char *key)
{
    if (!req->conn)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *kh_http_req_body(const kh_http_req *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body ? req->body : "";
}

bool kh_http_req_is_local(const kh_http_req *req)
{
    return req->local;
}

json_t *kh_http_req_json(kh_http_req *req, kh_err *err)
{
    if (req->json)
        return req->json;
    if (req->body_len == 0) {
        kh_err_set(err, KH_E_INVALID, "a JSON object body is required");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        kh_err_set(err, KH_E_INVALID, "malformed JSON at line %d column %d: %s", je.line,
                   je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        kh_err_set(err, KH_E_INVALID, "the request body must be a JSON object");
        return NULL;
    }
    req->json = j;
    return j;
}

json_t *kh_http_req_json_or_empty(kh_http_req *req, kh_err *err)
{
    if (!req->json && req->body_len == 0) {
        req->json = json_object();
        return req->json;
    }
    return kh_http_req_json(req, err);
}

void kh_http_req_add_header(kh_http_req *req, const char *name, const char *value)
{
    if (!name || !value)
        return;
    if (!req->hdrs)
        req->hdrs = kh_strv_new();
    kh_strv_add(req->hdrs, name);
    kh_strv_add(req->hdrs, value);
}

void kh_http_req_on_abort(kh_http_req *req, void (*cb)(kh_http_req *req, void *opaque),
                          void *opaque)
{
    req->abort_cb = cb;
    req->abort_opaque = opaque;
}


const char *kh_http_req_header(const kh_http_req *req, const char *name)
{
    if (!req->conn)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

bool kh_http_req_is_tls(const kh_http_req *req)
{
    return req->lis && req->lis->tls;
}

const char *kh_http_req_target(const kh_http_req *req)
{
    return req->target;
}

bool kh_http_req_peer_verified(const kh_http_req *req)
{
    if (!req->lis || !req->lis->tls || !req->lis->tls_trust || !req->conn)
        return false;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return false;
    gnutls_session_t s = (gnutls_session_t)ci->tls_session;
    unsigned int n = 0;
    if (!gnutls_certificate_get_peers(s, &n) || n == 0)
        return false;
    unsigned int status = 1;
    return gnutls_certificate_verify_peers2(s, &status) == GNUTLS_E_SUCCESS && status == 0;
}

char *kh_http_req_peer_fingerprint(const kh_http_req *req)
{
    if (!req->lis || !req->lis->tls || !req->conn)
        return NULL;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return NULL;
    unsigned int n = 0;
    const gnutls_datum_t *certs =
        gnutls_certificate_get_peers((gnutls_session_t)ci->tls_session, &n);
    unsigned char md[32];
    if (!certs || n == 0 || gnutls_hash_fast(GNUTLS_DIG_SHA256, certs[0].data, certs[0].size,
                                             md) != 0)
        return NULL;
    char *hex = xmalloc(sizeof(md) * 2 + 1);
    for (size_t i = 0; i < sizeof(md); i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return hex;
}

const kh_route *kh_http_req_route(const kh_http_req *req)
{
    return req->route;
}

void *kh_http_req_auth_data(const kh_http_req *req)
{
    return req->srv ? req->srv->auth_opaque : NULL;
}

/* Did the TCP client connect from a loopback address? */
bool kh_http_req_is_loopback(const kh_http_req *req)
{
    const union MHD_ConnectionInfo *ci =
        req->conn ? MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS)
                  : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (!sa || req->local)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* Is the Host header a name of this server: "localhost", or an IP literal
 * that is a loopback address or the address the connection came in on?
 * A DNS-rebinding page sends its own domain name and fails this. */
bool kh_http_req_host_is_self(const kh_http_req *req)
{
    const char *h = kh_http_req_header(req, MHD_HTTP_HEADER_HOST);
    if (!h || !req->conn)
        return false;
    char host[INET6_ADDRSTRLEN + 8];
    size_t n;
    if (h[0] == '[') {
        const char *e = strchr(h, ']');
        if (!e || (e[1] && e[1] != ':'))
            return false;
        n = (size_t)(e - h - 1);
        h++;
    } else {
        n = strcspn(h, ":");
    }
    if (n == 0 || n >= sizeof(host))
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
        return true;
    unsigned char want[16] = { 0 };
    int fam = inet_pton(AF_INET, host, want) == 1 ? AF_INET
              : inet_pton(AF_INET6, host, want) == 1 ? AF_INET6 : 0;
    if (!fam)
        return false;
    if (fam == AF_INET && want[0] == 127)
        return true;
    if (fam == AF_INET6 && IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)(const void *)want))
        return true;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl = sizeof(ss);
    if (!ci || getsockname(ci->connect_fd, (struct sockaddr *)&ss, &sl) != 0)
        return false;
    if (ss.ss_family == AF_INET && fam == AF_INET)
        return memcmp(&((struct sockaddr_in *)&ss)->sin_addr, want, 4) == 0;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        if (fam == AF_INET6)
            return memcmp(a, want, 16) == 0;
        return IN6_IS_ADDR_V4MAPPED(a) && memcmp(a->s6_addr + 12, want, 4) == 0;
    }
    return false;
}

void kh_http_req_set_principal(kh_http_req *req, const char *principal)
{
    free(req->principal);
    req->principal = principal ? xstrdup(principal) : NULL;
}

const char *kh_http_req_principal(const kh_http_req *req)
{
    return req->principal;
}

void kh_http_req_set_acting_for(kh_http_req *req, const char *who)
{
    free(req->acting_for);
    req->acting_for = who ? xstrdup(who) : NULL;
}

const char *kh_http_req_acting_for(const kh_http_req *req)
{
    return req->acting_for;
}

/* The client's address as text ("unix" over the unix socket). */
void kh_http_req_peer_address(const kh_http_req *req, char *buf, size_t len)
{
    snprintf(buf, len, "%s", req->local ? "unix" : "?");
    const union MHD_ConnectionInfo *ci =
        !req->local && req->conn
            ? MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS)
            : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (!sa)
        return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                  (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                  (socklen_t)len);
}
