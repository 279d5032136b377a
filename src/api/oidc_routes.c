/* oidc_routes.c - the OIDC login routes (see auth.h): GET /api/v1/oidc/login
 * sends the browser to the provider, GET /api/v1/oidc/callback turns the
 * provider's code into a session (a browser login) or into a one-time
 * grant sent to the CLI's loopback listener (a CLI login), and POST
 * /api/v1/oidc/grant trades such a grant for an API token. The provider
 * calls block, so they run on the loop's thread pool (auth/oidc.h is
 * thread-safe); the user, its groups, the session and the audit entry are
 * made back on the loop. A failed login shows a short HTML page to a
 * browser (Accept: text/html), the JSON error to other clients. */
#include "api/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "api/session.h"
#include "auth/oidc.h"
#include "schema/schema.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define STATE_COOKIE "kh_oidc_state"
#define CALLBACK_PATH "/api/v1/oidc/callback"

typedef struct oidc_job {
    uv_work_t work;
    kh_http_req *req; /* NULL once the client left */
    kh_auth *auth;
    kh_oidc *oidc;
    bool callback;
    char *redirect_default; /* login */
    char *state, *code;     /* callback */
    char *url;              /* login: the provider URL */
    kh_oidc_cli cli;        /* the CLI part of the login (port 0: a browser) */
    char new_state[48];
    json_t *claims; /* callback: the verified token's claims */
    kh_err err;
    char addr[64];
    char path[32];
} oidc_job;

static void audit(kh_auth *auth, const char *principal, const char *addr, const char *path,
                  unsigned status, const char *detail)
{
    kh_store *st = kh_auth_store(auth);
    if (!st)
        return;
    kh_audit_entry e = {
        .principal = principal, .address = addr, .method = "GET", .path = path,
        .status = status, .detail = detail,
    };
    kh_err err = KH_ERR_INIT;
    if (kh_audit_add(st, &e, kh_wall_time(), &err) < 0)
        kh_log(KH_LOG_ERROR, "auth.audit", "error=\"%s\"", err.msg);
}

static void state_cookie(kh_http_req *req, const char *value, int max_age);

/* Does the client want a page rather than JSON (a browser navigating)? */
static bool wants_html(kh_http_req *req)
{
    const char *a = kh_http_req_header(req, "Accept");
    return a && strstr(a, "text/html") != NULL;
}

static void add_escaped(kh_buf *b, const char *s)
{
    for (; *s; s++) {
        const char *e = NULL;
        switch (*s) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&#39;"; break;
        default: break;
        }
        if (e)
            kh_buf_add(b, e, strlen(e));
        else
            kh_buf_add(b, s, 1);
    }
}

/* The error as a small page for a person: what failed and a way back. */
static void reply_page(kh_http_req *req, const kh_err *err)
{
    static const char head[] =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        "<title>Sign-in failed - kvmhost</title></head>\n<body><main>"
        "<h1>Sign-in failed</h1>\n<p id=\"oidc-error\">";
    static const char tail[] =
        "</p>\n<p><a href=\"/\" id=\"oidc-retry\">Back to the login page</a></p>"
        "</main></body></html>\n";
    kh_buf b = { 0 };
    kh_buf_add(&b, head, sizeof(head) - 1);
    add_escaped(&b, err->msg[0] ? err->msg : kh_code_name(err->code));
    kh_buf_add(&b, tail, sizeof(tail) - 1);
    kh_http_req_add_header(req, "Content-Security-Policy", "default-src 'none'");
    kh_http_req_add_header(req, "Cache-Control", "no-store");
    kh_http_reply_data(req, kh_code_http_status(err->code), "text/html; charset=utf-8", b.p,
                       b.len);
    kh_buf_release(&b);
}

/* Reply err and record the failed login: a CLI login's browser goes back
 * to the CLI with the error; a browser gets a page, others the JSON. */
static void fail(kh_http_req *req, oidc_job *j, const char *principal, const kh_err *err)
{
    char detail[300];
    snprintf(detail, sizeof(detail), "oidc %slogin failed: %.250s", j->cli.port ? "cli " : "",
             err->msg);
    audit(j->auth, principal, j->addr, j->path, (unsigned)kh_code_http_status(err->code), detail);
    kh_log(KH_LOG_WARN, "oidc", "login failed address=%s error=\"%s\"", j->addr, err->msg);
    if (!req)
        return;
    if (j->cli.port) {
        state_cookie(req, "", 0);
        char *to = kh_oidc_cli_redirect(&j->cli, NULL, err->msg);
        kh_http_req_add_header(req, "Location", to);
        kh_http_req_add_header(req, "Cache-Control", "no-store");
        kh_http_reply_data(req, 302, "text/plain", "", 0);
        free(to);
    } else if (wants_html(req)) {
        reply_page(req, err);
    } else {
        kh_http_reply_error(req, err);
    }
}

static void job_work(uv_work_t *w)
{
    oidc_job *j = w->data;
    if (kh_oidc_discover(j->oidc, &j->err) < 0)
        return;
    if (j->callback)
        j->claims = kh_oidc_finish(j->oidc, j->state, j->code, kh_now_ms(), &j->cli, &j->err);
    else
        j->url = kh_oidc_begin(j->oidc, j->redirect_default, &j->cli, kh_now_ms(),
                               j->new_state, &j->err);
}

static void job_abort(kh_http_req *req, void *opaque)
{
    (void)req;
    oidc_job *j = opaque;
    j->req = NULL;
}

static void state_cookie(kh_http_req *req, const char *value, int max_age)
{
    char c[160];
    snprintf(c, sizeof(c), "%s=%s; Path=/api/v1/oidc; Max-Age=%d; HttpOnly; SameSite=Lax%s",
             STATE_COOKIE, value, max_age, kh_http_req_is_tls(req) ? "; Secure" : "");
    kh_http_req_add_header(req, "Set-Cookie", c);
}

static void login_done(oidc_job *j)
{
    kh_http_req *req = j->req;
    if (!j->url) {
        j->cli.port = 0; /* nothing to send the CLI back to yet */
        fail(req, j, NULL, &j->err);
        return;
    }
    if (!req)
        return;
    state_cookie(req, j->new_state, 600);
    kh_http_req_add_header(req, "Location", j->url);
    kh_http_req_add_header(req, "Cache-Control", "no-store");
    kh_http_reply_data(req, 302, "text/plain", "", 0);
}

static void callback_done(oidc_job *j)
{
    kh_http_req *req = j->req;
    if (!j->claims) {
        fail(req, j, NULL, &j->err);
        return;
    }
    kh_err err = KH_ERR_INIT;
    char user[KH_AUTH_NAME_MAX + 1];
    kh_store *st = kh_auth_store(j->auth);
    if (kh_oidc_user(j->oidc, j->claims, user, sizeof(user), &err) < 0) {
        fail(req, j, NULL, &err);
        return;
    }
    if (!st) {
        kh_err_set(&err, KH_E_UNSUPPORTED, "no user database");
        fail(req, j, user, &err);
        return;
    }
    json_t *groups = kh_oidc_provision(j->oidc, st, user, j->claims, &err);
    if (!groups) {
        fail(req, j, user, &err);
        return;
    }
    char detail[300] = "oidc login; groups:";
    size_t i;
    json_t *g;
    json_array_foreach(groups, i, g) {
        size_t n = strlen(detail);
        snprintf(detail + n, sizeof(detail) - n, " %s", json_string_value(g));
    }
    json_decref(groups);
    if (j->cli.port) {
        char grant[48];
        if (kh_oidc_grant_new(j->oidc, user, &j->cli, kh_now_ms(), grant, &err) < 0) {
            fail(req, j, user, &err);
            return;
        }
        size_t n = strlen(detail);
        snprintf(detail + n, sizeof(detail) - n, "; cli grant to 127.0.0.1:%u", j->cli.port);
        audit(j->auth, user, j->addr, j->path, 302, detail);
        kh_log(KH_LOG_INFO, "oidc", "cli login user=%s address=%s", user, j->addr);
        if (req) {
            state_cookie(req, "", 0);
            char *to = kh_oidc_cli_redirect(&j->cli, grant, NULL);
            kh_http_req_add_header(req, "Location", to);
            kh_http_req_add_header(req, "Cache-Control", "no-store");
            kh_http_reply_data(req, 302, "text/plain", "", 0);
            OPENSSL_cleanse(to, strlen(to));
            free(to);
        }
        OPENSSL_cleanse(grant, sizeof(grant));
        return;
    }
    audit(j->auth, user, j->addr, j->path, 302, detail);
    kh_log(KH_LOG_INFO, "oidc", "login user=%s address=%s", user, j->addr);
    if (req) {
        state_cookie(req, "", 0);
        kh_session_routes_start(req, j->auth, user, "/");
    }
}

static void job_done(uv_work_t *w, int status)
{
    oidc_job *j = w->data;
    if (j->req)
        kh_http_req_on_abort(j->req, NULL, NULL);
    if (status != 0 && !j->err.code)
        kh_err_set(&j->err, KH_E_INTERNAL, "the OIDC login was cancelled");
    if (j->callback)
        callback_done(j);
    else
        login_done(j);
    free(j->redirect_default);
    free(j->state);
    if (j->code)
        OPENSSL_cleanse(j->code, strlen(j->code));
    free(j->code);
    free(j->url);
    json_decref(j->claims);
    free(j);
}

static oidc_job *job_new(kh_http_req *req, bool callback)
{
    oidc_job *j = xcalloc(1, sizeof(*j));
    j->req = req;
    j->auth = kh_http_req_auth_data(req);
    j->oidc = kh_auth_oidc(j->auth);
    j->callback = callback;
    j->err = (kh_err)KH_ERR_INIT;
    kh_http_req_peer_address(req, j->addr, sizeof(j->addr));
    snprintf(j->path, sizeof(j->path), "%s", callback ? CALLBACK_PATH : "/api/v1/oidc/login");
    return j;
}

static void job_queue(oidc_job *j)
{
    j->work.data = j;
    uv_loop_t *loop = kh_auth_loop(j->auth);
    kh_http_req *req = j->req;
    if (!loop || uv_queue_work(loop, &j->work, job_work, job_done) != 0) {
        job_work(&j->work); /* no loop (unit tests): here */
        job_done(&j->work, 0);
        return;
    }
    kh_http_req_on_abort(req, job_abort, j);
}

static bool configured(kh_http_req *req)
{
    if (kh_auth_oidc(kh_http_req_auth_data(req)))
        return true;
    kh_err err = KH_ERR_INIT;
    kh_err_set(&err, KH_E_NOTFOUND, "OIDC login is not configured (kvmhostd --oidc-issuer)");
    kh_http_reply_error(req, &err);
    return false;
}

/* A Host header fit for the default callback URL. */
static bool host_ok(const char *h)
{
    size_t n = h ? strlen(h) : 0;
    return n > 0 && n < 256 &&
           strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") == n;
}

void kh_oidc_routes_login(kh_http_req *req, void *app)
{
    (void)app;
    if (!configured(req))
        return;
    oidc_job *j = job_new(req, false);
    kh_err err = KH_ERR_INIT;
    if (kh_oidc_cli_parse(kh_http_req_query(req, "cli_port"),
                          kh_http_req_query(req, "cli_challenge"),
                          kh_http_req_query(req, "cli_state"), &j->cli, &err) < 0) {
        fail(req, j, NULL, &err);
        free(j);
        return;
    }
    const char *host = kh_http_req_header(req, "Host");
    j->redirect_default = xasprintf("%s://%s" CALLBACK_PATH,
                                    kh_http_req_is_tls(req) ? "https" : "http",
                                    host_ok(host) ? host : "localhost");
    job_queue(j);
}

void kh_oidc_routes_callback(kh_http_req *req, void *app)
{
    (void)app;
    if (!configured(req))
        return;
    oidc_job *j = job_new(req, true);
    const char *state = kh_http_req_query(req, "state");
    const char *code = kh_http_req_query(req, "code");
    const char *perr = kh_http_req_query(req, "error");
    char bound[48];
    kh_err err = KH_ERR_INIT;
    if (perr) {
        kh_err_set(&err, KH_E_UNAUTHORIZED, "the OIDC provider refused the login: %.100s",
                   perr);
    } else if (!state || !code || !code[0] || strlen(code) > 2048) {
        kh_err_set(&err, KH_E_INVALID, "the callback needs \"code\" and \"state\"");
    } else if (!kh_sessions_cookie(kh_http_req_header(req, "Cookie"), STATE_COOKIE, bound,
                                   sizeof(bound)) ||
               strlen(bound) != strlen(state) ||
               CRYPTO_memcmp(bound, state, strlen(state)) != 0) {
        kh_err_set(&err, KH_E_INVALID, "the OIDC login state does not belong to this browser "
                   "(start again at /api/v1/oidc/login)");
    }
    if (err.code) {
        fail(req, j, NULL, &err);
        free(j);
        return;
    }
    j->state = xstrdup(state);
    j->code = xstrdup(code);
    job_queue(j);
}

/* The token of a CLI login: user!oidc-cli-<hex>, holding its user's rights
 * (an ACL entry Administrator on "/" for the token itself: a token never
 * holds more than its user, so this is exactly the user's rights). */
static int mint_token(kh_store *st, const char *user, unsigned ttl_s, char *secret,
                      size_t secretsz, char *name, size_t namesz, double *expires, kh_err *err)
{
    unsigned char r[6];
    kh_random_bytes(r, sizeof(r));
    snprintf(name, namesz, "%s%02x%02x%02x%02x%02x%02x", KH_OIDC_CLI_TOKEN_PREFIX, r[0], r[1],
             r[2], r[3], r[4], r[5]);
    *expires = kh_wall_time() + (double)ttl_s;
    if (kh_store_begin(st, err) < 0)
        return -1;
    int rc = kh_tokens_create(st, user, name, *expires, "kvmhost login --oidc", secret, secretsz,
                              err);
    char subject[2 * KH_AUTH_NAME_MAX + 2];
    snprintf(subject, sizeof(subject), "%s!%s", user, name);
    if (rc == 0)
        rc = kh_acl_set(st, "/", subject, "Administrator", true, err);
    if (rc < 0 || kh_store_commit(st, err) < 0) {
        if (rc < 0)
            kh_store_rollback(st);
        OPENSSL_cleanse(secret, secretsz);
        return -1;
    }
    return 0;
}

void kh_oidc_routes_grant(kh_http_req *req, void *app)
{
    (void)app;
    if (!configured(req))
        return;
    kh_auth *auth = kh_http_req_auth_data(req);
    kh_oidc *o = kh_auth_oidc(auth);
    kh_store *st = kh_auth_store(auth);
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    if (!body || kh_schema_check("OidcGrant", body, "", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    char user[KH_AUTH_NAME_MAX + 1];
    if (kh_oidc_grant_take(o, json_string_value(json_object_get(body, "grant")),
                           json_string_value(json_object_get(body, "verifier")), kh_now_ms(),
                           user, sizeof(user), &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    if (!st || !kh_users_enabled(st, user)) {
        kh_err_set(&err, KH_E_FORBIDDEN, "user %s is disabled or gone", user);
        kh_http_reply_error(req, &err);
        return;
    }
    char secret[256], name[KH_AUTH_NAME_MAX + 1];
    double expires = 0;
    if (mint_token(st, user, kh_oidc_cli_ttl(o), secret, sizeof(secret), name, sizeof(name),
                   &expires, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    char principal[2 * KH_AUTH_NAME_MAX + 2];
    snprintf(principal, sizeof(principal), "%s!%s", user, name);
    kh_http_req_set_principal(req, principal);
    kh_log(KH_LOG_INFO, "oidc", "cli token token=%s", principal);
    kh_http_req_add_header(req, "Cache-Control", "no-store");
    kh_http_reply_json(req, 201, json_pack("{s:s,s:s,s:f}", "token", secret, "principal",
                                           principal, "expires_at", expires));
    OPENSSL_cleanse(secret, sizeof(secret));
}
