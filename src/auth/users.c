/* users.c - local users (argon2id password hashes, libsodium's
 * crypto_pwhash_str) and groups (see auth.h). */
#include "auth/auth.h"

#include <sodium.h>
#include <sqlite3.h>
#include <string.h>

#include "util/mem.h"
#include "util/misc.h"

static int hash_password(const char *password, char out[crypto_pwhash_STRBYTES], kh_err *err);
/* A fixed hash for unknown users, so their answer takes as long (made by
 * kh_users_init, on the loop thread, before any worker reads it). */
static char dummy_hash[crypto_pwhash_STRBYTES];

int kh_users_init(kh_err *err)
{
    if (sodium_init() < 0) {
        kh_err_set(err, KH_E_INTERNAL, "libsodium failed to initialise");
        return -1;
    }
    if (!dummy_hash[0] && hash_password("not-a-password", dummy_hash, err) < 0)
        return -1;
    return 0;
}

/* The argon2id hash of password (crypto_pwhash_str), or -1. */
static int hash_password(const char *password, char out[crypto_pwhash_STRBYTES], kh_err *err)
{
    if (strlen(password) < 8 || strlen(password) > 1024) {
        kh_err_set(err, KH_E_INVALID, "a password must have 8 to 1024 characters");
        return -1;
    }
    if (crypto_pwhash_str_alg(out, password, strlen(password),
                              crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        kh_err_set(err, KH_E_INTERNAL, "password hashing failed (out of memory)");
        return -1;
    }
    return 0;
}

static int check_project(kh_store *st, const char *project, kh_err *err)
{
    if (project && !kh_projects_exists(st, project)) {
        kh_err_set(err, KH_E_INVALID, "no such project \"%s\"", project);
        return -1;
    }
    return 0;
}

int kh_users_add(kh_store *st, const char *name, const char *password, const char *project,
                 kh_err *err)
{
    if (!kh_privs_name_ok(name) || strcmp(name, "root") == 0) {
        kh_err_set(err, KH_E_INVALID, "user names are letters, digits, '_', '.', '-' "
                   "(not first), at most 64, and not \"root\"");
        return -1;
    }
    if (check_project(st, project, err) < 0)
        return -1;
    char h[crypto_pwhash_STRBYTES];
    if (password && hash_password(password, h, err) < 0)
        return -1;
    sqlite3_stmt *s = kh_store_prep(st, "INSERT INTO auth_users (name, pwhash, project, "
                                    "created_at) VALUES (?, ?, ?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    kh_store_bind_text(s, 2, password ? h : NULL);
    sqlite3_bind_text(s, 3, project ? project : "default", -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 4, kh_wall_time());
    int rc = kh_store_step_done(st, s, "adding a user", err);
    if (rc < 0 && err && err->code == KH_E_CONFLICT) {
        kh_err_clear(err);
        kh_err_set(err, KH_E_CONFLICT, "user \"%s\" exists", name);
    }
    sodium_memzero(h, sizeof(h));
    return rc;
}

static int changed_or_404(kh_store *st, const char *what, const char *name, kh_err *err)
{
    if (sqlite3_changes(kh_store_sqlite(st)) == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "no such %s \"%s\"", what, name);
        return -1;
    }
    return 0;
}

int kh_users_update(kh_store *st, const char *name, const char *password, const char *project,
                    int enabled, kh_err *err)
{
    if (check_project(st, project, err) < 0)
        return -1;
    char h[crypto_pwhash_STRBYTES];
    if (password && hash_password(password, h, err) < 0)
        return -1;
    sqlite3_stmt *s = kh_store_prep(
        st, "UPDATE auth_users SET pwhash = CASE WHEN ?1 THEN ?2 ELSE pwhash END, "
            "project = COALESCE(?3, project), enabled = CASE WHEN ?4 < 0 THEN enabled "
            "ELSE ?4 END WHERE name = ?5", err);
    if (!s)
        return -1;
    sqlite3_bind_int(s, 1, password != NULL);
    kh_store_bind_text(s, 2, password ? h : NULL);
    kh_store_bind_text(s, 3, project);
    sqlite3_bind_int(s, 4, enabled);
    sqlite3_bind_text(s, 5, name, -1, SQLITE_TRANSIENT);
    sodium_memzero(h, sizeof(h));
    if (kh_store_step_done(st, s, "changing a user", err) < 0)
        return -1;
    return changed_or_404(st, "user", name, err);
}

static int exec_bound(kh_store *st, const char *sql, const char *a, const char *b,
                      const char *what, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, sql, err);
    if (!s)
        return -1;
    kh_store_bind_text(s, 1, a);
    if (b)
        kh_store_bind_text(s, 2, b);
    return kh_store_step_done(st, s, what, err);
}

int kh_users_delete(kh_store *st, const char *name, kh_err *err)
{
    if (kh_store_begin(st, err) < 0)
        return -1;
    char *tokpat = xasprintf("%s!%%", name);
    int rc = exec_bound(st, "DELETE FROM auth_users WHERE name = ?", name, NULL,
                        "deleting a user", err);
    if (rc == 0)
        rc = changed_or_404(st, "user", name, err);
    if (rc == 0)
        rc = exec_bound(st, "DELETE FROM auth_acl WHERE subject = ?1 OR subject LIKE ?2",
                        name, tokpat, "deleting a user's ACL entries", err);
    free(tokpat);
    if (rc < 0) {
        kh_store_rollback(st);
        return -1;
    }
    return kh_store_commit(st, err);
}

static json_t *groups_of(kh_store *st, const char *user)
{
    json_t *a = json_array();
    sqlite3_stmt *s = kh_store_prep(st, "SELECT grp FROM auth_members WHERE user = ? "
                                    "ORDER BY grp", NULL);
    if (!s)
        return a;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    while (sqlite3_step(s) == SQLITE_ROW)
        json_array_append_new(a, json_string((const char *)sqlite3_column_text(s, 0)));
    sqlite3_finalize(s);
    return a;
}

json_t *kh_users_json(kh_store *st, const char *name, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT name, project, enabled, pwhash IS NOT NULL, "
                                    "created_at FROM auth_users WHERE ?1 IS NULL OR name = ?1 "
                                    "ORDER BY name", err);
    if (!s)
        return NULL;
    kh_store_bind_text(s, 1, name);
    json_t *a = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *n = (const char *)sqlite3_column_text(s, 0);
        json_array_append_new(
            a, json_pack("{s:s,s:s,s:b,s:b,s:f,s:o}", "name", n, "project",
                         (const char *)sqlite3_column_text(s, 1), "enabled",
                         sqlite3_column_int(s, 2), "has_password", sqlite3_column_int(s, 3),
                         "created_at", sqlite3_column_double(s, 4), "groups",
                         groups_of(st, n)));
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        json_decref(a);
        kh_store_db_error(st, err, "listing users");
        return NULL;
    }
    if (!name)
        return a;
    json_t *one = json_incref(json_array_get(a, 0));
    json_decref(a);
    if (!one)
        kh_err_set(err, KH_E_NOTFOUND, "no such user \"%s\"", name);
    return one;
}

char *kh_users_pwhash(kh_store *st, const char *name)
{
    char *h = NULL;
    sqlite3_stmt *s = kh_store_prep(st, "SELECT pwhash FROM auth_users WHERE name = ? AND "
                                    "enabled", NULL);
    if (s) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) == SQLITE_ROW)
            h = kh_store_col_text(s, 0);
        sqlite3_finalize(s);
    }
    return h;
}

bool kh_users_pwcheck(const char *hash, const char *password)
{
    const char *h = hash ? hash : dummy_hash;
    if (!h[0])
        return false;
    bool ok = crypto_pwhash_str_verify(h, password, strlen(password)) == 0;
    return ok && hash;
}

bool kh_users_verify(kh_store *st, const char *name, const char *password)
{
    char *h = kh_users_pwhash(st, name);
    bool ok = kh_users_pwcheck(h, password);
    free(h);
    return ok;
}

bool kh_users_enabled(kh_store *st, const char *name)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT enabled FROM auth_users WHERE name = ?", NULL);
    if (!s)
        return false;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    bool ok = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) != 0;
    sqlite3_finalize(s);
    return ok;
}

char *kh_users_project(kh_store *st, const char *name)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT project FROM auth_users WHERE name = ?", NULL);
    if (!s)
        return NULL;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    char *p = sqlite3_step(s) == SQLITE_ROW ? kh_store_col_text(s, 0) : NULL;
    sqlite3_finalize(s);
    return p;
}

int kh_users_group_add(kh_store *st, const char *group, kh_err *err)
{
    if (!kh_privs_name_ok(group)) {
        kh_err_set(err, KH_E_INVALID, "group names are letters, digits, '_', '.', '-' "
                   "(not first), at most 64");
        return -1;
    }
    sqlite3_stmt *s = kh_store_prep(st, "INSERT INTO auth_groups (name, created_at) "
                                    "VALUES (?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, group, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 2, kh_wall_time());
    int rc = kh_store_step_done(st, s, "adding a group", err);
    if (rc < 0 && err && err->code == KH_E_CONFLICT) {
        kh_err_clear(err);
        kh_err_set(err, KH_E_CONFLICT, "group \"%s\" exists", group);
    }
    return rc;
}

int kh_users_group_delete(kh_store *st, const char *group, kh_err *err)
{
    if (kh_store_begin(st, err) < 0)
        return -1;
    char *subj = xasprintf("@%s", group);
    int rc = exec_bound(st, "DELETE FROM auth_groups WHERE name = ?", group, NULL,
                        "deleting a group", err);
    if (rc == 0)
        rc = changed_or_404(st, "group", group, err);
    if (rc == 0)
        rc = exec_bound(st, "DELETE FROM auth_acl WHERE subject = ?", subj, NULL,
                        "deleting a group's ACL entries", err);
    free(subj);
    if (rc < 0) {
        kh_store_rollback(st);
        return -1;
    }
    return kh_store_commit(st, err);
}

int kh_users_group_member(kh_store *st, const char *group, const char *user, bool add,
                          kh_err *err)
{
    if (add) {
        int rc = exec_bound(st, "INSERT OR IGNORE INTO auth_members (grp, user) VALUES (?, ?)",
                            group, user, "adding a group member", err);
        if (rc < 0 && err && err->code == KH_E_CONFLICT) { /* a foreign key */
            kh_err_clear(err);
            kh_err_set(err, KH_E_NOTFOUND, "no such group \"%s\" or user \"%s\"", group, user);
        }
        return rc;
    }
    if (exec_bound(st, "DELETE FROM auth_members WHERE grp = ? AND user = ?", group, user,
                   "removing a group member", err) < 0)
        return -1;
    return changed_or_404(st, "group member", user, err);
}

json_t *kh_users_groups_json(kh_store *st, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT name FROM auth_groups ORDER BY name", err);
    if (!s)
        return NULL;
    json_t *a = json_array();
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *g = (const char *)sqlite3_column_text(s, 0);
        json_t *m = json_array();
        sqlite3_stmt *q = kh_store_prep(st, "SELECT user FROM auth_members WHERE grp = ? "
                                        "ORDER BY user", NULL);
        if (q) {
            sqlite3_bind_text(q, 1, g, -1, SQLITE_TRANSIENT);
            while (sqlite3_step(q) == SQLITE_ROW)
                json_array_append_new(m, json_string((const char *)sqlite3_column_text(q, 0)));
            sqlite3_finalize(q);
        }
        json_array_append_new(a, json_pack("{s:s,s:o}", "name", g, "members", m));
    }
    sqlite3_finalize(s);
    return a;
}
