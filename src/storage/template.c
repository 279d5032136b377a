/* template.c - templates: VMs whose volumes are read-only bases. */
#include "storage/storage_int.h"

#include "util/misc.h"

int kh_storage_template_mark(kh_storage *st, const char *vm_id, kh_err *err)
{
    sqlite3_stmt *s = storage_prep(st, "INSERT OR IGNORE INTO templates (vm_id, created_at) VALUES (?, ?)",
                                   err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 2, kh_wall_time());
    int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : storage_db_fail(st, err, "marking a template");
    sqlite3_finalize(s);
    return rc;
}

bool kh_storage_is_template(kh_storage *st, const char *vm_id)
{
    return st && storage_count_where(st, "SELECT count(*) FROM templates WHERE vm_id = ?", vm_id) > 0;
}

void kh_storage_template_forget(kh_storage *st, const char *vm_id)
{
    sqlite3_stmt *s = st ? storage_prep(st, "DELETE FROM templates WHERE vm_id = ?", NULL) : NULL;
    if (!s)
        return;
    sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
    sqlite3_step(s);
    sqlite3_finalize(s);
}
