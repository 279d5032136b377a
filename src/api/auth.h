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
#include <uv.h>

#include "auth/auth.h"
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

/* Users, tokens, ACLs, projects and the audit log live in st (auth/auth.h);
 * without a store only the static token and the unix socket work. */
void kh_auth_set_store(kh_auth *a, kh_store *st);
bool kh_auth_has_users(const kh_auth *a);
/* The loop whose thread pool checks passwords (NULL: checked inline). */
void kh_auth_set_loop(kh_auth *a, uv_loop_t *loop);
uv_loop_t *kh_auth_loop(const kh_auth *a);
kh_store *kh_auth_store(const kh_auth *a);
/* OIDC login (auth/oidc.h; NULL: none): a takes ownership. */
struct kh_oidc;
void kh_auth_set_oidc(kh_auth *a, struct kh_oidc *o);
struct kh_oidc *kh_auth_oidc(const kh_auth *a);
/* The directories host paths may name (copied), and whether webhooks may
 * name loopback/link-local/metadata addresses. */
void kh_auth_set_policy(kh_auth *a, const char *const *allow, size_t n, bool webhook_internal);

/* The hook for kh_http_config.auth (opaque: the kh_auth): identifies the
 * caller (kh_http_req_set_principal: "root@local" for the unix socket and
 * the static token, "user" for a session of a user, "user!token" for an
 * API token), then checks the route's privilege (route->priv) on its path
 * (route->acl_path with the parameters filled in; {project} = ?project=
 * or the user's default project). A missing privilege is 403 naming it
 * and the path; an object of a project where the caller holds nothing is
 * 404, as if it did not exist. */
int kh_auth_check(kh_http_req *req, const kh_route *route, void *opaque, kh_err *err);
/* The hook for kh_http_config.on_reply: the audit log (every write and
 * login with principal, address, method, path, object and status) and
 * the project of objects created or deleted. */
void kh_auth_on_reply(kh_http_req *req, unsigned status, void *opaque);

/* Before a handler that creates an object: record it in its project now,
 * so the events of its creation reach that project (undone by on_reply
 * when the create fails). Called from the API's pre hook. */
void kh_auth_pre(kh_http_req *req);

/* ---- for handlers ---- */
/* The caller (NULL when not authenticated: public routes). */
const char *kh_auth_principal(const kh_http_req *req);
/* The project a create goes to: ?project= (404 when unknown) or the
 * caller's default project ("default" for root). Owned. */
char *kh_auth_project(const kh_http_req *req, kh_err *err);
/* Does the caller hold need on the object path? -1 with err 403 (naming
 * privilege and path) or 404 (an object of a project the caller has no
 * rights in). */
int kh_auth_need(const kh_http_req *req, const char *path, kh_privs need, kh_err *err);
bool kh_auth_can(const kh_http_req *req, const char *path, kh_privs need);
/* The same for a principal kept beyond its request (an event stream). */
bool kh_auth_principal_can(const kh_auth *a, const char *principal, const char *path,
                           kh_privs need);
/* A host path in a request: Sys.HostPath on "/" and inside the allowed
 * directories (403 otherwise). what names the field. */
int kh_auth_hostpath(const kh_http_req *req, const char *path, const char *what, kh_err *err);
/* Keep only the items of arr (objects with "name") the caller holds need
 * on (path prefix + name). */
void kh_auth_filter(const kh_http_req *req, json_t *arr, const char *prefix, kh_privs need);
/* True when kh_auth_filter keeps everything for this caller (root). */
bool kh_auth_sees_all(const kh_http_req *req);
/* A webhook URL's host by the policy (400 for internal addresses). */
int kh_auth_webhook_host(const kh_http_req *req, const char *host, kh_err *err);

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
/* Log principal in: a new session and its cookie; 201 with the CSRF token,
 * or with redirect a 302 to it (OIDC callback: the page asks GET
 * /api/v1/session for the CSRF token). */
void kh_session_routes_start(kh_http_req *req, kh_auth *auth, const char *principal,
                             const char *redirect);

/* ---- OIDC login (oidc_routes.c; public routes) ----
 * GET /api/v1/oidc/login: 302 to the provider (state, nonce, PKCE S256),
 * with a short-lived cookie binding the state to this browser.
 * GET /api/v1/oidc/callback?code&state: the code exchanged and the ID
 * token checked (auth/oidc.h), the user made or updated, a session
 * started, 302 to the web console. Every outcome is in the audit log. */
void kh_oidc_routes_login(kh_http_req *req, void *app);
void kh_oidc_routes_callback(kh_http_req *req, void *app);
/* With ?cli_port&cli_challenge&cli_state on the login URL the callback
 * sends the browser to http://127.0.0.1:PORT/callback?state&grant instead
 * (auth/oidc.h); POST /api/v1/oidc/grant {grant, verifier} then answers
 * 201 {token, principal, expires_at}: an API token user!oidc-cli-HEX with
 * the user's rights. DELETE /api/v1/session with such a token revokes it. */
void kh_oidc_routes_grant(kh_http_req *req, void *app);

/* The hook of the host-to-host listener (mutual TLS): a request passes with
 * a client certificate from the cluster CA (the caller was checked on the
 * host that forwards it), or on the join route with a KH-Join token. */
int kh_auth_check_peer(kh_http_req *req, const kh_route *route, void *opaque,
                       kh_err *err);

#endif
