/* vmuid_schema.c - instance/vmuid.c's table: vm_uids (the uid, and gid of
 * the same number, each VM's QEMU runs as). Pure data, compiled into the
 * store library and registered in store/migrations.c. */
#include "store/migrations.h"

/* 23: one row per VM that has started since per-VM uids exist; the row goes
 * with the VM (the uid is free again once its files were handed back). */
const char kh_vmuid_schema_uids[] =
    "CREATE TABLE IF NOT EXISTS vm_uids ("
    "  vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,"
    "  uid INTEGER NOT NULL UNIQUE"
    ");";
