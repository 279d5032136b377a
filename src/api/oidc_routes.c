/* oidc_routes.c - the OIDC login routes (see auth.h): GET /api/v1/oidc/login
 * sends the browser to the provider, GET /api/v1/oidc/callback turns the
 * provider's code into a session. The provider calls block, so they run on
 * the loop's thread pool (auth/oidc.h is thread-safe); the user, its
 * groups, the session and the audit entry are made back on the loop. */
#include "api/auth.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "api/session.h"
#include "auth/oidc.h"
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

/* Reply err and record the failed login. */
static void fail(kh_http_req *req, oidc_job *j, const char *principal, const kh_err *err)
{
    char detail[300];
    snprintf(detail, sizeof(detail), "oidc login failed: %.260s", err->msg);
    audit(j->auth, principal, j->addr, j->path, (unsigned)kh_code_http_status(err->code), detail);
    kh_log(KH_LOG_WARN, "oidc", "login failed address=%s error=\"%s\"", j->addr, err->msg);
    if (req)
        kh_http_reply_error(req, err);
}

static void job_work(uv_work_t *w)
{
    oidc_job *j = w->data;
    if (kh_oidc_discover(j->oidc, &j->err) < 0)
        return;
    if (j->callback)
        j->claims = kh_oidc_finish(j->oidc, j->state, j->code, kh_now_ms(), &j->err);
    else
        j->url = kh_oidc_begin(j->oidc, j->redirect_default, kh_now_ms(), j->new_state,
                               &j->err);
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
