/* store.h - the daemon's persistent state, in SQLite.
 *
 * One database file (STATE_DIR/kvmhost.db) in WAL mode with foreign keys on.
 * Each table has one owning module, which declares its schema steps in its
 * own schema file (store/schema.c, storage/schema.c, net/schema.c) and
 * keeps its row SQL in its own code (storage/, net/netdb.c) on the
 * statement helpers below; the one ordered list is store/migrations.c. The schema carries a version in PRAGMA
 * user_version; kh_store_open() applies the missing steps in order inside
 * one transaction each. All calls are synchronous and fast (indexed
 * single-row statements); they run on the loop thread.
 *
 * Every SQLite result is checked: a database failure is KH_E_INTERNAL (a
 * constraint KH_E_CONFLICT, a full disk KH_E_UNAVAILABLE), never "not
 * found" or "false".
 *
 * Rows are plain structs; strings in rows returned to the caller are owned
 * by the row and released by the matching *_clear().
 */
#ifndef KH_STORE_STORE_H
#define KH_STORE_STORE_H

#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

typedef struct kh_store kh_store;

typedef struct kh_vm_row {
    char id[37];
    char *name;
    char *spec_json;      /* the kh_vm_spec JSON */
    char *state;          /* "stopped", "starting", ... */
    char *state_reason;
    long long pid;        /* 0 when none */
    unsigned long long pid_start; /* /proc/PID/stat starttime, to detect pid reuse */
    char *accel;          /* "kvm"/"tcg" of the running QEMU, or NULL */
    double created_at, updated_at, started_at;
} kh_vm_row;

typedef struct kh_task_row {
    char id[37];
    char *kind;
    char *vm_name;
    char *state;          /* "running", "succeeded", "failed" */
    int progress;
    char *message;
    char *error_code;     /* NULL unless failed */
    char *error_message;
    char *result_json;    /* NULL or a JSON document */
    double created_at, finished_at;
} kh_task_row;

/* Open (creating and migrating as needed). KH_E_INTERNAL on failure. */
kh_store *kh_store_open(const char *path, kh_err *err);
void kh_store_close(kh_store *st);
int kh_store_schema_version(kh_store *st);
/* The schema version this build migrates to (the number of migrations). */
int kh_store_schema_latest(void);
/* The connection, for modules that keep their own tables. It
 * stays owned by the store and is used on the loop thread only. */
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
sqlite3 *kh_store_sqlite(kh_store *st);

/* Transactions: begin is BEGIN IMMEDIATE (a savepoint when one is already
 * open, so a helper that needs atomicity can be called inside a caller's
 * transaction); commit ends the innermost one (and rolls it back when the
 * commit fails); rollback undoes it. Every begin is matched by exactly one
 * commit or rollback. */
int kh_store_begin(kh_store *st, kh_err *err);
int kh_store_commit(kh_store *st, kh_err *err);
void kh_store_rollback(kh_store *st);

/* Statement helpers for the table owners. db_error sets err from the
 * connection's last error (see above for the codes) and returns -1. prep
 * returns NULL with err set. step_done runs a statement that returns no
 * rows and finalizes it. exec runs SQL text (no rows). bind_text binds NULL
 * for NULL. col_text returns a copy (caller frees) or NULL. */
int kh_store_db_error(kh_store *st, kh_err *err, const char *what);
sqlite3_stmt *kh_store_prep(kh_store *st, const char *sql, kh_err *err);
int kh_store_step_done(kh_store *st, sqlite3_stmt *stmt, const char *what, kh_err *err);
int kh_store_exec(kh_store *st, const char *sql, kh_err *err);
void kh_store_bind_text(sqlite3_stmt *stmt, int i, const char *s);
char *kh_store_col_text(sqlite3_stmt *stmt, int i);

/* VMs. insert: KH_E_CONFLICT when the name is taken. update_*: KH_E_NOTFOUND
 * when the id is unknown. */
int kh_store_vm_insert(kh_store *st, const kh_vm_row *row, kh_err *err);
int kh_store_vm_update_spec(kh_store *st, const char *id, const char *spec_json,
                            double updated_at, kh_err *err);
/* Writes state, state_reason, pid, pid_start, accel, started_at. */
int kh_store_vm_update_runtime(kh_store *st, const kh_vm_row *row, kh_err *err);
/* Deletes the VM row and, in the same transaction (ON DELETE CASCADE),
 * everything that belongs to it: snapshot records, the current snapshot,
 * the template mark. KH_E_NOTFOUND when the id is unknown. */
int kh_store_vm_delete(kh_store *st, const char *id, kh_err *err);
/* Calls cb for every VM in name order; the row is valid during the call. A
 * non-zero return from cb stops the walk and is returned. */
int kh_store_vm_foreach(kh_store *st, int (*cb)(const kh_vm_row *row, void *opaque),
                        void *opaque, kh_err *err);
void kh_vm_row_clear(kh_vm_row *row);

/* Tasks: insert or replace by id. */
int kh_store_task_put(kh_store *st, const kh_task_row *row, kh_err *err);
/* KH_E_NOTFOUND when unknown. */
int kh_store_task_get(kh_store *st, const char *id, kh_task_row *out, kh_err *err);
/* Newest first, at most limit. */
int kh_store_task_foreach(kh_store *st, unsigned limit,
                          int (*cb)(const kh_task_row *row, void *opaque), void *opaque,
                          kh_err *err);
/* Tasks left "running" by a previous daemon become "failed" with reason. */
int kh_store_task_fail_unfinished(kh_store *st, const char *reason, double now, kh_err *err);
/* Keep only the newest `keep` finished tasks. */
int kh_store_task_prune(kh_store *st, unsigned keep, kh_err *err);
void kh_task_row_clear(kh_task_row *row);

#endif
