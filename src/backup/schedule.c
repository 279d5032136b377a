/* schedule.c - owns backup schedules: one daily time (UTC) per VM, run by
 * the daemon. A tick every 20 s starts the backups whose time today has
 * passed and that have not run since (a daemon that was down at that time
 * runs it at its next tick); the last run is stored, so a restart never
 * runs one twice. A schedule with keep_* rules prunes the VM's backups in
 * its store after each scheduled backup that committed; a prune refused
 * while another operation holds the store stays due and the next tick
 * retries it (backup/backup.h). */
#include "backup/backup_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schema/schema.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define TICK_MS 20000

static int parse_at(const char *at, int *h, int *m)
{
    return at && strlen(at) == 5 && sscanf(at, "%2d:%2d", h, m) == 2 && *h >= 0 && *h < 24 &&
                   *m >= 0 && *m < 60
               ? 0
               : -1;
}

/* Today's due time of at (UTC), as wall time. */
static double due_today(const char *at, double now)
{
    int h = 0, m = 0;
    if (parse_at(at, &h, &m) < 0)
        return now + 1e9;
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = 0;
    return (double)timegm(&tm);
}

/* ---- a schedule is the VM's (its id): a renamed VM keeps it ---- */

typedef struct name_find {
    const char *id;
    char *name;
} name_find;

static void name_of_cb(const kh_vm_info *info, void *opaque)
{
    name_find *f = opaque;
    if (!f->name && info->id && strcmp(info->id, f->id) == 0)
        f->name = xstrdup(info->name);
}

/* The name VM vm_id has now, or NULL when this host has no such VM. */
static char *vm_name_of(kh_backups *b, const char *vm_id)
{
    name_find f = { .id = vm_id, .name = NULL };
    kh_manager_foreach(b->mgr, name_of_cb, &f);
    return f.name;
}

static const char *const keep_keys[] = { "keep_last", "keep_daily", "keep_weekly",
                                         "keep_monthly" };

/* Start the due prunes (of vm_id only, unless NULL). */
static void prune_due(kh_backups *b, const char *vm_id)
{
    kh_err err = KH_ERR_INIT;
    sqlite3_stmt *s = kh_store_prep(b->store, "SELECT s.vm_id, s.vm_name, s.store, k.keep FROM "
                                              "backup_schedules s JOIN backup_schedule_keep k "
                                              "ON k.vm_id = s.vm_id WHERE k.prune_due = 1 AND "
                                              "(?1 IS NULL OR s.vm_id = ?1)", &err);
    if (!s)
        return;
    kh_store_bind_text(s, 1, vm_id);
    json_t *due = json_array();
    while (sqlite3_step(s) == SQLITE_ROW) {
        json_error_t je;
        json_t *body = json_loads((const char *)sqlite3_column_text(s, 3), 0, &je);
        if (!json_is_object(body)) {
            json_decref(body);
            continue;
        }
        json_object_set_new(body, "store", json_string((const char *)sqlite3_column_text(s, 2)));
        json_object_set_new(body, "vm", json_string((const char *)sqlite3_column_text(s, 1)));
        json_object_set_new(body, "wait", json_integer(0));
        json_array_append_new(due, json_pack("{s:s, s:o}", "vm_id",
                                             (const char *)sqlite3_column_text(s, 0), "body",
                                             body));
    }
    sqlite3_finalize(s);
    size_t i;
    json_t *e;
    json_array_foreach(due, i, e) {
        json_t *body = json_object_get(e, "body");
        const char *vid = json_string_value(json_object_get(e, "vm_id"));
        char *now_name = vm_name_of(b, vid);
        if (now_name) /* the task names the VM as it is called now */
            json_object_set_new(body, "vm", json_string(now_name));
        free(now_name);
        kh_err pe = KH_ERR_INIT;
        /* by the VM's id: its backups made under an earlier name too */
        kh_task *task = kh_backup_prune_vm(b, body, vid, &pe);
        kh_log(task ? KH_LOG_INFO : KH_LOG_WARN, "backup.schedule_prune",
               "vm=%s store=%s task=%s error=\"%s\"",
               json_string_value(json_object_get(body, "vm")),
               json_string_value(json_object_get(body, "store")), task ? kh_task_id(task) : "-",
               task ? "" : pe.msg);
        if (!task && pe.code == KH_E_CONFLICT)
            continue; /* the store is busy: the next tick retries */
        sqlite3_stmt *u = kh_store_prep(b->store, "UPDATE backup_schedule_keep SET "
                                                  "prune_due = 0 WHERE vm_id = ?", &err);
        if (u) {
            kh_store_bind_text(u, 1, json_string_value(json_object_get(e, "vm_id")));
            kh_store_step_done(b->store, u, "recording a scheduled prune", &err);
        }
    }
    json_decref(due);
}

void kh_schedule_backup_done(kh_backups *b, const char *vm_id)
{
    kh_err err = KH_ERR_INIT;
    sqlite3_stmt *u = kh_store_prep(b->store, "UPDATE backup_schedule_keep SET prune_due = 1 "
                                              "WHERE vm_id = ?", &err);
    if (u)
        kh_store_bind_text(u, 1, vm_id);
    if (!u || kh_store_step_done(b->store, u, "recording a due prune", &err) < 0)
        return;
    prune_due(b, vm_id);
}

static void tick(uv_timer_t *t)
{
    kh_backups *b = t->data;
    double now = kh_wall_time();
    kh_err err = KH_ERR_INIT;
    prune_due(b, NULL);
    sqlite3_stmt *s = kh_store_prep(b->store, "SELECT vm_id, vm_name, store, at, last_run FROM "
                                              "backup_schedules", &err);
    if (!s)
        return;
    json_t *due = json_array();
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *at = (const char *)sqlite3_column_text(s, 3);
        double d = due_today(at, now);
        if (now >= d && sqlite3_column_double(s, 4) < d)
            json_array_append_new(due, json_pack("{s:s, s:s, s:s}", "vm_id",
                                                 (const char *)sqlite3_column_text(s, 0), "vm",
                                                 (const char *)sqlite3_column_text(s, 1),
                                                 "store",
                                                 (const char *)sqlite3_column_text(s, 2)));
    }
    sqlite3_finalize(s);
    size_t i;
    json_t *e;
    json_array_foreach(due, i, e) {
        const char *vid = json_string_value(json_object_get(e, "vm_id"));
        char *vm = vm_name_of(b, vid);
        if (!vm) { /* gone from this host (deleted, migrated): not another VM of its name */
            kh_log(KH_LOG_DEBUG, "backup.schedule", "vm_id=%s name=%s skipped=\"no such VM "
                   "here\"", vid, json_string_value(json_object_get(e, "vm")));
            continue;
        }
        json_t *body = json_pack("{s:s}", "store", json_string_value(json_object_get(e, "store")));
        kh_err be = KH_ERR_INIT;
        kh_task *task = kh_backup_create_job(b, vm, body, true, &be);
        json_decref(body);
        kh_log(task ? KH_LOG_INFO : KH_LOG_WARN, "backup.schedule", "vm=%s task=%s error=\"%s\"",
               vm, task ? kh_task_id(task) : "-", task ? "" : be.msg);
        free(vm);
        sqlite3_stmt *u = kh_store_prep(b->store, "UPDATE backup_schedules SET last_run = ? "
                                                  "WHERE vm_id = ?", &err);
        if (u) {
            sqlite3_bind_double(u, 1, now);
            kh_store_bind_text(u, 2, json_string_value(json_object_get(e, "vm_id")));
            kh_store_step_done(b->store, u, "recording a scheduled backup", &err);
        }
    }
    json_decref(due);
}

void kh_schedule_start(kh_backups *b)
{
    b->sched_timer = xcalloc(1, sizeof(*b->sched_timer));
    uv_timer_init(b->loop, b->sched_timer);
    b->sched_timer->data = b;
    uv_timer_start(b->sched_timer, tick, 1000, TICK_MS);
}

static void closed(uv_handle_t *h)
{
    free(h);
}

void kh_schedule_stop(kh_backups *b)
{
    if (b->sched_timer) {
        uv_timer_stop(b->sched_timer);
        uv_close((uv_handle_t *)b->sched_timer, closed);
        b->sched_timer = NULL;
    }
}

/* The retention of vm_id's schedule (keep_text NULL: none). */
static int set_keep(kh_backups *b, const char *vm_id, const char *keep_text, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(b->store, keep_text
                                                  ? "INSERT OR REPLACE INTO backup_schedule_keep "
                                                    "(vm_id, keep, prune_due) VALUES (?, ?, 0)"
                                                  : "DELETE FROM backup_schedule_keep WHERE "
                                                    "vm_id = ?", err);
    if (!s)
        return -1;
    kh_store_bind_text(s, 1, vm_id);
    if (keep_text)
        kh_store_bind_text(s, 2, keep_text);
    return kh_store_step_done(b->store, s, "setting a schedule's retention", err);
}

static json_t *vm_row(kh_backups *b, const char *vm, char **vm_id, kh_err *err)
{
    json_t *v = kh_manager_vm_json(b->mgr, vm, err);
    if (v && vm_id)
        *vm_id = xstrdup(json_string_value(json_object_get(v, "id")));
    return v;
}

json_t *kh_backup_schedule_get(kh_backups *b, const char *vm, kh_err *err)
{
    char *id = NULL;
    json_t *v = vm_row(b, vm, &id, err);
    if (!v)
        return NULL;
    json_decref(v);
    sqlite3_stmt *s = kh_store_prep(b->store, "SELECT s.store, s.at, s.last_run, k.keep FROM "
                                              "backup_schedules s LEFT JOIN "
                                              "backup_schedule_keep k ON k.vm_id = s.vm_id "
                                              "WHERE s.vm_id = ?", err);
    json_t *out = NULL;
    if (s) {
        kh_store_bind_text(s, 1, id);
        if (sqlite3_step(s) == SQLITE_ROW) {
            double lr = sqlite3_column_double(s, 2);
            char t[32];
            kh_time_format(lr, t);
            out = json_pack("{s:s, s:s, s:s, s:o}", "vm", vm, "store",
                            (const char *)sqlite3_column_text(s, 0), "daily",
                            (const char *)sqlite3_column_text(s, 1), "last_run",
                            lr > 0 ? json_string(t) : json_null());
            json_error_t je;
            const char *kt = (const char *)sqlite3_column_text(s, 3);
            json_t *keep = kt ? json_loads(kt, 0, &je) : NULL;
            json_object_update(out, keep);
            json_decref(keep);
        } else {
            kh_err_set(err, KH_E_NOTFOUND, "vm %s has no backup schedule", vm);
        }
        sqlite3_finalize(s);
    }
    free(id);
    return out;
}

json_t *kh_backup_schedule_set(kh_backups *b, const char *vm, const json_t *body, kh_err *err)
{
    if (kh_schema_check("BackupSchedule", body, "", err) < 0)
        return NULL;
    const char *store = json_string_value(json_object_get(body, "store"));
    const char *at = json_string_value(json_object_get(body, "daily"));
    int h, m;
    if (parse_at(at, &h, &m) < 0) {
        kh_err_set(err, KH_E_INVALID, "daily: a time HH:MM (UTC), 00:00 to 23:59");
        return NULL;
    }
    json_t *st = kh_backup_store_get(b, store, err);
    if (!st)
        return NULL;
    json_decref(st);
    char *id = NULL;
    json_t *v = vm_row(b, vm, &id, err);
    if (!v)
        return NULL;
    json_decref(v);
    json_t *keep = json_object();
    for (size_t k = 0; k < 4; k++) {
        json_t *kv = json_object_get(body, keep_keys[k]);
        if (kv)
            json_object_set(keep, keep_keys[k], kv);
    }
    char *keep_text = json_object_size(keep) ? json_dumps(keep, JSON_COMPACT) : NULL;
    json_decref(keep);
    /* a new time today that has already passed waits until tomorrow */
    sqlite3_stmt *s = kh_store_prep(b->store, "INSERT OR REPLACE INTO backup_schedules (vm_id, "
                                              "vm_name, store, at, last_run) VALUES (?, ?, ?, "
                                              "?, ?)", err);
    int rc = -1;
    if (s) {
        double now = kh_wall_time();
        kh_store_bind_text(s, 1, id);
        kh_store_bind_text(s, 2, vm);
        kh_store_bind_text(s, 3, store);
        kh_store_bind_text(s, 4, at);
        sqlite3_bind_double(s, 5, due_today(at, now) < now - 60 ? now : 0);
        rc = kh_store_step_done(b->store, s, "setting a backup schedule", err);
    }
    if (rc == 0)
        rc = set_keep(b, id, keep_text, err);
    free(keep_text);
    free(id);
    return rc < 0 ? NULL : kh_backup_schedule_get(b, vm, err);
}

int kh_backup_schedule_delete(kh_backups *b, const char *vm, kh_err *err)
{
    json_t *cur = kh_backup_schedule_get(b, vm, err);
    if (!cur)
        return -1;
    json_decref(cur);
    char *id = NULL;
    json_t *v = vm_row(b, vm, &id, err);
    json_decref(v);
    sqlite3_stmt *s = kh_store_prep(b->store, "DELETE FROM backup_schedules WHERE vm_id = ?",
                                    err);
    int rc = -1;
    if (s) {
        kh_store_bind_text(s, 1, id);
        rc = kh_store_step_done(b->store, s, "deleting a backup schedule", err);
    }
    if (rc == 0)
        rc = set_keep(b, id, NULL, err);
    free(id);
    return rc;
}
