/* oidc.c - owns OpenID Connect login (see oidc.h): provider discovery and
 * its JWKS cache, the pending logins (state, nonce, PKCE verifier), the
 * code exchange, the ID token check (libcjose), and the mapping of a
 * verified token to a local user and its group memberships. Nothing here
 * that may run on a worker thread logs (kh_log belongs to the loop). */
#include "auth/oidc.h"

#define CURL_DISABLE_TYPECHECK 1
#include <cjose/cjose.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define PENDING_MAX 256
#define PENDING_TTL_MS (10 * 60 * 1000)
#define LEEWAY_S 60.0
#define JWKS_REFETCH_S 30.0 /* an unknown kid refetches at most this often */
#define HTTP_MAX_BYTES (1 << 20)
#define GRANT_MAX 64
#define CLI_TTL_DEFAULT_S (12u * 3600u)

struct pending {
    char state[48], nonce[48], verifier[48];
    char *redirect;
    kh_oidc_cli cli;     /* port 0: a browser login */
    uint64_t expires_ms; /* 0: free slot */
};

/* A CLI login's one-time grant: only its digest is kept. */
struct grant {
    unsigned char hash[32];
    char challenge[48];
    char user[KH_AUTH_NAME_MAX + 1];
    uint64_t expires_ms; /* 0: free slot */
};

struct kh_oidc {
    char *issuer, *client_id, *client_secret, *groups_claim, *user_claim, *realm;
    char *redirect_url, *scopes, *ca_file, *name;
    unsigned cli_ttl_s;
    pthread_mutex_t mu;
    char *auth_ep, *token_ep, *jwks_uri; /* from discovery (NULL until then) */
    json_t *jwks;                        /* the provider's keys ({"keys": [...]}) */
    double jwks_at;                      /* wall time of the last fetch */
    struct pending pending[PENDING_MAX];
    struct grant grants[GRANT_MAX];
};

static char *dup_or(const char *s, const char *dflt)
{
    return s ? xstrdup(s) : (dflt ? xstrdup(dflt) : NULL);
}

kh_oidc *kh_oidc_new(const kh_oidc_config *cfg, kh_err *err)
{
    if (!cfg->issuer || (strncmp(cfg->issuer, "https://", 8) != 0 &&
                         strncmp(cfg->issuer, "http://", 7) != 0)) {
        kh_err_set(err, KH_E_INVALID, "the OIDC issuer must be an http(s) URL");
        return NULL;
    }
    if (!cfg->client_id || !cfg->client_id[0]) {
        kh_err_set(err, KH_E_INVALID, "the OIDC client id is missing");
        return NULL;
    }
    const char *realm = cfg->realm ? cfg->realm : "oidc";
    if (!kh_privs_name_ok(realm) || strlen(realm) > 16) {
        kh_err_set(err, KH_E_INVALID, "the OIDC realm must be a name of at most 16 characters");
        return NULL;
    }
    kh_oidc *o = xcalloc(1, sizeof(*o));
    o->issuer = xstrdup(cfg->issuer);
    size_t n = strlen(o->issuer);
    if (n > 8 && o->issuer[n - 1] == '/')
        o->issuer[n - 1] = '\0'; /* compared without its trailing slash */
    o->client_id = xstrdup(cfg->client_id);
    o->client_secret = dup_or(cfg->client_secret, NULL);
    o->groups_claim = dup_or(cfg->groups_claim, "groups");
    o->user_claim = dup_or(cfg->user_claim, "sub");
    o->realm = xstrdup(realm);
    o->redirect_url = dup_or(cfg->redirect_url, NULL);
    o->scopes = dup_or(cfg->scopes, "openid profile email");
    o->ca_file = dup_or(cfg->ca_file, NULL);
    if (cfg->name && cfg->name[0]) {
        o->name = xstrdup(cfg->name);
    } else { /* the issuer's host[:port] */
        const char *h = strstr(o->issuer, "://") + 3;
        o->name = xstrndup(h, strcspn(h, "/"));
    }
    o->cli_ttl_s = cfg->cli_ttl_s ? cfg->cli_ttl_s : CLI_TTL_DEFAULT_S;
    pthread_mutex_init(&o->mu, NULL);
    return o;
}

void kh_oidc_free(kh_oidc *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < PENDING_MAX; i++)
        free(o->pending[i].redirect);
    if (o->client_secret)
        OPENSSL_cleanse(o->client_secret, strlen(o->client_secret));
    free(o->issuer);
    free(o->client_id);
    free(o->client_secret);
    free(o->groups_claim);
    free(o->user_claim);
    free(o->realm);
    free(o->redirect_url);
    free(o->scopes);
    free(o->ca_file);
    free(o->name);
    free(o->auth_ep);
    free(o->token_ep);
    free(o->jwks_uri);
    json_decref(o->jwks);
    pthread_mutex_destroy(&o->mu);
    OPENSSL_cleanse(o->pending, sizeof(o->pending));
    OPENSSL_cleanse(o->grants, sizeof(o->grants));
    free(o);
}

const char *kh_oidc_name(const kh_oidc *o)
{
    return o->name;
}

unsigned kh_oidc_cli_ttl(const kh_oidc *o)
{
    return o->cli_ttl_s;
}

/* ---- HTTP to the provider (libcurl, blocking) ---- */

static size_t capped_write(char *data, size_t size, size_t n, void *opaque)
{
    kh_buf *b = opaque;
    if (b->len + size * n > HTTP_MAX_BYTES)
        return 0;
    return kh_buf_curl_write(data, size, n, b);
}

/* GET url, or POST form (when non-NULL): the JSON reply of a 2xx (new
 * reference); NULL with KH_E_UNAVAILABLE (unreachable, not JSON) or
 * KH_E_UNAUTHORIZED (a 4xx of the token endpoint, with its error). */
static json_t *http_json(const kh_oidc *o, const char *url, const char *form, kh_err *err)
{
    CURL *c = curl_easy_init();
    if (!c) {
        kh_err_set(err, KH_E_UNAVAILABLE, "libcurl is not available");
        return NULL;
    }
    kh_buf b = { 0 };
    struct curl_slist *hdr = curl_slist_append(NULL, "Accept: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, capped_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (o->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, o->ca_file);
    if (form) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(form));
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    json_t *j = NULL;
    if (rc != CURLE_OK) {
        kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC provider is unreachable: %s",
                   curl_easy_strerror(rc));
    } else {
        json_error_t je;
        j = b.p ? json_loadb(b.p, b.len, 0, &je) : NULL;
        if (status >= 400 && status < 500 && form) {
            const char *e = json_string_value(json_object_get(j, "error"));
            const char *d = json_string_value(json_object_get(j, "error_description"));
            kh_err_set(err, KH_E_UNAUTHORIZED, "the OIDC provider refused the code: %.64s%s%.200s",
                       e ? e : "?", d ? ": " : "", d ? d : "");
            json_decref(j);
            j = NULL;
        } else if (status < 200 || status >= 300 || !json_is_object(j)) {
            kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC provider answered %ld%s", status,
                       json_is_object(j) ? "" : " without a JSON object");
            json_decref(j);
            j = NULL;
        }
    }
    kh_buf_release(&b);
    return j;
}

static char *endpoint(const json_t *doc, const char *key, kh_err *err)
{
    const char *v = json_string_value(json_object_get(doc, key));
    if (!v || (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)) {
        kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC discovery document has no %s", key);
        return NULL;
    }
    return xstrdup(v);
}

int kh_oidc_discover(kh_oidc *o, kh_err *err)
{
    pthread_mutex_lock(&o->mu);
    bool have = o->auth_ep != NULL;
    pthread_mutex_unlock(&o->mu);
    if (have)
        return 0;
    char *url = xasprintf("%s/.well-known/openid-configuration", o->issuer);
    json_t *doc = http_json(o, url, NULL, err);
    free(url);
    if (!doc)
        return -1;
    const char *iss = json_string_value(json_object_get(doc, "issuer"));
    size_t n = iss ? strlen(iss) : 0;
    if (n && iss[n - 1] == '/')
        n--;
    if (!iss || n != strlen(o->issuer) || strncmp(iss, o->issuer, n) != 0) {
        kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC discovery document names another issuer");
        json_decref(doc);
        return -1;
    }
    char *a = endpoint(doc, "authorization_endpoint", err);
    char *t = a ? endpoint(doc, "token_endpoint", err) : NULL;
    char *k = t ? endpoint(doc, "jwks_uri", err) : NULL;
    json_decref(doc);
    if (!k) {
        free(a);
        free(t);
        return -1;
    }
    pthread_mutex_lock(&o->mu);
    if (!o->auth_ep) {
        o->auth_ep = a;
        o->token_ep = t;
        o->jwks_uri = k;
        a = t = k = NULL;
    }
    pthread_mutex_unlock(&o->mu);
    free(a);
    free(t);
    free(k);
    return 0;
}

/* ---- pending logins ---- */

static void b64url(const unsigned char *in, size_t n, char *out, size_t outsz)
{
    cjose_err ce;
    char *s = NULL;
    size_t len = 0;
    if (cjose_base64url_encode(in, n, &s, &len, &ce) && len < outsz) {
        memcpy(out, s, len);
        out[len] = '\0';
    } else {
        out[0] = '\0';
    }
    if (s)
        cjose_get_dealloc()(s);
}

static void random_b64(char out[48])
{
    unsigned char r[32];
    kh_random_bytes(r, sizeof(r));
    b64url(r, sizeof(r), out, 48);
    OPENSSL_cleanse(r, sizeof(r));
}

/* Percent-encode s (RFC 3986 unreserved kept) onto b. */
static void add_enc(kh_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            kh_buf_add(b, s, 1);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            kh_buf_add(b, e, 3);
        }
    }
}

static void add_param(kh_buf *b, const char *key, const char *val)
{
    if (b->len && b->p[b->len - 1] != '?')
        kh_buf_add(b, "&", 1);
    kh_buf_add(b, key, strlen(key));
    kh_buf_add(b, "=", 1);
    add_enc(b, val);
}

char *kh_oidc_begin(kh_oidc *o, const char *redirect_default, const kh_oidc_cli *cli,
                    uint64_t now_ms, char state[48], kh_err *err)
{
    struct pending p = { .expires_ms = now_ms + PENDING_TTL_MS };
    if (cli && cli->port)
        p.cli = *cli;
    random_b64(p.state);
    random_b64(p.nonce);
    random_b64(p.verifier);
    unsigned char dig[32];
    unsigned int dn = 0;
    char challenge[48];
    if (!EVP_Digest(p.verifier, strlen(p.verifier), dig, &dn, EVP_sha256(), NULL) || dn != 32 ||
        !p.state[0] || !p.nonce[0] || !p.verifier[0]) {
        kh_err_set(err, KH_E_INTERNAL, "cannot make the PKCE challenge");
        return NULL;
    }
    b64url(dig, sizeof(dig), challenge, sizeof(challenge));
    const char *redirect = o->redirect_url ? o->redirect_url : redirect_default;
    kh_buf u = { 0 };
    pthread_mutex_lock(&o->mu);
    if (!o->auth_ep) {
        pthread_mutex_unlock(&o->mu);
        kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC provider is not discovered yet");
        return NULL;
    }
    kh_buf_add(&u, o->auth_ep, strlen(o->auth_ep));
    kh_buf_add(&u, strchr(o->auth_ep, '?') ? "&" : "?", 1);
    /* the slot: a free or expired one, else the one expiring first */
    struct pending *slot = &o->pending[0];
    for (size_t i = 0; i < PENDING_MAX; i++) {
        struct pending *q = &o->pending[i];
        if (q->expires_ms <= now_ms) {
            slot = q;
            break;
        }
        if (q->expires_ms < slot->expires_ms)
            slot = q;
    }
    free(slot->redirect);
    *slot = p;
    slot->redirect = xstrdup(redirect);
    pthread_mutex_unlock(&o->mu);
    add_param(&u, "response_type", "code");
    add_param(&u, "client_id", o->client_id);
    add_param(&u, "redirect_uri", redirect);
    add_param(&u, "scope", o->scopes);
    add_param(&u, "state", p.state);
    add_param(&u, "nonce", p.nonce);
    add_param(&u, "code_challenge", challenge);
    add_param(&u, "code_challenge_method", "S256");
    memcpy(state, p.state, 48);
    OPENSSL_cleanse(&p, sizeof(p));
    char *url = xstrdup(u.p);
    kh_buf_release(&u);
    return url;
}

/* Take (and forget) the live pending login of state. */
static bool take_pending(kh_oidc *o, const char *state, uint64_t now_ms, struct pending *out)
{
    bool found = false;
    size_t n = strlen(state);
    pthread_mutex_lock(&o->mu);
    for (size_t i = 0; i < PENDING_MAX && !found; i++) {
        struct pending *q = &o->pending[i];
        if (!q->expires_ms || strlen(q->state) != n || CRYPTO_memcmp(q->state, state, n) != 0)
            continue;
        found = q->expires_ms > now_ms;
        *out = *q;
        memset(q, 0, sizeof(*q)); /* single use, found or expired */
    }
    pthread_mutex_unlock(&o->mu);
    if (!found && out->redirect) {
        free(out->redirect);
        out->redirect = NULL;
    }
    return found;
}

json_t *kh_oidc_finish(kh_oidc *o, const char *state, const char *code, uint64_t now_ms,
                       kh_oidc_cli *cli, kh_err *err)
{
    struct pending p = { .expires_ms = 0 };
    if (cli)
        memset(cli, 0, sizeof(*cli));
    if (!state || !code || !code[0] || !take_pending(o, state, now_ms, &p)) {
        kh_err_set(err, KH_E_INVALID, "unknown, expired or already used OIDC login state");
        return NULL;
    }
    if (cli)
        *cli = p.cli;
    kh_buf f = { 0 };
    add_param(&f, "grant_type", "authorization_code");
    add_param(&f, "code", code);
    add_param(&f, "redirect_uri", p.redirect);
    add_param(&f, "client_id", o->client_id);
    add_param(&f, "code_verifier", p.verifier);
    if (o->client_secret)
        add_param(&f, "client_secret", o->client_secret);
    pthread_mutex_lock(&o->mu);
    char *token_ep = o->token_ep ? xstrdup(o->token_ep) : NULL;
    pthread_mutex_unlock(&o->mu);
    json_t *reply = token_ep ? http_json(o, token_ep, f.p, err) : NULL;
    if (!token_ep)
        kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC provider is not discovered yet");
    free(token_ep);
    OPENSSL_cleanse(f.p, f.len);
    kh_buf_release(&f);
    free(p.redirect);
    json_t *claims = NULL;
    if (reply) {
        const char *idt = json_string_value(json_object_get(reply, "id_token"));
        if (!idt)
            kh_err_set(err, KH_E_UNAUTHORIZED, "the OIDC token endpoint gave no id_token");
        else
            claims = kh_oidc_verify(o, idt, p.nonce, (double)kh_wall_time(), err);
        json_decref(reply);
    }
    OPENSSL_cleanse(&p, sizeof(p));
    return claims;
}

/* ---- the ID token ---- */

/* Fetch the JWKS now (the caller holds no lock). */
static int jwks_fetch(kh_oidc *o, kh_err *err)
{
    pthread_mutex_lock(&o->mu);
    char *uri = o->jwks_uri ? xstrdup(o->jwks_uri) : NULL;
    pthread_mutex_unlock(&o->mu);
    if (!uri) {
        kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC provider is not discovered yet");
        return -1;
    }
    json_t *k = http_json(o, uri, NULL, err);
    free(uri);
    if (!k)
        return -1;
    if (!json_is_array(json_object_get(k, "keys"))) {
        json_decref(k);
        kh_err_set(err, KH_E_UNAVAILABLE, "the OIDC provider's JWKS has no keys");
        return -1;
    }
    pthread_mutex_lock(&o->mu);
    json_decref(o->jwks);
    o->jwks = k;
    o->jwks_at = kh_wall_time();
    pthread_mutex_unlock(&o->mu);
    return 0;
}

/* The key of kid (NULL: the only key) fitting alg, imported; NULL if none. */
static cjose_jwk_t *jwks_find(kh_oidc *o, const char *kid, const char *alg)
{
    cjose_jwk_t *found = NULL;
    pthread_mutex_lock(&o->mu);
    json_t *keys = json_object_get(o->jwks, "keys");
    size_t i;
    json_t *k;
    const char *want_kty = strcmp(alg, "RS256") == 0 ? "RSA" : "EC";
    json_array_foreach(keys, i, k) {
        const char *kkid = json_string_value(json_object_get(k, "kid"));
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *use = json_string_value(json_object_get(k, "use"));
        const char *kalg = json_string_value(json_object_get(k, "alg"));
        if (!kty || strcmp(kty, want_kty) != 0 || (use && strcmp(use, "sig") != 0) ||
            (kalg && strcmp(kalg, alg) != 0))
            continue;
        if (kid && (!kkid || strcmp(kid, kkid) != 0))
            continue;
        if (!kid && json_array_size(keys) != 1)
            continue;
        char *text = json_dumps(k, JSON_COMPACT);
        cjose_err ce;
        found = text ? cjose_jwk_import(text, strlen(text), &ce) : NULL;
        free(text);
        break;
    }
    pthread_mutex_unlock(&o->mu);
    return found;
}

static bool aud_ok(const json_t *aud, const char *client_id)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), client_id) == 0;
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a)
        if (json_is_string(a) && strcmp(json_string_value(a), client_id) == 0)
            return true;
    return false;
}

static json_t *refuse(kh_err *err, const char *why)
{
    kh_err_set(err, KH_E_UNAUTHORIZED, "OIDC ID token refused: %s", why);
    return NULL;
}

/* The claims c of a token whose signature checked out, if they fit: c,
 * else NULL with err (the caller frees c either way). */
static json_t *check_claims(const kh_oidc *o, json_t *c, const char *nonce, double now,
                            kh_err *err)
{
    const char *iss = json_string_value(json_object_get(c, "iss"));
    size_t n = iss ? strlen(iss) : 0;
    if (n && iss[n - 1] == '/')
        n--;
    if (!iss || n != strlen(o->issuer) || strncmp(iss, o->issuer, n) != 0)
        return refuse(err, "wrong issuer (iss)");
    if (!aud_ok(json_object_get(c, "aud"), o->client_id))
        return refuse(err, "not for this client (aud)");
    json_t *exp = json_object_get(c, "exp");
    if (!json_is_number(exp))
        return refuse(err, "no expiry (exp)");
    if (json_number_value(exp) + LEEWAY_S < now)
        return refuse(err, "expired (exp)");
    json_t *nbf = json_object_get(c, "nbf");
    if (json_is_number(nbf) && json_number_value(nbf) - LEEWAY_S > now)
        return refuse(err, "not valid yet (nbf)");
    json_t *iat = json_object_get(c, "iat");
    if (json_is_number(iat) && json_number_value(iat) - LEEWAY_S > now)
        return refuse(err, "issued in the future (iat)");
    const char *tn = json_string_value(json_object_get(c, "nonce"));
    if (!nonce || !tn || strlen(tn) != strlen(nonce) ||
        CRYPTO_memcmp(tn, nonce, strlen(nonce)) != 0)
        return refuse(err, "wrong nonce");
    const char *sub = json_string_value(json_object_get(c, "sub"));
    if (!sub || !sub[0])
        return refuse(err, "no subject (sub)");
    return c;
}

json_t *kh_oidc_verify(kh_oidc *o, const char *id_token, const char *nonce, double now,
                       kh_err *err)
{
    cjose_err ce;
    cjose_jws_t *jws = cjose_jws_import(id_token, strlen(id_token), &ce);
    if (!jws)
        return refuse(err, "not a signed JWT");
    json_t *hdr = (json_t *)cjose_jws_get_protected(jws);
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    char kidc[128] = "";
    if (kid)
        snprintf(kidc, sizeof(kidc), "%s", kid);
    if (!alg || (strcmp(alg, "RS256") != 0 && strcmp(alg, "ES256") != 0)) {
        cjose_jws_release(jws);
        return refuse(err, "algorithm is not RS256 or ES256");
    }
    char algc[8];
    snprintf(algc, sizeof(algc), "%s", alg);
    pthread_mutex_lock(&o->mu);
    bool have = o->jwks != NULL;
    double age = kh_wall_time() - o->jwks_at;
    pthread_mutex_unlock(&o->mu);
    if (!have && jwks_fetch(o, err) < 0) {
        cjose_jws_release(jws);
        return NULL;
    }
    cjose_jwk_t *key = jwks_find(o, kid ? kidc : NULL, algc);
    if (!key && have && age > JWKS_REFETCH_S && jwks_fetch(o, err) == 0) /* key rotation */
        key = jwks_find(o, kid ? kidc : NULL, algc);
    if (!key) {
        cjose_jws_release(jws);
        return refuse(err, "no key of the provider's JWKS fits it");
    }
    bool ok = cjose_jws_verify(jws, key, &ce);
    cjose_jwk_release(key);
    uint8_t *plain = NULL;
    size_t plen = 0;
    if (!ok || !cjose_jws_get_plaintext(jws, &plain, &plen, &ce)) {
        cjose_jws_release(jws);
        return refuse(err, "bad signature");
    }
    json_error_t je;
    json_t *c = json_loadb((const char *)plain, plen, 0, &je);
    cjose_jws_release(jws);
    if (!json_is_object(c)) {
        json_decref(c);
        return refuse(err, "its payload is not a JSON object");
    }
    if (!check_claims(o, c, nonce, now, err)) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* ---- CLI logins: the loopback redirect and the one-time grants ---- */

static bool b64url_ok(const char *s, size_t min, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n >= min && n <= max &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

int kh_oidc_cli_parse(const char *port, const char *challenge, const char *state,
                      kh_oidc_cli *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!port && !challenge && !state)
        return 0;
    char *end = NULL;
    unsigned long p = port && port[0] >= '1' && port[0] <= '9' ? strtoul(port, &end, 10) : 0;
    if (!end || *end || p < 1024 || p > 65535) {
        kh_err_set(err, KH_E_INVALID, "cli_port must be a port from 1024 to 65535");
        return -1;
    }
    if (!b64url_ok(challenge, 43, 43)) {
        kh_err_set(err, KH_E_INVALID, "cli_challenge must be a base64url SHA-256 (43 characters)");
        return -1;
    }
    if (!b64url_ok(state, 1, 64)) {
        kh_err_set(err, KH_E_INVALID, "cli_state must be 1 to 64 base64url characters");
        return -1;
    }
    out->port = (unsigned)p;
    snprintf(out->challenge, sizeof(out->challenge), "%s", challenge);
    snprintf(out->state, sizeof(out->state), "%s", state);
    return 0;
}

char *kh_oidc_cli_redirect(const kh_oidc_cli *cli, const char *grant, const char *error)
{
    kh_buf u = { 0 };
    char head[64];
    snprintf(head, sizeof(head), "http://127.0.0.1:%u/callback?", cli->port);
    kh_buf_add(&u, head, strlen(head));
    add_param(&u, "state", cli->state);
    if (grant)
        add_param(&u, "grant", grant);
    else
        add_param(&u, "error", error ? error : "the login failed");
    char *url = xstrdup(u.p);
    kh_buf_release(&u);
    return url;
}

static void sha256(const char *s, unsigned char out[32])
{
    unsigned int n = 0;
    if (!EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL) || n != 32)
        memset(out, 0, 32);
}

int kh_oidc_grant_new(kh_oidc *o, const char *user, const kh_oidc_cli *cli, uint64_t now_ms,
                      char grant[48], kh_err *err)
{
    struct grant g = { .expires_ms = now_ms + KH_OIDC_GRANT_TTL_MS };
    random_b64(grant);
    if (!grant[0] || !cli || !cli->port || strlen(user) >= sizeof(g.user)) {
        kh_err_set(err, KH_E_INTERNAL, "cannot make a login grant");
        return -1;
    }
    sha256(grant, g.hash);
    snprintf(g.challenge, sizeof(g.challenge), "%s", cli->challenge);
    snprintf(g.user, sizeof(g.user), "%s", user);
    pthread_mutex_lock(&o->mu);
    struct grant *slot = &o->grants[0];
    for (size_t i = 0; i < GRANT_MAX; i++) {
        struct grant *q = &o->grants[i];
        if (q->expires_ms <= now_ms) {
            slot = q;
            break;
        }
        if (q->expires_ms < slot->expires_ms)
            slot = q;
    }
    *slot = g;
    pthread_mutex_unlock(&o->mu);
    OPENSSL_cleanse(&g, sizeof(g));
    return 0;
}

int kh_oidc_grant_take(kh_oidc *o, const char *grant, const char *verifier, uint64_t now_ms,
                       char *user, size_t usersz, kh_err *err)
{
    struct grant g = { .expires_ms = 0 };
    bool found = false;
    if (b64url_ok(grant, 43, 43)) {
        unsigned char h[32];
        sha256(grant, h);
        pthread_mutex_lock(&o->mu);
        for (size_t i = 0; i < GRANT_MAX && !found; i++) {
            struct grant *q = &o->grants[i];
            if (!q->expires_ms || CRYPTO_memcmp(q->hash, h, 32) != 0)
                continue;
            found = q->expires_ms > now_ms;
            g = *q;
            OPENSSL_cleanse(q, sizeof(*q)); /* single use: found, expired or refused */
        }
        pthread_mutex_unlock(&o->mu);
    }
    if (!found) {
        kh_err_set(err, KH_E_UNAUTHORIZED, "unknown, expired or already used login grant "
                   "(run `kvmhost login --oidc` again)");
        return -1;
    }
    unsigned char dig[32];
    char challenge[48] = "";
    if (b64url_ok(verifier, 43, 128)) {
        sha256(verifier, dig);
        b64url(dig, sizeof(dig), challenge, sizeof(challenge));
    }
    bool ok = strlen(challenge) == strlen(g.challenge) &&
              CRYPTO_memcmp(challenge, g.challenge, strlen(challenge)) == 0 && challenge[0];
    if (ok)
        snprintf(user, usersz, "%s", g.user);
    OPENSSL_cleanse(&g, sizeof(g));
    if (!ok) {
        kh_err_set(err, KH_E_UNAUTHORIZED, "the login grant's verifier does not match");
        return -1;
    }
    return 0;
}

/* ---- the local user ---- */

int kh_oidc_user(const kh_oidc *o, const json_t *claims, char *out, size_t outsz, kh_err *err)
{
    const char *v = json_string_value(json_object_get(claims, o->user_claim));
    if (!v || !v[0]) {
        kh_err_set(err, KH_E_UNAUTHORIZED, "the ID token has no \"%s\" claim", o->user_claim);
        return -1;
    }
    int n = snprintf(out, outsz, "%s.%s", o->realm, v);
    if (n < 0 || (size_t)n >= outsz || !kh_privs_name_ok(out)) {
        kh_err_set(err, KH_E_UNAUTHORIZED, "the \"%s\" claim does not make a valid user name "
                   "(letters, digits, '_', '.', '-'; at most %d characters with the realm)",
                   o->user_claim, KH_AUTH_NAME_MAX);
        return -1;
    }
    return 0;
}

static bool in_claim(const json_t *groups, const char *name)
{
    size_t i;
    json_t *g;
    if (json_is_string(groups))
        return strcmp(json_string_value(groups), name) == 0;
    json_array_foreach(groups, i, g)
        if (json_is_string(g) && strcmp(json_string_value(g), name) == 0)
            return true;
    return false;
}

static bool is_member(const json_t *members, const char *user)
{
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m)
        if (json_is_string(m) && strcmp(json_string_value(m), user) == 0)
            return true;
    return false;
}

json_t *kh_oidc_provision(const kh_oidc *o, kh_store *st, const char *user,
                          const json_t *claims, kh_err *err)
{
    kh_err e2 = KH_ERR_INIT;
    json_t *u = kh_users_json(st, user, &e2);
    if (!u) {
        if (e2.code != KH_E_NOTFOUND) {
            *err = e2;
            return NULL;
        }
        if (kh_users_add(st, user, NULL, NULL, err) < 0)
            return NULL;
        kh_log(KH_LOG_INFO, "oidc", "new user=%s", user);
    } else {
        bool enabled = json_is_true(json_object_get(u, "enabled"));
        json_decref(u);
        if (!enabled) {
            kh_err_set(err, KH_E_FORBIDDEN, "user %s is disabled", user);
            return NULL;
        }
    }
    json_t *all = kh_users_groups_json(st, err);
    if (!all)
        return NULL;
    const json_t *want = json_object_get(claims, o->groups_claim);
    json_t *joined = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(all, i, g) {
        const char *name = json_string_value(json_object_get(g, "name"));
        if (!name)
            continue;
        bool in = in_claim(want, name);
        bool is = is_member(json_object_get(g, "members"), user);
        if (in != is && kh_users_group_member(st, name, user, in, err) < 0) {
            json_decref(all);
            json_decref(joined);
            return NULL;
        }
        if (in)
            json_array_append_new(joined, json_string(name));
    }
    json_decref(all);
    return joined;
}
