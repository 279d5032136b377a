/* pool.c - storage pools: directories on the host that hold volumes. */
#include "storage/storage_int.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "schema/schema.h"
#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- pools ---- */

void pool_clear(pool *p)
{
    free(p->name);
    free(p->type);
    free(p->path);
    memset(p, 0, sizeof(*p));
}

void row_pool(sqlite3_stmt *s, pool *p)
{
    storage_col_id(s, 0, p->id);
    p->name = kh_store_col_text(s, 1);
    p->type = kh_store_col_text(s, 2);
    p->path = kh_store_col_text(s, 3);
    p->created_at = sqlite3_column_double(s, 4);
    p->shared = sqlite3_column_int(s, 5) != 0;
}

/* 1 found, 0 not found, -1 error. */
int pool_get(kh_storage *st, const char *key, bool by_id, pool *out, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st->store, by_id ? "SELECT " POOL_COLS " FROM pools WHERE id = ?"
                                     : "SELECT " POOL_COLS " FROM pools WHERE name = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    int found = 0;
    if (rc == SQLITE_ROW) {
        row_pool(s, out);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = storage_db_fail(st, err, "reading a pool");
    }
    sqlite3_finalize(s);
    return found;
}

int pool_find(kh_storage *st, const char *name, pool *out, kh_err *err)
{
    if (kh_check_name(name, "pool name", err) < 0)
        return -1;
    int rc = pool_get(st, name, false, out, err);
    if (rc == 0)
        kh_err_set(err, KH_E_NOTFOUND, "no pool named %s", name);
    return rc == 1 ? 0 : -1;
}

static void pool_space(const pool *p, json_t *o)
{
    struct statvfs sv;
    if (statvfs(p->path, &sv) == 0) {
        uint64_t bs = sv.f_frsize;
        uint64_t cap = (uint64_t)sv.f_blocks * bs, used = (uint64_t)(sv.f_blocks - sv.f_bfree) * bs;
        uint64_t avail = (uint64_t)sv.f_bavail * bs;
        json_object_set_new(o, "capacity", json_integer((json_int_t)cap));
        json_object_set_new(o, "allocation", json_integer((json_int_t)used));
        json_object_set_new(o, "free", json_integer((json_int_t)avail));
        json_object_set_new(o, "available", json_true());
    } else {
        json_object_set_new(o, "available", json_false());
        json_object_set_new(o, "unavailable_reason", json_string(strerror(errno)));
    }
}

uint64_t pool_free_space(const pool *p)
{
    struct statvfs sv;
    if (statvfs(p->path, &sv) < 0)
        return 0;
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

static json_t *pool_json(kh_storage *st, const pool *p)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b, s:o}", "id", p->id, "name", p->name,
                          "type", p->type, "path", p->path, "default",
                          strcmp(p->name, "default") == 0, "shared", p->shared, "created_at",
                          storage_time_json(p->created_at));
    pool_space(p, o);
    json_object_set_new(o, "volumes",
                        json_integer(storage_count_where(st, "SELECT count(*) FROM volumes "
                                                     "WHERE pool_id = ?", p->id, NULL)));
    return o;
}

json_t *kh_storage_pools_json(kh_storage *st)
{
    json_t *arr = json_array();
    sqlite3_stmt *s = kh_store_prep(st->store, "SELECT " POOL_COLS " FROM pools ORDER BY name", NULL);
    if (!s)
        return arr;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        pool p = { 0 };
        row_pool(s, &p);
        json_array_append_new(arr, pool_json(st, &p));
        pool_clear(&p);
    }
    if (rc != SQLITE_DONE) {
        kh_err err = KH_ERR_INIT;
        storage_db_fail(st, &err, "listing pools");
        storage_log_fail(&err, "pools");
    }
    sqlite3_finalize(s);
    return arr;
}

json_t *kh_storage_pool_json(kh_storage *st, const char *name, kh_err *err)
{
    pool p = { 0 };
    if (pool_find(st, name, &p, err) < 0)
        return NULL;
    json_t *o = pool_json(st, &p);
    pool_clear(&p);
    return o;
}

int pool_insert(kh_storage *st, const char *name, const char *type, const char *path,
                       pool *out, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st->store, "INSERT INTO pools (id, name, type, path, created_at) "
                               "VALUES (?, ?, ?, ?, ?)", err);
    if (!s)
        return -1;
    char id[37];
    kh_uuid_generate(id);
    double now = kh_wall_time();
    sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, path, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 5, now);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        if ((sqlite3_extended_errcode(st->db) & 0xff) == SQLITE_CONSTRAINT)
            kh_err_set(err, KH_E_CONFLICT, "a pool named %s, or a pool at %s, already exists",
                       name, path);
        else
            storage_db_fail(st, err, "adding a pool");
        return -1;
    }
    if (out) {
        snprintf(out->id, sizeof(out->id), "%s", id);
        out->name = xstrdup(name);
        out->type = xstrdup(type);
        out->path = xstrdup(path);
        out->created_at = now;
    }
    return 0;
}

static int pool_set_shared(kh_storage *st, pool *p, bool shared, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st->store,
                                    shared ? "INSERT OR IGNORE INTO pool_shared (pool_id) VALUES (?)"
                                           : "DELETE FROM pool_shared WHERE pool_id = ?",
                                    err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, p->id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, "changing a pool");
    sqlite3_finalize(s);
    if (rc == 0)
        p->shared = shared;
    return rc;
}

json_t *kh_storage_pool_patch(kh_storage *st, const char *name, const json_t *body,
                              kh_err *err)
{
    if (kh_schema_check("PoolPatch", body, "", err) < 0)
        return NULL;
    pool p = { 0 };
    if (pool_find(st, name, &p, err) < 0)
        return NULL;
    json_t *o = NULL;
    const json_t *sh = json_object_get(body, "shared");
    if (!sh || pool_set_shared(st, &p, json_is_true(sh), err) == 0) {
        kh_log(KH_LOG_INFO, "pool.patch", "pool=%s shared=%d", name, p.shared);
        o = pool_json(st, &p);
    }
    pool_clear(&p);
    return o;
}

bool kh_storage_pool_shared(kh_storage *st, const char *name)
{
    pool p = { 0 };
    bool shared = pool_get(st, name, false, &p, NULL) == 1 && p.shared;
    pool_clear(&p);
    return shared;
}

int kh_storage_volume_placement(kh_storage *st, const char *ref, kh_volume_placement *out,
                                kh_err *err)
{
    memset(out, 0, sizeof(*out));
    char *pname = NULL, *vname = NULL;
    if (kh_volume_ref_parse(ref, &pname, &vname, err) < 0)
        return -1;
    pool p = { 0 };
    volume v = { 0 };
    int rc = -1;
    if (pool_find(st, pname, &p, err) == 0 && volume_find(st, &p, vname, &v, err) == 0) {
        out->shared = p.shared;
        snprintf(out->format, sizeof(out->format), "%s", v.format ? v.format : "");
        out->capacity = v.capacity;
        out->encrypted = v.key_wrapped != NULL;
        out->readonly = v.readonly;
        rc = 0;
    }
    volume_clear(&v);
    pool_clear(&p);
    free(pname);
    free(vname);
    return rc;
}

json_t *kh_storage_pool_create(kh_storage *st, const json_t *body, kh_err *err)
{
    if (kh_schema_check("PoolSpec", body, "", err) < 0)
        return NULL;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *type = json_string_value(json_object_get(body, "type"));
    const char *path = json_string_value(json_object_get(body, "path"));
    if (kh_check_name(name, "name", err) < 0)
        return NULL;
    if (type && strcmp(type, "dir") != 0) {
        kh_err_set(err, KH_E_INVALID, "type: only \"dir\" pools exist");
        return NULL;
    }
    if (!path) {
        kh_err_set(err, KH_E_INVALID, "path: required (an existing directory)");
        return NULL;
    }
    if (kh_check_abs_path(path, "path", err) < 0)
        return NULL;
    char *real = realpath(path, NULL);
    struct stat sb;
    if (!real || stat(real, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        kh_err_set(err, KH_E_INVALID, "path: %s is not an existing directory", path);
        free(real);
        return NULL;
    }
    if (access(real, W_OK) < 0) {
        kh_err_errno(err, KH_E_INVALID, errno, "path: %s is not writable", path);
        free(real);
        return NULL;
    }
    pool p = { 0 };
    json_t *o = NULL;
    if (pool_insert(st, name, "dir", real, &p, err) == 0 &&
        (!json_is_true(json_object_get(body, "shared")) ||
         pool_set_shared(st, &p, true, err) == 0)) {
        kh_log(KH_LOG_INFO, "pool.create", "pool=%s path=%s shared=%d", name, real, p.shared);
        o = pool_json(st, &p);
    }
    pool_clear(&p);
    free(real);
    return o;
}

int kh_storage_pool_delete(kh_storage *st, const char *name, kh_err *err)
{
    pool p = { 0 };
    if (pool_find(st, name, &p, err) < 0)
        return -1;
    int rc = -1;
    long long nvol;
    if (strcmp(p.name, "default") == 0) {
        kh_err_set(err, KH_E_CONFLICT, "the default pool cannot be deleted");
    } else if ((nvol = storage_count_where(st, "SELECT count(*) FROM volumes WHERE pool_id = ?",
                                           p.id, err)) < 0) {
        /* err says why */
    } else if (nvol != 0) {
        kh_err_set(err, KH_E_CONFLICT, "pool %s still holds volumes; delete them first", name);
    } else {
        sqlite3_stmt *s = kh_store_prep(st->store, "DELETE FROM pools WHERE id = ?", err);
        if (s) {
            sqlite3_bind_text(s, 1, p.id, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, "deleting a pool");
            sqlite3_finalize(s);
        }
    }
    pool_clear(&p);
    return rc;
}
