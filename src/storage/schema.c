/* schema.c - storage's tables: pools, volumes, templates, snapshots and
 * snapshot_current (rows in pool.c, volume.c, template.c, snapshot.c).
 * Pure data, compiled into the store library and registered in
 * store/migrations.c. */
#include "store/migrations.h"

/* 2: storage pools and volumes. */
const char kh_storage_schema_pools_volumes[] =
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
    "CREATE INDEX volumes_backing ON volumes(backing_id);";

/* 5: encrypted volumes (their wrapped key), templates, snapshots. */
const char kh_storage_schema_keys_templates_snapshots[] =
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
    ");";

/* 6: the snapshot tree: each snapshot's parent (the snapshot the VM was at
 * when it was taken) and each VM's current one. */
const char kh_storage_schema_snapshot_tree[] =
    "ALTER TABLE snapshots ADD COLUMN parent TEXT;"
    "CREATE TABLE snapshot_current ("
    "  vm_id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL"
    ");";

/* 8: templates, snapshots and the current snapshot belong to their VM:
 * foreign keys with ON DELETE CASCADE, so deleting the VM row deletes them
 * in the same statement. SQLite cannot add a key to a table, so each is
 * rebuilt; rows of VMs that no longer exist (left by the old three-step
 * delete) are dropped on the way. */
const char kh_storage_schema_vm_cascade[] =
    "CREATE TABLE templates_new ("
    "  vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,"
    "  created_at REAL NOT NULL"
    ");"
    "INSERT INTO templates_new (vm_id, created_at) "
    "  SELECT vm_id, created_at FROM templates WHERE vm_id IN (SELECT id FROM vms);"
    "DROP TABLE templates;"
    "ALTER TABLE templates_new RENAME TO templates;"
    "CREATE TABLE snapshots_new ("
    "  vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  memory INTEGER NOT NULL,"
    "  created_at REAL NOT NULL,"
    "  parent TEXT,"
    "  PRIMARY KEY (vm_id, name)"
    ");"
    "INSERT INTO snapshots_new (vm_id, name, memory, created_at, parent) "
    "  SELECT vm_id, name, memory, created_at, parent FROM snapshots "
    "  WHERE vm_id IN (SELECT id FROM vms);"
    "DROP TABLE snapshots;"
    "ALTER TABLE snapshots_new RENAME TO snapshots;"
    "CREATE TABLE snapshot_current_new ("
    "  vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL"
    ");"
    "INSERT INTO snapshot_current_new (vm_id, name) "
    "  SELECT vm_id, name FROM snapshot_current WHERE vm_id IN (SELECT id FROM vms);"
    "DROP TABLE snapshot_current;"
    "ALTER TABLE snapshot_current_new RENAME TO snapshot_current;";

/* 12: a pool may be shared by the cluster's hosts (the same directory on
 * each, such as an NFS mount): live migration leaves its volumes in place. */
const char kh_storage_schema_pool_shared[] =
    "CREATE TABLE IF NOT EXISTS pool_shared ("
    "  pool_id TEXT PRIMARY KEY REFERENCES pools(id) ON DELETE CASCADE"
    ");";
