/* storage_int.h - private to src/storage: the manager's state, the rows of
 * pools and volumes, and the helpers the storage files share. */
#ifndef KH_STORAGE_STORAGE_INT_H
#define KH_STORAGE_STORAGE_INT_H

#include <sqlite3.h>

#include "storage/key.h"
#include "storage/storage.h"
#include "util/strv.h"

#define QIMG_TIMEOUT_MS 60000u
#define QIMG_CONVERT_TIMEOUT_MS (3600u * 1000)

#define POOL_COLS \
    "id, name, type, path, created_at, " \
    "EXISTS (SELECT 1 FROM pool_shared WHERE pool_shared.pool_id = pools.id)"
#define VOL_COLS "id, pool_id, name, format, capacity, backing_id, readonly, created_at, key_wrapped"

/* LUKS key slots: the PBKDF is timed to iter-time ms of this CPU. The
 * passphrase is a random 256-bit key, never a person's password, so key
 * stretching adds nothing; 100 ms (QEMU's default is 2 s) makes an encrypted
 * create fast. The timing itself fails now and then on a loaded or
 * tick-accounted host ("Unable to get accurate CPU usage": the first probe
 * measured 0 ms of CPU; about one try in two here), and a failed try costs
 * milliseconds, so it is simply run again. */
#define LUKS_ITER_MS "100"

typedef struct pool {
    char id[37];
    char *name, *type, *path;
    double created_at;
    bool shared; /* the same directory on every cluster host (NFS): a live
                  * migration leaves its volumes in place; else they are copied */
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
    json_t *templates;        /* template.c: vm id -> true, read at templates_at */
    long long templates_at;   /* sqlite3_total_changes when read (-1: never) */
};

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
    char *import_fmt; /* its format when it differs from the volume's ("vmdk"), or NULL */
    char *import_src; /* what qemu-img opens when not the file itself (a json: window), or NULL */
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
    uint64_t quota_max;  /* OP_UPLOAD: a project's room (kh_storage_upload_limit) */
    char *quota_words;   /* its refusal's words; NULL: no quota */
    kh_storage_cb cb;
    void *opaque;
} op;

/* storage.c: store queries (on the store's statement helpers,
 * store/store.h: kh_store_prep, kh_store_col_text), the names in use, JSON
 * bits */
void storage_col_id(sqlite3_stmt *s, int i, char out[37]);
/* Sets err from the database's last error; always -1. Inline so that the
 * analyzer sees the -1 in every storage file. */
static inline int storage_db_fail(kh_storage *st, kh_err *err, const char *what)
{
    kh_store_db_error(st->store, err, what);
    return -1;
}
/* The count(*) of sql with one text argument; -1 with err set (may be
 * NULL: then the failure is logged) on a database error. */
long long storage_count_where(kh_storage *st, const char *sql, const char *arg, kh_err *err);
/* Logs a database failure of a reader that has no error channel (JSON
 * listings); clears err. */
void storage_log_fail(kh_err *err, const char *what);
busy *storage_busy_find(kh_storage *st, const char *pool_id, const char *name);
int storage_busy_take(kh_storage *st, const char *pool_id, const char *name, kh_err *err);
void storage_busy_release(kh_storage *st, const char *pool_id, const char *name);
json_t *storage_time_json(double t);
json_t *storage_users_of(kh_storage *st, const char *pool_name, const char *vol_name);
bool storage_any_running(const json_t *users);

/* pool.c */
void pool_clear(pool *p);
void row_pool(sqlite3_stmt *s, pool *p);
int pool_get(kh_storage *st, const char *key, bool by_id, pool *out, kh_err *err);
int pool_find(kh_storage *st, const char *name, pool *out, kh_err *err);
uint64_t pool_free_space(const pool *p);
int pool_insert(kh_storage *st, const char *name, const char *type, const char *path,
                pool *out, kh_err *err);

/* volume.c */
void volume_clear(volume *v);
void row_volume(sqlite3_stmt *s, volume *v);
int volume_get(kh_storage *st, const char *pool_id, const char *name, const char *id,
               volume *out, kh_err *err);
int volume_find(kh_storage *st, const pool *p, const char *name, volume *out, kh_err *err);
char *volume_path(const pool *p, const char *id, const char *suffix);
void volume_op_free(op *o);
void volume_op_end(op *o, json_t *result, const kh_err *err);
int volume_new_key(kh_storage *st, volume *v, kh_err *err);
void volume_create_done(const kh_qimg_result *r, void *opaque);
op *volume_op_for(kh_storage *st, const char *pool_name, const char *name, op_kind kind,
                  kh_storage_cb cb, void *opaque, kh_err *err);

/* copy.c */
void copy_progress(const char *line, void *opaque);

#endif
