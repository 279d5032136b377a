/* access_routes.c - users, groups, API tokens, roles, ACL entries,
 * projects, GET /permissions and GET /audit: handlers over auth/auth.h.
 * The route table's privilege column guards most of them; the routes a
 * user may call on themselves (own tokens, own password) check here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "schema/schema.h"
#include "util/mem.h"
#include "util/misc.h"

static kh_store *store_of(kh_http_req *req)
{
    return kh_auth_store(kh_http_req_auth_data(req));
}

/* Reply 204, or the error. */
static void done(kh_http_req *req, int rc, const kh_err *err)
{
    if (rc < 0)
        kh_http_reply_error(req, err);
    else
        kh_http_reply_data(req, 204, "application/json", "", 0);
}

static void reply_or_err(kh_http_req *req, int status, json_t *j, const kh_err *err)
{
    if (j)
        kh_http_reply_json(req, status, j);
    else
        kh_http_reply_error(req, err);
}

/* The request body checked against schema; NULL after replying. */
static json_t *body_of(kh_http_req *req, const char *schema, bool empty_ok)
{
    kh_err err = KH_ERR_INIT;
    json_t *b = empty_ok ? kh_http_req_json_or_empty(req, &err) : kh_http_req_json(req, &err);
    if (b && kh_schema_check(schema, b, "", &err) < 0)
        b = NULL;
    if (!b)
        kh_http_reply_error(req, &err);
    return b;
}

/* Is the caller the user named {user} (a session or password login, not
 * one of the user's tokens unless tokens_ok), or does it hold priv on
 * /access? Replies 403/404 when not. */
static bool self_or(kh_http_req *req, kh_privs priv, bool tokens_ok)
{
    const char *user = kh_http_req_param(req, "user");
    const char *p = kh_auth_principal(req);
    size_t ul = p ? strcspn(p, "!") : 0;
    if (p && user && strlen(user) == ul && strncmp(p, user, ul) == 0 &&
        (tokens_ok || p[ul] == '\0'))
        return true;
    kh_err err = KH_ERR_INIT;
    if (kh_auth_need(req, "/access", priv, &err) == 0)
        return true;
    kh_http_reply_error(req, &err);
    return false;
}

/* ---- users ---- */

void kh_access_routes_users(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    json_t *u = kh_users_json(store_of(req), NULL, &err);
    reply_or_err(req, 200, u ? json_pack("{s:o}", "users", u) : NULL, &err);
}

void kh_access_routes_user_add(kh_http_req *req, void *app)
{
    (void)app;
    json_t *b = body_of(req, "UserSpec", false);
    if (!b)
        return;
    kh_store *st = store_of(req);
    kh_err err = KH_ERR_INIT;
    const char *name = json_string_value(json_object_get(b, "name"));
    if (kh_store_begin(st, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    int rc = kh_users_add(st, name, json_string_value(json_object_get(b, "password")),
                          json_string_value(json_object_get(b, "project")), &err);
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(b, "groups"), i, g) {
        if (rc == 0)
            rc = kh_users_group_member(st, json_string_value(g), name, true, &err);
    }
    if (rc < 0) {
        kh_store_rollback(st);
        kh_http_reply_error(req, &err);
        return;
    }
    if (kh_store_commit(st, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    reply_or_err(req, 201, kh_users_json(st, name, &err), &err);
}

void kh_access_routes_user_get(kh_http_req *req, void *app)
{
    (void)app;
    if (!self_or(req, KH_PRIV_SYS_AUDIT, true))
        return;
    kh_err err = KH_ERR_INIT;
    reply_or_err(req, 200, kh_users_json(store_of(req), kh_http_req_param(req, "user"), &err),
                 &err);
}

void kh_access_routes_user_patch(kh_http_req *req, void *app)
{
    (void)app;
    json_t *b = body_of(req, "UserPatch", false);
    if (!b)
        return;
    /* a user may change their own password; the rest needs Permissions.Modify */
    bool only_pw = json_object_size(b) == 1 && json_object_get(b, "password");
    kh_err err = KH_ERR_INIT;
    if (only_pw ? !self_or(req, KH_PRIV_PERMISSIONS_MODIFY, false)
                : kh_auth_need(req, "/access", KH_PRIV_PERMISSIONS_MODIFY, &err) < 0) {
        if (!only_pw)
            kh_http_reply_error(req, &err);
        return;
    }
    const json_t *en = json_object_get(b, "enabled");
    int rc = kh_users_update(store_of(req), kh_http_req_param(req, "user"),
                             json_string_value(json_object_get(b, "password")),
                             json_string_value(json_object_get(b, "project")),
                             en ? json_is_true(en) : -1, &err);
    if (rc < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    reply_or_err(req, 200, kh_users_json(store_of(req), kh_http_req_param(req, "user"), &err),
                 &err);
}

void kh_access_routes_user_delete(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    done(req, kh_users_delete(store_of(req), kh_http_req_param(req, "user"), &err), &err);
}

/* ---- tokens ---- */

void kh_access_routes_tokens(kh_http_req *req, void *app)
{
    (void)app;
    if (!self_or(req, KH_PRIV_SYS_AUDIT, true))
        return;
    kh_err err = KH_ERR_INIT;
    json_t *t = kh_tokens_json(store_of(req), kh_http_req_param(req, "user"), &err);
    reply_or_err(req, 200, t ? json_pack("{s:o}", "tokens", t) : NULL, &err);
}

void kh_access_routes_token_add(kh_http_req *req, void *app)
{
    (void)app;
    if (!self_or(req, KH_PRIV_PERMISSIONS_MODIFY, false))
        return;
    json_t *b = body_of(req, "TokenSpec", false);
    if (!b)
        return;
    kh_store *st = store_of(req);
    const char *user = kh_http_req_param(req, "user");
    const char *name = json_string_value(json_object_get(b, "name"));
    json_int_t ttl = json_integer_value(json_object_get(b, "expires_in_seconds"));
    double exp = ttl > 0 ? kh_wall_time() + (double)ttl : 0;
    char secret[256];
    kh_err err = KH_ERR_INIT;
    if (kh_store_begin(st, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    int rc = kh_tokens_create(st, user, name, exp,
                              json_string_value(json_object_get(b, "comment")), secret,
                              sizeof(secret), &err);
    char subject[2 * KH_AUTH_NAME_MAX + 2];
    snprintf(subject, sizeof(subject), "%s!%s", user, name);
    size_t i;
    json_t *e;
    /* The token's own entries: safe for its user to set, as the token never
     * holds more than the user. */
    json_array_foreach(json_object_get(b, "acl"), i, e) {
        const json_t *pr = json_object_get(e, "propagate");
        if (rc == 0)
            rc = kh_acl_set(st, json_string_value(json_object_get(e, "path")), subject,
                            json_string_value(json_object_get(e, "role")),
                            pr ? json_is_true(pr) : true, &err);
    }
    if (rc < 0 || kh_store_commit(st, &err) < 0) {
        if (rc < 0)
            kh_store_rollback(st);
        kh_http_reply_error(req, &err);
        return;
    }
    json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "id", subject, "user", user, "name", name,
                          "secret", secret);
    json_object_set_new(j, "expires_at", exp > 0 ? json_real(exp) : json_null());
    memset(secret, 0, sizeof(secret));
    kh_http_req_add_header(req, "Cache-Control", "no-store");
    kh_http_reply_json(req, 201, j);
}

void kh_access_routes_token_delete(kh_http_req *req, void *app)
{
    (void)app;
    if (!self_or(req, KH_PRIV_PERMISSIONS_MODIFY, true))
        return;
    kh_err err = KH_ERR_INIT;
    done(req, kh_tokens_delete(store_of(req), kh_http_req_param(req, "user"),
                               kh_http_req_param(req, "token"), &err), &err);
}

/* ---- groups ---- */

void kh_access_routes_groups(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    json_t *g = kh_users_groups_json(store_of(req), &err);
    reply_or_err(req, 200, g ? json_pack("{s:o}", "groups", g) : NULL, &err);
}

void kh_access_routes_group_add(kh_http_req *req, void *app)
{
    (void)app;
    json_t *b = body_of(req, "GroupSpec", false);
    if (!b)
        return;
    kh_err err = KH_ERR_INIT;
    const char *name = json_string_value(json_object_get(b, "name"));
    if (kh_users_group_add(store_of(req), name, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 201, json_pack("{s:s,s:[]}", "name", name, "members"));
}

void kh_access_routes_group_delete(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    done(req, kh_users_group_delete(store_of(req), kh_http_req_param(req, "group"), &err),
         &err);
}

void kh_access_routes_member_put(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    done(req, kh_users_group_member(store_of(req), kh_http_req_param(req, "group"),
                                    kh_http_req_param(req, "user"), true, &err), &err);
}

void kh_access_routes_member_delete(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    done(req, kh_users_group_member(store_of(req), kh_http_req_param(req, "group"),
                                    kh_http_req_param(req, "user"), false, &err), &err);
}

/* ---- roles and ACL ---- */

void kh_access_routes_roles(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    json_t *r = kh_acl_roles_json(store_of(req), &err);
    reply_or_err(req, 200, r ? json_pack("{s:o}", "roles", r) : NULL, &err);
}

void kh_access_routes_role_put(kh_http_req *req, void *app)
{
    (void)app;
    json_t *b = body_of(req, "RoleSpec", false);
    if (!b)
        return;
    kh_err err = KH_ERR_INIT;
    kh_privs p;
    if (kh_privs_from_json(json_object_get(b, "privileges"), &p, &err) < 0 ||
        kh_acl_role_put(store_of(req), kh_http_req_param(req, "role"), p, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, json_pack("{s:s,s:o,s:b}", "name",
                                           kh_http_req_param(req, "role"), "privileges",
                                           kh_privs_json(p), "builtin", 0));
}

void kh_access_routes_role_delete(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    done(req, kh_acl_role_delete(store_of(req), kh_http_req_param(req, "role"), &err), &err);
}

void kh_access_routes_acl(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    json_t *a = kh_acl_json(store_of(req), &err);
    reply_or_err(req, 200, a ? json_pack("{s:o}", "acl", a) : NULL, &err);
}

void kh_access_routes_acl_put(kh_http_req *req, void *app)
{
    (void)app;
    json_t *b = body_of(req, "ACLEntry", false);
    if (!b)
        return;
    kh_err err = KH_ERR_INIT;
    const json_t *pr = json_object_get(b, "propagate");
    done(req, kh_acl_set(store_of(req), json_string_value(json_object_get(b, "path")),
                         json_string_value(json_object_get(b, "subject")),
                         json_string_value(json_object_get(b, "role")),
                         pr ? json_is_true(pr) : true, &err), &err);
}

void kh_access_routes_acl_delete(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    done(req, kh_acl_delete(store_of(req), kh_http_req_query(req, "path"),
                            kh_http_req_query(req, "subject"), kh_http_req_query(req, "role"),
                            &err), &err);
}

void kh_access_routes_permissions(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    const char *who = kh_auth_principal(req);
    const char *path = kh_http_req_query(req, "path");
    json_t *j = json_pack("{s:s}", "principal", who ? who : "");
    if (path) {
        kh_privs p = 0;
        if (!kh_privs_path_ok(path) ||
            kh_acl_effective_path(store_of(req), who, path, &p, &err) < 0) {
            json_decref(j);
            kh_err_set(&err, KH_E_INVALID, "path: not an ACL path");
            kh_http_reply_error(req, &err);
            return;
        }
        json_object_set_new(j, "path", json_string(path));
        json_object_set_new(j, "privileges", kh_privs_json(p));
    } else {
        json_t *all = kh_acl_permissions_json(store_of(req), who, &err);
        if (!all) {
            json_decref(j);
            kh_http_reply_error(req, &err);
            return;
        }
        json_object_set_new(j, "paths", all);
    }
    kh_http_reply_json(req, 200, j);
}

/* ---- projects ---- */

static int quota_of(const json_t *q, kh_quota *out)
{
    out->vms = json_integer_value(json_object_get(q, "vms"));
    out->vcpus = json_integer_value(json_object_get(q, "vcpus"));
    out->memory_mib = json_integer_value(json_object_get(q, "memory_mib"));
    out->disk_bytes = json_integer_value(json_object_get(q, "disk_bytes"));
    return 0;
}

/* Projects where the caller holds anything (all of them with Sys.Audit on /). */
void kh_access_routes_projects(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    json_t *all = kh_projects_json(store_of(req), NULL, &err);
    if (!all) {
        kh_http_reply_error(req, &err);
        return;
    }
    json_t *out = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(all, i, p) {
        char path[KH_AUTH_PATH_MAX];
        snprintf(path, sizeof(path), "/projects/%s",
                 json_string_value(json_object_get(p, "name")));
        kh_privs have = 0;
        kh_acl_effective_path(store_of(req), kh_auth_principal(req), path, &have, NULL);
        if (have)
            json_array_append(out, p);
    }
    json_decref(all);
    kh_http_reply_json(req, 200, json_pack("{s:o}", "projects", out));
}

void kh_access_routes_project_add(kh_http_req *req, void *app)
{
    (void)app;
    json_t *b = body_of(req, "ProjectSpec", false);
    if (!b)
        return;
    kh_quota q;
    quota_of(json_object_get(b, "quota"), &q);
    kh_err err = KH_ERR_INIT;
    const char *name = json_string_value(json_object_get(b, "name"));
    if (kh_projects_add(store_of(req), name, &q, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    reply_or_err(req, 201, kh_projects_json(store_of(req), name, &err), &err);
}

void kh_access_routes_project_get(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    char path[KH_AUTH_PATH_MAX];
    snprintf(path, sizeof(path), "/projects/%s", kh_http_req_param(req, "project"));
    kh_privs have = 0;
    kh_acl_effective_path(store_of(req), kh_auth_principal(req), path, &have, NULL);
    if (!have) {
        kh_err_set(&err, KH_E_NOTFOUND, "no such project \"%.64s\"",
                   kh_http_req_param(req, "project"));
        kh_http_reply_error(req, &err);
        return;
    }
    reply_or_err(req, 200,
                 kh_projects_json(store_of(req), kh_http_req_param(req, "project"), &err),
                 &err);
}

void kh_access_routes_project_patch(kh_http_req *req, void *app)
{
    (void)app;
    json_t *b = body_of(req, "ProjectPatch", false);
    if (!b)
        return;
    kh_quota q;
    quota_of(json_object_get(b, "quota"), &q);
    kh_err err = KH_ERR_INIT;
    const char *name = kh_http_req_param(req, "project");
    if (kh_projects_update(store_of(req), name, &q, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    reply_or_err(req, 200, kh_projects_json(store_of(req), name, &err), &err);
}

void kh_access_routes_project_delete(kh_http_req *req, void *app)
{
    (void)app;
    kh_err err = KH_ERR_INIT;
    done(req, kh_projects_delete(store_of(req), kh_http_req_param(req, "project"), &err),
         &err);
}

/* ---- audit ---- */

void kh_access_routes_audit(kh_http_req *req, void *app)
{
    (void)app;
    kh_audit_filter f = {
        .principal = kh_http_req_query(req, "principal"),
        .method = kh_http_req_query(req, "method"),
        .path_prefix = kh_http_req_query(req, "path"),
        .object = kh_http_req_query(req, "object"),
    };
    const char *v;
    if ((v = kh_http_req_query(req, "status_min")))
        f.status_min = (unsigned)strtoul(v, NULL, 10);
    if ((v = kh_http_req_query(req, "status_max")))
        f.status_max = (unsigned)strtoul(v, NULL, 10);
    if ((v = kh_http_req_query(req, "since")))
        f.since = strtod(v, NULL);
    if ((v = kh_http_req_query(req, "until")))
        f.until = strtod(v, NULL);
    if ((v = kh_http_req_query(req, "before")))
        f.before_id = strtoll(v, NULL, 10);
    if ((v = kh_http_req_query(req, "limit")))
        f.limit = (unsigned)strtoul(v, NULL, 10);
    kh_err err = KH_ERR_INIT;
    reply_or_err(req, 200, kh_audit_query(store_of(req), &f, &err), &err);
}
