#include "store/store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

struct kh_store {
    sqlite3 *db;
};

/* Migrations, applied in order; user_version is the count applied. Never
 * edit a released step: add a new one. */
static const char *const migrations[] = {
    /* 1: VMs and tasks. */
    "CREATE TABLE vms ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  spec TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'stopped',"
    "  state_reason TEXT,"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  pid_start INTEGER NOT NULL DEFAULT 0,"
    "  accel TEXT,"
    "  created_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  started_at REAL NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE tasks ("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  vm_name TEXT,"
    "  state TEXT NOT NULL,"
    "  progress INTEGER NOT NULL DEFAULT 0,"
    "  message TEXT,"
    "  error_code TEXT,"
    "  error_message TEXT,"
    "  result TEXT,"
    "  created_at REAL NOT NULL,"
    "  finished_at REAL NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX tasks_created ON tasks(created_at);",
    /* 2: storage pools and volumes (storage/pool.c, storage/volume.c). */
    "CREATE TABLE pools ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  type TEXT NOT NULL,"
    "  path TEXT NOT NULL UNIQUE,"
    "  created_at REAL NOT NULL"
    ");"
    "CREATE TABLE volumes ("
    "  id TEXT PRIMARY KEY,"
    "  pool_id TEXT NOT NULL REFERENCES pools(id),"
    "  name TEXT NOT NULL,"
    "  format TEXT NOT NULL,"
    "  capacity INTEGER NOT NULL,"
    "  backing_id TEXT REFERENCES volumes(id),"
    "  readonly INTEGER NOT NULL DEFAULT 0,"
    "  created_at REAL NOT NULL,"
    "  UNIQUE (pool_id, name)"
    ");"
    "CREATE INDEX volumes_backing ON volumes(backing_id);",
    /* 3: networks (net/netmgr.c); spec is the stored JSON form. */
    "CREATE TABLE networks ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  spec TEXT NOT NULL,"
    "  created_at REAL NOT NULL"
    ");",
    /* 4: security groups (net/netmgr.c), by name; spec is the stored JSON. */
    "CREATE TABLE security_groups ("
    "  name TEXT PRIMARY KEY,"
    "  spec TEXT NOT NULL,"
    "  created_at REAL NOT NULL"
    ");",
    /* 5: encrypted volumes (their wrapped key), templates, snapshots
     * (storage/volume.c, storage/template.c, storage/snapshot.c,
     * vm/template.c, vm/snapshot.c). */
    "ALTER TABLE volumes ADD COLUMN key_wrapped TEXT;"
    "CREATE TABLE templates ("
    "  vm_id TEXT PRIMARY KEY,"
    "  created_at REAL NOT NULL"
    ");"
    "CREATE TABLE snapshots ("
    "  vm_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  memory INTEGER NOT NULL,"
    "  created_at REAL NOT NULL,"
    "  PRIMARY KEY (vm_id, name)"
    ");",
    /* 6: the snapshot tree (storage/snapshot.c): each snapshot's parent (the
     * snapshot the VM was at when it was taken) and each VM's current one. */
    "ALTER TABLE snapshots ADD COLUMN parent TEXT;"
    "CREATE TABLE snapshot_current ("
    "  vm_id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL"
    ");",
    /* 7: security groups filter IPv6 too, and a rule's cidr now names its
     * family. Until now a rule without a cidr was stored as "0.0.0.0/0"
     * (specs are compact with sorted keys, so "cidr" is followed by
     * "direction"); those rules meant "anywhere" while IPv6 was not
     * filtered at all, so they become rules without a cidr (both
     * families) rather than IPv4-only ones. */
    "UPDATE security_groups SET spec = replace(spec, '\"cidr\":\"0.0.0.0/0\",', '');",
};

static int db_error(kh_store *st, kh_err *err, const char *what)
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

static int exec_sql(kh_store *st, const char *sql, kh_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        kh_err_set(err, KH_E_INTERNAL, "database: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static sqlite3_stmt *prepare(kh_store *st, const char *sql, kh_err *err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        db_error(st, err, "prepare");
        return NULL;
    }
    return stmt;
}

/* Run a statement that returns no rows; finalizes it. */
static int step_done(kh_store *st, sqlite3_stmt *stmt, const char *what, kh_err *err)
{
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        db_error(st, err, what);
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    return 0;
}

static void bind_text(sqlite3_stmt *stmt, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(stmt, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, i);
}

static char *col_text(sqlite3_stmt *stmt, int i)
{
    const unsigned char *s = sqlite3_column_text(stmt, i);
    return s ? xstrdup((const char *)s) : NULL;
}

int kh_store_schema_latest(void)
{
    return (int)KH_ARRAY_LEN(migrations);
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

static int migrate(kh_store *st, kh_err *err)
{
    int have = kh_store_schema_version(st);
    int want = (int)KH_ARRAY_LEN(migrations);
    if (have < 0)
        return db_error(st, err, "reading schema version");
    if (have > want) {
        kh_err_set(err, KH_E_INTERNAL,
                   "database schema version %d is newer than this kvmhostd knows (%d)", have,
                   want);
        return -1;
    }
    for (int v = have; v < want; v++) {
        char setv[64];
        snprintf(setv, sizeof(setv), "PRAGMA user_version = %d;", v + 1);
        if (exec_sql(st, "BEGIN IMMEDIATE;", err) < 0)
            return -1;
        if (exec_sql(st, migrations[v], err) < 0 || exec_sql(st, setv, err) < 0) {
            exec_sql(st, "ROLLBACK;", NULL);
            kh_err_prefix(err, "migration %d", v + 1);
            return -1;
        }
        if (exec_sql(st, "COMMIT;", err) < 0)
            return -1;
    }
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
    if (exec_sql(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
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
    sqlite3_stmt *stmt = prepare(st,
        "INSERT INTO vms (id, name, spec, state, state_reason, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, row->id);
    bind_text(stmt, 2, row->name);
    bind_text(stmt, 3, row->spec_json);
    bind_text(stmt, 4, row->state ? row->state : "stopped");
    bind_text(stmt, 5, row->state_reason);
    sqlite3_bind_double(stmt, 6, row->created_at);
    sqlite3_bind_double(stmt, 7, row->updated_at);
    if (sqlite3_step(stmt) != SQLITE_DONE) {
        int ext = sqlite3_extended_errcode(st->db);
        sqlite3_finalize(stmt);
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
            kh_err_set(err, KH_E_CONFLICT, "a vm named %s already exists", row->name);
            return -1;
        }
        return db_error(st, err, "inserting vm");
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
    sqlite3_stmt *stmt = prepare(st, "UPDATE vms SET spec = ?, updated_at = ? WHERE id = ?", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, spec_json);
    sqlite3_bind_double(stmt, 2, updated_at);
    bind_text(stmt, 3, id);
    if (step_done(st, stmt, "updating vm", err) < 0)
        return -1;
    return check_changed(st, id, err);
}

int kh_store_vm_update_runtime(kh_store *st, const kh_vm_row *row, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
        "UPDATE vms SET state = ?, state_reason = ?, pid = ?, pid_start = ?, accel = ?, "
        "started_at = ? WHERE id = ?", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, row->state);
    bind_text(stmt, 2, row->state_reason);
    sqlite3_bind_int64(stmt, 3, row->pid);
    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)row->pid_start);
    bind_text(stmt, 5, row->accel);
    sqlite3_bind_double(stmt, 6, row->started_at);
    bind_text(stmt, 7, row->id);
    if (step_done(st, stmt, "updating vm state", err) < 0)
        return -1;
    return check_changed(st, row->id, err);
}

int kh_store_vm_delete(kh_store *st, const char *id, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st, "DELETE FROM vms WHERE id = ?", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, id);
    if (step_done(st, stmt, "deleting vm", err) < 0)
        return -1;
    return check_changed(st, id, err);
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
    sqlite3_stmt *stmt = prepare(st,
        "SELECT id, name, spec, state, state_reason, pid, pid_start, accel, created_at, "
        "updated_at, started_at FROM vms ORDER BY name", err);
    if (!stmt)
        return -1;
    int rc, ret = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        kh_vm_row row = { 0 };
        const unsigned char *id = sqlite3_column_text(stmt, 0);
        snprintf(row.id, sizeof(row.id), "%s", id ? (const char *)id : "");
        row.name = col_text(stmt, 1);
        row.spec_json = col_text(stmt, 2);
        row.state = col_text(stmt, 3);
        row.state_reason = col_text(stmt, 4);
        row.pid = sqlite3_column_int64(stmt, 5);
        row.pid_start = (unsigned long long)sqlite3_column_int64(stmt, 6);
        row.accel = col_text(stmt, 7);
        row.created_at = sqlite3_column_double(stmt, 8);
        row.updated_at = sqlite3_column_double(stmt, 9);
        row.started_at = sqlite3_column_double(stmt, 10);
        ret = cb(&row, opaque);
        kh_vm_row_clear(&row);
        if (ret)
            break;
    }
    if (!ret && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        db_error(st, err, "listing vms");
        ret = -1;
    }
    sqlite3_finalize(stmt);
    return ret;
}

int kh_store_task_put(kh_store *st, const kh_task_row *row, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
        "INSERT OR REPLACE INTO tasks (id, kind, vm_name, state, progress, message, "
        "error_code, error_message, result, created_at, finished_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, row->id);
    bind_text(stmt, 2, row->kind);
    bind_text(stmt, 3, row->vm_name);
    bind_text(stmt, 4, row->state);
    sqlite3_bind_int(stmt, 5, row->progress);
    bind_text(stmt, 6, row->message);
    bind_text(stmt, 7, row->error_code);
    bind_text(stmt, 8, row->error_message);
    bind_text(stmt, 9, row->result_json);
    sqlite3_bind_double(stmt, 10, row->created_at);
    sqlite3_bind_double(stmt, 11, row->finished_at);
    return step_done(st, stmt, "saving task", err);
}

static void task_from_stmt(sqlite3_stmt *stmt, kh_task_row *row)
{
    memset(row, 0, sizeof(*row));
    const unsigned char *id = sqlite3_column_text(stmt, 0);
    snprintf(row->id, sizeof(row->id), "%s", id ? (const char *)id : "");
    row->kind = col_text(stmt, 1);
    row->vm_name = col_text(stmt, 2);
    row->state = col_text(stmt, 3);
    row->progress = sqlite3_column_int(stmt, 4);
    row->message = col_text(stmt, 5);
    row->error_code = col_text(stmt, 6);
    row->error_message = col_text(stmt, 7);
    row->result_json = col_text(stmt, 8);
    row->created_at = sqlite3_column_double(stmt, 9);
    row->finished_at = sqlite3_column_double(stmt, 10);
}

#define TASK_COLUMNS "id, kind, vm_name, state, progress, message, error_code, " \
                     "error_message, result, created_at, finished_at"

int kh_store_task_get(kh_store *st, const char *id, kh_task_row *out, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st, "SELECT " TASK_COLUMNS " FROM tasks WHERE id = ?", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        task_from_stmt(stmt, out);
        sqlite3_finalize(stmt);
        return 0;
    }
    if (rc == SQLITE_DONE)
        kh_err_set(err, KH_E_NOTFOUND, "no task %s", id);
    else
        db_error(st, err, "reading task");
    sqlite3_finalize(stmt);
    return -1;
}

int kh_store_task_foreach(kh_store *st, unsigned limit,
                          int (*cb)(const kh_task_row *row, void *opaque), void *opaque,
                          kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
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
        db_error(st, err, "listing tasks");
        ret = -1;
    }
    sqlite3_finalize(stmt);
    return ret;
}

int kh_store_task_fail_unfinished(kh_store *st, const char *reason, double now, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
        "UPDATE tasks SET state = 'failed', error_code = 'internal', error_message = ?, "
        "finished_at = ? WHERE state = 'running'", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, reason);
    sqlite3_bind_double(stmt, 2, now);
    return step_done(st, stmt, "failing unfinished tasks", err);
}

int kh_store_task_prune(kh_store *st, unsigned keep, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
        "DELETE FROM tasks WHERE state != 'running' AND id NOT IN "
        "(SELECT id FROM tasks ORDER BY created_at DESC LIMIT ?)", err);
    if (!stmt)
        return -1;
    sqlite3_bind_int64(stmt, 1, keep);
    return step_done(st, stmt, "pruning tasks", err);
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

/* ---- networks ---- */

int kh_store_net_put(kh_store *st, const kh_net_row *row, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
                                 "INSERT INTO networks (id, name, spec, created_at) "
                                 "VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                                 "spec = excluded.spec",
                                 err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, row->id);
    bind_text(stmt, 2, row->name);
    bind_text(stmt, 3, row->spec_json);
    sqlite3_bind_double(stmt, 4, row->created_at);
    return step_done(st, stmt, "saving network", err);
}

int kh_store_net_delete(kh_store *st, const char *id, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st, "DELETE FROM networks WHERE id = ?", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, id);
    return step_done(st, stmt, "deleting network", err);
}

int kh_store_net_foreach(kh_store *st, int (*cb)(const kh_net_row *row, void *opaque),
                         void *opaque, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
                                 "SELECT id, name, spec, created_at FROM networks "
                                 "ORDER BY created_at, name",
                                 err);
    if (!stmt)
        return -1;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        kh_net_row row;
        memset(&row, 0, sizeof(row));
        const unsigned char *id = sqlite3_column_text(stmt, 0);
        snprintf(row.id, sizeof(row.id), "%s", id ? (const char *)id : "");
        row.name = col_text(stmt, 1);
        row.spec_json = col_text(stmt, 2);
        row.created_at = sqlite3_column_double(stmt, 3);
        int r = cb(&row, opaque);
        free(row.name);
        free(row.spec_json);
        if (r < 0) {
            sqlite3_finalize(stmt);
            kh_err_set(err, KH_E_INTERNAL, "loading networks");
            return -1;
        }
    }
    if (rc != SQLITE_DONE) {
        db_error(st, err, "reading networks");
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    return 0;
}

/* ---- security groups ---- */

int kh_store_sg_put(kh_store *st, const char *name, const char *spec_json, double created_at,
                    kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
                                 "INSERT INTO security_groups (name, spec, created_at) "
                                 "VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                                 "spec = excluded.spec",
                                 err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, name);
    bind_text(stmt, 2, spec_json);
    sqlite3_bind_double(stmt, 3, created_at);
    return step_done(st, stmt, "saving security group", err);
}

int kh_store_sg_delete(kh_store *st, const char *name, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st, "DELETE FROM security_groups WHERE name = ?", err);
    if (!stmt)
        return -1;
    bind_text(stmt, 1, name);
    return step_done(st, stmt, "deleting security group", err);
}

int kh_store_sg_foreach(kh_store *st,
                        int (*cb)(const char *name, const char *spec_json, double created_at,
                                  void *opaque),
                        void *opaque, kh_err *err)
{
    sqlite3_stmt *stmt = prepare(st,
                                 "SELECT name, spec, created_at FROM security_groups "
                                 "ORDER BY name",
                                 err);
    if (!stmt)
        return -1;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(stmt, 0);
        const unsigned char *spec = sqlite3_column_text(stmt, 1);
        if (cb(name ? (const char *)name : "", spec ? (const char *)spec : "{}",
               sqlite3_column_double(stmt, 2), opaque) < 0) {
            sqlite3_finalize(stmt);
            kh_err_set(err, KH_E_INTERNAL, "loading security groups");
            return -1;
        }
    }
    if (rc != SQLITE_DONE) {
        db_error(st, err, "reading security groups");
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    return 0;
}
