/* volume.c - volumes: sizes and references, create (empty, linked clone,
 * import), show, resize, delete, read-only marks and chain resolution. */
#include "storage/storage_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schema/schema.h"
#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- volume rows ---- */

void volume_clear(volume *v)
{
    free(v->name);
    free(v->format);
    free(v->key_wrapped);
    memset(v, 0, sizeof(*v));
}

void row_volume(sqlite3_stmt *s, volume *v)
{
    storage_col_id(s, 0, v->id);
    storage_col_id(s, 1, v->pool_id);
    v->name = kh_store_col_text(s, 2);
    v->format = kh_store_col_text(s, 3);
    v->capacity = (uint64_t)sqlite3_column_int64(s, 4);
    storage_col_id(s, 5, v->backing_id);
    v->readonly = sqlite3_column_int(s, 6) != 0;
    v->created_at = sqlite3_column_double(s, 7);
    v->key_wrapped = kh_store_col_text(s, 8);
}

int volume_get(kh_storage *st, const char *pool_id, const char *name, const char *id,
                      volume *out, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st->store, id ? "SELECT " VOL_COLS " FROM volumes WHERE id = ?"
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
        found = storage_db_fail(st, err, "reading a volume");
    }
    sqlite3_finalize(s);
    return found;
}

int volume_find(kh_storage *st, const pool *p, const char *name, volume *out, kh_err *err)
{
    if (kh_check_name(name, "volume name", err) < 0)
        return -1;
    int rc = volume_get(st, p->id, name, NULL, out, err);
    if (rc == 0)
        kh_err_set(err, KH_E_NOTFOUND, "no volume %s in pool %s", name, p->name);
    return rc == 1 ? 0 : -1;
}

char *volume_path(const pool *p, const char *id, const char *suffix)
{
    return xasprintf("%s/%s%s", p->path, id, suffix ? suffix : "");
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
                          "created_at", storage_time_json(v->created_at));
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
                        json_integer(storage_count_where(st, "SELECT count(*) FROM volumes "
                                                     "WHERE backing_id = ?", v->id, NULL)));
    json_object_set_new(o, "used_by", storage_users_of(st, p->name, v->name));
    return o;
}

json_t *kh_storage_volumes_json(kh_storage *st, const char *pool_name, kh_err *err)
{
    pool p = { 0 };
    if (pool_find(st, pool_name, &p, err) < 0)
        return NULL;
    json_t *arr = json_array();
    sqlite3_stmt *s = kh_store_prep(st->store, "SELECT " VOL_COLS " FROM volumes WHERE pool_id = ? "
                               "ORDER BY name", err);
    if (s) {
        sqlite3_bind_text(s, 1, p.id, -1, SQLITE_TRANSIENT);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            volume v = { 0 };
            row_volume(s, &v);
            json_array_append_new(arr, volume_json(st, &p, &v));
            volume_clear(&v);
        }
        if (rc != SQLITE_DONE) {
            storage_db_fail(st, err, "listing volumes");
            json_decref(arr);
            arr = NULL;
        }
        sqlite3_finalize(s);
    } else {
        json_decref(arr);
        arr = NULL;
    }
    pool_clear(&p);
    return arr;
}

/* ---- encryption keys (storage/key.h) ---- */

int kh_storage_vm_tpm_key_fd(kh_storage *st, const char *vm_id, kh_err *err)
{
    char label[64];
    snprintf(label, sizeof(label), "vm-tpm:%s", vm_id);
    return kh_key_derived_fd(&st->master, label, err);
}

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

void volume_op_free(op *o)
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
    free(o->import_fmt);
    free(o->import_src);
    free(o->quota_words);
    free(o);
}

void volume_op_end(op *o, json_t *result, const kh_err *err)
{
    if (o->kind != OP_SHOW)
        storage_busy_release(o->st, o->p.id, o->v.name);
    o->cb(result, err, o->opaque);
    volume_op_free(o);
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
int volume_new_key(kh_storage *st, volume *v, kh_err *err)
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
    sqlite3_stmt *s = kh_store_prep(st->store, "INSERT INTO volumes (" VOL_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            storage_db_fail(st, err, "adding a volume");
        return -1;
    }
    return 0;
}

/* Tries of an encrypted create (LUKS_ITER_MS in storage_int.h says why). */
#define LUKS_RETRIES 30

void volume_create_done(const kh_qimg_result *r, void *opaque)
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
                            copy ? copy_progress : NULL, volume_create_done, o, &err) >= 0)
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
        volume_op_end(o, NULL, &err);
        return;
    }
    kh_log(KH_LOG_INFO, "volume.create", "pool=%s volume=%s id=%s format=%s size=%" PRIu64,
           o->p.name, o->v.name, o->v.id, o->v.format, o->v.capacity);
    json_t *j = volume_json(o->st, &o->p, &o->v);
    volume_op_end(o, j, NULL);
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
    kh_strv_add(a, o->import_fmt ? o->import_fmt : o->v.format);
    kh_strv_add(a, "-O");
    kh_strv_add(a, o->v.format);
    kh_strv_add(a, o->import_src ? o->import_src : o->import);
    kh_strv_add(a, o->part);
    o->kind = OP_IMPORT_COPY;
    return run_qimg(o, a, QIMG_CONVERT_TIMEOUT_MS, volume_create_done, err);
}

/* A compressed image (a streamOptimized VMDK, a compressed qcow2) can
 * expand far beyond its file (a few MB of VMDK to a TB of data): `qemu-img
 * measure` says what the copy will take - the data it holds, not its
 * virtual size - and the import is refused (413) when the pool lacks it. */
static void import_measured(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *m = r->status == 0 ? json_loads(r->out, 0, NULL) : NULL;
    json_t *need = json_object_get(m, "required");
    if (!json_is_integer(need) || json_integer_value(need) < 0)
        qimg_error(r, "import: measuring the image", &err);
    else if ((uint64_t)json_integer_value(need) > pool_free_space(&o->p))
        kh_err_set(&err, KH_E_TOOLARGE, "import: the image holds %" PRIu64 " bytes of data "
                                        "once converted; pool %s has not that much free",
                   (uint64_t)json_integer_value(need), o->p.name);
    json_decref(m);
    if (!kh_err_isset(&err) && start_copy(o, &err) == 0)
        return;
    volume_op_end(o, NULL, &err);
}

/* Security case 5: an image to import may not name other files - no
 * backing file, no external data file - and must be of the given format. */
static void import_checked(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    if (r->status != 0) {
        kh_err_set(&err, KH_E_INVALID, "import: %s is not a readable %s image: %s", o->import,
                   o->import_fmt ? o->import_fmt : o->v.format, r->errtext && *r->errtext ? r->errtext : "qemu-img failed");
        goto fail;
    }
    char *what = xasprintf("import: %s", o->import);
    uint64_t vsize = 0;
    int64_t actual = -1;
    if (kh_imginfo_check(r->out, o->import_fmt ? o->import_fmt : o->v.format, what, &vsize,
                         &actual, &err) == 0 &&
        actual >= 0 && (uint64_t)actual > pool_free_space(&o->p))
        kh_err_set(&err, KH_E_TOOLARGE, "import: not enough free space in pool %s", o->p.name);
    free(what);
    if (kh_err_isset(&err))
        goto fail;
    o->v.capacity = vsize;
    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(o->st->qimg));
    kh_strv_add(a, "measure");
    kh_strv_add(a, "--output=json");
    kh_strv_add(a, "-f");
    kh_strv_add(a, o->import_fmt ? o->import_fmt : o->v.format);
    kh_strv_add(a, "-O");
    kh_strv_add(a, "qcow2"); /* raw copies are sparse too: the data is what counts */
    kh_strv_add(a, o->import_src ? o->import_src : o->import);
    if (run_qimg(o, a, QIMG_TIMEOUT_MS, import_measured, &err) < 0)
        volume_op_end(o, NULL, &err);
    return;
fail:
    volume_op_end(o, NULL, &err);
}

static int volume_create(kh_storage *st, const char *pool_name, const json_t *body,
                         const char *import_fmt, const char *import_src, kh_storage_cb cb,
                         void *opaque, kh_err *err)
{
    if (kh_schema_check("VolumeSpec", body, "", err) < 0)
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
    if (have == 1 || storage_busy_find(st, p.id, name)) {
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
        if (storage_busy_find(st, bpool.id, base.name)) {
            kh_err_set(err, KH_E_CONFLICT, "backing: volume %s is busy", base.name);
            goto out;
        }
        if (base.key_wrapped)
            encrypt = true; /* a clone of an encrypted base: encrypted, with its own key */
        if (base.capacity > size)
            size = base.capacity;
        /* A base written by a running VM would corrupt every clone. */
        json_t *u = storage_users_of(st, bpool.name, base.name);
        bool running = storage_any_running(u);
        json_decref(u);
        if (running && !base.readonly) {
            kh_err_set(err, KH_E_CONFLICT,
                       "backing: volume %s is in use by a running VM; stop it or make a "
                       "template first", base.name);
            goto out;
        }
    } else if (!jimp) {
        uint64_t free_b = pool_free_space(&p);
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
    storage_busy_take(st, o->p.id, name, NULL);

    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(st->qimg));
    if (jimp) {
        o->import = xstrdup(json_string_value(jimp));
        o->import_fmt = import_fmt ? xstrdup(import_fmt) : NULL;
        o->import_src = import_src ? xstrdup(import_src) : NULL;
        struct stat sb;
        if (stat(o->import, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            kh_err_set(err, KH_E_INVALID, "import: %s is not a regular file", o->import);
            kh_strv_free(a);
            storage_busy_release(st, o->p.id, name);
            volume_op_free(o);
            o = NULL;
            goto out;
        }
        o->kind = OP_IMPORT_CHECK;
        kh_strv_add(a, "info");
        kh_strv_add(a, "--output=json");
        kh_strv_add(a, "-U");
        kh_strv_add(a, "-f");
        kh_strv_add(a, import_fmt ? import_fmt : fmt);
        kh_strv_add(a, o->import_src ? o->import_src : o->import);
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
            o->secret_fd = volume_new_key(st, &o->v, err);
            if (o->secret_fd < 0) {
                kh_strv_free(a);
                storage_busy_release(st, o->p.id, name);
                volume_op_free(o);
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
                                   volume_create_done, o, err);
        if (o->secret_fd > 0)
            o->retry_argv = a;
        else
            kh_strv_free(a);
        rc = pid < 0 ? -1 : 0;
    }
    if (rc < 0) {
        storage_busy_release(st, o->p.id, name);
        volume_op_free(o);
    }
out:
    pool_clear(&p);
    pool_clear(&bpool);
    volume_clear(&base);
    return rc;
}

int kh_storage_volume_create(kh_storage *st, const char *pool_name, const json_t *body,
                             kh_storage_cb cb, void *opaque, kh_err *err)
{
    return volume_create(st, pool_name, body, NULL, NULL, cb, opaque, err);
}

int kh_storage_volume_convert_in(kh_storage *st, const char *pool_name, const char *name,
                                 const char *path, uint64_t offset, uint64_t size,
                                 const char *src_format, kh_storage_cb cb, void *opaque,
                                 kh_err *err)
{
    if (!src_format || strcmp(src_format, "vmdk") != 0) {
        kh_err_set(err, KH_E_INVALID, "import: only vmdk images are converted");
        return -1;
    }
    json_t *body = json_pack("{s:s, s:s, s:s}", "name", name, "import", path, "format", "qcow2");
    char *src = NULL;
    if (size > 0) { /* a window of path, through QEMU's raw driver: nothing outside it */
        json_t *w = json_pack("{s:s, s:{s:s, s:I, s:I, s:{s:s, s:s}}}", "driver", src_format,
                              "file", "driver", "raw", "offset", (json_int_t)offset, "size",
                              (json_int_t)size, "file", "driver", "file", "filename", path);
        char *t = json_dumps(w, JSON_COMPACT);
        src = xasprintf("json:%s", t);
        free(t);
        json_decref(w);
    }
    int rc = volume_create(st, pool_name, body, src_format, src, cb, opaque, err);
    free(src);
    json_decref(body);
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
        volume_op_end(o, NULL, &err);
        return;
    }
    json_t *j = volume_json(o->st, &o->p, &o->v);
    json_t *top = json_array_get(info, 0);
    json_object_set(j, "virtual_size", json_object_get(top, "virtual-size"));
    json_object_set(j, "actual_size", json_object_get(top, "actual-size"));
    json_object_set_new(j, "backing_chain", chain_json(o->st, info));
    json_decref(info);
    volume_op_end(o, j, NULL);
}

op *volume_op_for(kh_storage *st, const char *pool_name, const char *name, op_kind kind,
                  kh_storage_cb cb, void *opaque, kh_err *err)
{
    op *o = xcalloc(1, sizeof(*o));
    o->st = st;
    o->kind = kind;
    o->cb = cb;
    o->opaque = opaque;
    if (pool_find(st, pool_name, &o->p, err) < 0 || volume_find(st, &o->p, name, &o->v, err) < 0) {
        volume_op_free(o);
        return NULL;
    }
    o->final = volume_path(&o->p, o->v.id, NULL);
    return o;
}

int kh_storage_volume_show(kh_storage *st, const char *pool_name, const char *name,
                           kh_storage_cb cb, void *opaque, kh_err *err)
{
    op *o = volume_op_for(st, pool_name, name, OP_SHOW, cb, opaque, err);
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
        volume_op_free(o);
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
        volume_op_end(o, NULL, err_in);
        return;
    }
    sqlite3_stmt *s = kh_store_prep(o->st->store, "UPDATE volumes SET capacity = ? WHERE id = ?", &err);
    if (s) {
        sqlite3_bind_int64(s, 1, (sqlite3_int64)o->new_size);
        sqlite3_bind_text(s, 2, o->v.id, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) != SQLITE_DONE)
            storage_db_fail(o->st, &err, "recording the new size");
        sqlite3_finalize(s);
    }
    if (kh_err_isset(&err)) {
        volume_op_end(o, NULL, &err);
        return;
    }
    kh_log(KH_LOG_INFO, "volume.resize", "pool=%s volume=%s size=%" PRIu64, o->p.name, o->v.name,
           o->new_size);
    o->v.capacity = o->new_size;
    volume_op_end(o, volume_json(o->st, &o->p, &o->v), NULL);
}

int kh_storage_volume_resize(kh_storage *st, const char *pool_name, const char *name,
                             const json_t *body, kh_storage_cb cb, void *opaque, kh_err *err)
{
    if (kh_schema_check("VolumeResize", body, "", err) < 0)
        return -1;
    uint64_t size = 0;
    json_t *jsize = json_object_get(body, "size");
    if (!jsize) {
        kh_err_set(err, KH_E_INVALID, "size: required");
        return -1;
    }
    if (kh_volume_size_parse(jsize, &size, err) < 0)
        return -1;
    op *o = volume_op_for(st, pool_name, name, OP_RESIZE, cb, opaque, err);
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
    u = storage_users_of(st, o->p.name, o->v.name);
    bool live = storage_any_running(u);
    if (live && (json_array_size(u) != 1 || !st->live_resize ||
                 json_is_true(json_object_get(json_array_get(u, 0), "readonly")))) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s is in use read-only by running VMs; stop "
                                       "them first", name);
        goto fail;
    }
    if (strcmp(o->v.format, "raw") == 0 && size - o->v.capacity > pool_free_space(&o->p)) {
        kh_err_set(err, KH_E_TOOLARGE, "size: not enough free space in pool %s", o->p.name);
        goto fail;
    }
    json_decref(u);
    u = NULL;
    if (storage_busy_take(st, o->p.id, o->v.name, err) < 0)
        goto fail;
    o->new_size = size;
    if (live) {
        char *ref = xasprintf("%s/%s", o->p.name, o->v.name);
        int lrc = st->live_resize(st->live_resize_opaque, ref, size, live_resized, o, err);
        free(ref);
        if (lrc < 0) {
            storage_busy_release(st, o->p.id, o->v.name);
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
            storage_busy_release(st, o->p.id, o->v.name);
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
        storage_busy_release(st, o->p.id, o->v.name);
        goto fail;
    }
    return 0;
fail:
    json_decref(u);
    volume_op_free(o);
    return -1;
}

/* The first volume based on volume id, as "pool/name (vm X)" (caller
 * frees), for a 409 that names what is in the way. */
static char *first_dependent(kh_storage *st, const char *id)
{
    kh_err e = KH_ERR_INIT;
    sqlite3_stmt *s = kh_store_prep(st->store,
                                    "SELECT p.name, v.name FROM volumes v JOIN pools p "
                                    "ON p.id = v.pool_id WHERE v.backing_id = ? "
                                    "ORDER BY p.name, v.name LIMIT 1", &e);
    if (!s) {
        storage_log_fail(&e, "listing dependents");
        return xstrdup("another volume");
    }
    sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
    char *out;
    if (sqlite3_step(s) == SQLITE_ROW) {
        const char *pn = (const char *)sqlite3_column_text(s, 0);
        const char *vn = (const char *)sqlite3_column_text(s, 1);
        json_t *u = storage_users_of(st, pn, vn);
        const char *vm = json_string_value(json_object_get(json_array_get(u, 0), "vm"));
        out = vm ? xasprintf("%s/%s (a disk of vm %s)", pn, vn, vm) : xasprintf("%s/%s", pn, vn);
        json_decref(u);
    } else {
        out = xstrdup("another volume");
    }
    sqlite3_finalize(s);
    return out;
}

/* Could volume o go, with VM `self` (NULL: none) not counted as a user? */
static int delete_check(kh_storage *st, const op *o, const char *self, kh_err *err)
{
    json_t *u = storage_users_of(st, o->p.name, o->v.name);
    const char *other = NULL;
    size_t i;
    json_t *x;
    json_array_foreach(u, i, x) {
        const char *vm = json_string_value(json_object_get(x, "vm"));
        if (vm && (!self || strcmp(vm, self) != 0)) {
            other = vm;
            break;
        }
    }
    int rc = -1;
    long long deps = storage_count_where(st, "SELECT count(*) FROM volumes WHERE backing_id = ?",
                                         o->v.id, err);
    if (deps < 0) {
        /* err says why */
    } else if (other && self) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s/%s is also a disk of vm %s", o->p.name,
                   o->v.name, other);
    } else if (other) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s is attached to VM %s; detach it first",
                   o->v.name, other);
    } else if (deps != 0) {
        char *d = first_dependent(st, o->v.id);
        if (self)
            kh_err_set(err, KH_E_CONFLICT,
                       "volume %s/%s is the base of %lld other volume(s), e.g. %s: a template's "
                       "base goes only when no clone is left", o->p.name, o->v.name, deps, d);
        else
            kh_err_set(err, KH_E_CONFLICT,
                       "volume %s is the base of %lld other volume(s); delete them first",
                       o->v.name, deps);
        free(d);
    } else if (storage_busy_find(st, o->p.id, o->v.name)) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s: another operation on it is under way",
                   o->v.name);
    } else {
        rc = 0;
    }
    json_decref(u);
    return rc;
}

int kh_storage_volume_delete_check(kh_storage *st, const char *ref, const char *self,
                                   kh_err *err)
{
    char *pn = NULL, *vn = NULL;
    if (kh_volume_ref_parse(ref, &pn, &vn, err) < 0)
        return -1;
    op *o = volume_op_for(st, pn, vn, OP_SHOW, NULL, NULL, err);
    int rc = -1;
    if (o) {
        rc = delete_check(st, o, self, err);
        volume_op_free(o);
    }
    free(pn);
    free(vn);
    return rc;
}

int kh_storage_volume_delete(kh_storage *st, const char *pool_name, const char *name,
                             kh_err *err)
{
    op *o = volume_op_for(st, pool_name, name, OP_SHOW, NULL, NULL, err);
    if (!o)
        return -1;
    int rc = delete_check(st, o, NULL, err);
    if (rc == 0) {
        rc = -1;
        sqlite3_stmt *s = kh_store_prep(st->store, "DELETE FROM volumes WHERE id = ?", err);
        if (s) {
            sqlite3_bind_text(s, 1, o->v.id, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, "deleting a volume");
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
    volume_op_free(o);
    return rc;
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
        sqlite3_stmt *s = kh_store_prep(st->store, "UPDATE volumes SET readonly = ? WHERE id = ?", err);
        if (s) {
            sqlite3_bind_int(s, 1, readonly);
            sqlite3_bind_text(s, 2, v.id, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, "marking a volume");
            sqlite3_finalize(s);
        }
    }
    pool_clear(&p);
    volume_clear(&v);
    free(pn);
    free(vn);
    return rc;
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
    long long deps = storage_count_where(st, "SELECT count(*) FROM volumes WHERE backing_id = ?",
                                         v.id, err);
    if (deps < 0)
        goto out;
    out->dependents = (unsigned)deps;
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
