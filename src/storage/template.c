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

/* The template ids, read again only when the database changed since
 * (a VM listing asks once per VM: one query per listing, not per VM). */
int kh_storage_template_get(kh_storage *st, const char *vm_id, kh_err *err)
{
    if (!st)
        return 0;
    long long now = (long long)sqlite3_total_changes(st->db);
    if (!st->templates || st->templates_at != now) {
        sqlite3_stmt *s = kh_store_prep(st->store, "SELECT vm_id FROM templates", err);
        if (!s)
            return -1;
        json_t *ids = json_object();
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            const char *id = (const char *)sqlite3_column_text(s, 0);
            if (id)
                json_object_set_new(ids, id, json_true());
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
            json_decref(ids);
            return storage_db_fail(st, err, "reading the templates");
        }
        json_decref(st->templates);
        st->templates = ids;
        st->templates_at = now;
    }
    return json_object_get(st->templates, vm_id) != NULL;
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

