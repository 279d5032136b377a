/* auth.c - the API's auth policy (see auth.h): the token digest, the
 * browser sessions, and the hook the HTTP server calls for each request.
 */
#include "api/auth.h"

#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "api/session.h"
#include "util/mem.h"
#include "util/misc.h"

struct kh_auth {
    bool has_token;
    unsigned char token_hash[32]; /* SHA-256 of the token; the token is not kept */
    bool loopback_public;         /* KH_ROUTE_LOOPBACK_PUBLIC routes open to 127/8, ::1 */
    kh_sessions *sessions;        /* browser logins (cookie + CSRF token) */
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

void kh_auth_free(kh_auth *a)
{
    if (!a)
        return;
    kh_sessions_free(a->sessions);
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

bool kh_auth_has_token(const kh_auth *a)
{
    return a->has_token;
}

kh_sessions *kh_auth_sessions(kh_auth *a)
{
    return a->sessions;
}

bool kh_auth_token_ok(const kh_auth *a, const char *token, size_t len)
{
    if (!a || !a->has_token)
        return false;
    unsigned char h[32];
    token_hash(token, len, h);
    return CRYPTO_memcmp(h, a->token_hash, 32) == 0;
}

/* Bearer token check, constant time (both sides hashed first, so the
 * comparison does not even depend on the length). */
bool kh_auth_bearer_ok(const kh_auth *a, const char *auth)
{
    if (!a || !a->has_token || !auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
        len--;
    if (len == 0)
        return false;
    return kh_auth_token_ok(a, tok, len);
}

/* A request with an Authorization header is judged by it alone; otherwise
 * by its session cookie (KH_E_FORBIDDEN: a session cookie without the CSRF
 * token on a write, or from another origin). */
int kh_auth_check(const kh_http_req *req, const kh_route *route, void *opaque, kh_err *err)
{
    kh_auth *a = opaque;
    if (kh_http_req_is_local(req) || (route && (route->flags & KH_ROUTE_PUBLIC)))
        return 0;
    if (route && (route->flags & KH_ROUTE_LOOPBACK_PUBLIC) && a->loopback_public &&
        kh_http_req_is_loopback(req) && !kh_http_req_header(req, "Authorization")) {
        if (kh_http_req_host_is_self(req))
            return 0;
        /* DNS rebinding: a page of another site resolved to 127.0.0.1 */
        kh_err_set(err, KH_E_FORBIDDEN, "the Host header does not name this server");
        return KH_HTTP_AUTH_MISDIRECTED;
    }
    kh_code c;
    const char *auth = kh_http_req_header(req, "Authorization");
    if (auth && route && (route->flags & KH_ROUTE_JOIN) && strncmp(auth, "KH-Join ", 8) == 0)
        return 0; /* the join route's handler checks and consumes the join token */
    if (auth && route && (route->flags & KH_ROUTE_PEER) && strncmp(auth, "KH-Peer ", 8) == 0)
        return 0; /* migrate_routes.c checks it against the migration record */
    if (auth) {
        c = kh_auth_bearer_ok(a, auth) ? KH_OK : KH_E_UNAUTHORIZED;
    } else {
        c = kh_sessions_check(a->sessions, kh_http_req_header(req, "Cookie"),
                              kh_http_req_method(req), kh_http_req_header(req, "X-CSRF-Token"),
                              kh_now_ms());
        if (c == KH_OK && !kh_http_req_same_origin(req))
            c = KH_E_FORBIDDEN;
    }
    if (c == KH_OK)
        return 0;
    if (c == KH_E_FORBIDDEN)
        kh_err_set(err, KH_E_FORBIDDEN,
                   "a write with a session cookie needs its X-CSRF-Token, from the same origin");
    else
        kh_err_set(err, KH_E_UNAUTHORIZED, "missing or invalid bearer token or session");
    return -1;
}

int kh_auth_check_peer(const kh_http_req *req, const kh_route *route, void *opaque,
                       kh_err *err)
{
    (void)opaque;
    if (kh_http_req_peer_verified(req))
        return 0;
    const char *auth = kh_http_req_header(req, "Authorization");
    if (auth && route && (route->flags & KH_ROUTE_JOIN) && strncmp(auth, "KH-Join ", 8) == 0)
        return 0;
    kh_err_set(err, KH_E_UNAUTHORIZED, "host-to-host calls need a client certificate from "
               "the cluster CA");
    return -1;
}
