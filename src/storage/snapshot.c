/* snapshot.c - the records of VMs' internal qcow2 snapshots (tables
 * snapshots and snapshot_current, storage/schema.c). They belong to the VM
 * row: deleting it removes them (ON DELETE CASCADE). */
#include "storage/storage_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- snapshot records ---- */

/* Run one statement with text arguments (NULL binds NULL). */
static int exec_args(kh_storage *st, const char *sql, const char *what, kh_err *err, int n, ...)
{
    sqlite3_stmt *s = kh_store_prep(st->store, sql, err);
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
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, what);
    sqlite3_finalize(s);
    return rc;
}

int kh_storage_snapshot_current_get(kh_storage *st, const char *vm_id, char **out,
                                    kh_err *err)
{
    *out = NULL;
    sqlite3_stmt *s = kh_store_prep(st->store, "SELECT name FROM snapshot_current WHERE vm_id = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s), ret = 0;
    if (rc == SQLITE_ROW)
        *out = kh_store_col_text(s, 0);
    else if (rc != SQLITE_DONE)
        ret = storage_db_fail(st, err, "reading the current snapshot");
    sqlite3_finalize(s);
    return ret;
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
    /* Its parent is where the VM was; it becomes where the VM is. One
     * transaction: the record and "current" change together. */
    char *parent = NULL;
    if (kh_store_begin(st->store, err) < 0)
        return -1;
    if (kh_storage_snapshot_current_get(st, vm_id, &parent, err) < 0) {
        kh_store_rollback(st->store);
        return -1;
    }
    sqlite3_stmt *s = kh_store_prep(st->store, "INSERT INTO snapshots (vm_id, name, memory, created_at, parent) "
                               "VALUES (?, ?, ?, ?, ?)", err);
    if (!s) {
        free(parent);
        kh_store_rollback(st->store);
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
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, "recording a snapshot");
    sqlite3_finalize(s);
    free(parent);
    if (rc == 0)
        rc = kh_storage_snapshot_set_current(st, vm_id, name, err);
    if (rc < 0) {
        kh_store_rollback(st->store);
        return -1;
    }
    return kh_store_commit(st->store, err);
}

int kh_storage_snapshot_get(kh_storage *st, const char *vm_id, const char *name, bool *memory,
                            kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st->store, "SELECT memory FROM snapshots WHERE vm_id = ? AND name = ?", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s), found = 0;
    if (rc == SQLITE_ROW) {
        *memory = sqlite3_column_int(s, 0) != 0;
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = storage_db_fail(st, err, "reading a snapshot");
    }
    sqlite3_finalize(s);
    return found;
}

int kh_storage_snapshot_remove(kh_storage *st, const char *vm_id, const char *name, kh_err *err)
{
    /* Its children hang from its parent now; "current" moves up too. One
     * transaction: the tree is never seen half-changed. */
    if (kh_store_begin(st->store, err) < 0)
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
        return kh_store_commit(st->store, err);
    kh_store_rollback(st->store);
    return -1;
}

json_t *kh_storage_snapshot_list_err(kh_storage *st, const char *vm_id, kh_err *err)
{
    char *current = NULL;
    if (kh_storage_snapshot_current_get(st, vm_id, &current, err) < 0)
        return NULL;
    sqlite3_stmt *s = kh_store_prep(st->store, "SELECT name, memory, created_at, parent FROM snapshots "
                               "WHERE vm_id = ? ORDER BY created_at, name", err);
    if (!s) {
        free(current);
        return NULL;
    }
    json_t *arr = json_array();
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        const char *parent = (const char *)sqlite3_column_text(s, 3);
        json_array_append_new(arr, json_pack("{s:s, s:b, s:o, s:o, s:b}", "name", name,
                                             "memory", sqlite3_column_int(s, 1) != 0,
                                             "created_at",
                                             storage_time_json(sqlite3_column_double(s, 2)), "parent",
                                             parent ? json_string(parent) : json_null(),
                                             "current", current && strcmp(current, name) == 0));
    }
    if (rc != SQLITE_DONE) {
        storage_db_fail(st, err, "listing snapshots");
        json_decref(arr);
        arr = NULL;
    }
    sqlite3_finalize(s);
    free(current);
    return arr;
}

