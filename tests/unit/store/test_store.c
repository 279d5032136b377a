/* The store: migrations, VM rows, tasks, constraint errors, reopen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kh_test.h"
#include <sqlite3.h>

#include "net/netdb.h"
#include "store/migrations.h"
#include "store/store.h"
#include "util/fs.h"
#include "util/mem.h"

static char dir[] = "/tmp/kh-store-XXXXXX";

static int count_cb(const kh_vm_row *row, void *opaque)
{
    (void)row;
    (*(int *)opaque)++;
    return 0;
}

static int find_cb(const kh_vm_row *row, void *opaque)
{
    kh_vm_row *out = opaque;
    if (strcmp(row->id, out->id) != 0)
        return 0;
    out->pid = row->pid;
    out->pid_start = row->pid_start;
    out->state = xstrdup(row->state);
    out->spec_json = xstrdup(row->spec_json);
    return 1;
}

static void test_vms(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/db", dir);
    kh_store *st = kh_store_open(path, &err);
    CHECK(st != NULL);
    CHECK(kh_store_schema_version(st) == kh_store_schema_latest());

    char name[] = "a", spec[] = "{\"name\":\"a\"}", running[] = "running";
    kh_vm_row row = { .id = "11111111-1111-4111-8111-111111111111", .name = name,
                      .spec_json = spec, .created_at = 1, .updated_at = 1 };
    CHECK(kh_store_vm_insert(st, &row, &err) == 0);
    kh_vm_row dup = row;
    memcpy(dup.id, "22222222-2222-4222-8222-222222222222", 37);
    CHECK(kh_store_vm_insert(st, &dup, &err) < 0);
    CHECK(err.code == KH_E_CONFLICT);
    CHECK(strstr(err.msg, "already exists") != NULL);
    kh_err_clear(&err);

    row.state = running;
    row.pid = 4242;
    row.pid_start = 99;
    CHECK(kh_store_vm_update_runtime(st, &row, &err) == 0);
    CHECK(kh_store_vm_update_spec(st, row.id, "{\"name\":\"a\",\"vcpus\":2}", 2, &err) == 0);
    kh_vm_row missing = row;
    memcpy(missing.id, "33333333-3333-4333-8333-333333333333", 37);
    CHECK(kh_store_vm_update_runtime(st, &missing, &err) < 0);
    CHECK(err.code == KH_E_NOTFOUND);
    kh_err_clear(&err);
    kh_store_close(st);

    /* Reopen: the data and the schema version survive. */
    st = kh_store_open(path, &err);
    CHECK(st != NULL);
    CHECK(kh_store_schema_version(st) == kh_store_schema_latest());
    kh_vm_row found = { .id = "11111111-1111-4111-8111-111111111111" };
    CHECK(kh_store_vm_foreach(st, find_cb, &found, &err) == 1);
    CHECK(found.pid == 4242 && found.pid_start == 99);
    CHECK_STR(found.state, "running");
    CHECK_STR(found.spec_json, "{\"name\":\"a\",\"vcpus\":2}");
    free(found.state);
    free(found.spec_json);
    int n = 0;
    kh_store_vm_foreach(st, count_cb, &n, &err);
    CHECK(n == 1);
    CHECK(kh_store_vm_delete(st, row.id, &err) == 0);
    n = 0;
    kh_store_vm_foreach(st, count_cb, &n, &err);
    CHECK(n == 0);
    kh_store_close(st);
    free(path);
}

static void test_tasks(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/db2", dir);
    kh_store *st = kh_store_open(path, &err);
    char kind[] = "vm.start", vm[] = "a", state[] = "running";
    kh_task_row t = { .id = "44444444-4444-4444-8444-444444444444", .kind = kind,
                      .vm_name = vm, .state = state, .created_at = 5 };
    CHECK(kh_store_task_put(st, &t, &err) == 0);
    CHECK(kh_store_task_fail_unfinished(st, "daemon stopped", 6, &err) == 0);
    kh_task_row got;
    CHECK(kh_store_task_get(st, t.id, &got, &err) == 0);
    CHECK_STR(got.state, "failed");
    CHECK_STR(got.error_message, "daemon stopped");
    kh_task_row_clear(&got);
    CHECK(kh_store_task_get(st, "55555555-5555-4555-8555-555555555555", &got, &err) < 0);
    CHECK(err.code == KH_E_NOTFOUND);
    kh_store_close(st);
    free(path);
}

static void test_newer_schema_refused(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/db3", dir);
    kh_store *st = kh_store_open(path, &err);
    kh_store_close(st);
    char *cmd = xasprintf("sqlite3 %s 'PRAGMA user_version=99' 2>/dev/null", path);
    if (system(cmd) == 0) {
        st = kh_store_open(path, &err);
        CHECK(st == NULL);
        CHECK(strstr(err.msg, "newer") != NULL);
    }
    free(cmd);
    free(path);
}

static int sg_cb(const char *name, const char *spec_json, double created_at, void *opaque)
{
    (void)name;
    (void)created_at;
    snprintf(opaque, 256, "%s", spec_json);
    return 0;
}

/* Migration 7: a rule stored as "cidr":"0.0.0.0/0" (how a rule without a
 * cidr was saved while groups filtered IPv4 only) loses its cidr. */
static void test_sg_cidr_migration(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/db4", dir);
    kh_store *st = kh_store_open(path, &err);
    kh_store_close(st);
    char *cmd = xasprintf(
        "sqlite3 %s 'PRAGMA user_version=6; INSERT INTO security_groups VALUES (\"web\", "
        "\"{\"\"name\"\":\"\"web\"\",\"\"rules\"\":[{\"\"cidr\"\":\"\"0.0.0.0/0\"\","
        "\"\"direction\"\":\"\"in\"\",\"\"proto\"\":\"\"tcp\"\"},{\"\"cidr\"\":"
        "\"\"10.0.0.0/8\"\",\"\"direction\"\":\"\"in\"\",\"\"proto\"\":\"\"any\"\"}]}\", 1)' "
        "2>/dev/null",
        path);
    if (system(cmd) == 0) {
        st = kh_store_open(path, &err);
        CHECK(st != NULL && kh_store_schema_version(st) == kh_store_schema_latest());
        char spec[256] = "";
        CHECK(st && kh_netdb_secgroup_foreach(st, sg_cb, spec, &err) == 0);
        CHECK_STR(spec, "{\"name\":\"web\",\"rules\":[{\"direction\":\"in\",\"proto\":\"tcp\"},"
                        "{\"cidr\":\"10.0.0.0/8\",\"direction\":\"in\",\"proto\":\"any\"}]}");
        kh_store_close(st);
    }
    free(cmd);
    free(path);
}

/* The schema as the single migration list in store.c left it at version 7
 * (copied from that list, before tables moved to their owners' schema
 * files): a database made by the old main. */
static const char *const old_schema[] = {
    "CREATE TABLE vms (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, spec TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'stopped', state_reason TEXT,"
    "  pid INTEGER NOT NULL DEFAULT 0, pid_start INTEGER NOT NULL DEFAULT 0, accel TEXT,"
    "  created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    "  started_at REAL NOT NULL DEFAULT 0);"
    "CREATE TABLE tasks (id TEXT PRIMARY KEY, kind TEXT NOT NULL, vm_name TEXT,"
    "  state TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0, message TEXT,"
    "  error_code TEXT, error_message TEXT, result TEXT, created_at REAL NOT NULL,"
    "  finished_at REAL NOT NULL DEFAULT 0);"
    "CREATE INDEX tasks_created ON tasks(created_at);",
    "CREATE TABLE pools (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"
    "  path TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);"
    "CREATE TABLE volumes (id TEXT PRIMARY KEY, pool_id TEXT NOT NULL REFERENCES pools(id),"
    "  name TEXT NOT NULL, format TEXT NOT NULL, capacity INTEGER NOT NULL,"
    "  backing_id TEXT REFERENCES volumes(id), readonly INTEGER NOT NULL DEFAULT 0,"
    "  created_at REAL NOT NULL, UNIQUE (pool_id, name));"
    "CREATE INDEX volumes_backing ON volumes(backing_id);",
    "CREATE TABLE networks (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  spec TEXT NOT NULL, created_at REAL NOT NULL);",
    "CREATE TABLE security_groups (name TEXT PRIMARY KEY, spec TEXT NOT NULL,"
    "  created_at REAL NOT NULL);",
    "ALTER TABLE volumes ADD COLUMN key_wrapped TEXT;"
    "CREATE TABLE templates (vm_id TEXT PRIMARY KEY, created_at REAL NOT NULL);"
    "CREATE TABLE snapshots (vm_id TEXT NOT NULL, name TEXT NOT NULL,"
    "  memory INTEGER NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (vm_id, name));",
    "ALTER TABLE snapshots ADD COLUMN parent TEXT;"
    "CREATE TABLE snapshot_current (vm_id TEXT PRIMARY KEY, name TEXT NOT NULL);",
    "UPDATE security_groups SET spec = replace(spec, '\"cidr\":\"0.0.0.0/0\",', '');",
};

#define VM_A "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define VM_B "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
#define VM_GONE "dddddddd-dddd-4ddd-8ddd-dddddddddddd"

static long long count(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long n = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* A database made by the old code (schema version 7, the old CREATE
 * statements, rows of two VMs plus rows left behind by a VM deleted with
 * the old three-statement delete) opens with the new code: it migrates to
 * the latest version, keeps every row that has a VM, drops the orphans,
 * and from then on deleting a VM deletes its rows in the same
 * transaction. */
static void test_old_schema_upgrades(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/old.db", dir);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    for (size_t i = 0; i < KH_ARRAY_LEN(old_schema); i++)
        CHECK(sqlite3_exec(db, old_schema[i], NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
        "INSERT INTO vms (id, name, spec, created_at, updated_at) VALUES"
        "  ('" VM_A "', 'a', '{}', 1, 1), ('" VM_B "', 'b', '{}', 1, 1);"
        "INSERT INTO tasks (id, kind, vm_name, state, created_at) VALUES"
        "  ('t1', 'vm.start', 'gone', 'succeeded', 1);"
        "INSERT INTO templates VALUES ('" VM_A "', 1), ('" VM_GONE "', 1);"
        "INSERT INTO snapshots VALUES ('" VM_A "', 's1', 0, 1, NULL),"
        "  ('" VM_A "', 's2', 1, 2, 's1'), ('" VM_B "', 's1', 0, 1, NULL),"
        "  ('" VM_GONE "', 'x', 0, 1, NULL);"
        "INSERT INTO snapshot_current VALUES ('" VM_A "', 's2'), ('" VM_GONE "', 'x');"
        "INSERT INTO networks VALUES ('n1', 'net', '{}', 1);"
        "PRAGMA user_version = 7;",
        NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    kh_store *st = kh_store_open(path, &err);
    CHECK(st != NULL);
    if (!st) {
        fprintf(stderr, "open: %s\n", err.msg);
        free(path);
        return;
    }
    CHECK(kh_store_schema_version(st) == kh_store_schema_latest());
    CHECK(kh_store_schema_latest() == 13); /* 9: alert_config, 10: cluster, 11: migrations,
                                           * 12: pool_shared, 13: migration_disks */
    CHECK(count(path, "SELECT count(*) FROM alert_config") == 0);
    CHECK(count(path, "SELECT count(*) FROM vms") == 2);
    CHECK(count(path, "SELECT count(*) FROM tasks") == 1);
    CHECK(count(path, "SELECT count(*) FROM networks") == 1);
    CHECK(count(path, "SELECT count(*) FROM snapshots") == 3);
    CHECK(count(path, "SELECT count(*) FROM snapshots WHERE vm_id = '" VM_GONE "'") == 0);
    CHECK(count(path, "SELECT count(*) FROM templates") == 1);
    CHECK(count(path, "SELECT count(*) FROM snapshot_current") == 1);
    CHECK(count(path, "SELECT count(*) FROM snapshots WHERE name = 's2' AND parent = 's1'") ==
          1);

    /* Foreign keys are on: a snapshot of no VM is refused. */
    CHECK(kh_store_exec(st, "INSERT INTO snapshots VALUES ('" VM_GONE "', 'y', 0, 1, NULL)",
                        &err) < 0);
    kh_err_clear(&err);

    /* One call deletes the VM and everything of it. */
    CHECK(kh_store_vm_delete(st, VM_A, &err) == 0);
    CHECK(count(path, "SELECT count(*) FROM snapshots") == 1);
    CHECK(count(path, "SELECT count(*) FROM templates") == 0);
    CHECK(count(path, "SELECT count(*) FROM snapshot_current") == 0);
    CHECK(count(path, "SELECT count(*) FROM tasks") == 1);
    CHECK(kh_store_vm_delete(st, VM_A, &err) < 0);
    CHECK(err.code == KH_E_NOTFOUND);
    kh_err_clear(&err);
    kh_store_close(st);

    /* Reopening a migrated database applies nothing. */
    st = kh_store_open(path, &err);
    CHECK(st != NULL && kh_store_schema_version(st) == kh_store_schema_latest());
    kh_store_close(st);
    free(path);
}

/* Transactions nest (savepoints) and a rollback undoes the inner part only. */
static void test_transactions(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/tx.db", dir);
    kh_store *st = kh_store_open(path, &err);
    CHECK(st != NULL);
    CHECK(kh_store_begin(st, &err) == 0);
    CHECK(kh_store_exec(st, "INSERT INTO networks VALUES ('n1', 'one', '{}', 1)", &err) == 0);
    CHECK(kh_store_begin(st, &err) == 0);
    CHECK(kh_store_exec(st, "INSERT INTO networks VALUES ('n2', 'two', '{}', 1)", &err) == 0);
    kh_store_rollback(st);
    CHECK(kh_store_commit(st, &err) == 0);
    CHECK(count(path, "SELECT count(*) FROM networks") == 1);
    CHECK(kh_store_begin(st, &err) == 0);
    CHECK(kh_store_exec(st, "INSERT INTO networks VALUES ('n3', 'three', '{}', 1)", &err) == 0);
    kh_store_rollback(st);
    CHECK(count(path, "SELECT count(*) FROM networks") == 1);
    CHECK(kh_store_commit(st, &err) < 0); /* none open */
    kh_err_clear(&err);
    /* The list is ordered 1, 2, ... with no gap. */
    for (size_t i = 0; i < kh_store_nmigrations; i++)
        CHECK(kh_store_migrations[i].version == (int)i + 1);
    kh_store_close(st);
    free(path);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_vms);
    RUN(test_tasks);
    RUN(test_newer_schema_refused);
    RUN(test_sg_cidr_migration);
    RUN(test_old_schema_upgrades);
    RUN(test_transactions);
    kh_fs_rm_rf(dir, NULL);
    TEST_DONE();
}
