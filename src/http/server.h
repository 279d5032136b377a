/* server.h - the HTTP server object: its configuration, listeners and
 * the authentication hook.
 *
 * Listeners: a unix socket (its file mode is the access control: requests
 * there are "local") and optionally TCP, optionally with TLS. The server
 * knows no token or session: every routed request (and every unrouted one,
 * before its 404/405) goes through cfg->auth, which the application
 * supplies; a TCP listener without an auth hook is refused. Static files
 * (web_dir) are served without the hook.
 */
#ifndef KH_HTTP_SERVER_H
#define KH_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "http/router.h"
#include "util/err.h"

typedef struct kh_http_server kh_http_server;

/* Called once per answered request (after the reply is queued): the method,
 * the route pattern (NULL when no route matched) and the latency. */
typedef void (*kh_http_request_cb)(void *opaque, const char *method, const char *route,
                                   unsigned status, double seconds);

/* May this request go on? route is NULL when none matched (the answer then
 * decides between 401/403 and 404/405). 0 to proceed; -1 with err set
 * (KH_E_UNAUTHORIZED, KH_E_FORBIDDEN ...) to be answered with err, or
 * KH_HTTP_AUTH_MISDIRECTED with err set to be answered 421. Runs
 * once the headers are in, before the body. */
#define KH_HTTP_AUTH_MISDIRECTED (-2) /* the hook's answer: 421, not this server's Host */
typedef int (*kh_http_auth_fn)(kh_http_req *req, const kh_route *route, void *opaque,
                               kh_err *err);

typedef struct kh_http_config {
    const char *unix_path;   /* NULL: no unix listener */
    mode_t unix_mode;        /* e.g. 0660; 0 = 0660 */
    const char *tcp_listen;  /* "ADDR:PORT" ("[::1]:8443" for v6) or NULL */
    const char *tls_cert;    /* PEM file; with tls_key enables TLS on TCP */
    const char *tls_key;
    const char *tls_trust;   /* PEM file of the CA client certificates are checked
                              * against (requested, not required: the auth hook asks
                              * kh_http_req_peer_verified), or NULL */
    size_t max_body;         /* bytes; 0 = 1 MiB */
    unsigned max_connections;/* per listener; 0 = 1024 */
    unsigned per_ip_connections; /* TCP, per client address; 0 = 64 */
    unsigned head_timeout_ms;/* TCP: TLS handshake + request head, from the connection's
                              * start or its previous reply; 0 = 10000 */
    unsigned rate_limit;     /* TCP requests per second per caller; 0 = none */
    unsigned rate_burst;     /* bucket size; 0 = rate_limit */
    const char *web_dir;     /* static files served under "/" (GET), or NULL */
    const char *web_skip;    /* a path prefix ("/api") never served from web_dir, or NULL */
    unsigned idle_timeout;   /* seconds an idle plain HTTP connection is kept;
                              * 0 = 60 (WebSocket and SSE are exempt) */
    kh_http_auth_fn auth;    /* required with tcp_listen; NULL: everything allowed */
    void *auth_opaque;       /* also given to handlers by kh_http_req_auth_data */
    kh_http_request_cb on_request; /* optional */
    /* Optional, before each handler (after auth and the body): true when it
     * took the request (it replies, now or later, instead of the handler). */
    bool (*pre)(kh_http_req *req, void *app);
    void *on_request_opaque;
    /* Optional, once per answered request, after on_request (the request
     * with its route, principal and body still readable; the final status):
     * e.g. an audit trail. Gets auth_opaque. */
    void (*on_reply)(kh_http_req *req, unsigned status, void *auth_opaque);
} kh_http_config;

kh_http_server *kh_http_server_new(uv_loop_t *loop, const kh_http_config *cfg,
                                   const kh_route *routes, size_t nroutes, void *app,
                                   kh_err *err);
/* Stop listening, close every connection (WebSockets and SSE included). */
void kh_http_server_free(kh_http_server *srv);
/* tlscert.c: the server's own certificate in dir (cert.pem, key.pem), an
 * EC P-256 key and a self-signed certificate for san ("DNS:localhost,
 * IP:127.0.0.1"), made when missing (*made true) and reused after. Paths
 * out, caller frees. */
int kh_http_tls_self_signed(const char *dir, const char *san, char **cert_out, char **key_out,
                            bool *made, kh_err *err);
/* "AB:CD:..." SHA-256 of a PEM certificate file's DER; caller frees. */
char *kh_http_tls_fingerprint(const char *cert_path, kh_err *err);

/* The bound TCP port (useful with "ADDR:0"), or -1 without a TCP listener. */
int kh_http_server_tcp_port(const kh_http_server *srv);

#endif
