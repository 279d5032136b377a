/* session_routes.c - /api/v1/session: browser login (the API token for a
 * session cookie and a CSRF token), "am I logged in", and logout. The
 * policy object comes from the request (kh_http_req_auth_data); see auth.h.
 */
#include "api/auth.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "api/session.h"
#include "auth/oidc.h"
#include "schema/schema.h"
#include "util/mem.h"
#include "util/misc.h"

static bool req_session_id(const kh_http_req *req, char id[KH_SESSION_HEX + 1])
{
    return kh_sessions_cookie(kh_http_req_header(req, "Cookie"), KH_SESSION_COOKIE, id,
                              KH_SESSION_HEX + 1);
}

void kh_session_routes_start(kh_http_req *req, kh_auth *auth, const char *principal,
                             const char *redirect)
{
    kh_err err = KH_ERR_INIT;
    char id[KH_SESSION_HEX + 1], csrf[KH_SESSION_HEX + 1];
    if (kh_sessions_create(kh_auth_sessions(auth), kh_now_ms(), id, csrf, &err) != 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_sessions_set_principal(kh_auth_sessions(auth), id, principal, kh_now_ms());
    kh_http_req_set_principal(req, principal);
    char cookie[256];
    snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; HttpOnly; SameSite=Strict%s",
             KH_SESSION_COOKIE, id, kh_http_req_is_tls(req) ? "; Secure" : "");
    OPENSSL_cleanse(id, sizeof(id));
    kh_http_req_add_header(req, "Set-Cookie", cookie);
    OPENSSL_cleanse(cookie, sizeof(cookie));
    kh_http_req_add_header(req, "Cache-Control", "no-store");
    if (redirect) {
        OPENSSL_cleanse(csrf, sizeof(csrf));
        kh_http_req_add_header(req, "Location", redirect);
        kh_http_reply_data(req, 302, "text/plain", "", 0);
        return;
    }
    kh_http_reply_json(req, 201, json_pack("{s:s,s:s}", "csrf_token", csrf, "principal",
                                           principal));
}

/* A password check on the thread pool (argon2id takes tens of ms; the loop
 * keeps serving meanwhile). */
typedef struct login_job {
    uv_work_t work;
    kh_http_req *req; /* NULL once the client left */
    kh_auth *auth;
    char *hash, *password, *user;
    bool ok;
} login_job;

static void login_work(uv_work_t *w)
{
    login_job *j = w->data;
    j->ok = kh_users_pwcheck(j->hash, j->password);
}

static void login_abort(kh_http_req *req, void *opaque)
{
    (void)req;
    login_job *j = opaque;
    j->req = NULL;
}

static void login_done(uv_work_t *w, int status)
{
    login_job *j = w->data;
    if (j->req) {
        kh_http_req_on_abort(j->req, NULL, NULL);
        if (status == 0 && j->ok && kh_users_enabled(kh_auth_store(j->auth), j->user)) {
            kh_session_routes_start(j->req, j->auth, j->user, NULL);
        } else {
            kh_err err = KH_ERR_INIT;
            kh_err_set(&err, KH_E_UNAUTHORIZED, "wrong user name or password");
            kh_http_reply_error(j->req, &err);
        }
    }
    free(j->hash);
    OPENSSL_cleanse(j->password, strlen(j->password));
    free(j->password);
    free(j->user);
    free(j);
}

static void password_login(kh_http_req *req, kh_auth *auth, const char *user, const char *pass)
{
    login_job *j = xcalloc(1, sizeof(*j));
    j->req = req;
    j->auth = auth;
    j->hash = kh_users_pwhash(kh_auth_store(auth), user);
    j->password = xstrdup(pass);
    j->user = xstrdup(user);
    j->work.data = j;
    uv_loop_t *loop = kh_auth_loop(auth);
    if (!loop || uv_queue_work(loop, &j->work, login_work, login_done) != 0) {
        login_work(&j->work); /* no loop (unit tests): here */
        login_done(&j->work, 0);
        return;
    }
    kh_http_req_on_abort(req, login_abort, j);
}

void kh_session_routes_post(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    kh_auth *auth = kh_http_req_auth_data(req);
    json_t *body = kh_http_req_json(req, &err);
    if (!body) {
        kh_http_reply_error(req, &err);
        return;
    }
    if (kh_schema_check("SessionLogin", body, "", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    const char *tok = json_string_value(json_object_get(body, "token"));
    const char *user = json_string_value(json_object_get(body, "user"));
    const char *pass = json_string_value(json_object_get(body, "password"));
    const char *principal = KH_AUTH_ROOT;
    if (tok && (user || pass)) {
        kh_err_set(&err, KH_E_INVALID, "give \"token\", or \"user\" and \"password\"");
        kh_http_reply_error(req, &err);
        return;
    }
    if (user && pass) {
        if (!auth || !kh_auth_has_users(auth)) {
            kh_err_set(&err, KH_E_UNSUPPORTED, "no user database");
            kh_http_reply_error(req, &err);
            return;
        }
        if (!kh_privs_name_ok(user)) {
            kh_err_set(&err, KH_E_UNAUTHORIZED, "wrong user name or password");
            kh_http_reply_error(req, &err);
            return;
        }
        password_login(req, auth, user, pass);
        return;
    } else {
        if (!tok || !tok[0]) {
            kh_err_set(&err, KH_E_INVALID, "\"token\" must be a non-empty string");
            kh_http_reply_error(req, &err);
            return;
        }
        if (!auth || !kh_auth_has_token(auth)) {
            kh_err_set(&err, KH_E_UNSUPPORTED, "no API token is configured (no TCP listener)");
            kh_http_reply_error(req, &err);
            return;
        }
        if (!kh_auth_token_ok(auth, tok, strlen(tok))) {
            kh_err_set(&err, KH_E_UNAUTHORIZED, "wrong token");
            kh_http_reply_error(req, &err);
            return;
        }
    }
    kh_session_routes_start(req, auth, principal, NULL);
}

void kh_session_routes_get(kh_http_req *req, void *app)
{
    (void)app;
    kh_auth *auth = kh_http_req_auth_data(req);
    char id[KH_SESSION_HEX + 1];
    const char *csrf = NULL;
    if (auth && req_session_id(req, id))
        csrf = kh_sessions_lookup(kh_auth_sessions(auth), id, kh_now_ms());
    const char *via = NULL;
    const char *who = kh_auth_principal(req);
    const char *authz = kh_http_req_header(req, "Authorization");
    if (kh_http_req_is_local(req))
        via = "unix socket";
    else if (who && authz)
        via = "token";
    else if (who && csrf)
        via = "session";
    /* A public route: a page asks it before logging in, and a 401 would
     * be noise in its console. */
    json_t *j = json_pack("{s:b,s:b}", "authenticated", via != NULL, "oidc",
                          kh_auth_oidc(auth) != NULL);
    if (kh_auth_oidc(auth))
        json_object_set_new(j, "oidc_name", json_string(kh_oidc_name(kh_auth_oidc(auth))));
    if (via) {
        json_object_set_new(j, "via", json_string(via));
        json_object_set_new(j, "principal", json_string(who));
    }
    if (csrf && via && strcmp(via, "session") == 0)
        json_object_set_new(j, "csrf_token", json_string(csrf));
    kh_http_req_add_header(req, "Cache-Control", "no-store");
    kh_http_reply_json(req, 200, j);
}

void kh_session_routes_delete(kh_http_req *req, void *app)
{
    (void)app;
    kh_auth *auth = kh_http_req_auth_data(req);
    char id[KH_SESSION_HEX + 1];
    if (auth && req_session_id(req, id))
        kh_sessions_remove(kh_auth_sessions(auth), id);
    /* a CLI login's token (kvmhost logout) ends itself */
    const char *who = kh_auth_principal(req);
    const char *bang = who ? strchr(who, '!') : NULL;
    if (bang && kh_http_req_header(req, "Authorization") && kh_auth_store(auth) &&
        strncmp(bang + 1, KH_OIDC_CLI_TOKEN_PREFIX, strlen(KH_OIDC_CLI_TOKEN_PREFIX)) == 0) {
        char user[KH_AUTH_NAME_MAX + 1];
        snprintf(user, sizeof(user), "%.*s", (int)(bang - who), who);
        kh_err err = KH_ERR_INIT;
        if (kh_tokens_delete(kh_auth_store(auth), user, bang + 1, &err) < 0) {
            kh_http_reply_error(req, &err);
            return;
        }
    }
    char cookie[128];
    snprintf(cookie, sizeof(cookie), "%s=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
             KH_SESSION_COOKIE);
    kh_http_req_add_header(req, "Set-Cookie", cookie);
    kh_http_reply_data(req, 204, "application/json", "", 0);
}
