/* The cluster module without etcd: the configuration's round trip through
 * SQLite (migration 11), and a host in no cluster (the views, the refusals). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kh_test.h"
#include "cluster/cluster.h"
#include "cluster/cluster_int.h"
#include "util/fs.h"
#include "util/mem.h"

static char dir[] = "/tmp/kh-test-cluster-XXXXXX";

static void test_conf_round_trip(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/db", dir);
    kh_store *st = kh_store_open(path, &err);
    CHECK(st != NULL);
    kh_cluster_conf c;
    CHECK(kh_cluster_conf_load(st, &c, &err) == 0);
    kh_cluster_conf_fini(&c);
    kh_cluster_conf w = { .name = "lab", .cluster_id = "11111111-1111-4111-8111-111111111111",
                          .host_id = "22222222-2222-4222-8222-222222222222", .mode = "local",
                          .created_at = 12.5 };
    w.initial_cluster = xstrdup("22222222-2222-4222-8222-222222222222=http://10.0.0.1:2380");
    w.endpoints = xstrdup("http://10.0.0.1:2379");
    CHECK(kh_cluster_conf_save(st, &w, &err) == 0);
    CHECK(kh_cluster_conf_save(st, &w, &err) == 0); /* one row: replaced */
    CHECK(kh_cluster_conf_load(st, &c, &err) == 1);
    CHECK_STR(c.name, "lab");
    CHECK_STR(c.host_id, w.host_id);
    CHECK_STR(c.mode, "local");
    CHECK_STR(c.initial_cluster, w.initial_cluster);
    CHECK_STR(c.endpoints, w.endpoints);
    CHECK(c.created_at == 12.5);
    kh_cluster_conf_fini(&c);
    CHECK(kh_cluster_conf_clear(st, &err) == 0);
    CHECK(kh_cluster_conf_load(st, &c, &err) == 0);
    kh_cluster_conf_fini(&c);
    kh_cluster_conf_fini(&w);
    kh_store_close(st);
    free(path);
}

static void usage(void *opaque, unsigned *vms, uint64_t *free_mib)
{
    (void)opaque;
    *vms = 3;
    *free_mib = 512;
}

static void test_single_host(void)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/db2", dir);
    kh_store *st = kh_store_open(path, &err);
    uv_loop_t *loop = uv_default_loop();
    kh_cluster_config cfg = { .state_dir = dir, .instance = "h1", .usage = usage };
    kh_cluster *c = kh_cluster_new(loop, st, &cfg, &err);
    CHECK(c != NULL && !kh_cluster_enabled(c));
    json_t *s = kh_cluster_status_json(c);
    CHECK(json_is_false(json_object_get(s, "enabled")));
    CHECK_STR(json_string_value(json_object_get(s, "host_name")), "h1");
    json_decref(s);
    json_t *h = kh_cluster_hosts_json(c);
    json_t *one = json_array_get(json_object_get(h, "hosts"), 0);
    CHECK(json_array_size(json_object_get(h, "hosts")) == 1);
    CHECK_STR(json_string_value(json_object_get(one, "state")), "online");
    CHECK(json_integer_value(json_object_get(one, "vms")) == 3);
    CHECK(json_integer_value(json_object_get(one, "memory_free_mib")) == 512);
    CHECK(json_is_null(json_object_get(one, "cert_fingerprint")));
    json_decref(h);
    CHECK(kh_cluster_writable(c, &err) < 0 && err.code == KH_E_INVALID);
    kh_err_clear(&err);
    CHECK(kh_cluster_token(c, 60, &err) == NULL && err.code == KH_E_INVALID);
    kh_err_clear(&err);
    /* no address for the others to reach: create says how to give one */
    CHECK(kh_cluster_create_async(c, "lab", NULL, NULL, &err) < 0 && err.code == KH_E_INVALID &&
          strstr(err.msg, "--advertise"));
    kh_err_clear(&err);
    CHECK(kh_cluster_leave_async(c, NULL, NULL, &err) < 0 && err.code == KH_E_INVALID);
    kh_cluster_free(c);
    uv_run(loop, UV_RUN_DEFAULT);
    kh_store_close(st);
    free(path);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_conf_round_trip);
    RUN(test_single_host);
    kh_fs_rm_rf(dir, NULL);
    TEST_DONE();
}
