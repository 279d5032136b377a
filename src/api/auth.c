/* auth.c - the API's auth policy (see auth.h): who is calling (the static
 * token, user API tokens, browser sessions, the unix socket), the central
 * privilege check of each route (its priv and acl_path columns), the
 * helpers handlers use for objects named in bodies, host paths and quotas,
 * and the audit hook that records every write and login. */
#include "api/auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "api/session.h"
#include "auth/oidc.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

struct kh_auth {
    bool has_token;
    unsigned char token_hash[32]; /* SHA-256 of the token; the token is not kept */
    bool loopback_public;         /* KH_ROUTE_LOOPBACK_PUBLIC routes open to 127/8, ::1 */
    kh_sessions *sessions;        /* browser logins (cookie + CSRF token) */
    kh_store *st;                 /* users, tokens, ACLs, projects, audit (NULL: none) */
    uv_loop_t *loop;              /* password checks on its thread pool (NULL: inline) */
    char **allow;                 /* directories host paths may name */
    size_t nallow;
    bool webhook_internal;        /* webhooks may name loopback/link-local addresses */
    struct kh_oidc *oidc;         /* OIDC login (NULL: not configured; owned) */
    /* objects recorded in their project before the handler made them (so
     * its events already reach the project); forgotten if it fails */
    struct pending {
        const kh_http_req *req; /* compared, never followed */
        char kind[32], name[160];
    } pending[64];
    unsigned npending_next;
};

static void token_hash(const char *s, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    if (!EVP_Digest(s, len, out, &n, EVP_sha256(), NULL) || n != 32)
        memset(out, 0, 32);
}

kh_auth *kh_auth_new(const char *token, bool loopback_public)
{
    kh_auth *a = xcalloc(1, sizeof(*a));
    a->loopback_public = loopback_public;
    a->sessions = kh_sessions_new(0, 0, 0);
    if (token && token[0]) {
        a->has_token = true;
        token_hash(token, strlen(token), a->token_hash);
    }
    return a;
}

void kh_auth_set_store(kh_auth *a, kh_store *st)
{
    a->st = st;
}

void kh_auth_set_loop(kh_auth *a, uv_loop_t *loop)
{
    a->loop = loop;
}

void kh_auth_set_oidc(kh_auth *a, struct kh_oidc *o)
{
    kh_oidc_free(a->oidc);
    a->oidc = o;
}

struct kh_oidc *kh_auth_oidc(const kh_auth *a)
{
    return a ? a->oidc : NULL;
}

uv_loop_t *kh_auth_loop(const kh_auth *a)
{
    return a ? a->loop : NULL;
}

void kh_auth_set_policy(kh_auth *a, const char *const *allow, size_t n, bool webhook_internal)
{
    for (size_t i = 0; i < a->nallow; i++)
        free(a->allow[i]);
    free(a->allow);
    a->allow = xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        a->allow[i] = xstrdup(allow[i]);
    a->nallow = n;
    a->webhook_internal = webhook_internal;
}

void kh_auth_free(kh_auth *a)
{
    if (!a)
        return;
    kh_sessions_free(a->sessions);
    kh_oidc_free(a->oidc);
    for (size_t i = 0; i < a->nallow; i++)
        free(a->allow[i]);
    free(a->allow);
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

bool kh_auth_has_token(const kh_auth *a)
{
    return a->has_token;
}

bool kh_auth_has_users(const kh_auth *a)
{
    return a && a->st;
}

kh_sessions *kh_auth_sessions(kh_auth *a)
{
    return a->sessions;
}

kh_store *kh_auth_store(const kh_auth *a)
{
    return a ? a->st : NULL;
}

bool kh_auth_token_ok(const kh_auth *a, const char *token, size_t len)
{
    if (!a || !a->has_token)
        return false;
    unsigned char h[32];
    token_hash(token, len, h);
    return CRYPTO_memcmp(h, a->token_hash, 32) == 0;
}

/* The token of an "Authorization: Bearer" header (trimmed) into out. */
static bool bearer(const char *auth, char *out, size_t outsz)
{
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= outsz)
        return false;
    memcpy(out, tok, len);
    out[len] = '\0';
    return true;
}

/* Bearer token check, constant time (both sides hashed first, so the
 * comparison does not even depend on the length). */
bool kh_auth_bearer_ok(const kh_auth *a, const char *auth)
{
    char tok[512];
    if (!a || !a->has_token || !bearer(auth, tok, sizeof(tok)))
        return false;
    bool ok = kh_auth_token_ok(a, tok, strlen(tok));
    OPENSSL_cleanse(tok, sizeof(tok));
    return ok;
}

/* Who sent req: the principal into out (KH_OK), or KH_E_UNAUTHORIZED /
 * KH_E_FORBIDDEN (a session write without its CSRF token) with *why. */
static kh_code identify(kh_auth *a, const kh_http_req *req, char *out, size_t outsz,
                        const char **why)
{
    *why = "missing or invalid bearer token or session";
    if (kh_http_req_is_local(req)) {
        snprintf(out, outsz, "%s", KH_AUTH_ROOT);
        return KH_OK;
    }
    const char *auth = kh_http_req_header(req, "Authorization");
    if (auth) {
        char tok[512];
        if (!bearer(auth, tok, sizeof(tok)))
            return KH_E_UNAUTHORIZED;
        kh_code c = KH_E_UNAUTHORIZED;
        if (kh_auth_token_ok(a, tok, strlen(tok))) {
            snprintf(out, outsz, "%s", KH_AUTH_ROOT);
            c = KH_OK;
        } else if (a->st && strchr(tok, '!') &&
                   kh_tokens_verify(a->st, tok, kh_wall_time(), out, outsz, why)) {
            c = KH_OK;
        }
        OPENSSL_cleanse(tok, sizeof(tok));
        return c;
    }
    const char *cookie = kh_http_req_header(req, "Cookie");
    kh_code c = kh_sessions_check(a->sessions, cookie, kh_http_req_method(req),
                                  kh_http_req_header(req, "X-CSRF-Token"), kh_now_ms());
    if (c == KH_OK && !kh_http_req_same_origin(req))
        c = KH_E_FORBIDDEN;
    if (c == KH_E_FORBIDDEN)
        *why = "a write with a session cookie needs its X-CSRF-Token, from the same origin";
    if (c != KH_OK)
        return c;
    const char *p = kh_sessions_principal(a->sessions, cookie, kh_now_ms());
    snprintf(out, outsz, "%s", p && p[0] ? p : KH_AUTH_ROOT);
    /* a user deleted or disabled since the login loses the session */
    if (strcmp(out, KH_AUTH_ROOT) != 0 && (!a->st || !kh_users_enabled(a->st, out)))
        return KH_E_UNAUTHORIZED;
    return KH_OK;
}

const char *kh_auth_principal(const kh_http_req *req)
{
    const char *p = kh_http_req_principal(req);
    return p ? p : kh_http_req_is_local(req) ? KH_AUTH_ROOT : NULL;
}

static bool is_root(const char *principal)
{
    return principal && strcmp(principal, KH_AUTH_ROOT) == 0;
}

char *kh_auth_project(const kh_http_req *req, kh_err *err)
{
    kh_auth *a = kh_http_req_auth_data(req);
    const char *q = kh_http_req_query(req, "project");
    if (q) {
        if (!kh_privs_name_ok(q) || !a || !a->st || !kh_projects_exists(a->st, q)) {
            kh_err_set(err, KH_E_NOTFOUND, "no such project \"%.64s\"", q);
            return NULL;
        }
        return xstrdup(q);
    }
    const char *p = kh_auth_principal(req);
    if (!p || is_root(p) || !a || !a->st)
        return xstrdup("default");
    char user[KH_AUTH_NAME_MAX + 1];
    snprintf(user, sizeof(user), "%.*s", (int)strcspn(p, "!"), p);
    char *proj = kh_users_project(a->st, user);
    return proj ? proj : xstrdup("default");
}

int kh_auth_need(const kh_http_req *req, const char *path, kh_privs need, kh_err *err)
{
    kh_auth *a = kh_http_req_auth_data(req);
    const char *p = kh_auth_principal(req);
    if (is_root(p))
        return 0;
    if (!a || !a->st || !p) {
        kh_err_set(err, KH_E_FORBIDDEN, "permission denied: %s on %s is needed",
                   kh_privs_name(need) ? kh_privs_name(need) : "?", path);
        return -1;
    }
    kh_acl_chain c;
    if (kh_acl_chain_make(a->st, path, &c, err) < 0)
        return -1;
    kh_privs have = 0;
    int rc = kh_acl_effective(a->st, p, &c, &have, err);
    bool object = c.project && strncmp(path, "/projects/", 10) != 0;
    kh_acl_chain_clear(&c);
    if (rc < 0)
        return -1;
    if ((have & need) == need)
        return 0;
    if (object && have == 0) /* another project's object: as if it did not exist */
        kh_err_set(err, KH_E_NOTFOUND, "no such object %s", path);
    else
        kh_err_set(err, KH_E_FORBIDDEN, "permission denied: %s on %s is needed",
                   kh_privs_name(need) ? kh_privs_name(need) : "?", path);
    return -1;
}

bool kh_auth_principal_can(const kh_auth *a, const char *principal, const char *path,
                           kh_privs need)
{
    if (is_root(principal))
        return true;
    kh_privs have = 0;
    return a && a->st && principal &&
           kh_acl_effective_path(a->st, principal, path, &have, NULL) == 0 &&
           (have & need) == need;
}

bool kh_auth_can(const kh_http_req *req, const char *path, kh_privs need)
{
    return kh_auth_need(req, path, need, NULL) == 0;
}

int kh_auth_hostpath(const kh_http_req *req, const char *path, const char *what, kh_err *err)
{
    kh_auth *a = kh_http_req_auth_data(req);
    if (!path || path[0] != '/')
        return 0; /* not a host path: the validators refuse it (400) */
    if (kh_auth_need(req, "/", KH_PRIV_SYS_HOSTPATH, err) < 0) {
        if (err)
            kh_err_prefix(err, "%s: a host path", what);
        return -1;
    }
    if (!a)
        return 0; /* no policy (unit tests without a daemon) */
    return kh_hostpath_check((const char *const *)a->allow, a->nallow, path, what, err);
}

int kh_auth_webhook_host(const kh_http_req *req, const char *host, kh_err *err)
{
    kh_auth *a = kh_http_req_auth_data(req);
    return kh_hostpath_url_check(host, a && a->webhook_internal, err);
}

/* route->acl_path with its {param}s filled in, into out; {project} is the
 * target project. -1 with err set. */
static int expand(const kh_http_req *req, const char *pattern, char *out, size_t outsz,
                  kh_err *err)
{
    size_t o = 0;
    for (const char *p = pattern; *p;) {
        if (*p != '{') {
            if (o + 1 >= outsz)
                goto long_;
            out[o++] = *p++;
            continue;
        }
        const char *close = strchr(p, '}');
        if (!close)
            goto long_;
        char name[32];
        snprintf(name, sizeof(name), "%.*s", (int)(close - p - 1), p + 1);
        char *proj = NULL;
        const char *v;
        if (strcmp(name, "project") == 0) {
            proj = kh_auth_project(req, err);
            if (!proj)
                return -1;
            v = proj;
        } else {
            v = kh_http_req_param(req, name);
        }
        size_t n = v ? strlen(v) : 0;
        if (o + n + 1 >= outsz) {
            free(proj);
            goto long_;
        }
        memcpy(out + o, v ? v : "", n);
        o += n;
        free(proj);
        p = close + 1;
    }
    out[o] = '\0';
    return 0;
long_:
    kh_err_set(err, KH_E_INVALID, "path too long");
    return -1;
}

/* PUT /security-groups/{name} of a group without a record creates one: it
 * is checked on the caller's project (groups that existed before projects
 * are recorded as "default" at start, so "no record" means "no group"). */
static const char *route_acl(const kh_auth *a, const kh_http_req *req, const kh_route *route)
{
    if (strcmp(route->method, "PUT") == 0 && strcmp(route->acl_path, "/security-groups/{name}") == 0) {
        char *proj = kh_projects_object_find(a->st, "security-group",
                                             kh_http_req_param(req, "name"));
        bool recorded = proj != NULL;
        free(proj);
        if (!recorded)
            return "/projects/{project}";
    }
    return route->acl_path;
}

/* A request with an Authorization header is judged by it alone; otherwise
 * by its session cookie. Then the route's privilege on its path. */
int kh_auth_check(kh_http_req *req, const kh_route *route, void *opaque, kh_err *err)
{
    kh_auth *a = opaque;
    char principal[KH_SESSION_PRINCIPAL_MAX];
    const char *why = NULL;
    bool public_ = route && (route->flags & KH_ROUTE_PUBLIC);
    if (route && (route->flags & KH_ROUTE_LOOPBACK_PUBLIC) && a->loopback_public &&
        kh_http_req_is_loopback(req) && !kh_http_req_header(req, "Authorization")) {
        /* DNS rebinding: a page of another site resolved to 127.0.0.1 */
        if (!kh_http_req_host_is_self(req)) {
            kh_err_set(err, KH_E_FORBIDDEN, "the Host header does not name this server");
            return KH_HTTP_AUTH_MISDIRECTED;
        }
        public_ = true;
    }
    const char *auth = kh_http_req_header(req, "Authorization");
    if (!kh_http_req_is_local(req) && auth && route) {
        if ((route->flags & KH_ROUTE_JOIN) && strncmp(auth, "KH-Join ", 8) == 0)
            return 0; /* the join route's handler checks and consumes the join token */
        if ((route->flags & KH_ROUTE_PEER) && strncmp(auth, "KH-Peer ", 8) == 0)
            return 0; /* migrate_routes.c checks it against the migration record */
    }
    kh_code c = identify(a, req, principal, sizeof(principal), &why);
    if (c == KH_OK)
        kh_http_req_set_principal(req, principal);
    if (public_)
        return 0;
    if (c != KH_OK) {
        kh_err_set(err, c, "%s", why);
        return -1;
    }
    if (!route || !route->priv || !route->acl_path || is_root(principal))
        return 0;
    if (!a->st) {
        kh_err_set(err, KH_E_FORBIDDEN, "permission denied: %s on %s is needed", route->priv,
                   route->acl_path);
        return -1;
    }
    char path[KH_AUTH_PATH_MAX];
    if (expand(req, route_acl(a, req, route), path, sizeof(path), err) < 0)
        return -1;
    return kh_auth_need(req, path, kh_privs_parse(route->priv), err);
}

int kh_auth_check_peer(kh_http_req *req, const kh_route *route, void *opaque, kh_err *err)
{
    (void)opaque;
    if (kh_http_req_peer_verified(req)) {
        /* another host of the cluster: it checked its caller (handlers see
         * root@local here; see docs/api.md on projects in a cluster); the
         * audit names that caller and host */
        kh_http_req_set_principal(req, KH_AUTH_ROOT);
        char who[300];
        if (kh_audit_forwarded_for(kh_http_req_header(req, "KH-Forwarded"), who, sizeof(who)))
            kh_http_req_set_acting_for(req, who);
        return 0;
    }
    const char *auth = kh_http_req_header(req, "Authorization");
    if (auth && route && (route->flags & KH_ROUTE_JOIN) && strncmp(auth, "KH-Join ", 8) == 0)
        return 0;
    kh_err_set(err, KH_E_UNAUTHORIZED, "host-to-host calls need a client certificate from "
               "the cluster CA");
    return -1;
}

/* ---- the audit hook ---- */

/* The kind and name of the object a successful create made, or false. */
static bool created(kh_http_req *req, const kh_route *route, char *kind, size_t ksz,
                    char *name, size_t nsz)
{
    const char *path = route->path;
    const char *bodyname = NULL;
    if (strcmp(route->method, "POST") == 0 || strcmp(route->method, "PUT") == 0) {
        kh_err e = KH_ERR_INIT;
        json_t *b = (route->flags & KH_ROUTE_RAW) ? NULL : kh_http_req_json(req, &e);
        bodyname = b ? json_string_value(json_object_get(b, "name")) : NULL;
    }
    if (strcmp(route->method, "POST") == 0 && strcmp(path, "/api/v1/vms") == 0 && bodyname) {
        snprintf(kind, ksz, "vm");
        snprintf(name, nsz, "%s", bodyname);
    } else if (strcmp(route->method, "POST") == 0 &&
               strcmp(path, "/api/v1/pools/{pool}/volumes") == 0 && bodyname) {
        snprintf(kind, ksz, "volume");
        snprintf(name, nsz, "%s/%s", kh_http_req_param(req, "pool"), bodyname);
    } else if (strcmp(route->method, "PUT") == 0 &&
               strcmp(path, "/api/v1/pools/{pool}/volumes/{volume}/data") == 0) {
        snprintf(kind, ksz, "volume");
        snprintf(name, nsz, "%s/%s", kh_http_req_param(req, "pool"),
                 kh_http_req_param(req, "volume"));
    } else if (strcmp(route->method, "POST") == 0 && strcmp(path, "/api/v1/networks") == 0 &&
               bodyname) {
        snprintf(kind, ksz, "network");
        snprintf(name, nsz, "%s", bodyname);
    } else if (strcmp(route->method, "PUT") == 0 &&
               strcmp(path, "/api/v1/security-groups/{name}") == 0) {
        snprintf(kind, ksz, "security-group");
        snprintf(name, nsz, "%s", kh_http_req_param(req, "name"));
    } else {
        return false;
    }
    return true;
}

/* The kind and name of the object a successful DELETE removed, or false. */
static bool deleted(const kh_http_req *req, const kh_route *route, char *kind, size_t ksz,
                    char *name, size_t nsz)
{
    if (strcmp(route->method, "DELETE") != 0)
        return false;
    if (strcmp(route->path, "/api/v1/vms/{name}") == 0)
        snprintf(kind, ksz, "vm");
    else if (strcmp(route->path, "/api/v1/networks/{name}") == 0)
        snprintf(kind, ksz, "network");
    else if (strcmp(route->path, "/api/v1/security-groups/{name}") == 0)
        snprintf(kind, ksz, "security-group");
    else if (strcmp(route->path, "/api/v1/pools/{pool}/volumes/{volume}") == 0) {
        snprintf(kind, ksz, "volume");
        snprintf(name, nsz, "%s/%s", kh_http_req_param(req, "pool"),
                 kh_http_req_param(req, "volume"));
        return true;
    } else
        return false;
    snprintf(name, nsz, "%s", kh_http_req_param(req, "name"));
    return true;
}

static struct pending *pending_of(kh_auth *a, const kh_http_req *req)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(a->pending); i++)
        if (a->pending[i].req == req)
            return &a->pending[i];
    return NULL;
}

void kh_auth_pre(kh_http_req *req)
{
    kh_auth *a = kh_http_req_auth_data(req);
    const kh_route *route = kh_http_req_route(req);
    char kind[32], name[160];
    if (!a || !a->st || !route || !created(req, route, kind, sizeof(kind), name, sizeof(name)))
        return;
    char *have = kh_projects_object_find(a->st, kind, name);
    if (have) { /* a stale record, or the name is taken: on_reply decides */
        free(have);
        return;
    }
    char *proj = kh_auth_project(req, NULL);
    if (proj && kh_projects_object_set(a->st, kind, name, proj, NULL) == 0) {
        struct pending *p = &a->pending[a->npending_next++ % KH_ARRAY_LEN(a->pending)];
        p->req = req;
        snprintf(p->kind, sizeof(p->kind), "%s", kind);
        snprintf(p->name, sizeof(p->name), "%s", name);
    }
    free(proj);
}

static bool safe_method(const char *m)
{
    return !m || strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0;
}

void kh_auth_on_reply(kh_http_req *req, unsigned status, void *opaque)
{
    kh_auth *a = opaque;
    const kh_route *route = kh_http_req_route(req);
    const char *method = kh_http_req_method(req);
    if (!a || !a->st || safe_method(method))
        return;
    struct pending *pend = pending_of(a, req);
    if (pend) {
        /* (the same object: a request whose client left never gets here, and
         * a later one may reuse its address) */
        char pk[32], pn[160];
        bool same = route && created(req, route, pk, sizeof(pk), pn, sizeof(pn)) &&
                    strcmp(pk, pend->kind) == 0 && strcmp(pn, pend->name) == 0;
        if (same && (status < 200 || status >= 300)) /* not made: the name is not ours */
            kh_projects_object_forget(a->st, pend->kind, pend->name, NULL);
        pend->req = NULL;
    }
    char kind[32] = "", name[160] = "", object[KH_AUTH_PATH_MAX] = "";
    bool made = route && status >= 200 && status < 300 &&
                created(req, route, kind, sizeof(kind), name, sizeof(name));
    kh_err err = KH_ERR_INIT;
    if (made) {
        char *proj = kh_auth_project(req, NULL);
        if (proj && kh_projects_object_set(a->st, kind, name, proj, &err) < 0)
            kh_log(KH_LOG_WARN, "auth.object", "kind=%s error=\"%s\"", kind, err.msg);
        free(proj);
        snprintf(object, sizeof(object), "%s %s", kind, name);
    } else if (route && status >= 200 && status < 300 &&
               deleted(req, route, kind, sizeof(kind), name, sizeof(name))) {
        kh_projects_object_forget(a->st, kind, name, NULL);
        snprintf(object, sizeof(object), "%s %s", kind, name);
    } else if (route && route->acl_path && !strstr(route->acl_path, "{project}")) {
        if (expand(req, route->acl_path, object, sizeof(object), NULL) < 0)
            object[0] = '\0';
    }
    const char *detail = NULL;
    char login[128] = "";
    if (route && strcmp(route->path, "/api/v1/session") == 0 && strcmp(method, "POST") == 0) {
        kh_err e = KH_ERR_INIT;
        json_t *b = kh_http_req_json(req, &e);
        const char *u = b ? json_string_value(json_object_get(b, "user")) : NULL;
        snprintf(login, sizeof(login), "login %s%.64s", u ? "user " : "token",
                 u ? u : "");
        detail = login;
    }
    char addr[64];
    kh_http_req_peer_address(req, addr, sizeof(addr));
    kh_audit_entry e = {
        .principal = kh_http_req_acting_for(req) ? kh_http_req_acting_for(req)
                                                  : kh_auth_principal(req),
        .address = addr, .method = method,
        .path = kh_http_req_path(req), .object = object[0] ? object : NULL, .status = status,
        .detail = detail,
    };
    if (kh_audit_add(a->st, &e, kh_wall_time(), &err) < 0)
        kh_log(KH_LOG_ERROR, "auth.audit", "error=\"%s\"", err.msg);
}

bool kh_auth_sees_all(const kh_http_req *req)
{
    return is_root(kh_auth_principal(req));
}

void kh_auth_filter(const kh_http_req *req, json_t *arr, const char *prefix, kh_privs need)
{
    if (!json_is_array(arr) || is_root(kh_auth_principal(req)))
        return;
    for (size_t i = json_array_size(arr); i-- > 0;) {
        const char *name = json_string_value(json_object_get(json_array_get(arr, i), "name"));
        char path[KH_AUTH_PATH_MAX];
        snprintf(path, sizeof(path), "%s%s", prefix, name ? name : "");
        if (!name || !kh_auth_can(req, path, need))
            json_array_remove(arr, i);
    }
}
