/* store.c - the database: open (WAL, foreign keys), the migration runner
 * over the one list in store/migrations.c, transactions, the small
 * statement helpers every table owner uses, and the VM and task rows. */
#include "store/store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/migrations.h"
#include "util/mem.h"

struct kh_store {
    sqlite3 *db;
    unsigned depth; /* open transactions: 1 = BEGIN IMMEDIATE, more = savepoints */
};

int kh_store_db_error(kh_store *st, kh_err *err, const char *what)
{
    int rc = sqlite3_extended_errcode(st->db);
    kh_code code = KH_E_INTERNAL;
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        code = KH_E_CONFLICT;
    else if ((rc & 0xff) == SQLITE_FULL)
        code = KH_E_UNAVAILABLE;
    kh_err_set(err, code, "database: %s: %s", what, sqlite3_errmsg(st->db));
    return -1;
}

int kh_store_exec(kh_store *st, const char *sql, kh_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        kh_err_set(err, KH_E_INTERNAL, "database: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

sqlite3_stmt *kh_store_prep(kh_store *st, const char *sql, kh_err *err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        kh_store_db_error(st, err, "prepare");
        return NULL;
    }
    return stmt;
}

int kh_store_step_done(kh_store *st, sqlite3_stmt *stmt, const char *what, kh_err *err)
{
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        kh_store_db_error(st, err, what);
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    return 0;
}

void kh_store_bind_text(sqlite3_stmt *stmt, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(stmt, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, i);
}

char *kh_store_col_text(sqlite3_stmt *stmt, int i)
{
    const unsigned char *s = sqlite3_column_text(stmt, i);
    return s ? xstrdup((const char *)s) : NULL;
}

int kh_store_schema_latest(void)
{
    return kh_store_migrations[kh_store_nmigrations - 1].version;
}

int kh_store_schema_version(kh_store *st)
{
    sqlite3_stmt *stmt = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        v = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return v;
}

/* ---- transactions ---- */

int kh_store_begin(kh_store *st, kh_err *err)
{
    char sql[48];
    if (st->depth == 0)
        snprintf(sql, sizeof(sql), "BEGIN IMMEDIATE;");
    else
        snprintf(sql, sizeof(sql), "SAVEPOINT kh_%u;", st->depth);
    if (kh_store_exec(st, sql, err) < 0)
        return -1;
    st->depth++;
    return 0;
}

int kh_store_commit(kh_store *st, kh_err *err)
{
    char sql[48];
    if (st->depth == 0) {
        kh_err_set(err, KH_E_INTERNAL, "database: commit without a transaction");
        return -1;
    }
    if (st->depth == 1)
        snprintf(sql, sizeof(sql), "COMMIT;");
    else
        snprintf(sql, sizeof(sql), "RELEASE kh_%u;", st->depth - 1);
    if (kh_store_exec(st, sql, err) < 0) {
        kh_store_rollback(st);
        return -1;
    }
    st->depth--;
    return 0;
}

void kh_store_rollback(kh_store *st)
{
    char sql[64];
    if (st->depth == 0)
        return;
    st->depth--;
    if (st->depth == 0)
        snprintf(sql, sizeof(sql), "ROLLBACK;");
    else
        snprintf(sql, sizeof(sql), "ROLLBACK TO kh_%u; RELEASE kh_%u;", st->depth, st->depth);
    /* A failed rollback leaves nothing better to do; SQLite has already
     * rolled back a transaction whose statement failed hard. */
    kh_store_exec(st, sql, NULL);
}

/* ---- migrations ---- */

static int migrate(kh_store *st, kh_err *err)
{
    int have = kh_store_schema_version(st);
    int want = kh_store_schema_latest();
    if (have < 0)
        return kh_store_db_error(st, err, "reading schema version");
    if (have > want) {
        kh_err_set(err, KH_E_INTERNAL,
                   "database schema version %d is newer than this kvmhostd knows (%d)", have,
                   want);
        return -1;
    }
    for (size_t i = 0; i < kh_store_nmigrations; i++) {
        const kh_store_migration *m = &kh_store_migrations[i];
        if (m->version <= have)
            continue;
        char setv[64];
        snprintf(setv, sizeof(setv), "PRAGMA user_version = %d;", m->version);
        if (kh_store_begin(st, err) < 0)
            return -1;
        if (kh_store_exec(st, m->sql, err) < 0 || kh_store_exec(st, setv, err) < 0) {
            kh_store_rollback(st);
            kh_err_prefix(err, "migration %d (%s)", m->version, m->owner);
            return -1;
        }
        if (kh_store_commit(st, err) < 0)
            return -1;
    }
    /* A foreign key broken by an old database (rows of a VM deleted before
     * the keys existed are dropped by the migration that adds them) would
     * make later deletes fail: refuse to run on one. */
    sqlite3_stmt *chk = kh_store_prep(st, "PRAGMA foreign_key_check", err);
    if (!chk)
        return -1;
    int rc = sqlite3_step(chk);
    sqlite3_finalize(chk);
    if (rc == SQLITE_ROW) {
        kh_err_set(err, KH_E_INTERNAL, "database: foreign key check failed");
        return -1;
    }
    if (rc != SQLITE_DONE)
        return kh_store_db_error(st, err, "foreign key check");
    return 0;
}

kh_store *kh_store_open(const char *path, kh_err *err)
{
    kh_store *st = xcalloc(1, sizeof(*st));
    int rc = sqlite3_open_v2(path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        kh_err_set(err, KH_E_INTERNAL, "cannot open database %s: %s", path,
                   st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        kh_store_close(st);
        return NULL;
    }
    sqlite3_busy_timeout(st->db, 5000);
    /* WAL: readers never block the writer; NORMAL sync is durable across
     * daemon crashes (not power loss of the last transactions), which is the
     * trade-off SQLite documents for WAL. */
    if (kh_store_exec(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     "PRAGMA foreign_keys=ON;", err) < 0 ||
        migrate(st, err) < 0) {
        kh_err_prefix(err, "%s", path);
        kh_store_close(st);
        return NULL;
    }
    return st;
}

sqlite3 *kh_store_sqlite(kh_store *st)
{
    return st->db;
}

void kh_store_close(kh_store *st)
{
    if (!st)
        return;
    sqlite3_close_v2(st->db);
    free(st);
}

int kh_store_vm_insert(kh_store *st, const kh_vm_row *row, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
        "INSERT INTO vms (id, name, spec, state, state_reason, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, row->id);
    kh_store_bind_text(stmt, 2, row->name);
    kh_store_bind_text(stmt, 3, row->spec_json);
    kh_store_bind_text(stmt, 4, row->state ? row->state : "stopped");
    kh_store_bind_text(stmt, 5, row->state_reason);
    sqlite3_bind_double(stmt, 6, row->created_at);
    sqlite3_bind_double(stmt, 7, row->updated_at);
    if (sqlite3_step(stmt) != SQLITE_DONE) {
        int ext = sqlite3_extended_errcode(st->db);
        sqlite3_finalize(stmt);
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
            kh_err_set(err, KH_E_CONFLICT, "a vm named %s already exists", row->name);
            return -1;
        }
        return kh_store_db_error(st, err, "inserting vm");
    }
    sqlite3_finalize(stmt);
    return 0;
}

static int check_changed(kh_store *st, const char *id, kh_err *err)
{
    if (sqlite3_changes(st->db) == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "no vm with id %s", id);
        return -1;
    }
    return 0;
}

int kh_store_vm_update_spec(kh_store *st, const char *id, const char *spec_json,
                            double updated_at, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st, "UPDATE vms SET spec = ?, updated_at = ? WHERE id = ?", err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, spec_json);
    sqlite3_bind_double(stmt, 2, updated_at);
    kh_store_bind_text(stmt, 3, id);
    if (kh_store_step_done(st, stmt, "updating vm", err) < 0)
        return -1;
    return check_changed(st, id, err);
}

int kh_store_vm_update_runtime(kh_store *st, const kh_vm_row *row, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
        "UPDATE vms SET state = ?, state_reason = ?, pid = ?, pid_start = ?, accel = ?, "
        "started_at = ? WHERE id = ?", err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, row->state);
    kh_store_bind_text(stmt, 2, row->state_reason);
    sqlite3_bind_int64(stmt, 3, row->pid);
    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)row->pid_start);
    kh_store_bind_text(stmt, 5, row->accel);
    sqlite3_bind_double(stmt, 6, row->started_at);
    kh_store_bind_text(stmt, 7, row->id);
    if (kh_store_step_done(st, stmt, "updating vm state", err) < 0)
        return -1;
    return check_changed(st, row->id, err);
}

int kh_store_vm_delete(kh_store *st, const char *id, kh_err *err)
{
    /* Everything that belongs to the VM (its snapshot records, its current
     * snapshot, its template mark) goes with it: ON DELETE CASCADE, in the
     * same transaction. */
    if (kh_store_begin(st, err) < 0)
        return -1;
    sqlite3_stmt *stmt = kh_store_prep(st, "DELETE FROM vms WHERE id = ?", err);
    int rc = -1;
    if (stmt) {
        kh_store_bind_text(stmt, 1, id);
        rc = kh_store_step_done(st, stmt, "deleting vm", err);
    }
    if (rc == 0)
        rc = check_changed(st, id, err);
    if (rc < 0) {
        kh_store_rollback(st);
        return -1;
    }
    return kh_store_commit(st, err);
}

void kh_vm_row_clear(kh_vm_row *row)
{
    if (!row)
        return;
    free(row->name);
    free(row->spec_json);
    free(row->state);
    free(row->state_reason);
    free(row->accel);
    memset(row, 0, sizeof(*row));
}

int kh_store_vm_foreach(kh_store *st, int (*cb)(const kh_vm_row *row, void *opaque),
                        void *opaque, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
        "SELECT id, name, spec, state, state_reason, pid, pid_start, accel, created_at, "
        "updated_at, started_at FROM vms ORDER BY name", err);
    if (!stmt)
        return -1;
    int rc, ret = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        kh_vm_row row = { 0 };
        const unsigned char *id = sqlite3_column_text(stmt, 0);
        snprintf(row.id, sizeof(row.id), "%s", id ? (const char *)id : "");
        row.name = kh_store_col_text(stmt, 1);
        row.spec_json = kh_store_col_text(stmt, 2);
        row.state = kh_store_col_text(stmt, 3);
        row.state_reason = kh_store_col_text(stmt, 4);
        row.pid = sqlite3_column_int64(stmt, 5);
        row.pid_start = (unsigned long long)sqlite3_column_int64(stmt, 6);
        row.accel = kh_store_col_text(stmt, 7);
        row.created_at = sqlite3_column_double(stmt, 8);
        row.updated_at = sqlite3_column_double(stmt, 9);
        row.started_at = sqlite3_column_double(stmt, 10);
        ret = cb(&row, opaque);
        kh_vm_row_clear(&row);
        if (ret)
            break;
    }
    if (!ret && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        kh_store_db_error(st, err, "listing vms");
        ret = -1;
    }
    sqlite3_finalize(stmt);
    return ret;
}

int kh_store_task_put(kh_store *st, const kh_task_row *row, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
        "INSERT OR REPLACE INTO tasks (id, kind, vm_name, state, progress, message, "
        "error_code, error_message, result, created_at, finished_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, row->id);
    kh_store_bind_text(stmt, 2, row->kind);
    kh_store_bind_text(stmt, 3, row->vm_name);
    kh_store_bind_text(stmt, 4, row->state);
    sqlite3_bind_int(stmt, 5, row->progress);
    kh_store_bind_text(stmt, 6, row->message);
    kh_store_bind_text(stmt, 7, row->error_code);
    kh_store_bind_text(stmt, 8, row->error_message);
    kh_store_bind_text(stmt, 9, row->result_json);
    sqlite3_bind_double(stmt, 10, row->created_at);
    sqlite3_bind_double(stmt, 11, row->finished_at);
    return kh_store_step_done(st, stmt, "saving task", err);
}

static void task_from_stmt(sqlite3_stmt *stmt, kh_task_row *row)
{
    memset(row, 0, sizeof(*row));
    const unsigned char *id = sqlite3_column_text(stmt, 0);
    snprintf(row->id, sizeof(row->id), "%s", id ? (const char *)id : "");
    row->kind = kh_store_col_text(stmt, 1);
    row->vm_name = kh_store_col_text(stmt, 2);
    row->state = kh_store_col_text(stmt, 3);
    row->progress = sqlite3_column_int(stmt, 4);
    row->message = kh_store_col_text(stmt, 5);
    row->error_code = kh_store_col_text(stmt, 6);
    row->error_message = kh_store_col_text(stmt, 7);
    row->result_json = kh_store_col_text(stmt, 8);
    row->created_at = sqlite3_column_double(stmt, 9);
    row->finished_at = sqlite3_column_double(stmt, 10);
}

#define TASK_COLUMNS "id, kind, vm_name, state, progress, message, error_code, " \
                     "error_message, result, created_at, finished_at"

int kh_store_task_get(kh_store *st, const char *id, kh_task_row *out, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st, "SELECT " TASK_COLUMNS " FROM tasks WHERE id = ?", err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        task_from_stmt(stmt, out);
        sqlite3_finalize(stmt);
        return 0;
    }
    if (rc == SQLITE_DONE)
        kh_err_set(err, KH_E_NOTFOUND, "no task %s", id);
    else
        kh_store_db_error(st, err, "reading task");
    sqlite3_finalize(stmt);
    return -1;
}

int kh_store_task_foreach(kh_store *st, unsigned limit,
                          int (*cb)(const kh_task_row *row, void *opaque), void *opaque,
                          kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
        "SELECT " TASK_COLUMNS " FROM tasks ORDER BY created_at DESC LIMIT ?", err);
    if (!stmt)
        return -1;
    sqlite3_bind_int64(stmt, 1, limit);
    int rc, ret = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        kh_task_row row;
        task_from_stmt(stmt, &row);
        ret = cb(&row, opaque);
        kh_task_row_clear(&row);
        if (ret)
            break;
    }
    if (!ret && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        kh_store_db_error(st, err, "listing tasks");
        ret = -1;
    }
    sqlite3_finalize(stmt);
    return ret;
}

int kh_store_task_fail_unfinished(kh_store *st, const char *reason, double now, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
        "UPDATE tasks SET state = 'failed', error_code = 'internal', error_message = ?, "
        "finished_at = ? WHERE state = 'running'", err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, reason);
    sqlite3_bind_double(stmt, 2, now);
    return kh_store_step_done(st, stmt, "failing unfinished tasks", err);
}

int kh_store_task_prune(kh_store *st, unsigned keep, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
        "DELETE FROM tasks WHERE state != 'running' AND id NOT IN "
        "(SELECT id FROM tasks ORDER BY created_at DESC LIMIT ?)", err);
    if (!stmt)
        return -1;
    sqlite3_bind_int64(stmt, 1, keep);
    return kh_store_step_done(st, stmt, "pruning tasks", err);
}

void kh_task_row_clear(kh_task_row *row)
{
    if (!row)
        return;
    free(row->kind);
    free(row->vm_name);
    free(row->state);
    free(row->message);
    free(row->error_code);
    free(row->error_message);
    free(row->result_json);
    memset(row, 0, sizeof(*row));
}
