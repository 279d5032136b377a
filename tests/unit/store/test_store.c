/* The store: migrations, VM rows, tasks, constraint errors, reopen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kh_test.h"
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
        CHECK(st && kh_store_sg_foreach(st, sg_cb, spec, &err) == 0);
        CHECK_STR(spec, "{\"name\":\"web\",\"rules\":[{\"direction\":\"in\",\"proto\":\"tcp\"},"
                        "{\"cidr\":\"10.0.0.0/8\",\"direction\":\"in\",\"proto\":\"any\"}]}");
        kh_store_close(st);
    }
    free(cmd);
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
    kh_fs_rm_rf(dir, NULL);
    TEST_DONE();
}
