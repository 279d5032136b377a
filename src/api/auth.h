/* auth.h - who may call the REST API: the policy behind the HTTP server's
 * auth hook (http/server.h), and the browser-session routes.
 *
 * Requests over the unix socket are trusted (its file mode is the access
 * control). On TCP every request needs "Authorization: Bearer <token>"
 * (compared in constant time, as SHA-256 digests) or a browser session
 * cookie (session.h) - with its X-CSRF-Token on writes, and from the same
 * origin - except routes flagged KH_ROUTE_PUBLIC, and KH_ROUTE_LOOPBACK_PUBLIC
 * ones from a loopback client when loopback_public is set.
 */
#ifndef KH_API_AUTH_H
#define KH_API_AUTH_H

#include <stdbool.h>

#include "http/http.h"
#include "util/err.h"

/* Route flags of the API (application bits of kh_route.flags). */
enum {
    KH_ROUTE_PUBLIC = 1u << KH_ROUTE_APP_SHIFT,          /* no token needed, even on TCP */
    KH_ROUTE_LOOPBACK_PUBLIC = 1u << (KH_ROUTE_APP_SHIFT + 1), /* no token from a loopback
                                                           * TCP client when loopback_public */
    KH_ROUTE_JOIN = 1u << (KH_ROUTE_APP_SHIFT + 2), /* also "Authorization: KH-Join <token>":
                                                     * the handler checks the one-time join
                                                     * token (cluster join); no other route
                                                     * accepts that scheme */
    KH_ROUTE_VM = 1u << (KH_ROUTE_APP_SHIFT + 3), /* a per-VM route (/vms/{name}...): sent
                                                   * on to the owner when another host owns
                                                   * the VM (api/forward.c) */
    KH_ROUTE_PEER = 1u << (KH_ROUTE_APP_SHIFT + 4), /* also "Authorization: KH-Peer <token>":
                                                     * a migration's host-to-host route; the
                                                     * handler checks the token against the
                                                     * migration record in etcd */
};

typedef struct kh_auth kh_auth;

/* token: the API token (NULL or "" = none: only the unix socket and public
 * routes work); only its digest is kept. */
kh_auth *kh_auth_new(const char *token, bool loopback_public);
void kh_auth_free(kh_auth *a);

/* The hook for kh_http_config.auth (opaque: the kh_auth). */
int kh_auth_check(const kh_http_req *req, const kh_route *route, void *opaque, kh_err *err);

/* Is an API token configured? */
bool kh_auth_has_token(const kh_auth *a);
/* Is token the API token? (constant time) */
bool kh_auth_token_ok(const kh_auth *a, const char *token, size_t len);
/* Does an Authorization header carry the API token as a bearer token? */
bool kh_auth_bearer_ok(const kh_auth *a, const char *authorization);
/* The browser sessions (session.h) of this policy. */
struct kh_sessions *kh_auth_sessions(kh_auth *a);

/* ---- browser sessions (TCP): route handlers for /api/v1/session ----
 * (session_routes.c; they find the kh_auth through kh_http_req_auth_data)
 * POST (a KH_ROUTE_PUBLIC route) {"token": "<API token>"} -> 201
 * {"csrf_token": ...} and an HttpOnly, SameSite=Strict session cookie;
 * afterwards the cookie authenticates like the bearer token, and writes
 * (anything but GET/HEAD) also need "X-CSRF-Token: <csrf_token>" (403
 * without). GET (public) tells whether and how the request is
 * authenticated ({"authenticated": false} rather than 401), with the CSRF
 * token again for a session. DELETE logs out. See session.h. */
void kh_session_routes_post(kh_http_req *req, void *app);
void kh_session_routes_get(kh_http_req *req, void *app);
void kh_session_routes_delete(kh_http_req *req, void *app);

/* The hook of the host-to-host listener (mutual TLS): a request passes with
 * a client certificate from the cluster CA (the caller was checked on the
 * host that forwards it), or on the join route with a KH-Join token. */
int kh_auth_check_peer(const kh_http_req *req, const kh_route *route, void *opaque,
                       kh_err *err);

#endif
