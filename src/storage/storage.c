/* storage.c - the storage manager: its store queries shared by pools and
 * volumes, the names in use, and set-up. */
#include "storage/storage_int.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- small helpers ---- */

void storage_col_id(sqlite3_stmt *s, int i, char out[37])
{
    const unsigned char *t = sqlite3_column_text(s, i);
    snprintf(out, 37, "%s", t ? (const char *)t : "");
}

long long storage_count_where(kh_storage *st, const char *sql, const char *arg, kh_err *err)
{
    kh_err local = KH_ERR_INIT;
    kh_err *e = err ? err : &local;
    sqlite3_stmt *s = kh_store_prep(st->store, sql, e);
    long long n = -1;
    if (s) {
        sqlite3_bind_text(s, 1, arg, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
        else
            storage_db_fail(st, e, "counting");
        sqlite3_finalize(s);
    }
    if (!err && n < 0)
        storage_log_fail(&local, "count");
    return n;
}

void storage_log_fail(kh_err *err, const char *what)
{
    kh_log(KH_LOG_ERROR, "storage.db", "op=%s error=\"%s\"", what, err->msg);
    kh_err_clear(err);
}

busy *storage_busy_find(kh_storage *st, const char *pool_id, const char *name)
{
    for (busy *b = st->busy; b; b = b->next)
        if (strcmp(b->pool_id, pool_id) == 0 && strcmp(b->name, name) == 0)
            return b;
    return NULL;
}

int storage_busy_take(kh_storage *st, const char *pool_id, const char *name, kh_err *err)
{
    if (storage_busy_find(st, pool_id, name)) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s: another operation on it is under way", name);
        return -1;
    }
    busy *b = xcalloc(1, sizeof(*b));
    snprintf(b->pool_id, sizeof(b->pool_id), "%s", pool_id);
    b->name = xstrdup(name);
    b->next = st->busy;
    st->busy = b;
    return 0;
}

void storage_busy_release(kh_storage *st, const char *pool_id, const char *name)
{
    for (busy **pp = &st->busy; *pp; pp = &(*pp)->next) {
        busy *b = *pp;
        if (strcmp(b->pool_id, pool_id) == 0 && strcmp(b->name, name) == 0) {
            *pp = b->next;
            free(b->name);
            free(b);
            return;
        }
    }
}

json_t *storage_time_json(double t)
{
    char buf[32];
    kh_time_format(t, buf);
    return json_string(buf);
}

json_t *storage_users_of(kh_storage *st, const char *pool_name, const char *vol_name)
{
    if (!st->users)
        return json_array();
    char *ref = xasprintf("%s/%s", pool_name, vol_name);
    json_t *u = st->users(st->users_opaque, ref);
    free(ref);
    return u ? u : json_array();
}

bool storage_any_running(const json_t *users)
{
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u) {
        if (json_is_true(json_object_get(u, "running")))
            return true;
    }
    return false;
}

/* ---- set-up ---- */

/* Files "<uuid>.part" are creations a previous daemon did not finish. */
static void remove_leftovers(const pool *p)
{
    DIR *d = opendir(p->path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len == 36 + 5 && strcmp(e->d_name + 36, ".part") == 0) {
            char id[37];
            memcpy(id, e->d_name, 36);
            id[36] = '\0';
            if (kh_check_uuid(id) && unlinkat(dirfd(d), e->d_name, 0) == 0)
                kh_log(KH_LOG_INFO, "volume.cleanup", "pool=%s file=%s", p->name, e->d_name);
        }
    }
    closedir(d);
}

kh_storage *kh_storage_new(uv_loop_t *loop, kh_store *store, kh_qimg *qimg,
                           const char *state_dir, kh_err *err)
{
    kh_storage *st = xcalloc(1, sizeof(*st));
    st->loop = loop;
    st->store = store;
    st->db = kh_store_sqlite(store);
    st->templates_at = -1;
    st->qimg = qimg;
    st->state_dir = xstrdup(state_dir);
    if (kh_key_master_load(&st->master, state_dir, err) < 0) {
        kh_err_prefix(err, "storage");
        kh_storage_free(st);
        return NULL;
    }
    pool p = { 0 };
    int rc = pool_get(st, "default", false, &p, err);
    if (rc == 0) {
        char *path = xasprintf("%s/pools/default", state_dir);
        if (kh_fs_mkdir_p(path, 0700, err) < 0 ||
            pool_insert(st, "default", "dir", path, NULL, err) < 0)
            rc = -1;
        free(path);
    }
    pool_clear(&p);
    if (rc < 0) {
        kh_err_prefix(err, "storage");
        kh_storage_free(st);
        return NULL;
    }
    sqlite3_stmt *s = kh_store_prep(st->store, "SELECT " POOL_COLS " FROM pools", err);
    if (!s) {
        kh_storage_free(st);
        return NULL;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        pool q = { 0 };
        row_pool(s, &q);
        remove_leftovers(&q);
        pool_clear(&q);
    }
    if (rc != SQLITE_DONE) {
        storage_db_fail(st, err, "listing pools");
        sqlite3_finalize(s);
        kh_storage_free(st);
        return NULL;
    }
    sqlite3_finalize(s);
    return st;
}

void kh_storage_free(kh_storage *st)
{
    if (!st)
        return;
    while (st->busy) {
        busy *b = st->busy;
        st->busy = b->next;
        free(b->name);
        free(b);
    }
    kh_key_master_clear(&st->master);
    json_decref(st->templates);
    free(st->state_dir);
    free(st);
}

void kh_storage_set_live_resize(kh_storage *st, kh_volume_live_resize_fn fn, void *opaque)
{
    st->live_resize = fn;
    st->live_resize_opaque = opaque;
}

kh_qimg *kh_storage_qimg(kh_storage *st)
{
    return st->qimg;
}

void kh_storage_set_users(kh_storage *st, kh_volume_users_fn fn, void *opaque)
{
    st->users = fn;
    st->users_opaque = opaque;
}
