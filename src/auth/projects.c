/* projects.c - projects, their quotas, and which project each VM, volume,
 * network and security group belongs to (see auth.h). */
#include "auth/auth.h"

#include <sqlite3.h>
#include <string.h>

#include "util/mem.h"
#include "util/misc.h"

static int bind_quota_run(kh_store *st, const char *sql, const char *name, const kh_quota *q,
                          const char *what, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, sql, err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, q->vms);
    sqlite3_bind_int64(s, 3, q->vcpus);
    sqlite3_bind_int64(s, 4, q->memory_mib);
    sqlite3_bind_int64(s, 5, q->disk_bytes);
    sqlite3_bind_double(s, 6, kh_wall_time());
    return kh_store_step_done(st, s, what, err);
}

int kh_projects_add(kh_store *st, const char *name, const kh_quota *q, kh_err *err)
{
    if (!kh_privs_name_ok(name)) {
        kh_err_set(err, KH_E_INVALID, "project names are letters, digits, '_', '.', '-' "
                   "(not first), at most 64");
        return -1;
    }
    kh_quota none = { 0 };
    int rc = bind_quota_run(st, "INSERT INTO auth_projects (name, max_vms, max_vcpus, "
                            "max_memory_mib, max_disk_bytes, created_at) VALUES "
                            "(?1, ?2, ?3, ?4, ?5, ?6)", name, q ? q : &none,
                            "adding a project", err);
    if (rc < 0 && err && err->code == KH_E_CONFLICT) {
        kh_err_clear(err);
        kh_err_set(err, KH_E_CONFLICT, "project \"%s\" exists", name);
    }
    return rc;
}

int kh_projects_update(kh_store *st, const char *name, const kh_quota *q, kh_err *err)
{
    if (bind_quota_run(st, "UPDATE auth_projects SET max_vms = ?2, max_vcpus = ?3, "
                       "max_memory_mib = ?4, max_disk_bytes = ?5 WHERE name = ?1 AND ?6 > 0",
                       name, q, "changing a project", err) < 0)
        return -1;
    if (sqlite3_changes(kh_store_sqlite(st)) == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "no such project \"%s\"", name);
        return -1;
    }
    return 0;
}

static int count_objects(kh_store *st, const char *name)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT count(*) FROM auth_objects WHERE project = ?",
                                    NULL);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    return n;
}

int kh_projects_delete(kh_store *st, const char *name, kh_err *err)
{
    if (strcmp(name, "default") == 0) {
        kh_err_set(err, KH_E_CONFLICT, "the default project cannot be deleted");
        return -1;
    }
    int n = count_objects(st, name);
    if (n != 0) {
        kh_err_set(err, KH_E_CONFLICT, "project \"%s\" still has %d objects", name, n);
        return -1;
    }
    sqlite3_stmt *s = kh_store_prep(st, "DELETE FROM auth_projects WHERE name = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    if (kh_store_step_done(st, s, "deleting a project", err) < 0)
        return -1;
    if (sqlite3_changes(kh_store_sqlite(st)) == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "no such project \"%s\"", name);
        return -1;
    }
    return 0;
}

bool kh_projects_exists(kh_store *st, const char *name)
{
    kh_quota q;
    return name && kh_projects_quota(st, name, &q, NULL) == 0;
}

int kh_projects_quota(kh_store *st, const char *name, kh_quota *q, kh_err *err)
{
    memset(q, 0, sizeof(*q));
    sqlite3_stmt *s = kh_store_prep(st, "SELECT max_vms, max_vcpus, max_memory_mib, "
                                    "max_disk_bytes FROM auth_projects WHERE name = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    int rc = -1;
    if (sqlite3_step(s) == SQLITE_ROW) {
        q->vms = sqlite3_column_int64(s, 0);
        q->vcpus = sqlite3_column_int64(s, 1);
        q->memory_mib = sqlite3_column_int64(s, 2);
        q->disk_bytes = sqlite3_column_int64(s, 3);
        rc = 0;
    } else {
        kh_err_set(err, KH_E_NOTFOUND, "no such project \"%s\"", name);
    }
    sqlite3_finalize(s);
    return rc;
}

json_t *kh_projects_json(kh_store *st, const char *name, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT name, max_vms, max_vcpus, max_memory_mib, "
                                    "max_disk_bytes FROM auth_projects WHERE ?1 IS NULL OR "
                                    "name = ?1 ORDER BY name", err);
    if (!s)
        return NULL;
    kh_store_bind_text(s, 1, name);
    json_t *a = json_array();
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *n = (const char *)sqlite3_column_text(s, 0);
        json_array_append_new(
            a, json_pack("{s:s,s:{s:I,s:I,s:I,s:I},s:i}", "name", n, "quota", "vms",
                         (json_int_t)sqlite3_column_int64(s, 1), "vcpus",
                         (json_int_t)sqlite3_column_int64(s, 2), "memory_mib",
                         (json_int_t)sqlite3_column_int64(s, 3), "disk_bytes",
                         (json_int_t)sqlite3_column_int64(s, 4), "objects",
                         count_objects(st, n)));
    }
    sqlite3_finalize(s);
    if (!name)
        return a;
    json_t *one = json_incref(json_array_get(a, 0));
    json_decref(a);
    if (!one)
        kh_err_set(err, KH_E_NOTFOUND, "no such project \"%s\"", name);
    return one;
}

int kh_projects_object_set(kh_store *st, const char *kind, const char *name,
                           const char *project, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "INSERT OR REPLACE INTO auth_objects (kind, name, "
                                    "project) VALUES (?, ?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, project, -1, SQLITE_TRANSIENT);
    return kh_store_step_done(st, s, "recording an object's project", err);
}

int kh_projects_object_forget(kh_store *st, const char *kind, const char *name, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "DELETE FROM auth_objects WHERE kind = ? AND name = ?",
                                    err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    return kh_store_step_done(st, s, "forgetting an object's project", err);
}

int kh_projects_object_adopt(kh_store *st, const char *kind, const char *name, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "INSERT OR IGNORE INTO auth_objects (kind, name, "
                                    "project) VALUES (?, ?, 'default')", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    return kh_store_step_done(st, s, "recording an object's project", err);
}

char *kh_projects_object_find(kh_store *st, const char *kind, const char *name)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT project FROM auth_objects WHERE kind = ? AND "
                                    "name = ?", NULL);
    char *p = NULL;
    if (s) {
        sqlite3_bind_text(s, 1, kind, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) == SQLITE_ROW)
            p = kh_store_col_text(s, 0);
        sqlite3_finalize(s);
    }
    return p;
}

char *kh_projects_object_project(kh_store *st, const char *kind, const char *name)
{
    char *p = kh_projects_object_find(st, kind, name);
    return p ? p : xstrdup("default");
}
