/* migrations.c - the one ordered list of schema steps the store walks; each
 * step's SQL lives in the schema file of the module that owns its tables. */
#include "store/migrations.h"

#include "util/mem.h"

const kh_store_migration kh_store_migrations[] = {
    { 1, "store", kh_store_schema_vms_tasks },
    { 2, "storage", kh_storage_schema_pools_volumes },
    { 3, "net", kh_net_schema_networks },
    { 4, "net", kh_net_schema_security_groups },
    { 5, "storage", kh_storage_schema_keys_templates_snapshots },
    { 6, "storage", kh_storage_schema_snapshot_tree },
    { 7, "net", kh_net_schema_sg_cidr_any },
    { 8, "storage", kh_storage_schema_vm_cascade },
    { 9, "alert", kh_alert_schema_config },
    { 10, "cluster", kh_cluster_schema_config },
    { 11, "migrate", kh_migrate_schema_migrations },
    { 12, "storage", kh_storage_schema_pool_shared },
    { 13, "migrate", kh_migrate_schema_disks },
    { 14, "cluster", kh_cluster_schema_mirror },
    /* auth: 19-22 */
    { 19, "auth", kh_auth_schema_access },
    { 20, "auth", kh_auth_schema_audit },
    /* confine (issue 12): per-VM QEMU uids */
    { 23, "vmuid", kh_vmuid_schema_uids },
    { 24, "backup", kh_backup_schema_stores_backups },
    { 25, "backup", kh_backup_schema_schedules },
    /* bkperf: schedules prune */
    { 30, "backup", kh_backup_schema_schedule_keep },
};

const size_t kh_store_nmigrations = KH_ARRAY_LEN(kh_store_migrations);
