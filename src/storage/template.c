/* template.c - templates: VMs whose volumes are read-only bases. The
 * templates table (storage/schema.c) belongs to the VM: its row goes when
 * the VM row is deleted (ON DELETE CASCADE). */
#include "storage/storage_int.h"

#include "util/log.h"
#include "util/misc.h"

int kh_storage_template_mark(kh_storage *st, const char *vm_id, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st->store, "INSERT OR IGNORE INTO templates (vm_id, created_at) VALUES (?, ?)",
                                   err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 2, kh_wall_time());
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, "marking a template");
    sqlite3_finalize(s);
    return rc;
}

int kh_storage_template_get(kh_storage *st, const char *vm_id, kh_err *err)
{
    if (!st)
        return 0;
    long long n = storage_count_where(st, "SELECT count(*) FROM templates WHERE vm_id = ?", vm_id,
                                      err);
    if (n < 0)
        return -1;
    return n > 0;
}

bool kh_storage_is_template(kh_storage *st, const char *vm_id)
{
    kh_err err = KH_ERR_INIT;
    int rc = kh_storage_template_get(st, vm_id, &err);
    if (rc < 0) {
        /* No error channel here: say so, and answer "template" (the answer
         * that refuses a start rather than writing into a base). */
        kh_log(KH_LOG_ERROR, "template.check", "vm_id=%s error=\"%s\"", vm_id, err.msg);
        kh_err_clear(&err);
        return true;
    }
    return rc == 1;
}

