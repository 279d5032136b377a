/* backup.c - owns the backup manager: backup stores and their keys, the
 * catalog of committed backups (SQL), the operations under way and their
 * tasks, list/show/delete (backup/backup.h). Jobs: job.c; restores:
 * restore.c; verify and prune: tidy.c. */
#include "backup/backup_int.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "schema/schema.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* A QEMU that outlived a daemon restart: a backup cut short is cleaned up. */
static void on_vm_event(void *opaque, const char *vm_id, const char *event, json_t *data)
{
    kh_backups *b = opaque;
    const char *name = json_string_value(json_object_get(data, "vm"));
    if (strcmp(event, KH_MANAGER_EVENT_REATTACHED) == 0 && vm_id && name)
        kh_live_reattach(b, vm_id, name);
}

kh_backups *kh_backup_new(uv_loop_t *loop, kh_store *store, kh_manager *mgr, kh_storage *st,
                          kh_tasks *tasks, kh_events *events, const char *state_dir,
                          kh_err *err)
{
    kh_backups *b = xcalloc(1, sizeof(*b));
    b->loop = loop;
    b->store = store;
    b->mgr = mgr;
    b->st = st;
    b->tasks = tasks;
    b->events = events;
    b->state_dir = xstrdup(state_dir);
    b->tmp_dir = xasprintf("%s/backup-tmp", state_dir);
    kh_err e = KH_ERR_INIT;
    kh_fs_rm_rf(b->tmp_dir, &e); /* sockets of a previous daemon */
    if (kh_fs_mkdir_p(b->tmp_dir, 0700, err) < 0 ||
        kh_key_master_load(&b->master, state_dir, err) < 0) {
        kh_backup_free(b);
        return NULL;
    }
    kh_schedule_start(b);
    if (kh_manager_add_event_hook(mgr, on_vm_event, b) < 0)
        kh_log(KH_LOG_WARN, "backup", "no event hook left: a backup a daemon restart cut short "
                                      "is cleaned up at the VM's next backup");
    return b;
}

static void backups_release(kh_backups *b)
{
    kh_key_master_clear(&b->master);
    json_decref(b->figures);
    free(b->state_dir);
    free(b->tmp_dir);
    free(b);
}

void kh_backup_free(kh_backups *b)
{
    if (!b)
        return;
    kh_schedule_stop(b);
    kh_manager_remove_event_hook(b->mgr, on_vm_event, b);
    kh_restore_stop_live(b);
    kh_restore_linger_stop(b);
    if (!b->ops) {
        backups_release(b);
        return;
    }
    /* Operations still under way end with the daemon: each ends when its
     * pending callback comes back (a QMP command failed by the closed
     * monitor, a qemu-img killed, work on the pool done) without touching
     * the manager or the tasks, which go next; the last one frees b. */
    b->closing = true;
    for (kh_bop *o = b->ops; o; o = o->link) {
        uv_timer_stop(o->timer); /* no progress into freed tasks */
        atomic_store(&o->stats.cancel, true); /* a pull or push stops at its next chunk */
    }
}

/* ---- operations ---- */

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void op_tick(uv_timer_t *t)
{
    kh_bop *op = t->data;
    uint64_t done = atomic_load(&op->stats.done);
    uint64_t ms = kh_now_ms() - op->t0_ms;
    double mibs = ms ? (double)done / 1048576.0 / ((double)ms / 1000.0) : 0;
    char msg[128];
    snprintf(msg, sizeof(msg), "%llu of %llu MiB, %.1f MiB/s",
             (unsigned long long)(done >> 20), (unsigned long long)(op->total >> 20), mibs);
    int pct = op->total ? (int)(95 * done / op->total) : 0;
    kh_task_progress(op->task, pct > 95 ? 95 : pct, msg);
}

kh_bop *kh_backup_op_begin(kh_backups *b, size_t size, const char *kind, const char *vm_name,
                           const char *vm_id, const char *store, bool exclusive, kh_err *err)
{
    for (kh_bop *o = b->ops; o; o = o->link) {
        bool same_vm = vm_id && o->vm_id && strcmp(vm_id, o->vm_id) == 0;
        bool same_store = store && o->store && strcmp(store, o->store) == 0;
        if (same_vm || (same_store && (exclusive || o->exclusive))) {
            kh_err_set(err, KH_E_CONFLICT, "%s: a %s is under way on %s %s", kind, o->kind,
                       same_vm ? "vm" : "store", same_vm ? vm_name : store);
            return NULL;
        }
    }
    kh_bop *op = xcalloc(1, size);
    op->b = b;
    op->kind = kind;
    op->vm_id = vm_id ? xstrdup(vm_id) : NULL;
    op->store = store ? xstrdup(store) : NULL;
    op->exclusive = exclusive;
    op->t0_ms = kh_now_ms();
    op->task = kh_task_new(b->tasks, kind, vm_name ? vm_name : ""); /* a prune names no VM */
    op->timer = xcalloc(1, sizeof(*op->timer));
    uv_timer_init(b->loop, op->timer);
    op->timer->data = op;
    uv_timer_start(op->timer, op_tick, 500, 500);
    op->link = b->ops;
    b->ops = op;
    return op;
}

void kh_backup_op_end(kh_bop *op, json_t *result, const kh_err *err)
{
    kh_backups *b = op->b;
    for (kh_bop **pp = &b->ops; *pp; pp = &(*pp)->link) {
        if (*pp == op) {
            *pp = op->link;
            break;
        }
    }
    uv_timer_stop(op->timer);
    uv_close((uv_handle_t *)op->timer, timer_closed);
    if (b->closing) {
        kh_log(KH_LOG_INFO, op->kind, "ended by the daemon's stop: error=\"%s\"",
               err ? err->msg : "");
        json_decref(result);
        free(op->vm_id);
        free(op->store);
        free(op);
        if (!b->ops)
            backups_release(b);
        return;
    }
    if (err) {
        kh_log(KH_LOG_WARN, op->kind, "error=\"%s\"", err->msg);
        kh_task_fail(op->task, err);
        json_decref(result);
    } else {
        kh_events_publish(b->events, op->kind, NULL, json_incref(result));
        kh_task_succeed(op->task, result);
    }
    free(op->vm_id);
    free(op->store);
    free(op);
}

typedef struct work {
    uv_work_t req;
    kh_backup_work_fn fn, done;
    void *opaque;
} work;

static void work_run(uv_work_t *r)
{
    work *w = r->data;
    w->fn(w->opaque);
}

static void work_after(uv_work_t *r, int status)
{
    (void)status;
    work *w = r->data;
    w->done(w->opaque);
    free(w);
}

void kh_backup_work(kh_backups *b, kh_backup_work_fn fn, kh_backup_work_fn done, void *opaque)
{
    work *w = xcalloc(1, sizeof(*w));
    w->req.data = w;
    w->fn = fn;
    w->done = done;
    w->opaque = opaque;
    uv_queue_work(b->loop, &w->req, work_run, work_after);
}

/* ---- stores ---- */

static json_t *store_json(sqlite3_stmt *s)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:b}", "name", (const char *)sqlite3_column_text(s, 0),
                          "id", (const char *)sqlite3_column_text(s, 1), "path",
                          (const char *)sqlite3_column_text(s, 2), "encrypted",
                          sqlite3_column_int(s, 3));
    char t[32];
    kh_time_format(sqlite3_column_double(s, 5), t);
    json_object_set_new(j, "created_at", json_string(t));
    return j;
}

#define STORE_COLS "name, id, path, encrypted, wrapped_key, created_at"

static json_t *store_row(kh_backups *b, const char *name, char **wrapped, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(b->store, "SELECT " STORE_COLS " FROM backup_stores "
                                              "WHERE name = ?", err);
    if (!s)
        return NULL;
    kh_store_bind_text(s, 1, name);
    json_t *j = NULL;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        j = store_json(s);
        if (wrapped)
            *wrapped = kh_store_col_text(s, 4);
    } else if (rc == SQLITE_DONE) {
        kh_err_set(err, KH_E_NOTFOUND, "no backup store named %s", name);
    } else {
        kh_store_db_error(b->store, err, "reading backup stores");
    }
    sqlite3_finalize(s);
    return j;
}

kh_chunks *kh_backup_store_open(kh_backups *b, const char *name, kh_err *err)
{
    char *wrapped = NULL;
    json_t *j = store_row(b, name, &wrapped, err);
    if (!j)
        return NULL;
    kh_chunks *c = NULL;
    unsigned char key[KH_CHUNK_KEY_LEN];
    bool enc = json_is_true(json_object_get(j, "encrypted"));
    if (!enc || kh_key_unwrap(&b->master, json_string_value(json_object_get(j, "id")), wrapped,
                              key, err) == 0)
        c = kh_chunks_open(json_string_value(json_object_get(j, "path")), enc ? key : NULL,
                           false, 0, err);
    OPENSSL_cleanse(key, sizeof(key));
    free(wrapped);
    json_decref(j);
    return c;
}

static int parse_key(const char *hex, unsigned char key[KH_CHUNK_KEY_LEN], kh_err *err)
{
    if (!hex || strlen(hex) != 2 * KH_CHUNK_KEY_LEN || !kh_check_hex(hex, 2 * KH_CHUNK_KEY_LEN)) {
        kh_err_set(err, KH_E_INVALID, "key: must be 64 hex digits");
        return -1;
    }
    for (size_t i = 0; i < KH_CHUNK_KEY_LEN; i++)
        key[i] = (unsigned char)(kh_hex_digit(hex[2 * i]) << 4 | kh_hex_digit(hex[2 * i + 1]));
    return 0;
}

json_t *kh_backup_store_add(kh_backups *b, const json_t *body, kh_err *err)
{
    if (kh_schema_check("BackupStoreSpec", body, "", err) < 0)
        return NULL;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *path = json_string_value(json_object_get(body, "path"));
    const char *keyhex = json_string_value(json_object_get(body, "key"));
    bool encrypt = json_is_true(json_object_get(body, "encrypt"));
    json_int_t chunk = json_integer_value(json_object_get(body, "chunk_size"));
    if (json_object_get(body, "chunk_size") && !kh_chunks_size_ok((uint64_t)chunk)) {
        kh_err_set(err, KH_E_INVALID, "chunk_size: a power of two from 65536 (64 KiB) to "
                                      "4194304 (4 MiB)");
        return NULL;
    }
    if (kh_check_name(name, "backup store name", err) < 0 ||
        kh_check_abs_path(path, "path", err) < 0)
        return NULL;
    json_t *have = store_row(b, name, NULL, err);
    if (have || err->code != KH_E_NOTFOUND) {
        if (have)
            kh_err_set(err, KH_E_CONFLICT, "a backup store named %s exists", name);
        json_decref(have);
        return NULL;
    }
    kh_err_clear(err);
    bool existing_enc = false;
    int existing = kh_chunks_probe(path, &existing_enc, err);
    if (existing < 0)
        return NULL;
    unsigned char key[KH_CHUNK_KEY_LEN];
    bool enc = existing ? existing_enc : encrypt;
    bool new_key = false;
    if (existing && encrypt && !existing_enc) {
        kh_err_set(err, KH_E_INVALID, "%s is an existing store without encryption", path);
        return NULL;
    }
    if (enc && keyhex) {
        if (parse_key(keyhex, key, err) < 0)
            return NULL;
    } else if (enc && existing) {
        kh_err_set(err, KH_E_INVALID, "%s is an encrypted store: give its key", path);
        return NULL;
    } else if (enc) {
        kh_random_bytes(key, sizeof(key));
        new_key = true;
    } else if (keyhex) {
        kh_err_set(err, KH_E_INVALID, "key: only for an encrypted store (encrypt)");
        return NULL;
    }
    struct stat sb;
    if (!existing && stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        kh_err_set(err, KH_E_INVALID, "path %s is not a directory", path);
        return NULL;
    }
    if (existing && chunk) {
        kh_err_set(err, KH_E_INVALID, "chunk_size: only for a new store (%s holds one)", path);
        return NULL;
    }
    kh_chunks *c = kh_chunks_open(path, enc ? key : NULL, true, (uint32_t)chunk, err);
    json_t *out = NULL;
    if (!c)
        goto done;
    char *hp = xasprintf("%s/kvmhost-store.json", path);
    json_t *hdr = kh_fs_read_json(hp, 65536, err);
    free(hp);
    const char *sid = json_string_value(json_object_get(hdr, "id"));
    char wrapped[KH_KEY_WRAPPED_HEX] = "";
    if (!sid || (enc && kh_key_wrap(&b->master, sid, key, wrapped, err) < 0)) {
        if (!sid && !kh_err_isset(err))
            kh_err_set(err, KH_E_INVALID, "%s: a store header without an id", path);
        json_decref(hdr);
        goto done;
    }
    sqlite3_stmt *s = kh_store_prep(b->store, "INSERT INTO backup_stores (" STORE_COLS ") "
                                              "VALUES (?, ?, ?, ?, ?, ?)", err);
    if (s) {
        kh_store_bind_text(s, 1, name);
        kh_store_bind_text(s, 2, sid);
        kh_store_bind_text(s, 3, path);
        sqlite3_bind_int(s, 4, enc);
        kh_store_bind_text(s, 5, enc ? wrapped : NULL);
        sqlite3_bind_double(s, 6, kh_wall_time());
    }
    json_decref(hdr);
    if (!s || kh_store_step_done(b->store, s, "adding a backup store", err) < 0) {
        if (kh_err_isset(err) && strstr(err->msg, "UNIQUE"))
            kh_err_set(err, KH_E_CONFLICT, "path %s is already a backup store", path);
        goto done;
    }
    out = store_row(b, name, NULL, err);
    if (out)
        json_object_set_new(out, "chunk_size", json_integer(kh_chunks_chunk_size(c)));
    if (out && new_key) {
        static const char digits[] = "0123456789abcdef";
        char hex[2 * KH_CHUNK_KEY_LEN + 1];
        for (size_t i = 0; i < KH_CHUNK_KEY_LEN; i++) {
            hex[2 * i] = digits[key[i] >> 4];
            hex[2 * i + 1] = digits[key[i] & 15];
        }
        hex[2 * KH_CHUNK_KEY_LEN] = '\0';
        json_object_set_new(out, "key", json_string(hex));
        OPENSSL_cleanse(hex, sizeof(hex));
    }
    kh_log(KH_LOG_INFO, "backup.store_add", "name=%s encrypted=%s existing=%s", name,
           enc ? "yes" : "no", existing ? "yes" : "no");
done:
    OPENSSL_cleanse(key, sizeof(key));
    kh_chunks_free(c);
    return out;
}

static json_t *store_with_counts(kh_backups *b, json_t *j)
{
    sqlite3_stmt *s = kh_store_prep(b->store, "SELECT count(*) FROM backups WHERE store = ?",
                                    NULL);
    if (s) {
        kh_store_bind_text(s, 1, json_string_value(json_object_get(j, "name")));
        if (sqlite3_step(s) == SQLITE_ROW)
            json_object_set_new(j, "backups", json_integer(sqlite3_column_int64(s, 0)));
        sqlite3_finalize(s);
    }
    /* the chunk size is the store's own (its header; stores made before
     * sizes could be chosen: 4 MiB) */
    char *hp = xasprintf("%s/kvmhost-store.json", json_string_value(json_object_get(j, "path")));
    json_t *hdr = kh_fs_read_json(hp, 65536, NULL);
    free(hp);
    if (hdr)
        json_object_set(j, "chunk_size", json_object_get(hdr, "chunk_size"));
    json_decref(hdr);
    return j;
}

json_t *kh_backup_store_list(kh_backups *b, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(b->store, "SELECT " STORE_COLS " FROM backup_stores "
                                              "ORDER BY name", err);
    if (!s)
        return NULL;
    json_t *a = json_array();
    while (sqlite3_step(s) == SQLITE_ROW)
        json_array_append_new(a, store_json(s));
    sqlite3_finalize(s);
    size_t i;
    json_t *j;
    json_array_foreach(a, i, j) store_with_counts(b, j);
    return json_pack("{s:o}", "stores", a);
}

json_t *kh_backup_store_get(kh_backups *b, const char *name, kh_err *err)
{
    json_t *j = store_row(b, name, NULL, err);
    return j ? store_with_counts(b, j) : NULL;
}

int kh_backup_store_delete(kh_backups *b, const char *name, kh_err *err)
{
    json_t *j = kh_backup_store_get(b, name, err);
    if (!j)
        return -1;
    json_int_t n = json_integer_value(json_object_get(j, "backups"));
    json_decref(j);
    if (n > 0) {
        kh_err_set(err, KH_E_CONFLICT, "backup store %s holds %lld backups: delete them first",
                   name, (long long)n);
        return -1;
    }
    for (kh_bop *o = b->ops; o; o = o->link)
        if (o->store && strcmp(o->store, name) == 0) {
            kh_err_set(err, KH_E_CONFLICT, "backup store %s is in use", name);
            return -1;
        }
    sqlite3_stmt *s = kh_store_prep(b->store, "DELETE FROM backup_stores WHERE name = ?", err);
    if (!s)
        return -1;
    kh_store_bind_text(s, 1, name);
    return kh_store_step_done(b->store, s, "deleting a backup store", err);
}

/* ---- the catalog ---- */

#define BACKUP_COLS "id, store, vm_id, vm_name, kind, base_id, created_at, record"

static json_t *backup_json(sqlite3_stmt *s)
{
    json_error_t je;
    json_t *j = json_loads((const char *)sqlite3_column_text(s, 7), 0, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    char t[32];
    kh_time_format(sqlite3_column_double(s, 6), t);
    json_object_set_new(j, "id", json_string((const char *)sqlite3_column_text(s, 0)));
    json_object_set_new(j, "store", json_string((const char *)sqlite3_column_text(s, 1)));
    json_object_set_new(j, "vm_id", json_string((const char *)sqlite3_column_text(s, 2)));
    json_object_set_new(j, "vm", json_string((const char *)sqlite3_column_text(s, 3)));
    json_object_set_new(j, "kind", json_string((const char *)sqlite3_column_text(s, 4)));
    const char *base = (const char *)sqlite3_column_text(s, 5);
    json_object_set_new(j, "base", base ? json_string(base) : json_null());
    json_object_set_new(j, "created_at", json_string(t));
    json_object_set_new(j, "time", json_real(sqlite3_column_double(s, 6)));
    return j;
}

static json_t *backup_query(kh_backups *b, const char *sql, const char *a1, const char *a2,
                            kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(b->store, sql, err);
    if (!s)
        return NULL;
    kh_store_bind_text(s, 1, a1);
    kh_store_bind_text(s, 2, a2);
    json_t *a = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        json_array_append_new(a, backup_json(s));
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        json_decref(a);
        kh_store_db_error(b->store, err, "reading backups");
        return NULL;
    }
    return a;
}

json_t *kh_backup_row(kh_backups *b, const char *id, kh_err *err)
{
    json_t *a = backup_query(b, "SELECT " BACKUP_COLS " FROM backups WHERE id = ?", id, NULL,
                             err);
    if (!a)
        return NULL;
    json_t *j = json_incref(json_array_get(a, 0));
    json_decref(a);
    if (!j)
        kh_err_set(err, KH_E_NOTFOUND, "no backup %s", id);
    return j;
}

json_t *kh_backup_last(kh_backups *b, const char *store, const char *vm_id, kh_err *err)
{
    json_t *a = backup_query(b, "SELECT " BACKUP_COLS " FROM backups WHERE store = ? AND "
                                "vm_id = ? ORDER BY created_at DESC LIMIT 1", store, vm_id, err);
    if (!a)
        return NULL;
    json_t *j = json_incref(json_array_get(a, 0));
    json_decref(a);
    return j;
}

void kh_backup_set_record_hook(kh_backups *b, kh_backup_record_fn fn, void *opaque)
{
    b->on_record = fn;
    b->on_record_opaque = opaque;
}

int kh_backup_insert(kh_backups *b, const json_t *row, kh_err *err)
{
    json_t *rec = json_deep_copy(row);
    static const char *const cols[] = { "id", "store", "vm_id", "vm", "kind", "base",
                                        "created_at", "time" };
    for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
        json_object_del(rec, cols[i]);
    char *text = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    sqlite3_stmt *s = kh_store_prep(b->store, "INSERT INTO backups (" BACKUP_COLS ") "
                                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (!s) {
        free(text);
        return -1;
    }
    kh_store_bind_text(s, 1, json_string_value(json_object_get(row, "id")));
    kh_store_bind_text(s, 2, json_string_value(json_object_get(row, "store")));
    kh_store_bind_text(s, 3, json_string_value(json_object_get(row, "vm_id")));
    kh_store_bind_text(s, 4, json_string_value(json_object_get(row, "vm")));
    kh_store_bind_text(s, 5, json_string_value(json_object_get(row, "kind")));
    kh_store_bind_text(s, 6, json_string_value(json_object_get(row, "base")));
    sqlite3_bind_double(s, 7, json_real_value(json_object_get(row, "time")));
    kh_store_bind_text(s, 8, text);
    free(text);
    if (kh_store_step_done(b->store, s, "recording a backup", err) < 0)
        return -1;
    if (b->on_record)
        b->on_record(b->on_record_opaque, json_string_value(json_object_get(row, "id")),
                     json_string_value(json_object_get(row, "vm")), true);
    return 0;
}

json_t *kh_backup_list(kh_backups *b, const char *vm, const char *store, kh_err *err)
{
    json_t *a = backup_query(b, "SELECT " BACKUP_COLS " FROM backups WHERE (?1 IS NULL OR "
                                "vm_name = ?1) AND (?2 IS NULL OR store = ?2) ORDER BY "
                                "created_at DESC", vm, store, err);
    return a ? json_pack("{s:o}", "backups", a) : NULL;
}

json_t *kh_backup_get(kh_backups *b, const char *id, kh_err *err)
{
    return kh_backup_row(b, id, err);
}

char *kh_backup_dir(const kh_chunks *c, const char *id)
{
    return xasprintf("%s/backups/%s", kh_chunks_path(c), id);
}

int kh_backup_index_read(const kh_chunks *c, const char *id, size_t i, kh_index *ix,
                         kh_err *err)
{
    char *p = xasprintf("%s/backups/%s/disk%zu.idx", kh_chunks_path(c), id, i);
    json_t *j = kh_fs_read_json(p, 64u << 20, err);
    free(p);
    if (!j) {
        kh_err_prefix(err, "backup %s", id);
        err->code = KH_E_CONFLICT;
        return -1;
    }
    int rc = kh_index_from_json(j, ix, err);
    json_decref(j);
    return rc;
}

char *kh_backup_image_json(kh_backups *b, const char *ref, kh_strv *argv, int *fds,
                           size_t *nfds, size_t max_fds, kh_err *err)
{
    kh_volume_chain c;
    if (kh_storage_resolve(b->st, ref, &c, err) < 0)
        return NULL;
    /* the chain from its bottom up, each node the backing of the next */
    json_t *below = json_null();
    for (size_t k = c.n; k-- > 0;) {
        json_t *node = json_pack("{s:s, s:{s:s, s:s}}", "driver",
                                 kh_disk_format_name(c.layer[k].format), "file", "driver",
                                 "file", "filename", c.layer[k].path);
        if (c.layer[k].format == KH_DISK_QCOW2)
            json_object_set_new(node, "backing", below);
        else
            json_decref(below);
        below = node;
        if (!c.layer[k].encrypted)
            continue;
        int sfd = *nfds < max_fds ? kh_storage_volume_secret_fd(b->st, c.layer[k].id, err) : -1;
        if (sfd < 0) {
            if (!kh_err_isset(err))
                kh_err_set(err, KH_E_INTERNAL, "volume %s: too many encrypted layers", ref);
            json_decref(below);
            kh_volume_chain_clear(&c);
            return NULL;
        }
        char id[16];
        snprintf(id, sizeof(id), "khsec%zu", *nfds);
        kh_strv_add(argv, "--object");
        kh_strv_addf(argv, "secret,id=%s,file=/proc/self/fd/%zu,format=raw", id, 3 + *nfds);
        fds[(*nfds)++] = sfd;
        json_object_set_new(node, "encrypt",
                            json_pack("{s:s, s:s}", "format", "luks", "key-secret", id));
    }
    kh_volume_chain_clear(&c);
    char *text = json_dumps(below, JSON_COMPACT);
    json_decref(below);
    char *out = xasprintf("json:%s", text);
    free(text);
    return out;
}

int kh_backup_delete(kh_backups *b, const char *id, kh_err *err)
{
    json_t *row = kh_backup_row(b, id, err);
    if (!row)
        return -1;
    const char *store = json_string_value(json_object_get(row, "store"));
    for (kh_bop *o = b->ops; o; o = o->link)
        if (o->store && strcmp(o->store, store) == 0 && o->exclusive) {
            kh_err_set(err, KH_E_CONFLICT, "a prune of store %s is under way", store);
            json_decref(row);
            return -1;
        }
    kh_chunks *c = kh_backup_store_open(b, store, err);
    json_decref(row);
    if (!c)
        return -1;
    sqlite3_stmt *s = kh_store_prep(b->store, "DELETE FROM backups WHERE id = ?", err);
    int rc = -1;
    if (s) {
        kh_store_bind_text(s, 1, id);
        rc = kh_store_step_done(b->store, s, "deleting a backup", err);
    }
    if (rc == 0) {
        char *dir = kh_backup_dir(c, id);
        kh_err e = KH_ERR_INIT;
        if (kh_fs_rm_rf(dir, &e) < 0)
            kh_log(KH_LOG_WARN, "backup.delete", "id=%s error=\"%s\"", id, e.msg);
        free(dir);
        if (b->on_record)
            b->on_record(b->on_record_opaque, id, NULL, false);
        kh_events_publish(b->events, "backup.deleted", NULL, json_pack("{s:s}", "id", id));
    }
    kh_chunks_free(c);
    return rc;
}
