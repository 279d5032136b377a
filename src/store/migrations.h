/* migrations.h - the one ordered list of schema steps, and the steps each
 * table owner declares in its own schema file.
 *
 * A database's PRAGMA user_version is the version of the last step applied;
 * kh_store_open() applies the later steps in list order, one transaction
 * each. Never edit a released step: add a new one with the next version, in
 * the owner's schema file, and register it at the end of the list in
 * store/migrations.c. Versions 1-7 are the steps of the single list that
 * store.c used to hold, so databases made by older builds open and upgrade.
 */
#ifndef KH_STORE_MIGRATIONS_H
#define KH_STORE_MIGRATIONS_H

#include <stddef.h>

typedef struct kh_store_migration {
    int version;       /* user_version once applied; 1, 2, ... in list order */
    const char *owner; /* the module that owns the tables it touches */
    const char *sql;
} kh_store_migration;

extern const kh_store_migration kh_store_migrations[];
extern const size_t kh_store_nmigrations;

/* store/schema.c: vms, tasks */
extern const char kh_store_schema_vms_tasks[];

/* storage/schema.c: pools, volumes, templates, snapshots, snapshot_current */
extern const char kh_storage_schema_pools_volumes[];
extern const char kh_storage_schema_keys_templates_snapshots[];
extern const char kh_storage_schema_snapshot_tree[];
extern const char kh_storage_schema_vm_cascade[];

/* net/schema.c: networks, security_groups */
extern const char kh_net_schema_networks[];
extern const char kh_net_schema_security_groups[];
extern const char kh_net_schema_sg_cidr_any[];

/* instance/alert_schema.c: alert_config */
extern const char kh_alert_schema_config[];

/* instance/migrate_schema.c: migrations */
extern const char kh_migrate_schema_migrations[];
/* mig: 12-13 */
extern const char kh_storage_schema_pool_shared[];
extern const char kh_migrate_schema_disks[];

/* instance/vmuid_schema.c: vm_uids */
extern const char kh_vmuid_schema_uids[];

/* cluster/schema.c: cluster */
extern const char kh_cluster_schema_config[];
extern const char kh_cluster_schema_mirror[];

/* auth/schema.c: users, groups, roles, ACL, tokens, projects, objects, audit */
extern const char kh_auth_schema_access[];
extern const char kh_auth_schema_audit[];
/* backup/schema.c: backup_stores, backups, backup_schedules */
extern const char kh_backup_schema_stores_backups[];
extern const char kh_backup_schema_schedules[];
extern const char kh_backup_schema_schedule_keep[];

#endif
