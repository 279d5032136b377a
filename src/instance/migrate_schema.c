/* migrate_schema.c - instance/migrate.c's table: migrations (the phase of
 * each live migration this host takes part in, as source or target; kept
 * after the end for the record). Pure data, compiled into the store library
 * and registered in store/migrations.c. */
#include "store/migrations.h"

/* 11: one row per VM id with a migration (the last one). */
const char kh_migrate_schema_migrations[] =
    "CREATE TABLE IF NOT EXISTS migrations ("
    "  vm_id TEXT PRIMARY KEY,"
    "  vm_name TEXT NOT NULL,"
    "  role TEXT NOT NULL CHECK (role IN ('source', 'target')),"
    "  phase TEXT NOT NULL,"
    "  peer TEXT NOT NULL,"
    "  error TEXT,"
    "  started_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL"
    ");";

/* 13: the local disks a target made for an incoming migration ("pool/name"
 * JSON array), deleted when it rolls back (also after a restart). */
const char kh_migrate_schema_disks[] =
    "CREATE TABLE IF NOT EXISTS migration_disks ("
    "  vm_id TEXT PRIMARY KEY,"
    "  disks TEXT NOT NULL"
    ");";
