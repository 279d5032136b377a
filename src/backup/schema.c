/* schema.c - the backup module's tables: backup_stores, backups and
 * backup_schedules (rows in backup/backup.c and schedule.c). Pure data,
 * compiled into the store library and registered in store/migrations.c. */
#include "store/migrations.h"

/* 24: backup stores and committed backups. A backup row is written only
 * once its chunks and indexes are on disk (the commit); "record" is its
 * JSON (disks, their bitmaps and sizes, figures). */
const char kh_backup_schema_stores_backups[] =
    "CREATE TABLE IF NOT EXISTS backup_stores ("
    "  name TEXT PRIMARY KEY,"
    "  id TEXT NOT NULL,"
    "  path TEXT NOT NULL UNIQUE,"
    "  encrypted INTEGER NOT NULL,"
    "  wrapped_key TEXT,"
    "  created_at REAL NOT NULL"
    ");"
    "CREATE TABLE IF NOT EXISTS backups ("
    "  id TEXT PRIMARY KEY,"
    "  store TEXT NOT NULL REFERENCES backup_stores(name),"
    "  vm_id TEXT NOT NULL,"
    "  vm_name TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  base_id TEXT,"
    "  created_at REAL NOT NULL,"
    "  record TEXT NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS backups_vm ON backups(store, vm_id, created_at);";

/* 25: nightly schedules, one per VM (backup/schedule.c). */
const char kh_backup_schema_schedules[] =
    "CREATE TABLE IF NOT EXISTS backup_schedules ("
    "  vm_id TEXT PRIMARY KEY,"
    "  vm_name TEXT NOT NULL,"
    "  store TEXT NOT NULL,"
    "  at TEXT NOT NULL,"
    "  last_run REAL NOT NULL DEFAULT 0"
    ");";

/* 30: a schedule's retention (keep_* rules as JSON, applied after each
 * scheduled backup) and whether that prune is still due (a prune waits
 * while another operation holds the store; the tick retries it). A table
 * of its own: CREATE ... IF NOT EXISTS stays right when a step runs again. */
const char kh_backup_schema_schedule_keep[] =
    "CREATE TABLE IF NOT EXISTS backup_schedule_keep ("
    "  vm_id TEXT PRIMARY KEY,"
    "  keep TEXT NOT NULL,"
    "  prune_due INTEGER NOT NULL DEFAULT 0"
    ");";
