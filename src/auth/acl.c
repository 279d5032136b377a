/* acl.c - custom roles, ACL entries, and the privileges a principal holds
 * on an object path (see auth.h for the rules). */
#include "auth/auth.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "util/mem.h"

int kh_acl_role_put(kh_store *st, const char *role, kh_privs privs, kh_err *err)
{
    kh_privs b;
    if (!kh_privs_name_ok(role)) {
        kh_err_set(err, KH_E_INVALID, "role names are letters, digits, '_', '.', '-' "
                   "(not first), at most 64");
        return -1;
    }
    if (kh_privs_builtin(role, &b)) {
        kh_err_set(err, KH_E_CONFLICT, "\"%s\" is a built-in role", role);
        return -1;
    }
    sqlite3_stmt *s = kh_store_prep(st, "INSERT OR REPLACE INTO auth_roles (name, privs) "
                                    "VALUES (?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, role, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, privs);
    return kh_store_step_done(st, s, "saving a role", err);
}

int kh_acl_role_delete(kh_store *st, const char *role, kh_err *err)
{
    kh_privs b;
    if (kh_privs_builtin(role, &b)) {
        kh_err_set(err, KH_E_CONFLICT, "\"%s\" is a built-in role", role);
        return -1;
    }
    sqlite3_stmt *s = kh_store_prep(st, "SELECT count(*) FROM auth_acl WHERE role = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, role, -1, SQLITE_TRANSIENT);
    int used = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    if (used) {
        kh_err_set(err, KH_E_CONFLICT, "role \"%s\" is used by %d ACL entries", role, used);
        return -1;
    }
    s = kh_store_prep(st, "DELETE FROM auth_roles WHERE name = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, role, -1, SQLITE_TRANSIENT);
    if (kh_store_step_done(st, s, "deleting a role", err) < 0)
        return -1;
    if (sqlite3_changes(kh_store_sqlite(st)) == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "no such role \"%s\"", role);
        return -1;
    }
    return 0;
}

/* The privileges of a role; false when there is no such role. */
static bool role_privs(kh_store *st, const char *role, kh_privs *out)
{
    if (kh_privs_builtin(role, out))
        return true;
    sqlite3_stmt *s = kh_store_prep(st, "SELECT privs FROM auth_roles WHERE name = ?", NULL);
    if (!s)
        return false;
    sqlite3_bind_text(s, 1, role, -1, SQLITE_TRANSIENT);
    bool found = sqlite3_step(s) == SQLITE_ROW;
    *out = found ? (kh_privs)sqlite3_column_int64(s, 0) & KH_PRIV_ALL : 0;
    sqlite3_finalize(s);
    return found;
}

json_t *kh_acl_roles_json(kh_store *st, kh_err *err)
{
    json_t *a = kh_privs_builtin_json();
    sqlite3_stmt *s = kh_store_prep(st, "SELECT name, privs FROM auth_roles ORDER BY name", err);
    if (!s) {
        json_decref(a);
        return NULL;
    }
    while (sqlite3_step(s) == SQLITE_ROW)
        json_array_append_new(
            a, json_pack("{s:s,s:o,s:b}", "name", (const char *)sqlite3_column_text(s, 0),
                         "privileges", kh_privs_json((kh_privs)sqlite3_column_int64(s, 1)),
                         "builtin", 0));
    sqlite3_finalize(s);
    return a;
}

int kh_acl_set(kh_store *st, const char *path, const char *subject, const char *role,
               bool propagate, kh_err *err)
{
    kh_privs p;
    if (!kh_privs_path_ok(path)) {
        kh_err_set(err, KH_E_INVALID, "path: \"/\" or \"/kind/name...\" with name-like segments");
        return -1;
    }
    if (!kh_privs_subject_ok(subject)) {
        kh_err_set(err, KH_E_INVALID, "subject: a user, \"@group\" or \"user!token\"");
        return -1;
    }
    if (!role_privs(st, role, &p)) {
        kh_err_set(err, KH_E_INVALID, "no such role \"%s\"", role);
        return -1;
    }
    sqlite3_stmt *s = kh_store_prep(st, "INSERT OR REPLACE INTO auth_acl (path, subject, role, "
                                    "propagate) VALUES (?, ?, ?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, path, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, subject, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, role, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 4, propagate);
    return kh_store_step_done(st, s, "saving an ACL entry", err);
}

int kh_acl_delete(kh_store *st, const char *path, const char *subject, const char *role,
                  kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "DELETE FROM auth_acl WHERE path = ? AND subject = ? "
                                    "AND role = ?", err);
    if (!s)
        return -1;
    kh_store_bind_text(s, 1, path);
    kh_store_bind_text(s, 2, subject);
    kh_store_bind_text(s, 3, role);
    if (kh_store_step_done(st, s, "deleting an ACL entry", err) < 0)
        return -1;
    if (sqlite3_changes(kh_store_sqlite(st)) == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "no such ACL entry");
        return -1;
    }
    return 0;
}

json_t *kh_acl_json(kh_store *st, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT path, subject, role, propagate FROM auth_acl "
                                    "ORDER BY path, subject, role", err);
    if (!s)
        return NULL;
    json_t *a = json_array();
    while (sqlite3_step(s) == SQLITE_ROW)
        json_array_append_new(
            a, json_pack("{s:s,s:s,s:s,s:b}", "path", (const char *)sqlite3_column_text(s, 0),
                         "subject", (const char *)sqlite3_column_text(s, 1), "role",
                         (const char *)sqlite3_column_text(s, 2), "propagate",
                         sqlite3_column_int(s, 3)));
    sqlite3_finalize(s);
    return a;
}

/* ---- chains ---- */

/* The object kind and name of a project-scoped path, or false. */
static bool object_of(const char *path, char *kind, size_t ksz, char *name, size_t nsz)
{
    static const struct {
        const char *prefix, *kind;
    } kinds[] = { { "/vms/", "vm" }, { "/networks/", "network" },
                  { "/security-groups/", "security-group" }, { "/backups/", "backup" } };
    for (size_t i = 0; i < KH_ARRAY_LEN(kinds); i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(path, kinds[i].prefix, n) == 0 && !strchr(path + n, '/') && path[n]) {
            snprintf(kind, ksz, "%s", kinds[i].kind);
            snprintf(name, nsz, "%s", path + n);
            return true;
        }
    }
    /* /pools/P/volumes/V: volume "P/V" */
    char pool[KH_AUTH_NAME_MAX + 1], vol[KH_AUTH_NAME_MAX + 1];
    int used = 0;
    if (sscanf(path, "/pools/%64[^/]/volumes/%64[^/]%n", pool, vol, &used) == 2 &&
        path[used] == '\0') {
        snprintf(kind, ksz, "volume");
        snprintf(name, nsz, "%s/%s", pool, vol);
        return true;
    }
    return false;
}

int kh_acl_chain_make(kh_store *st, const char *path, kh_acl_chain *c, kh_err *err)
{
    memset(c, 0, sizeof(*c));
    if (!path || path[0] != '/' || strlen(path) >= KH_AUTH_PATH_MAX) {
        kh_err_set(err, KH_E_INVALID, "bad ACL path");
        return -1;
    }
    char kind[32], name[2 * KH_AUTH_NAME_MAX + 2];
    c->path[c->n++] = xstrdup(path);
    if (object_of(path, kind, sizeof(kind), name, sizeof(name))) {
        c->project = kh_projects_object_project(st, kind, name);
        c->path[c->n++] = xasprintf("/projects/%s", c->project);
        c->path[c->n++] = xstrdup("/");
        return 0;
    }
    /* the ancestors: /a/b/c -> /a/b, /a, / */
    char *p = xstrdup(path);
    for (;;) {
        char *slash = strrchr(p, '/');
        if (!slash || c->n >= KH_AUTH_CHAIN_MAX)
            break;
        if (slash == p) {
            if (p[1])
                c->path[c->n++] = xstrdup("/");
            break;
        }
        *slash = '\0';
        c->path[c->n++] = xstrdup(p);
    }
    free(p);
    if (strncmp(path, "/projects/", 10) == 0 && !strchr(path + 10, '/'))
        c->project = xstrdup(path + 10);
    return 0;
}

void kh_acl_chain_clear(kh_acl_chain *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->path[i]);
    free(c->project);
    memset(c, 0, sizeof(*c));
}

/* The privileges of the ACL subjects in subj on chain. */
static int privs_of(kh_store *st, const char *const *subj, size_t nsubj, const kh_acl_chain *c,
                    kh_privs *out, kh_err *err)
{
    *out = 0;
    sqlite3_stmt *s = kh_store_prep(st, "SELECT path, subject, role, propagate FROM auth_acl",
                                    err);
    if (!s)
        return -1;
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *path = (const char *)sqlite3_column_text(s, 0);
        const char *subject = (const char *)sqlite3_column_text(s, 1);
        bool mine = false;
        for (size_t i = 0; i < nsubj && !mine; i++)
            mine = strcmp(subject, subj[i]) == 0;
        if (!mine)
            continue;
        bool applies = strcmp(path, c->path[0]) == 0;
        for (size_t i = 1; i < c->n && !applies; i++)
            applies = sqlite3_column_int(s, 3) && strcmp(path, c->path[i]) == 0;
        kh_privs p;
        if (applies && role_privs(st, (const char *)sqlite3_column_text(s, 2), &p))
            *out |= p;
    }
    sqlite3_finalize(s);
    return 0;
}

/* The subjects that speak for user: the user and "@group" of each group. */
static size_t user_subjects(kh_store *st, const char *user, char **subj, size_t max)
{
    size_t n = 0;
    subj[n++] = xstrdup(user);
    sqlite3_stmt *s = kh_store_prep(st, "SELECT grp FROM auth_members WHERE user = ?", NULL);
    if (!s)
        return n;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    while (n < max && sqlite3_step(s) == SQLITE_ROW)
        subj[n++] = xasprintf("@%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return n;
}

int kh_acl_effective(kh_store *st, const char *principal, const kh_acl_chain *c,
                     kh_privs *out, kh_err *err)
{
    *out = 0;
    if (!principal)
        return 0;
    if (strcmp(principal, KH_AUTH_ROOT) == 0) {
        *out = KH_PRIV_ALL;
        return 0;
    }
    char user[KH_AUTH_NAME_MAX + 1];
    const char *bang = strchr(principal, '!');
    size_t ul = bang ? (size_t)(bang - principal) : strlen(principal);
    if (ul > KH_AUTH_NAME_MAX)
        return 0;
    memcpy(user, principal, ul);
    user[ul] = '\0';
    if (!kh_users_enabled(st, user))
        return 0;
    char *subj[64];
    size_t n = user_subjects(st, user, subj, KH_ARRAY_LEN(subj));
    int rc = privs_of(st, (const char *const *)subj, n, c, out, err);
    for (size_t i = 0; i < n; i++)
        free(subj[i]);
    if (rc == 0 && bang) { /* a token: never more than its user */
        kh_privs tp = 0;
        rc = privs_of(st, &principal, 1, c, &tp, err);
        *out &= tp;
    }
    return rc;
}

int kh_acl_effective_path(kh_store *st, const char *principal, const char *path,
                          kh_privs *out, kh_err *err)
{
    kh_acl_chain c;
    if (kh_acl_chain_make(st, path, &c, err) < 0)
        return -1;
    int rc = kh_acl_effective(st, principal, &c, out, err);
    kh_acl_chain_clear(&c);
    return rc;
}

json_t *kh_acl_permissions_json(kh_store *st, const char *principal, kh_err *err)
{
    json_t *o = json_object();
    if (principal && strcmp(principal, KH_AUTH_ROOT) == 0) {
        json_object_set_new(o, "/", kh_privs_json(KH_PRIV_ALL));
        return o;
    }
    sqlite3_stmt *s = kh_store_prep(st, "SELECT DISTINCT path FROM auth_acl ORDER BY path", err);
    if (!s) {
        json_decref(o);
        return NULL;
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *path = (const char *)sqlite3_column_text(s, 0);
        kh_privs p = 0;
        if (kh_acl_effective_path(st, principal, path, &p, NULL) == 0 && p)
            json_object_set_new(o, path, kh_privs_json(p));
    }
    sqlite3_finalize(s);
    return o;
}
