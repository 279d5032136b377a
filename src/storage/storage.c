#include "storage/storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "storage/key.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

#define QIMG_TIMEOUT_MS 60000u
#define QIMG_CONVERT_TIMEOUT_MS (3600u * 1000)

typedef struct pool {
    char id[37];
    char *name, *type, *path;
    double created_at;
} pool;

typedef struct volume {
    char id[37];
    char pool_id[37];
    char *name, *format;
    uint64_t capacity;
    char backing_id[37]; /* "" when none */
    bool readonly;
    double created_at;
    char *key_wrapped;   /* hex of iv|ciphertext|tag, NULL when not encrypted */
} volume;

/* A volume being created, resized or deleted: its name is taken and other
 * changes to it wait (409) until the operation ends. */
typedef struct busy {
    char pool_id[37];
    char *name;
    struct busy *next;
} busy;

struct kh_storage {
    uv_loop_t *loop;
    kh_store *store;
    sqlite3 *db;
    kh_qimg *qimg;
    char *state_dir;
    busy *busy;
    kh_volume_users_fn users;
    void *users_opaque;
    kh_volume_live_resize_fn live_resize;
    void *live_resize_opaque;
    kh_key_master master;     /* STATE_DIR/master.key */
};

/* ---- small helpers ---- */

/* Every key of obj is one of keys (no mass assignment). */
static int check_keys(const json_t *obj, const char *const *keys, size_t n, kh_err *err)
{
    /* jansson's iterators take a non-const object but do not change it. */
    json_t *o = (json_t *)(uintptr_t)obj;
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        bool known = false;
        for (size_t i = 0; i < n; i++)
            known = known || strcmp(key, keys[i]) == 0;
        if (!known) {
            kh_err_set(err, KH_E_INVALID, "%s: unknown field", key);
            return -1;
        }
    }
    return 0;
}

static void pool_clear(pool *p)
{
    free(p->name);
    free(p->type);
    free(p->path);
    memset(p, 0, sizeof(*p));
}

static void volume_clear(volume *v)
{
    free(v->name);
    free(v->format);
    free(v->key_wrapped);
    memset(v, 0, sizeof(*v));
}

static char *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? xstrdup((const char *)t) : NULL;
}

static void col_id(sqlite3_stmt *s, int i, char out[37])
{
    const unsigned char *t = sqlite3_column_text(s, i);
    snprintf(out, 37, "%s", t ? (const char *)t : "");
}

static int db_fail(kh_storage *st, kh_err *err, const char *what)
{
    kh_err_set(err, KH_E_INTERNAL, "database: %s: %s", what, sqlite3_errmsg(st->db));
    return -1;
}

static sqlite3_stmt *prep(kh_storage *st, const char *sql, kh_err *err)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        db_fail(st, err, "prepare");
        return NULL;
    }
    return s;
}

static void row_pool(sqlite3_stmt *s, pool *p)
{
    col_id(s, 0, p->id);
    p->name = col_text(s, 1);
    p->type = col_text(s, 2);
    p->path = col_text(s, 3);
    p->created_at = sqlite3_column_double(s, 4);
}

#define POOL_COLS "id, name, type, path, created_at"
#define VOL_COLS "id, pool_id, name, format, capacity, backing_id, readonly, created_at, key_wrapped"

static void row_volume(sqlite3_stmt *s, volume *v)
{
    col_id(s, 0, v->id);
    col_id(s, 1, v->pool_id);
    v->name = col_text(s, 2);
    v->format = col_text(s, 3);
    v->capacity = (uint64_t)sqlite3_column_int64(s, 4);
    col_id(s, 5, v->backing_id);
    v->readonly = sqlite3_column_int(s, 6) != 0;
    v->created_at = sqlite3_column_double(s, 7);
    v->key_wrapped = col_text(s, 8);
}

/* 1 found, 0 not found, -1 error. */
static int pool_get(kh_storage *st, const char *key, bool by_id, pool *out, kh_err *err)
{
    sqlite3_stmt *s = prep(st, by_id ? "SELECT " POOL_COLS " FROM pools WHERE id = ?"
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
        found = db_fail(st, err, "reading a pool");
    }
    sqlite3_finalize(s);
    return found;
}

static int pool_find(kh_storage *st, const char *name, pool *out, kh_err *err)
{
    if (kh_check_name(name, "pool name", err) < 0)
        return -1;
    int rc = pool_get(st, name, false, out, err);
    if (rc == 0)
        kh_err_set(err, KH_E_NOTFOUND, "no pool named %s", name);
    return rc == 1 ? 0 : -1;
}

static int volume_get(kh_storage *st, const char *pool_id, const char *name, const char *id,
                      volume *out, kh_err *err)
{
    sqlite3_stmt *s = prep(st, id ? "SELECT " VOL_COLS " FROM volumes WHERE id = ?"
                                  : "SELECT " VOL_COLS " FROM volumes WHERE pool_id = ? AND name = ?",
                           err);
    if (!s)
        return -1;
    if (id) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
    } else {
        sqlite3_bind_text(s, 1, pool_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    }
    int rc = sqlite3_step(s), found = 0;
    if (rc == SQLITE_ROW) {
        row_volume(s, out);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = db_fail(st, err, "reading a volume");
    }
    sqlite3_finalize(s);
    return found;
}

static int volume_find(kh_storage *st, const pool *p, const char *name, volume *out, kh_err *err)
{
    if (kh_check_name(name, "volume name", err) < 0)
        return -1;
    int rc = volume_get(st, p->id, name, NULL, out, err);
    if (rc == 0)
        kh_err_set(err, KH_E_NOTFOUND, "no volume %s in pool %s", name, p->name);
    return rc == 1 ? 0 : -1;
}

static long long count_where(kh_storage *st, const char *sql, const char *arg)
{
    sqlite3_stmt *s = NULL;
    long long n = -1;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, arg, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    return n;
}

static char *volume_path(const pool *p, const char *id, const char *suffix)
{
    return xasprintf("%s/%s%s", p->path, id, suffix ? suffix : "");
}

static busy *busy_find(kh_storage *st, const char *pool_id, const char *name)
{
    for (busy *b = st->busy; b; b = b->next)
        if (strcmp(b->pool_id, pool_id) == 0 && strcmp(b->name, name) == 0)
            return b;
    return NULL;
}

static int busy_take(kh_storage *st, const char *pool_id, const char *name, kh_err *err)
{
    if (busy_find(st, pool_id, name)) {
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

static void busy_release(kh_storage *st, const char *pool_id, const char *name)
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

static json_t *time_json(double t)
{
    char buf[32];
    kh_time_format(t, buf);
    return json_string(buf);
}

static json_t *users_of(kh_storage *st, const char *pool_name, const char *vol_name)
{
    if (!st->users)
        return json_array();
    char *ref = xasprintf("%s/%s", pool_name, vol_name);
    json_t *u = st->users(st->users_opaque, ref);
    free(ref);
    return u ? u : json_array();
}

static bool any_running(const json_t *users)
{
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u) {
        if (json_is_true(json_object_get(u, "running")))
            return true;
    }
    return false;
}

/* ---- sizes and references ---- */

int kh_volume_size_parse(const json_t *v, uint64_t *out, kh_err *err)
{
    uint64_t n = 0;
    if (json_is_integer(v)) {
        if (json_integer_value(v) <= 0) {
            kh_err_set(err, KH_E_INVALID, "size: must be positive");
            return -1;
        }
        n = (uint64_t)json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end = NULL;
        if (!*s || *s < '0' || *s > '9')
            goto bad;
        errno = 0;
        unsigned long long base = strtoull(s, &end, 10);
        if (errno)
            goto huge;
        unsigned shift = 0;
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        case 't': case 'T': shift = 40; end++; break;
        case 'p': case 'P': shift = 50; end++; break;
        default: break;
        }
        if (shift && *end == 'i')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
        if (*end)
            goto bad;
        if (base == 0) {
            kh_err_set(err, KH_E_INVALID, "size: must be positive");
            return -1;
        }
        if (shift && base > (UINT64_MAX >> shift))
            goto huge;
        n = (uint64_t)base << shift;
    } else {
        goto bad;
    }
    if (n > KH_VOLUME_SIZE_MAX)
        goto huge;
    *out = (n + 511) & ~(uint64_t)511;
    return 0;
bad:
    kh_err_set(err, KH_E_INVALID,
               "size: give bytes as an integer or a string like \"512M\", \"10G\", \"1T\"");
    return -1;
huge:
    kh_err_set(err, KH_E_TOOLARGE, "size: at most %llu GiB",
               (unsigned long long)(KH_VOLUME_SIZE_MAX >> 30));
    return -1;
}

int kh_volume_ref_parse(const char *ref, char **pool_out, char **name_out, kh_err *err)
{
    const char *slash = ref ? strchr(ref, '/') : NULL;
    if (!slash) {
        kh_err_set(err, KH_E_INVALID, "volume reference must be \"pool/name\"");
        return -1;
    }
    char *p = xstrndup(ref, (size_t)(slash - ref));
    char *n = xstrdup(slash + 1);
    if (kh_check_name(p, "volume reference: pool name", err) < 0 ||
        kh_check_name(n, "volume reference: volume name", err) < 0) {
        free(p);
        free(n);
        return -1;
    }
    *pool_out = p;
    *name_out = n;
    return 0;
}

/* ---- pools ---- */

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

static uint64_t pool_free(const pool *p)
{
    struct statvfs sv;
    if (statvfs(p->path, &sv) < 0)
        return 0;
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

static json_t *pool_json(kh_storage *st, const pool *p)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o}", "id", p->id, "name", p->name,
                          "type", p->type, "path", p->path, "default",
                          strcmp(p->name, "default") == 0, "created_at",
                          time_json(p->created_at));
    pool_space(p, o);
    json_object_set_new(o, "volumes",
                        json_integer(count_where(st, "SELECT count(*) FROM volumes "
                                                     "WHERE pool_id = ?", p->id)));
    return o;
}

json_t *kh_storage_pools_json(kh_storage *st)
{
    json_t *arr = json_array();
    sqlite3_stmt *s = prep(st, "SELECT " POOL_COLS " FROM pools ORDER BY name", NULL);
    if (!s)
        return arr;
    while (sqlite3_step(s) == SQLITE_ROW) {
        pool p = { 0 };
        row_pool(s, &p);
        json_array_append_new(arr, pool_json(st, &p));
        pool_clear(&p);
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

static int pool_insert(kh_storage *st, const char *name, const char *type, const char *path,
                       pool *out, kh_err *err)
{
    sqlite3_stmt *s = prep(st, "INSERT INTO pools (id, name, type, path, created_at) "
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
            db_fail(st, err, "adding a pool");
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

json_t *kh_storage_pool_create(kh_storage *st, const json_t *body, kh_err *err)
{
    static const char *const keys[] = { "name", "type", "path" };
    if (check_keys(body, keys, KH_ARRAY_LEN(keys), err) < 0)
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
    if (pool_insert(st, name, "dir", real, &p, err) == 0) {
        kh_log(KH_LOG_INFO, "pool.create", "pool=%s path=%s", name, real);
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
    if (strcmp(p.name, "default") == 0) {
        kh_err_set(err, KH_E_CONFLICT, "the default pool cannot be deleted");
    } else if (count_where(st, "SELECT count(*) FROM volumes WHERE pool_id = ?", p.id) != 0) {
        kh_err_set(err, KH_E_CONFLICT, "pool %s still holds volumes; delete them first", name);
    } else {
        sqlite3_stmt *s = prep(st, "DELETE FROM pools WHERE id = ?", err);
        if (s) {
            sqlite3_bind_text(s, 1, p.id, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, err, "deleting a pool");
            sqlite3_finalize(s);
        }
    }
    pool_clear(&p);
    return rc;
}

/* ---- volumes: JSON ---- */

static json_t *volume_json(kh_storage *st, const pool *p, const volume *v)
{
    char *path = volume_path(p, v->id, NULL);
    struct stat sb;
    json_int_t alloc = stat(path, &sb) == 0 ? (json_int_t)sb.st_blocks * 512 : 0;
    free(path);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:o}", "id", v->id, "name",
                          v->name, "pool", p->name, "ref", "", "format", v->format, "capacity",
                          (json_int_t)v->capacity, "allocation", alloc, "readonly", v->readonly,
                          "created_at", time_json(v->created_at));
    char *ref = xasprintf("%s/%s", p->name, v->name);
    json_object_set_new(o, "ref", json_string(ref));
    free(ref);
    json_t *backing = json_null();
    if (v->backing_id[0]) {
        volume b = { 0 };
        pool bp = { 0 };
        if (volume_get(st, NULL, NULL, v->backing_id, &b, NULL) == 1 &&
            pool_get(st, b.pool_id, true, &bp, NULL) == 1) {
            char *bref = xasprintf("%s/%s", bp.name, b.name);
            json_decref(backing);
            backing = json_string(bref);
            free(bref);
        }
        volume_clear(&b);
        pool_clear(&bp);
    }
    json_object_set_new(o, "backing", backing);
    json_object_set_new(o, "encrypted", json_boolean(v->key_wrapped != NULL));
    json_object_set_new(o, "dependents",
                        json_integer(count_where(st, "SELECT count(*) FROM volumes "
                                                     "WHERE backing_id = ?", v->id)));
    json_object_set_new(o, "used_by", users_of(st, p->name, v->name));
    return o;
}

json_t *kh_storage_volumes_json(kh_storage *st, const char *pool_name, kh_err *err)
{
    pool p = { 0 };
    if (pool_find(st, pool_name, &p, err) < 0)
        return NULL;
    json_t *arr = json_array();
    sqlite3_stmt *s = prep(st, "SELECT " VOL_COLS " FROM volumes WHERE pool_id = ? "
                               "ORDER BY name", err);
    if (s) {
        sqlite3_bind_text(s, 1, p.id, -1, SQLITE_TRANSIENT);
        while (sqlite3_step(s) == SQLITE_ROW) {
            volume v = { 0 };
            row_volume(s, &v);
            json_array_append_new(arr, volume_json(st, &p, &v));
            volume_clear(&v);
        }
        sqlite3_finalize(s);
    }
    pool_clear(&p);
    return arr;
}

/* ---- encryption keys (storage/key.h) ---- */

int kh_storage_volume_secret_fd(kh_storage *st, const char *volume_id, kh_err *err)
{
    volume v = { 0 };
    int fd = -1;
    int rc = volume_get(st, NULL, NULL, volume_id, &v, err);
    if (rc == 1 && v.key_wrapped)
        fd = kh_key_secret_fd(&st->master, v.id, v.key_wrapped, v.name, err);
    else if (rc >= 0)
        kh_err_set(err, KH_E_NOTFOUND, "no encrypted volume %s", volume_id);
    volume_clear(&v);
    return fd;
}

/* ---- volumes: operations ---- */

typedef enum op_kind {
    OP_CREATE,
    OP_IMPORT_CHECK,
    OP_IMPORT_COPY,
    OP_SHOW,
    OP_RESIZE,
    OP_COPY,
    OP_UPLOAD,
} op_kind;

typedef struct op {
    kh_storage *st;
    op_kind kind;
    pool p;
    volume v;
    char *part;   /* the file being made (OP_CREATE, OP_IMPORT_COPY) */
    char *final;
    char *import; /* the host file */
    uint64_t new_size;
    kh_storage_progress_cb on_progress;
    int last_percent;
    int secret_fd; /* encrypted create: closed when the op ends */
    int xfds[KH_QIMG_FDS_MAX]; /* encrypted copy: the secrets qemu-img inherits (owned) */
    size_t nxfds;
    kh_strv *retry_argv; /* encrypted create: run again after a PBKDF timing glitch */
    int retries;
    int upload_fd;       /* OP_UPLOAD: the .part being written */
    uint64_t upload_len, upload_cap;
    kh_storage_cb cb;
    void *opaque;
} op;

static void op_free(op *o)
{
    if (o->secret_fd > 0)
        close(o->secret_fd);
    for (size_t i = 0; i < o->nxfds; i++)
        close(o->xfds[i]);
    if (o->upload_fd > 0)
        close(o->upload_fd);
    kh_strv_free(o->retry_argv);
    pool_clear(&o->p);
    volume_clear(&o->v);
    free(o->part);
    free(o->final);
    free(o->import);
    free(o);
}

static void op_end(op *o, json_t *result, const kh_err *err)
{
    if (o->kind != OP_SHOW)
        busy_release(o->st, o->p.id, o->v.name);
    o->cb(result, err, o->opaque);
    op_free(o);
}

static void qimg_error(const kh_qimg_result *r, const char *what, kh_err *err)
{
    if (r->timed_out) {
        kh_err_set(err, KH_E_TIMEOUT, "%s: qemu-img did not finish in time", what);
        return;
    }
    const char *msg = r->errtext && *r->errtext ? r->errtext : "qemu-img failed";
    /* qemu-img names the file; keep only its own words after the path. */
    kh_code code = strstr(msg, "No space left") ? KH_E_TOOLARGE : KH_E_INTERNAL;
    kh_err_set(err, code, "%s: %s", what, msg);
}

/* A new random key for volume v (its wrapped form into v->key_wrapped); a
 * memfd holding the passphrase, or -1. */
static int new_key(kh_storage *st, volume *v, kh_err *err)
{
    char whex[KH_KEY_WRAPPED_HEX];
    int fd = kh_key_new(&st->master, v->id, whex, err);
    if (fd >= 0) {
        free(v->key_wrapped);
        v->key_wrapped = xstrdup(whex);
    }
    return fd;
}

static int volume_insert(kh_storage *st, const volume *v, kh_err *err)
{
    sqlite3_stmt *s = prep(st, "INSERT INTO volumes (" VOL_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, v->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, v->pool_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, v->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, v->format, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)v->capacity);
    if (v->backing_id[0])
        sqlite3_bind_text(s, 6, v->backing_id, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, 6);
    sqlite3_bind_int(s, 7, v->readonly);
    sqlite3_bind_double(s, 8, v->created_at);
    if (v->key_wrapped)
        sqlite3_bind_text(s, 9, v->key_wrapped, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, 9);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        if ((sqlite3_extended_errcode(st->db) & 0xff) == SQLITE_CONSTRAINT)
            kh_err_set(err, KH_E_CONFLICT, "a volume named %s already exists", v->name);
        else
            db_fail(st, err, "adding a volume");
        return -1;
    }
    return 0;
}

static void copy_progress(const char *line, void *opaque);

/* LUKS key slots: the PBKDF is timed to iter-time ms of this CPU. The
 * passphrase is a random 256-bit key, never a person's password, so key
 * stretching adds nothing; 100 ms (QEMU's default is 2 s) makes an encrypted
 * create fast. The timing itself fails now and then on a loaded or
 * tick-accounted host ("Unable to get accurate CPU usage": the first probe
 * measured 0 ms of CPU; about one try in two here), and a failed try costs
 * milliseconds, so it is simply run again. */
#define LUKS_ITER_MS "100"
#define LUKS_RETRIES 30

static void create_done(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    /* LUKS formatting times its PBKDF on this CPU; on a loaded host
     * qemu-img sometimes cannot measure ("Unable to get accurate CPU
     * usage"). Nothing was made: try again. */
    if (r->status != 0 && o->retry_argv && o->retries < LUKS_RETRIES && r->errtext &&
        strstr(r->errtext, "accurate CPU usage")) {
        o->retries++;
        unlink(o->part);
        bool copy = o->kind == OP_COPY;
        if (kh_qimg_run_fds(o->st->qimg, o->retry_argv->v, copy ? o->xfds : &o->secret_fd,
                            copy ? o->nxfds : 1, copy ? QIMG_CONVERT_TIMEOUT_MS : QIMG_TIMEOUT_MS,
                            copy ? copy_progress : NULL, create_done, o, &err) >= 0)
            return;
    }
    if (kh_err_isset(&err)) {
        /* could not even retry */
    } else if (r->status != 0) {
        qimg_error(r, o->kind == OP_IMPORT_COPY ? "importing"
                      : o->kind == OP_COPY     ? "copying the volume"
                                               : "creating the volume", &err);
    } else if (rename(o->part, o->final) < 0) {
        kh_err_errno(&err, KH_E_INTERNAL, errno, "renaming %s", o->part);
    } else if (volume_insert(o->st, &o->v, &err) < 0) {
        unlink(o->final);
    }
    if (kh_err_isset(&err)) {
        unlink(o->part); /* nothing half-made stays */
        kh_log(KH_LOG_WARN, "volume.create", "pool=%s volume=%s error=\"%s\"", o->p.name,
               o->v.name, err.msg);
        op_end(o, NULL, &err);
        return;
    }
    kh_log(KH_LOG_INFO, "volume.create", "pool=%s volume=%s id=%s format=%s size=%" PRIu64,
           o->p.name, o->v.name, o->v.id, o->v.format, o->v.capacity);
    json_t *j = volume_json(o->st, &o->p, &o->v);
    op_end(o, j, NULL);
}

static int run_qimg(op *o, kh_strv *argv, unsigned timeout, kh_qimg_done_cb done, kh_err *err)
{
    pid_t pid = kh_qimg_run(o->st->qimg, argv->v, timeout, NULL, done, o, err);
    kh_strv_free(argv);
    return pid < 0 ? -1 : 0;
}

static int start_copy(op *o, kh_err *err)
{
    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(o->st->qimg));
    kh_strv_add(a, "convert");
    kh_strv_add(a, "-q");
    kh_strv_add(a, "-f");
    kh_strv_add(a, o->v.format);
    kh_strv_add(a, "-O");
    kh_strv_add(a, o->v.format);
    kh_strv_add(a, o->import);
    kh_strv_add(a, o->part);
    o->kind = OP_IMPORT_COPY;
    return run_qimg(o, a, QIMG_CONVERT_TIMEOUT_MS, create_done, err);
}

/* Security case 5: an image to import may not name other files - no
 * backing file, no external data file - and must be of the given format. */
static void import_checked(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *info = NULL;
    if (r->status != 0) {
        kh_err_set(&err, KH_E_INVALID, "import: %s is not a readable %s image: %s", o->import,
                   o->v.format, r->errtext && *r->errtext ? r->errtext : "qemu-img failed");
        goto fail;
    }
    info = json_loads(r->out, 0, NULL);
    const char *fmt = json_string_value(json_object_get(info, "format"));
    json_t *vsize = json_object_get(info, "virtual-size");
    json_t *fsd = json_object_get(json_object_get(info, "format-specific"), "data");
    if (!fmt || strcmp(fmt, o->v.format) != 0 || !json_is_integer(vsize)) {
        kh_err_set(&err, KH_E_INVALID, "import: %s is not a %s image", o->import, o->v.format);
    } else if (json_object_get(info, "backing-filename") ||
               json_object_get(info, "full-backing-filename")) {
        kh_err_set(&err, KH_E_INVALID,
                   "import: %s has a backing file; images that name other files are refused",
                   o->import);
    } else if (json_object_get(fsd, "data-file") || json_is_true(json_object_get(fsd, "data-file-raw"))) {
        kh_err_set(&err, KH_E_INVALID,
                   "import: %s has an external data file; images that name other files are "
                   "refused", o->import);
    } else if ((uint64_t)json_integer_value(vsize) > KH_VOLUME_SIZE_MAX) {
        kh_err_set(&err, KH_E_TOOLARGE, "import: the image is larger than the maximum size");
    } else if (json_is_integer(json_object_get(info, "actual-size")) &&
               (uint64_t)json_integer_value(json_object_get(info, "actual-size")) >
                   pool_free(&o->p)) {
        kh_err_set(&err, KH_E_TOOLARGE, "import: not enough free space in pool %s", o->p.name);
    }
    if (kh_err_isset(&err))
        goto fail;
    o->v.capacity = (uint64_t)json_integer_value(vsize);
    json_decref(info);
    if (start_copy(o, &err) < 0)
        op_end(o, NULL, &err);
    return;
fail:
    json_decref(info);
    op_end(o, NULL, &err);
}

static const char *const create_keys[] = { "name", "format", "size", "preallocate", "backing",
                                           "import", "encrypt" };

int kh_storage_volume_create(kh_storage *st, const char *pool_name, const json_t *body,
                             kh_storage_cb cb, void *opaque, kh_err *err)
{
    if (check_keys(body, create_keys, KH_ARRAY_LEN(create_keys), err) < 0)
        return -1;
    const char *name = json_string_value(json_object_get(body, "name"));
    json_t *jfmt = json_object_get(body, "format");
    const char *fmt = jfmt ? json_string_value(jfmt) : "qcow2";
    json_t *jsize = json_object_get(body, "size");
    json_t *jpre = json_object_get(body, "preallocate");
    json_t *jback = json_object_get(body, "backing");
    json_t *jimp = json_object_get(body, "import");
    json_t *jenc = json_object_get(body, "encrypt");
    if (kh_check_name(name, "name", err) < 0)
        return -1;
    if (jenc && !json_is_boolean(jenc)) {
        kh_err_set(err, KH_E_INVALID, "encrypt: must be true or false");
        return -1;
    }
    if (json_is_true(jenc) && (strcmp(fmt ? fmt : "", "qcow2") != 0 || jimp)) {
        kh_err_set(err, KH_E_INVALID, "encrypt: only a new qcow2 volume or clone can be "
                                      "encrypted (not raw, not an import)");
        return -1;
    }
    bool encrypt = json_is_true(jenc);
    if (!fmt || (strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)) {
        kh_err_set(err, KH_E_INVALID, "format: must be \"qcow2\" or \"raw\"");
        return -1;
    }
    if (jpre && !json_is_boolean(jpre)) {
        kh_err_set(err, KH_E_INVALID, "preallocate: must be true or false");
        return -1;
    }
    if ((jback && !json_is_string(jback)) || (jimp && !json_is_string(jimp))) {
        kh_err_set(err, KH_E_INVALID, "%s: must be a string", jback ? "backing" : "import");
        return -1;
    }
    if (jback && jimp) {
        kh_err_set(err, KH_E_INVALID, "backing and import exclude each other");
        return -1;
    }
    if (jimp && (jsize || json_is_true(jpre))) {
        kh_err_set(err, KH_E_INVALID, "import: the size comes from the image; no size or "
                                      "preallocate");
        return -1;
    }
    if (jback && strcmp(fmt, "qcow2") != 0) {
        kh_err_set(err, KH_E_INVALID, "backing: only a qcow2 volume can have a backing volume");
        return -1;
    }
    if (!jsize && !jback && !jimp) {
        kh_err_set(err, KH_E_INVALID, "size: required");
        return -1;
    }
    uint64_t size = 0;
    if (jsize && kh_volume_size_parse(jsize, &size, err) < 0)
        return -1;
    if (jimp && kh_check_abs_path(json_string_value(jimp), "import", err) < 0)
        return -1;

    pool p = { 0 };
    if (pool_find(st, pool_name, &p, err) < 0)
        return -1;
    volume base = { 0 };
    pool bpool = { 0 };
    op *o = NULL;
    int rc = -1;
    volume existing = { 0 };
    int have = volume_get(st, p.id, name, NULL, &existing, err);
    volume_clear(&existing);
    if (have < 0)
        goto out;
    if (have == 1 || busy_find(st, p.id, name)) {
        kh_err_set(err, KH_E_CONFLICT, "a volume named %s already exists in pool %s", name,
                   p.name);
        goto out;
    }
    if (jback) {
        const char *bref = json_string_value(jback);
        char *bp_name = NULL, *bv_name = NULL;
        if (strchr(bref, '/')) {
            if (kh_volume_ref_parse(bref, &bp_name, &bv_name, err) < 0)
                goto out;
        } else {
            bp_name = xstrdup(p.name);
            bv_name = xstrdup(bref);
        }
        int r = pool_find(st, bp_name, &bpool, err);
        if (r == 0)
            r = volume_find(st, &bpool, bv_name, &base, err);
        free(bp_name);
        free(bv_name);
        if (r < 0) {
            kh_err_prefix(err, "backing");
            goto out;
        }
        if (busy_find(st, bpool.id, base.name)) {
            kh_err_set(err, KH_E_CONFLICT, "backing: volume %s is busy", base.name);
            goto out;
        }
        if (base.key_wrapped)
            encrypt = true; /* a clone of an encrypted base: encrypted, with its own key */
        if (base.capacity > size)
            size = base.capacity;
        /* A base written by a running VM would corrupt every clone. */
        json_t *u = users_of(st, bpool.name, base.name);
        bool running = any_running(u);
        json_decref(u);
        if (running && !base.readonly) {
            kh_err_set(err, KH_E_CONFLICT,
                       "backing: volume %s is in use by a running VM; stop it or make a "
                       "template first", base.name);
            goto out;
        }
    } else if (!jimp) {
        uint64_t free_b = pool_free(&p);
        if (size > free_b) {
            kh_err_set(err, KH_E_TOOLARGE,
                       "size: %" PRIu64 " bytes is more than the %" PRIu64
                       " bytes free in pool %s", size, free_b, p.name);
            goto out;
        }
    }

    o = xcalloc(1, sizeof(*o));
    o->st = st;
    o->cb = cb;
    o->opaque = opaque;
    o->p = p;
    memset(&p, 0, sizeof(p));
    kh_uuid_generate(o->v.id);
    snprintf(o->v.pool_id, sizeof(o->v.pool_id), "%s", o->p.id);
    o->v.name = xstrdup(name);
    o->v.format = xstrdup(fmt);
    o->v.capacity = size;
    o->v.created_at = kh_wall_time();
    if (jback)
        snprintf(o->v.backing_id, sizeof(o->v.backing_id), "%s", base.id);
    o->part = volume_path(&o->p, o->v.id, ".part");
    o->final = volume_path(&o->p, o->v.id, NULL);
    busy_take(st, o->p.id, name, NULL);

    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(st->qimg));
    if (jimp) {
        o->import = xstrdup(json_string_value(jimp));
        struct stat sb;
        if (stat(o->import, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            kh_err_set(err, KH_E_INVALID, "import: %s is not a regular file", o->import);
            kh_strv_free(a);
            busy_release(st, o->p.id, name);
            op_free(o);
            o = NULL;
            goto out;
        }
        o->kind = OP_IMPORT_CHECK;
        kh_strv_add(a, "info");
        kh_strv_add(a, "--output=json");
        kh_strv_add(a, "-U");
        kh_strv_add(a, "-f");
        kh_strv_add(a, fmt);
        kh_strv_add(a, o->import);
        rc = run_qimg(o, a, QIMG_TIMEOUT_MS, import_checked, err);
    } else {
        o->kind = OP_CREATE;
        kh_strv_add(a, "create");
        kh_strv_add(a, "-q");
        kh_strv_add(a, "-f");
        kh_strv_add(a, fmt);
        if (jback) {
            char *bpath = volume_path(&bpool, base.id, NULL);
            /* -u: O(1), the base is not opened (its size is known here). */
            kh_strv_add(a, "-u");
            kh_strv_add(a, "-b");
            kh_strv_add_steal(a, bpath);
            kh_strv_add(a, "-F");
            kh_strv_add(a, base.format);
        } else if (json_is_true(jpre)) {
            kh_strv_add(a, "-o");
            kh_strv_add(a, "preallocation=full");
        }
        if (encrypt) {
            /* a random key per volume, wrapped by the master key; the
             * passphrase reaches qemu-img through fd 3 only */
            o->secret_fd = new_key(st, &o->v, err);
            if (o->secret_fd < 0) {
                kh_strv_free(a);
                busy_release(st, o->p.id, name);
                op_free(o);
                o = NULL;
                goto out;
            }
            kh_strv_add(a, "--object");
            kh_strv_add(a, "secret,id=sec0,file=/proc/self/fd/3,format=raw");
            kh_strv_add(a, "-o");
            kh_strv_add(a, "encrypt.format=luks,encrypt.key-secret=sec0,"
                           "encrypt.iter-time=" LUKS_ITER_MS);
        }
        kh_strv_add(a, o->part);
        kh_strv_addf(a, "%" PRIu64, size);
        pid_t pid = kh_qimg_run_fd(st->qimg, a->v, o->secret_fd, QIMG_TIMEOUT_MS, NULL,
                                   create_done, o, err);
        if (o->secret_fd > 0)
            o->retry_argv = a;
        else
            kh_strv_free(a);
        rc = pid < 0 ? -1 : 0;
    }
    if (rc < 0) {
        busy_release(st, o->p.id, name);
        op_free(o);
    }
out:
    pool_clear(&p);
    pool_clear(&bpool);
    volume_clear(&base);
    return rc;
}

static json_t *chain_json(kh_storage *st, json_t *info)
{
    json_t *chain = json_array();
    size_t i;
    json_t *layer;
    json_array_foreach(info, i, layer) {
        const char *fn = json_string_value(json_object_get(layer, "filename"));
        json_t *l = json_pack("{s:O*, s:O*, s:O*, s:O*}", "format",
                              json_object_get(layer, "format"), "virtual_size",
                              json_object_get(layer, "virtual-size"), "actual_size",
                              json_object_get(layer, "actual-size"), "filename",
                              json_object_get(layer, "filename"));
        const char *base = fn ? strrchr(fn, '/') : NULL;
        volume v = { 0 };
        pool p = { 0 };
        if (base && kh_check_uuid(base + 1) &&
            volume_get(st, NULL, NULL, base + 1, &v, NULL) == 1 &&
            pool_get(st, v.pool_id, true, &p, NULL) == 1) {
            char *ref = xasprintf("%s/%s", p.name, v.name);
            json_object_set_new(l, "volume", json_string(ref));
            free(ref);
        }
        volume_clear(&v);
        pool_clear(&p);
        json_array_append_new(chain, l);
    }
    return chain;
}

static void show_done(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *info = r->status == 0 ? json_loads(r->out, 0, NULL) : NULL;
    if (!json_is_array(info) || json_array_size(info) == 0) {
        qimg_error(r, "reading the volume", &err);
        if (!kh_err_isset(&err))
            kh_err_set(&err, KH_E_INTERNAL, "reading the volume: unexpected qemu-img output");
        json_decref(info);
        op_end(o, NULL, &err);
        return;
    }
    json_t *j = volume_json(o->st, &o->p, &o->v);
    json_t *top = json_array_get(info, 0);
    json_object_set(j, "virtual_size", json_object_get(top, "virtual-size"));
    json_object_set(j, "actual_size", json_object_get(top, "actual-size"));
    json_object_set_new(j, "backing_chain", chain_json(o->st, info));
    json_decref(info);
    op_end(o, j, NULL);
}

static op *op_for(kh_storage *st, const char *pool_name, const char *name, op_kind kind,
                  kh_storage_cb cb, void *opaque, kh_err *err)
{
    op *o = xcalloc(1, sizeof(*o));
    o->st = st;
    o->kind = kind;
    o->cb = cb;
    o->opaque = opaque;
    if (pool_find(st, pool_name, &o->p, err) < 0 || volume_find(st, &o->p, name, &o->v, err) < 0) {
        op_free(o);
        return NULL;
    }
    o->final = volume_path(&o->p, o->v.id, NULL);
    return o;
}

int kh_storage_volume_show(kh_storage *st, const char *pool_name, const char *name,
                           kh_storage_cb cb, void *opaque, kh_err *err)
{
    op *o = op_for(st, pool_name, name, OP_SHOW, cb, opaque, err);
    if (!o)
        return -1;
    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(st->qimg));
    kh_strv_add(a, "info");
    kh_strv_add(a, "--output=json");
    kh_strv_add(a, "--backing-chain");
    kh_strv_add(a, "-U");
    kh_strv_add(a, "-f");
    kh_strv_add(a, o->v.format);
    kh_strv_add(a, o->final);
    if (run_qimg(o, a, QIMG_TIMEOUT_MS, show_done, err) < 0) {
        op_free(o);
        return -1;
    }
    return 0;
}

static void resize_record(op *o, kh_err *err_in);

static void resize_done(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    if (r->status != 0)
        qimg_error(r, "resizing the volume", &err);
    resize_record(o, kh_err_isset(&err) ? &err : NULL);
}

static void live_resized(const kh_err *err, void *opaque)
{
    op *o = opaque;
    kh_err e = KH_ERR_INIT;
    if (err) {
        kh_err_copy(&e, err);
        kh_err_prefix(&e, "resizing the volume online");
    }
    resize_record(o, err ? &e : NULL);
}

static void resize_record(op *o, kh_err *err_in)
{
    kh_err err = KH_ERR_INIT;
    if (err_in) {
        op_end(o, NULL, err_in);
        return;
    }
    sqlite3_stmt *s = prep(o->st, "UPDATE volumes SET capacity = ? WHERE id = ?", &err);
    if (s) {
        sqlite3_bind_int64(s, 1, (sqlite3_int64)o->new_size);
        sqlite3_bind_text(s, 2, o->v.id, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) != SQLITE_DONE)
            db_fail(o->st, &err, "recording the new size");
        sqlite3_finalize(s);
    }
    if (kh_err_isset(&err)) {
        op_end(o, NULL, &err);
        return;
    }
    kh_log(KH_LOG_INFO, "volume.resize", "pool=%s volume=%s size=%" PRIu64, o->p.name, o->v.name,
           o->new_size);
    o->v.capacity = o->new_size;
    op_end(o, volume_json(o->st, &o->p, &o->v), NULL);
}

int kh_storage_volume_resize(kh_storage *st, const char *pool_name, const char *name,
                             const json_t *body, kh_storage_cb cb, void *opaque, kh_err *err)
{
    static const char *const keys[] = { "size" };
    if (check_keys(body, keys, KH_ARRAY_LEN(keys), err) < 0)
        return -1;
    uint64_t size = 0;
    json_t *jsize = json_object_get(body, "size");
    if (!jsize) {
        kh_err_set(err, KH_E_INVALID, "size: required");
        return -1;
    }
    if (kh_volume_size_parse(jsize, &size, err) < 0)
        return -1;
    op *o = op_for(st, pool_name, name, OP_RESIZE, cb, opaque, err);
    if (!o)
        return -1;
    json_t *u = NULL;
    if (size < o->v.capacity) {
        kh_err_set(err, KH_E_INVALID, "size: volumes only grow (now %" PRIu64 " bytes)",
                   o->v.capacity);
        goto fail;
    }
    if (o->v.readonly) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s is a read-only base", name);
        goto fail;
    }
    u = users_of(st, o->p.name, o->v.name);
    bool live = any_running(u);
    if (live && (json_array_size(u) != 1 || !st->live_resize ||
                 json_is_true(json_object_get(json_array_get(u, 0), "readonly")))) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s is in use read-only by running VMs; stop "
                                       "them first", name);
        goto fail;
    }
    if (strcmp(o->v.format, "raw") == 0 && size - o->v.capacity > pool_free(&o->p)) {
        kh_err_set(err, KH_E_TOOLARGE, "size: not enough free space in pool %s", o->p.name);
        goto fail;
    }
    json_decref(u);
    u = NULL;
    if (busy_take(st, o->p.id, o->v.name, err) < 0)
        goto fail;
    o->new_size = size;
    if (live) {
        char *ref = xasprintf("%s/%s", o->p.name, o->v.name);
        int lrc = st->live_resize(st->live_resize_opaque, ref, size, live_resized, o, err);
        free(ref);
        if (lrc < 0) {
            busy_release(st, o->p.id, o->v.name);
            goto fail;
        }
        return 0;
    }
    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(st->qimg));
    kh_strv_add(a, "resize");
    kh_strv_add(a, "-q");
    if (o->v.key_wrapped) {
        /* an encrypted image opens only with its key: a secret on fd 3, and
         * the image described as JSON (no path escaping to get wrong) */
        o->secret_fd = kh_key_secret_fd(&st->master, o->v.id, o->v.key_wrapped, name, err);
        if (o->secret_fd < 0) {
            o->secret_fd = 0;
            kh_strv_free(a);
            busy_release(st, o->p.id, o->v.name);
            goto fail;
        }
        json_t *img = json_pack("{s:s, s:{s:s, s:s}, s:{s:s, s:s}}", "driver", "qcow2", "file",
                                "driver", "file", "filename", o->final, "encrypt", "format",
                                "luks", "key-secret", "sec0");
        char *js = json_dumps(img, JSON_COMPACT);
        json_decref(img);
        kh_strv_add(a, "--object");
        kh_strv_add(a, "secret,id=sec0,file=/proc/self/fd/3,format=raw");
        kh_strv_addf(a, "json:%s", js);
        free(js);
    } else {
        kh_strv_add(a, "-f");
        kh_strv_add(a, o->v.format);
        kh_strv_add(a, o->final);
    }
    kh_strv_addf(a, "%" PRIu64, size);
    pid_t pid = kh_qimg_run_fds(st->qimg, a->v, &o->secret_fd, o->v.key_wrapped ? 1 : 0,
                                QIMG_TIMEOUT_MS, NULL, resize_done, o, err);
    kh_strv_free(a);
    if (pid < 0) {
        busy_release(st, o->p.id, o->v.name);
        goto fail;
    }
    return 0;
fail:
    json_decref(u);
    op_free(o);
    return -1;
}

int kh_storage_volume_delete(kh_storage *st, const char *pool_name, const char *name,
                             kh_err *err)
{
    op *o = op_for(st, pool_name, name, OP_SHOW, NULL, NULL, err);
    if (!o)
        return -1;
    int rc = -1;
    json_t *u = users_of(st, o->p.name, o->v.name);
    long long deps = count_where(st, "SELECT count(*) FROM volumes WHERE backing_id = ?",
                                 o->v.id);
    if (json_array_size(u) > 0) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s is attached to VM %s; detach it first", name,
                   json_string_value(json_object_get(json_array_get(u, 0), "vm")));
    } else if (deps != 0) {
        kh_err_set(err, KH_E_CONFLICT,
                   "volume %s is the base of %lld other volume(s); delete them first", name,
                   deps);
    } else if (busy_find(st, o->p.id, o->v.name)) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s: another operation on it is under way", name);
    } else {
        sqlite3_stmt *s = prep(st, "DELETE FROM volumes WHERE id = ?", err);
        if (s) {
            sqlite3_bind_text(s, 1, o->v.id, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, err, "deleting a volume");
            sqlite3_finalize(s);
        }
        if (rc == 0) {
            if (unlink(o->final) < 0 && errno != ENOENT)
                kh_log(KH_LOG_WARN, "volume.delete", "file=%s error=\"%s\"", o->final,
                       strerror(errno));
            kh_log(KH_LOG_INFO, "volume.delete", "pool=%s volume=%s id=%s", o->p.name, name,
                   o->v.id);
        }
    }
    json_decref(u);
    op_free(o);
    return rc;
}

/* qemu-img convert -p prints "    (12.50/100%)" lines. */
static void copy_progress(const char *line, void *opaque)
{
    op *o = opaque;
    double pct;
    const char *p = strchr(line, '(');
    if (!p || sscanf(p, "(%lf/100%%)", &pct) != 1)
        return;
    int ip = (int)pct;
    if (ip != o->last_percent && o->on_progress) {
        o->last_percent = ip;
        o->on_progress(ip, o->opaque);
    }
}

int kh_storage_volume_copy(kh_storage *st, const char *src_ref, const char *dst_name,
                           kh_storage_progress_cb on_progress, kh_storage_cb cb, void *opaque,
                           kh_err *err)
{
    char *pn = NULL, *vn = NULL;
    if (kh_volume_ref_parse(src_ref, &pn, &vn, err) < 0)
        return -1;
    if (kh_check_name(dst_name, "name", err) < 0) {
        free(pn);
        free(vn);
        return -1;
    }
    op *o = op_for(st, pn, vn, OP_COPY, cb, opaque, err);
    free(pn);
    free(vn);
    if (!o)
        return -1;
    volume existing = { 0 };
    int have = volume_get(st, o->p.id, dst_name, NULL, &existing, err);
    volume_clear(&existing);
    if (have != 0 || busy_find(st, o->p.id, dst_name)) {
        if (have >= 0)
            kh_err_set(err, KH_E_CONFLICT, "a volume named %s already exists in pool %s",
                       dst_name, o->p.name);
        op_free(o);
        return -1;
    }
    struct stat sb;
    if (stat(o->final, &sb) == 0 && (uint64_t)sb.st_blocks * 512 > pool_free(&o->p)) {
        kh_err_set(err, KH_E_TOOLARGE, "not enough free space in pool %s for a full copy",
                   o->p.name);
        op_free(o);
        return -1;
    }
    /* An encrypted chain is read through a json: description with a secret
     * per encrypted layer, and the copy is encrypted with a key of its own. */
    kh_volume_chain chain;
    bool encrypted = false;
    if (kh_storage_resolve(st, src_ref, &chain, err) < 0) {
        op_free(o);
        return -1;
    }
    for (size_t j = 0; j < chain.n; j++)
        encrypted = encrypted || chain.layer[j].encrypted;
    json_t *src_json = NULL;
    kh_strv *objs = kh_strv_new();
    if (encrypted) {
        json_t *below = json_null();
        for (size_t j = chain.n; j-- > 0;) {
            json_t *node = json_pack("{s:s, s:{s:s, s:s}}", "driver",
                                     kh_disk_format_name(chain.layer[j].format), "file",
                                     "driver", "file", "filename", chain.layer[j].path);
            if (chain.layer[j].format == KH_DISK_QCOW2)
                json_object_set_new(node, "backing", below);
            else
                json_decref(below);
            if (chain.layer[j].encrypted) {
                int sfd = kh_storage_volume_secret_fd(st, chain.layer[j].id, err);
                if (sfd < 0 || o->nxfds + 1 >= KH_QIMG_FDS_MAX) {
                    if (sfd >= 0)
                        close(sfd);
                    kh_err_set(err, KH_E_INTERNAL, "volume %s: its layers' keys", o->v.name);
                    json_decref(node);
                    below = NULL; /* node owns what was below */
                    break;
                }
                char id[32];
                snprintf(id, sizeof(id), "s%zu", j);
                kh_strv_addf(objs, "secret,id=%s,file=/proc/self/fd/%zu,format=raw", id,
                             3 + o->nxfds);
                o->xfds[o->nxfds++] = sfd;
                json_object_set_new(node, "encrypt",
                                    json_pack("{s:s, s:s}", "format", "luks", "key-secret", id));
            }
            below = node;
        }
        src_json = below;
        if (!src_json) {
            kh_volume_chain_clear(&chain);
            kh_strv_free(objs);
            op_free(o);
            return -1;
        }
    }
    kh_volume_chain_clear(&chain);
    char *src = o->final;
    char *src_fmt = xstrdup(o->v.format);
    uint64_t capacity = o->v.capacity;
    /* The op now describes the new volume. */
    volume_clear(&o->v);
    kh_uuid_generate(o->v.id);
    snprintf(o->v.pool_id, sizeof(o->v.pool_id), "%s", o->p.id);
    o->v.name = xstrdup(dst_name);
    o->v.format = src_fmt;
    o->v.capacity = capacity;
    o->v.created_at = kh_wall_time();
    o->final = volume_path(&o->p, o->v.id, NULL);
    o->part = volume_path(&o->p, o->v.id, ".part");
    o->on_progress = on_progress;
    o->last_percent = -1;
    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(st->qimg));
    kh_strv_add(a, "convert");
    kh_strv_add(a, "-p");
    kh_strv_add(a, "-U");
    if (encrypted) {
        int tfd = new_key(st, &o->v, err);
        if (tfd < 0) {
            json_decref(src_json);
            kh_strv_free(objs);
            kh_strv_free(a);
            free(src);
            op_free(o);
            return -1;
        }
        size_t tnum = 3 + o->nxfds;
        o->xfds[o->nxfds++] = tfd;
        for (size_t k = 0; k < objs->n; k++) {
            kh_strv_add(a, "--object");
            kh_strv_add(a, objs->v[k]);
        }
        kh_strv_add(a, "--object");
        kh_strv_addf(a, "secret,id=st,file=/proc/self/fd/%zu,format=raw", tnum);
        kh_strv_add(a, "-O");
        kh_strv_add(a, src_fmt);
        kh_strv_add(a, "-o");
        kh_strv_add(a, "encrypt.format=luks,encrypt.key-secret=st,"
                       "encrypt.iter-time=" LUKS_ITER_MS);
        char *js = json_dumps(src_json, JSON_COMPACT);
        kh_strv_addf(a, "json:%s", js);
        free(js);
        json_decref(src_json);
    } else {
        kh_strv_add(a, "-f");
        kh_strv_add(a, src_fmt);
        kh_strv_add(a, "-O");
        kh_strv_add(a, src_fmt);
        kh_strv_add(a, src);
    }
    kh_strv_free(objs);
    kh_strv_add(a, o->part);
    free(src);
    busy_take(st, o->p.id, dst_name, NULL);
    pid_t pid = kh_qimg_run_fds(st->qimg, a->v, o->xfds, o->nxfds, QIMG_CONVERT_TIMEOUT_MS,
                                copy_progress, create_done, o, err);
    if (pid >= 0 && encrypted)
        o->retry_argv = a; /* LUKS PBKDF timing: create_done may run it again */
    else
        kh_strv_free(a);
    if (pid < 0) {
        busy_release(st, o->p.id, dst_name);
        op_free(o);
        return -1;
    }
    return 0;
}

int kh_storage_volume_set_readonly(kh_storage *st, const char *ref, bool readonly, kh_err *err)
{
    char *pn = NULL, *vn = NULL;
    if (kh_volume_ref_parse(ref, &pn, &vn, err) < 0)
        return -1;
    pool p = { 0 };
    volume v = { 0 };
    int rc = -1;
    if (pool_find(st, pn, &p, err) == 0 && volume_find(st, &p, vn, &v, err) == 0) {
        sqlite3_stmt *s = prep(st, "UPDATE volumes SET readonly = ? WHERE id = ?", err);
        if (s) {
            sqlite3_bind_int(s, 1, readonly);
            sqlite3_bind_text(s, 2, v.id, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, err, "marking a volume");
            sqlite3_finalize(s);
        }
    }
    pool_clear(&p);
    volume_clear(&v);
    free(pn);
    free(vn);
    return rc;
}

int kh_storage_template_mark(kh_storage *st, const char *vm_id, kh_err *err)
{
    sqlite3_stmt *s = prep(st, "INSERT OR IGNORE INTO templates (vm_id, created_at) VALUES (?, ?)",
                           err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 2, kh_wall_time());
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, err, "marking a template");
    sqlite3_finalize(s);
    return rc;
}

bool kh_storage_is_template(kh_storage *st, const char *vm_id)
{
    return st && count_where(st, "SELECT count(*) FROM templates WHERE vm_id = ?", vm_id) > 0;
}

void kh_storage_template_forget(kh_storage *st, const char *vm_id)
{
    sqlite3_stmt *s = st ? prep(st, "DELETE FROM templates WHERE vm_id = ?", NULL) : NULL;
    if (!s)
        return;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_step(s);
    sqlite3_finalize(s);
}

/* ---- snapshot records ---- */

/* Run one statement with text arguments (NULL binds NULL). */
static int exec_args(kh_storage *st, const char *sql, const char *what, kh_err *err, int n, ...)
{
    sqlite3_stmt *s = prep(st, sql, err);
    if (!s)
        return -1;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *a = va_arg(ap, const char *);
        if (a)
            sqlite3_bind_text(s, i + 1, a, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(s, i + 1);
    }
    va_end(ap);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, err, what);
    sqlite3_finalize(s);
    return rc;
}

char *kh_storage_snapshot_current(kh_storage *st, const char *vm_id)
{
    sqlite3_stmt *s = prep(st, "SELECT name FROM snapshot_current WHERE vm_id = ?", NULL);
    if (!s)
        return NULL;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    char *name = sqlite3_step(s) == SQLITE_ROW ? col_text(s, 0) : NULL;
    sqlite3_finalize(s);
    return name;
}

int kh_storage_snapshot_set_current(kh_storage *st, const char *vm_id, const char *name,
                                    kh_err *err)
{
    if (!name)
        return exec_args(st, "DELETE FROM snapshot_current WHERE vm_id = ?",
                         "recording the current snapshot", err, 1, vm_id);
    return exec_args(st, "INSERT INTO snapshot_current (vm_id, name) VALUES (?, ?) "
                         "ON CONFLICT (vm_id) DO UPDATE SET name = excluded.name",
                     "recording the current snapshot", err, 2, vm_id, name);
}

int kh_storage_snapshot_add(kh_storage *st, const char *vm_id, const char *name, bool memory,
                            kh_err *err)
{
    /* Its parent is where the VM was; it becomes where the VM is. */
    char *parent = kh_storage_snapshot_current(st, vm_id);
    sqlite3_stmt *s = prep(st, "INSERT INTO snapshots (vm_id, name, memory, created_at, parent) "
                               "VALUES (?, ?, ?, ?, ?)", err);
    if (!s) {
        free(parent);
        return -1;
    }
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 3, memory);
    sqlite3_bind_double(s, 4, kh_wall_time());
    if (parent)
        sqlite3_bind_text(s, 5, parent, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, 5);
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, err, "recording a snapshot");
    sqlite3_finalize(s);
    free(parent);
    if (rc == 0)
        rc = kh_storage_snapshot_set_current(st, vm_id, name, err);
    return rc;
}

int kh_storage_snapshot_get(kh_storage *st, const char *vm_id, const char *name, bool *memory,
                            kh_err *err)
{
    sqlite3_stmt *s = prep(st, "SELECT memory FROM snapshots WHERE vm_id = ? AND name = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s), found = 0;
    if (rc == SQLITE_ROW) {
        *memory = sqlite3_column_int(s, 0) != 0;
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = db_fail(st, err, "reading a snapshot");
    }
    sqlite3_finalize(s);
    return found;
}

int kh_storage_snapshot_remove(kh_storage *st, const char *vm_id, const char *name, kh_err *err)
{
    /* Its children hang from its parent now; "current" moves up too. One
     * transaction: the tree is never seen half-changed. */
    if (exec_args(st, "SAVEPOINT snap_remove", "removing a snapshot", err, 0) < 0)
        return -1;
    const char *parent_of = "(SELECT parent FROM snapshots WHERE vm_id = ?1 AND name = ?2)";
    char *reparent = xasprintf("UPDATE snapshots SET parent = %s WHERE vm_id = ?1 AND "
                               "parent = ?2", parent_of);
    char *uncur = xasprintf("DELETE FROM snapshot_current WHERE vm_id = ?1 AND name = ?2 AND "
                            "%s IS NULL", parent_of);
    char *recur = xasprintf("UPDATE snapshot_current SET name = %s WHERE vm_id = ?1 AND "
                            "name = ?2", parent_of);
    int rc = exec_args(st, reparent, "removing a snapshot", err, 2, vm_id, name);
    if (rc == 0)
        rc = exec_args(st, uncur, "removing a snapshot", err, 2, vm_id, name);
    if (rc == 0)
        rc = exec_args(st, recur, "removing a snapshot", err, 2, vm_id, name);
    if (rc == 0)
        rc = exec_args(st, "DELETE FROM snapshots WHERE vm_id = ? AND name = ?",
                       "removing a snapshot", err, 2, vm_id, name);
    free(reparent);
    free(uncur);
    free(recur);
    if (rc == 0)
        return exec_args(st, "RELEASE snap_remove", "removing a snapshot", err, 0);
    exec_args(st, "ROLLBACK TO snap_remove", "removing a snapshot", NULL, 0);
    exec_args(st, "RELEASE snap_remove", "removing a snapshot", NULL, 0);
    return -1;
}

json_t *kh_storage_snapshot_list(kh_storage *st, const char *vm_id)
{
    json_t *arr = json_array();
    char *current = kh_storage_snapshot_current(st, vm_id);
    sqlite3_stmt *s = prep(st, "SELECT name, memory, created_at, parent FROM snapshots "
                               "WHERE vm_id = ? ORDER BY created_at, name", NULL);
    if (!s) {
        free(current);
        return arr;
    }
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        const char *parent = (const char *)sqlite3_column_text(s, 3);
        json_array_append_new(arr, json_pack("{s:s, s:b, s:o, s:o, s:b}", "name", name,
                                             "memory", sqlite3_column_int(s, 1) != 0,
                                             "created_at",
                                             time_json(sqlite3_column_double(s, 2)), "parent",
                                             parent ? json_string(parent) : json_null(),
                                             "current", current && strcmp(current, name) == 0));
    }
    sqlite3_finalize(s);
    free(current);
    return arr;
}

void kh_storage_snapshot_forget_vm(kh_storage *st, const char *vm_id)
{
    if (st)
        exec_args(st, "DELETE FROM snapshot_current WHERE vm_id = ?", "forgetting snapshots",
                  NULL, 1, vm_id);
    sqlite3_stmt *s = st ? prep(st, "DELETE FROM snapshots WHERE vm_id = ?", NULL) : NULL;
    if (!s)
        return;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_step(s);
    sqlite3_finalize(s);
}

/* ---- resolution for the VM manager ---- */

void kh_volume_chain_clear(kh_volume_chain *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->layer[i].path);
    memset(c, 0, sizeof(*c));
}

int kh_storage_resolve(kh_storage *st, const char *ref, kh_volume_chain *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    char *pn = NULL, *vn = NULL;
    if (kh_volume_ref_parse(ref, &pn, &vn, err) < 0)
        return -1;
    pool p = { 0 };
    volume v = { 0 };
    int rc = -1;
    if (pool_find(st, pn, &p, err) < 0 || volume_find(st, &p, vn, &v, err) < 0)
        goto out;
    out->readonly = v.readonly;
    out->encrypted = v.key_wrapped != NULL;
    out->dependents = (unsigned)count_where(st, "SELECT count(*) FROM volumes "
                                                "WHERE backing_id = ?", v.id);
    for (;;) {
        if (out->n == KH_VOLUME_CHAIN_MAX) {
            kh_err_set(err, KH_E_INVALID, "volume %s: its chain is deeper than %d", ref,
                       KH_VOLUME_CHAIN_MAX);
            goto out;
        }
        snprintf(out->layer[out->n].id, 37, "%s", v.id);
        out->layer[out->n].path = volume_path(&p, v.id, NULL);
        out->layer[out->n].format = strcmp(v.format, "qcow2") == 0 ? KH_DISK_QCOW2 : KH_DISK_RAW;
        out->layer[out->n].encrypted = v.key_wrapped != NULL;
        out->n++;
        if (!v.backing_id[0])
            break;
        char bid[37];
        snprintf(bid, sizeof(bid), "%s", v.backing_id);
        volume_clear(&v);
        pool_clear(&p);
        if (volume_get(st, NULL, NULL, bid, &v, err) != 1 ||
            pool_get(st, v.pool_id, true, &p, err) != 1) {
            kh_err_set(err, KH_E_INTERNAL, "volume %s: its backing volume is missing", ref);
            goto out;
        }
    }
    rc = 0;
out:
    if (rc < 0)
        kh_volume_chain_clear(out);
    free(pn);
    free(vn);
    pool_clear(&p);
    volume_clear(&v);
    return rc;
}

/* ---- upload and download ---- */

struct kh_volume_upload {
    op *o;
};

kh_volume_upload *kh_storage_upload_begin(kh_storage *st, const char *pool_name,
                                          const char *name, const char *format,
                                          uint64_t expected, kh_err *err)
{
    if (kh_check_name(name, "volume name", err) < 0)
        return NULL;
    if (!format || (strcmp(format, "qcow2") != 0 && strcmp(format, "raw") != 0)) {
        kh_err_set(err, KH_E_INVALID, "format: say what the image is, \"qcow2\" or \"raw\" "
                                      "(?format=); it is checked, never guessed");
        return NULL;
    }
    pool p = { 0 };
    if (pool_find(st, pool_name, &p, err) < 0)
        return NULL;
    volume existing = { 0 };
    int have = volume_get(st, p.id, name, NULL, &existing, err);
    volume_clear(&existing);
    if (have != 0 || busy_find(st, p.id, name)) {
        if (have >= 0)
            kh_err_set(err, KH_E_CONFLICT, "a volume named %s already exists in pool %s", name,
                       p.name);
        pool_clear(&p);
        return NULL;
    }
    uint64_t cap = pool_free(&p);
    if (cap > KH_VOLUME_SIZE_MAX)
        cap = KH_VOLUME_SIZE_MAX;
    if (expected != UINT64_MAX && expected > cap) {
        kh_err_set(err, KH_E_TOOLARGE, "upload: %" PRIu64 " bytes is more than the %" PRIu64
                                       " bytes pool %s can take", expected, cap, p.name);
        pool_clear(&p);
        return NULL;
    }
    op *o = xcalloc(1, sizeof(*o));
    o->st = st;
    o->kind = OP_UPLOAD;
    o->p = p;
    kh_uuid_generate(o->v.id);
    snprintf(o->v.pool_id, sizeof(o->v.pool_id), "%s", o->p.id);
    o->v.name = xstrdup(name);
    o->v.format = xstrdup(format);
    o->v.created_at = kh_wall_time();
    o->part = volume_path(&o->p, o->v.id, ".part");
    o->final = volume_path(&o->p, o->v.id, NULL);
    o->upload_cap = cap;
    o->upload_fd = open(o->part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (o->upload_fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "upload: cannot create %s", o->part);
        o->upload_fd = 0;
        op_free(o);
        return NULL;
    }
    busy_take(st, o->p.id, name, NULL);
    kh_volume_upload *u = xcalloc(1, sizeof(*u));
    u->o = o;
    return u;
}

void kh_storage_upload_abort(kh_volume_upload *u)
{
    if (!u)
        return;
    op *o = u->o;
    unlink(o->part);
    kh_log(KH_LOG_INFO, "volume.upload", "pool=%s volume=%s bytes=%" PRIu64 " result=abandoned",
           o->p.name, o->v.name, o->upload_len);
    busy_release(o->st, o->p.id, o->v.name);
    op_free(o);
    free(u);
}

int kh_storage_upload_write(kh_volume_upload *u, const void *data, size_t len, kh_err *err)
{
    op *o = u->o;
    if (o->upload_len + len > o->upload_cap) {
        kh_err_set(err, KH_E_TOOLARGE, "upload: more than the %" PRIu64 " bytes pool %s can "
                                       "take", o->upload_cap, o->p.name);
        return -1;
    }
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(o->upload_fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            kh_err_errno(err, errno == ENOSPC || errno == EDQUOT ? KH_E_TOOLARGE : KH_E_INTERNAL,
                         errno, "upload: writing pool %s", o->p.name);
            return -1;
        }
        p += n;
        len -= (size_t)n;
        o->upload_len += (uint64_t)n;
    }
    return 0;
}

/* The uploaded bytes are an image of the declared format that names no
 * other file (security case 5) and is not larger than allowed (case 6). */
static void upload_checked(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *info = NULL;
    if (r->status != 0) {
        /* qemu-img names the .part file: keep its own words only */
        const char *why = r->errtext && *r->errtext ? r->errtext : "qemu-img failed";
        const char *tail = strstr(why, "': ");
        kh_err_set(&err, KH_E_INVALID, "upload: not a %s image (%s)", o->v.format,
                   tail ? tail + 3 : why);
    } else {
        info = json_loads(r->out, 0, NULL);
        const char *fmt = json_string_value(json_object_get(info, "format"));
        json_t *vsize = json_object_get(info, "virtual-size");
        json_t *fsd = json_object_get(json_object_get(info, "format-specific"), "data");
        if (!fmt || strcmp(fmt, o->v.format) != 0 || !json_is_integer(vsize))
            kh_err_set(&err, KH_E_INVALID, "upload: not a %s image", o->v.format);
        else if (json_object_get(info, "backing-filename") ||
                 json_object_get(info, "full-backing-filename"))
            kh_err_set(&err, KH_E_INVALID, "upload: the image has a backing file; images that "
                                           "name other files are refused");
        else if (json_object_get(fsd, "data-file") ||
                 json_is_true(json_object_get(fsd, "data-file-raw")))
            kh_err_set(&err, KH_E_INVALID, "upload: the image has an external data file; "
                                           "images that name other files are refused");
        else if (json_object_get(fsd, "encrypt"))
            kh_err_set(&err, KH_E_INVALID, "upload: encrypted images are not accepted (kvmhost "
                                           "would not have their key)");
        else if ((uint64_t)json_integer_value(vsize) > KH_VOLUME_SIZE_MAX)
            kh_err_set(&err, KH_E_TOOLARGE, "upload: the image claims %" JSON_INTEGER_FORMAT
                                            " bytes, over the maximum volume size",
                       json_integer_value(vsize));
        else
            o->v.capacity = (uint64_t)json_integer_value(vsize);
    }
    json_decref(info);
    if (kh_err_isset(&err)) {
        unlink(o->part);
        kh_log(KH_LOG_WARN, "volume.upload", "pool=%s volume=%s error=\"%s\"", o->p.name,
               o->v.name, err.msg);
        op_end(o, NULL, &err);
        return;
    }
    kh_qimg_result ok = { 0 };
    create_done(&ok, o); /* rename into place and record */
}

int kh_storage_upload_finish(kh_volume_upload *u, kh_storage_cb cb, void *opaque, kh_err *err)
{
    op *o = u->o;
    free(u);
    o->cb = cb;
    o->opaque = opaque;
    int rc = fsync(o->upload_fd);
    close(o->upload_fd);
    o->upload_fd = 0;
    if (rc < 0) {
        kh_err_errno(err, errno == ENOSPC ? KH_E_TOOLARGE : KH_E_INTERNAL, errno,
                     "upload: writing pool %s", o->p.name);
    } else if (o->upload_len == 0) {
        kh_err_set(err, KH_E_INVALID, "upload: the body is empty");
    } else {
        /* -f: the declared format is the one probed; never guessed */
        char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(o->st->qimg),
                         (char *)(uintptr_t) "info", (char *)(uintptr_t) "--output=json",
                         (char *)(uintptr_t) "-f", o->v.format, o->part, NULL };
        if (kh_qimg_run(o->st->qimg, argv, QIMG_TIMEOUT_MS, NULL, upload_checked, o, err) >= 0)
            return 0;
    }
    unlink(o->part);
    busy_release(o->st, o->p.id, o->v.name);
    op_free(o);
    return -1;
}

int kh_storage_volume_open(kh_storage *st, const char *pool_name, const char *name,
                           uint64_t *size, kh_err *err)
{
    op *o = op_for(st, pool_name, name, OP_SHOW, NULL, NULL, err);
    if (!o)
        return -1;
    int fd = -1;
    json_t *u = users_of(st, o->p.name, o->v.name);
    size_t i;
    json_t *e;
    json_array_foreach(u, i, e) {
        if (json_is_true(json_object_get(e, "running")) &&
            !json_is_true(json_object_get(e, "readonly"))) {
            kh_err_set(err, KH_E_CONFLICT, "volume %s is written by the running vm %s; stop it "
                                           "(or snapshot it) to download a consistent image",
                       name, json_string_value(json_object_get(e, "vm")));
            goto out;
        }
    }
    if (busy_find(st, o->p.id, o->v.name)) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s: another operation on it is under way", name);
        goto out;
    }
    fd = open(o->final, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "volume %s: cannot open its file", name);
        if (fd >= 0)
            close(fd);
        fd = -1;
        goto out;
    }
    *size = (uint64_t)sb.st_size;
out:
    json_decref(u);
    op_free(o);
    return fd;
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
    sqlite3_stmt *s = prep(st, "SELECT " POOL_COLS " FROM pools", NULL);
    while (s && sqlite3_step(s) == SQLITE_ROW) {
        pool q = { 0 };
        row_pool(s, &q);
        remove_leftovers(&q);
        pool_clear(&q);
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
