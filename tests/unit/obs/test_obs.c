/* Resource control and observability: the exposition formatter, the
 * history ring, limit validation, and the quota writers on a cgroup tree
 * made in a temp dir. */
#include <math.h>
#include <sched.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kh_test.h"
#include "conf/limits.h"
#include "conf/vm_spec.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/prom.h"
#include "util/series.h"
#include "instance/alert.h"
#include "instance/console.h"
#include "instance/quota.h"
#include "store/store.h"

static void test_prom_values(void)
{
    char v[32];
    kh_prom_format_value(0, v);
    CHECK_STR(v, "0");
    kh_prom_format_value(25276502016.0, v);
    CHECK_STR(v, "25276502016");
    kh_prom_format_value(-3, v);
    CHECK_STR(v, "-3");
    kh_prom_format_value(0.1, v);
    CHECK_STR(v, "0.1");
    kh_prom_format_value(2205.2, v);
    CHECK_STR(v, "2205.2");
    kh_prom_format_value(1.0 / 3, v);
    CHECK(strtod(v, NULL) == 1.0 / 3);
    kh_prom_format_value(NAN, v);
    CHECK_STR(v, "NaN");
    kh_prom_format_value(INFINITY, v);
    CHECK_STR(v, "+Inf");
    kh_prom_format_value(-INFINITY, v);
    CHECK_STR(v, "-Inf");
    kh_prom_format_value(1e300, v);
    CHECK(strtod(v, NULL) == 1e300);
}

static void test_prom_text(void)
{
    kh_prom *p = kh_prom_new();
    kh_prom_family(p, "kvmhost_vms", "gauge", "VMs by\nstate \\ kind");
    const char *l[] = { "state", "running", NULL };
    kh_prom_sample(p, "kvmhost_vms", l, 3);
    kh_prom_sample(p, "kvmhost_up", NULL, 1);
    /* A hostile VM name stays inside its quotes. */
    const char *evil[] = { "vm", "a\"b\\c\nd}", "id", "x", NULL };
    kh_prom_sample(p, "kvmhost_vm_vcpus", evil, 2);
    size_t len;
    char *text = kh_prom_steal(p, &len);
    CHECK(len == strlen(text));
    CHECK_STR(text, "# HELP kvmhost_vms VMs by\\nstate \\\\ kind\n"
                    "# TYPE kvmhost_vms gauge\n"
                    "kvmhost_vms{state=\"running\"} 3\n"
                    "kvmhost_up 1\n"
                    "kvmhost_vm_vcpus{vm=\"a\\\"b\\\\c\\nd}\",id=\"x\"} 2\n");
    free(text);
}

static void test_prom_histogram(void)
{
    kh_prom *p = kh_prom_new();
    const double bounds[] = { 0.01, 0.1, 1 };
    const uint64_t counts[] = { 2, 0, 3, 1 }; /* per bucket; the last is +Inf */
    const char *l[] = { "route", "/metrics", NULL };
    kh_prom_histogram(p, "lat_seconds", l, bounds, counts, 3, 7.5);
    CHECK_STR(kh_prom_text(p, NULL),
              "lat_seconds_bucket{route=\"/metrics\",le=\"0.01\"} 2\n"
              "lat_seconds_bucket{route=\"/metrics\",le=\"0.1\"} 2\n"
              "lat_seconds_bucket{route=\"/metrics\",le=\"1\"} 5\n"
              "lat_seconds_bucket{route=\"/metrics\",le=\"+Inf\"} 6\n"
              "lat_seconds_sum{route=\"/metrics\"} 7.5\n"
              "lat_seconds_count{route=\"/metrics\"} 6\n");
    kh_prom_free(p);
    kh_prom_free(NULL);
}

static void test_series(void)
{
    kh_series *s = kh_series_new(4, 2);
    double t;
    CHECK(kh_series_count(s) == 0);
    CHECK(kh_series_at(s, 0, &t) == NULL);
    CHECK(kh_series_first_since(s, 0) == 0);
    for (int i = 1; i <= 3; i++) {
        double v[2] = { i, i * 10.0 };
        kh_series_push(s, 100.0 + i, v);
    }
    CHECK(kh_series_count(s) == 3);
    const double *v = kh_series_at(s, 0, &t);
    CHECK(v && t == 101 && v[0] == 1 && v[1] == 10);
    /* Wrap: 6 pushes into 4 slots keep the newest 4, oldest first. */
    for (int i = 4; i <= 6; i++) {
        double w[2] = { i, i * 10.0 };
        kh_series_push(s, 100.0 + i, w);
    }
    CHECK(kh_series_count(s) == 4);
    CHECK(kh_series_width(s) == 2);
    for (size_t i = 0; i < 4; i++) {
        v = kh_series_at(s, i, &t);
        CHECK(v && t == 103.0 + (double)i && v[0] == 3.0 + (double)i);
    }
    CHECK(kh_series_at(s, 4, &t) == NULL);
    CHECK(kh_series_first_since(s, 0) == 0);
    CHECK(kh_series_first_since(s, 104.5) == 2);
    CHECK(kh_series_first_since(s, 105) == 2);
    CHECK(kh_series_first_since(s, 107) == 4);
    kh_series_free(s);
    kh_series_free(NULL);
}

/* Parse a spec with limits; returns the error message or "" on success. */
static const char *spec_err(const char *json)
{
    static kh_err err;
    kh_err_clear(&err);
    json_error_t jerr;
    json_t *j = json_loads(json, 0, &jerr);
    if (!j)
        return "bad test json";
    kh_vm_spec *s = kh_vm_spec_from_json(j, &err);
    json_decref(j);
    if (!s)
        return err.msg;
    kh_vm_spec_free(s);
    return "";
}

#define SPEC(limits)                                                                  \
    "{\"name\":\"a\",\"vcpus\":2,\"memory_mib\":256,\"boot\":{\"kernel\":\"/k\"},"     \
    "\"disks\":[{\"path\":\"/d\",\"format\":\"raw\"}],\"limits\":" limits "}"

static void test_limits_validation(void)
{
    CHECK_STR(spec_err(SPEC("{}")), "");
    CHECK_STR(spec_err(SPEC("{\"cpu_weight\":1,\"cpu_max_percent\":200,\"memory_max_mib\":256,"
                            "\"disk\":[{\"index\":0,\"iops_total\":100,\"iops_total_max\":200,"
                            "\"bps_read\":1048576,\"bps_write\":1}]}")),
              "");
    CHECK_STR(spec_err(SPEC("{\"cpu_max_percent\":201}")),
              "limits.cpu_max_percent: must be at most 200 (100 per vCPU, 2 vCPUs)");
    CHECK_STR(spec_err(SPEC("{\"cpu_max_percent\":0}")),
              "limits.cpu_max_percent: must be an integer between 1 and 25500");
    CHECK_STR(spec_err(SPEC("{\"cpu_weight\":10001}")),
              "limits.cpu_weight: must be an integer between 1 and 10000");
    CHECK_STR(spec_err(SPEC("{\"cpu_weight\":\"5\"}")),
              "limits.cpu_weight: must be an integer between 1 and 10000");
    CHECK_STR(spec_err(SPEC("{\"memory_max_mib\":128}")),
              "limits.memory_max_mib: must be at least memory_mib (256): the guest's RAM "
              "lives in the QEMU process");
    CHECK_STR(spec_err(SPEC("{\"owner\":\"root\"}")), "limits.owner: unknown field");
    CHECK_STR(spec_err(SPEC("[]")), "limits: must be an object");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"index\":1,\"iops_total\":5}]}")),
              "limits.disk[0].index: the VM has no disk 1");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"iops_total\":5}]}")),
              "limits.disk[0].index is required");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"index\":0},{\"index\":0}]}")),
              "limits.disk[1].index: disk 0 appears twice");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"index\":0,\"iops_total\":5,\"iops_read\":1}]}")),
              "limits.disk[0].iops_total cannot be combined with iops_read or iops_write");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"index\":0,\"bps_write_max\":5}]}")),
              "limits.disk[0].bps_write_max needs bps_write");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"index\":0,\"iops_read\":50,\"iops_read_max\":5}]}")),
              "limits.disk[0].iops_read_max must be at least iops_read");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"index\":0,\"iops_total\":0}]}")),
              "limits.disk[0].iops_total: must be an integer between 1 and 1000000000000000");
    CHECK_STR(spec_err(SPEC("{\"disk\":[{\"index\":0,\"rate\":1}]}")),
              "limits.disk[0].rate: unknown field");
    CHECK_STR(spec_err(SPEC("{\"disk\":{}}")),
              "limits.disk: must be an array of at most 16 objects");
    CHECK_STR(spec_err(SPEC("{\"cpu_affinity\":[1,0,3]}")), "");
    CHECK_STR(spec_err(SPEC("{\"balloon_mib\":128}")), "");
    CHECK_STR(spec_err(SPEC("{\"balloon_mib\":257}")),
              "limits.balloon_mib: must be at most memory_mib (256)");
    CHECK_STR(spec_err(SPEC("{\"balloon_mib\":8}")),
              "limits.balloon_mib: must be an integer between 16 and 16777216");
    CHECK_STR(spec_err("{\"name\":\"a\",\"machine\":\"microvm\",\"boot\":{\"kernel\":\"/k\"},"
                       "\"limits\":{\"balloon_mib\":64}}"),
              "limits.balloon_mib: only q35 VMs have a balloon");
    CHECK_STR(spec_err(SPEC("{\"cpu_affinity\":[]}")),
              "limits.cpu_affinity: must be a non-empty array of host CPU numbers");
    CHECK_STR(spec_err(SPEC("{\"cpu_affinity\":[0,2,0]}")),
              "limits.cpu_affinity[2]: 0 appears twice");
    CHECK_STR(spec_err(SPEC("{\"cpu_affinity\":[1024]}")),
              "limits.cpu_affinity[0]: must be an integer between 0 and 1023");
    CHECK_STR(spec_err(SPEC("{\"cpu_affinity\":[-1]}")),
              "limits.cpu_affinity[0]: must be an integer between 0 and 1023");
    CHECK_STR(spec_err(SPEC("{\"cpu_affinity\":\"0-3\"}")),
              "limits.cpu_affinity: must be a non-empty array of host CPU numbers");
    CHECK_STR(spec_err(SPEC("{\"emulator_cpus\":[1],\"iothread_cpus\":[0,1],"
                            "\"numa_nodes\":[0]}")), "");
    CHECK_STR(spec_err(SPEC("{\"emulator_cpus\":[]}")),
              "limits.emulator_cpus: must be a non-empty array of host CPU numbers");
    CHECK_STR(spec_err(SPEC("{\"iothread_cpus\":[1,1]}")),
              "limits.iothread_cpus[1]: 1 appears twice");
    CHECK_STR(spec_err(SPEC("{\"numa_nodes\":[\"0\"]}")),
              "limits.numa_nodes[0]: must be an integer between 0 and 1023");
    CHECK_STR(spec_err(SPEC("{\"numa_nodes\":0}")),
              "limits.numa_nodes: must be a non-empty array of host NUMA node numbers");
}

static void test_limits_patch(void)
{
    kh_err err = KH_ERR_INIT;
    json_t *j = json_loads(SPEC("{\"cpu_weight\":50,\"cpu_max_percent\":100}"), 0, NULL);
    kh_vm_spec *s = kh_vm_spec_from_json(j, &err);
    json_decref(j);
    CHECK(s && s->limits && s->limits->cpu_weight == 50 && s->limits->cpu_max_percent == 100);
    if (!s)
        return;
    /* Key by key: cpu_max_percent changes, cpu_weight stays, null removes. */
    json_t *p = json_loads("{\"limits\":{\"cpu_max_percent\":20,\"memory_max_mib\":512}}", 0, NULL);
    CHECK(kh_vm_spec_patch(s, p, &err) == 0);
    json_decref(p);
    CHECK(s->limits->cpu_weight == 50 && s->limits->cpu_max_percent == 20 &&
          s->limits->memory_max_mib == 512);
    p = json_loads("{\"limits\":{\"cpu_weight\":null}}", 0, NULL);
    CHECK(kh_vm_spec_patch(s, p, &err) == 0);
    json_decref(p);
    CHECK(s->limits->cpu_weight == 0 && s->limits->cpu_max_percent == 20);
    /* A bad patch leaves the spec as it was. */
    p = json_loads("{\"limits\":{\"cpu_max_percent\":900}}", 0, NULL);
    CHECK(kh_vm_spec_patch(s, p, &err) < 0);
    json_decref(p);
    CHECK(s->limits->cpu_max_percent == 20);
    /* vcpus down under the cap is refused too (the whole spec is checked). */
    p = json_loads("{\"vcpus\":1,\"limits\":{\"cpu_max_percent\":150}}", 0, NULL);
    CHECK(kh_vm_spec_patch(s, p, &err) < 0);
    json_decref(p);
    json_t *out = kh_vm_spec_to_json(s);
    char *text = json_dumps(json_object_get(out, "limits"), JSON_COMPACT | JSON_SORT_KEYS);
    CHECK_STR(text, "{\"cpu_max_percent\":20,\"memory_max_mib\":512}");
    free(text);
    json_decref(out);
    /* cpu_affinity is kept sorted, and survives dup. */
    p = json_loads("{\"limits\":{\"cpu_affinity\":[3,1,2]}}", 0, NULL);
    CHECK(kh_vm_spec_patch(s, p, &err) == 0);
    json_decref(p);
    CHECK(s->limits->ncpus == 3 && s->limits->cpus[0] == 1 && s->limits->cpus[2] == 3);
    out = kh_vm_spec_to_json(s);
    text = json_dumps(json_object_get(json_object_get(out, "limits"), "cpu_affinity"),
                      JSON_COMPACT);
    CHECK_STR(text, "[1,2,3]");
    free(text);
    json_decref(out);
    {
        kh_vm_spec *d2 = kh_vm_spec_dup(s);
        CHECK(d2 && d2->limits->cpus != s->limits->cpus && d2->limits->cpus[1] == 2);
        kh_vm_spec_free(d2);
    }
    kh_err_clear(&err);
    kh_limits huge = { .cpus = (unsigned[]){ 1023 }, .ncpus = 1 };
    CHECK(kh_quota_check_host(&huge, &err) < 0 && strstr(err.msg, "no CPU 1023"));
    kh_limits zero = { .cpus = (unsigned[]){ 0 }, .ncpus = 1 };
    CHECK(kh_quota_check_host(&zero, &err) == 0 && kh_quota_check_host(NULL, &err) == 0);
    p = json_loads("{\"limits\":{\"cpu_affinity\":null}}", 0, NULL);
    CHECK(kh_vm_spec_patch(s, p, &err) == 0);
    json_decref(p);
    CHECK(s->limits->ncpus == 0 && s->limits->cpus == NULL);
    kh_vm_spec *d = kh_vm_spec_dup(s);
    CHECK(d && d->limits && d->limits != s->limits && d->limits->memory_max_mib == 512);
    kh_vm_spec_free(d);
    /* limits: null removes all; to_json then has no "limits" key. */
    p = json_loads("{\"limits\":null}", 0, NULL);
    CHECK(kh_vm_spec_patch(s, p, &err) == 0);
    json_decref(p);
    out = kh_vm_spec_to_json(s);
    CHECK(json_object_get(out, "limits") == NULL);
    json_decref(out);
    kh_vm_spec_free(s);
}

static void test_throttle_args(void)
{
    kh_disk_limits d = { .index = 1 };
    d.v[0] = 100; /* iops_total */
    d.v[6] = 300; /* iops_total_max */
    d.v[4] = 1048576; /* bps_read */
    json_t *a = kh_quota_throttle_args(1, false, &d);
    char *text = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
    CHECK_STR(text, "{\"bps\":0,\"bps_rd\":1048576,\"bps_wr\":0,\"id\":\"disk1-dev\",\"iops\":100,"
                    "\"iops_max\":300,\"iops_rd\":0,\"iops_wr\":0}");
    free(text);
    json_decref(a);
    a = kh_quota_throttle_args(0, true, NULL);
    text = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
    CHECK_STR(text, "{\"bps\":0,\"bps_rd\":0,\"bps_wr\":0,"
                    "\"id\":\"/machine/peripheral/disk0-dev/virtio-backend\",\"iops\":0,"
                    "\"iops_rd\":0,\"iops_wr\":0}");
    free(text);
    json_decref(a);
}

static char *slurp(const char *dir, const char *file)
{
    char p[512];
    kh_fmt(p, sizeof(p), "%s/%s", dir, file);
    char *t = kh_fs_read(p, 4096, NULL, NULL);
    if (t) {
        size_t n = strlen(t);
        while (n && t[n - 1] == '\n')
            t[--n] = '\0';
    }
    return t;
}

static void touch(const char *dir, const char *file)
{
    char p[512];
    kh_fmt(p, sizeof(p), "%s/%s", dir, file);
    FILE *fp = fopen(p, "w");
    if (fp)
        fclose(fp);
}

/* The writers against a cgroup tree in a temp dir (regular files stand in
 * for the kernel's): what lands in each file, for v2 and v1. */
static void test_quota_cgroup(void)
{
    char base[] = "/tmp/kh-obs-XXXXXX";
    if (!mkdtemp(base)) {
        CHECK(!"mkdtemp");
        return;
    }
    const char *id = "0b8e4f4e-7c39-4f86-9c0e-6a2b8d1e5f00";
    kh_err err = KH_ERR_INIT;
    kh_limits l = { .cpu_weight = 50, .cpu_max_percent = 20, .memory_max_mib = 256 };

    /* v2 */
    kh_cgroups cg2;
    memset(&cg2, 0, sizeof(cg2));
    cg2.version = 2;
    kh_fmt(cg2.mount, sizeof(cg2.mount), "%s/v2", base);
    kh_fmt(cg2.root, sizeof(cg2.root), "kvmhost");
    char dir[600];
    CHECK(kh_cgroups_vm_dir(&cg2, id, NULL, dir, sizeof(dir)) == 0);
    CHECK(kh_fs_mkdir_p(dir, 0755, &err) == 0);
    touch(dir, "cpu.weight");
    touch(dir, "cpu.max");
    touch(dir, "memory.max");
    CHECK(kh_quota_apply_cgroup(&cg2, id, &l, &err) == 0);
    char *t;
    CHECK_STR(t = slurp(dir, "cpu.weight"), "50");
    free(t);
    CHECK_STR(t = slurp(dir, "cpu.max"), "20000 100000");
    free(t);
    CHECK_STR(t = slurp(dir, "memory.max"), "268435456");
    free(t);
    CHECK(kh_quota_apply_cgroup(&cg2, id, NULL, &err) == 0);
    CHECK_STR(t = slurp(dir, "cpu.max"), "max 100000");
    free(t);
    CHECK_STR(t = slurp(dir, "memory.max"), "max");
    free(t);
    CHECK_STR(t = slurp(dir, "cpu.weight"), "100");
    free(t);

    /* v1: cpu and memory hierarchies */
    kh_cgroups cg1;
    memset(&cg1, 0, sizeof(cg1));
    cg1.version = 1;
    kh_fmt(cg1.root, sizeof(cg1.root), "kvmhost");
    kh_fmt(cg1.v1_dirs[0], sizeof(cg1.v1_dirs[0]), "%s/v1/cpu", base);
    kh_fmt(cg1.v1_dirs[1], sizeof(cg1.v1_dirs[1]), "%s/v1/memory", base);
    cg1.v1_count = 2;
    char cdir[600], mdir[600];
    CHECK(kh_cgroups_vm_dir(&cg1, id, "cpu", cdir, sizeof(cdir)) == 0);
    CHECK(kh_cgroups_vm_dir(&cg1, id, "memory", mdir, sizeof(mdir)) == 0);
    CHECK(kh_fs_mkdir_p(cdir, 0755, &err) == 0 && kh_fs_mkdir_p(mdir, 0755, &err) == 0);
    touch(cdir, "cpu.shares");
    touch(cdir, "cpu.cfs_period_us");
    touch(cdir, "cpu.cfs_quota_us");
    touch(mdir, "memory.limit_in_bytes");
    l.cpu_weight = 1; /* shares never go under the kernel's minimum of 2 */
    CHECK(kh_quota_apply_cgroup(&cg1, id, &l, &err) == 0);
    CHECK_STR(t = slurp(cdir, "cpu.shares"), "10");
    free(t);
    l.cpu_weight = 0;
    l.cpu_max_percent = 150;
    CHECK(kh_quota_apply_cgroup(&cg1, id, &l, &err) == 0);
    CHECK_STR(t = slurp(cdir, "cpu.shares"), "1024");
    free(t);
    CHECK_STR(t = slurp(cdir, "cpu.cfs_period_us"), "100000");
    free(t);
    CHECK_STR(t = slurp(cdir, "cpu.cfs_quota_us"), "150000");
    free(t);
    CHECK_STR(t = slurp(mdir, "memory.limit_in_bytes"), "268435456");
    free(t);
    CHECK(kh_quota_apply_cgroup(&cg1, id, NULL, &err) == 0);
    CHECK_STR(t = slurp(cdir, "cpu.cfs_quota_us"), "-1");
    free(t);
    CHECK_STR(t = slurp(mdir, "memory.limit_in_bytes"), "-1");
    free(t);

    /* A VM whose cgroup files are missing: a clear error, not a crash. */
    kh_err_clear(&err);
    CHECK(kh_quota_apply_cgroup(&cg2, "11111111-2222-3333-4444-555555555555", &l, &err) < 0);
    CHECK(err.code != KH_OK && strstr(err.msg, "cpu.weight") != NULL);
    /* No cgroups at all: limits are refused, no limits are fine. */
    kh_cgroups none;
    memset(&none, 0, sizeof(none));
    kh_fmt(none.reason, sizeof(none.reason), "not mounted");
    kh_err_clear(&err);
    CHECK(kh_quota_apply_cgroup(&none, id, &l, &err) < 0 && err.code == KH_E_UNSUPPORTED);
    CHECK(kh_quota_apply_cgroup(&none, id, NULL, &err) == 0);

    /* A limit whose controller is missing is refused up front, naming it;
     * detect lists what is missing. */
    char v1[600], sub[700];
    kh_fmt(v1, sizeof(v1), "%s/detect", base);
    kh_fmt(sub, sizeof(sub), "%s/cpu", v1);
    CHECK(kh_fs_mkdir_p(sub, 0755, &err) == 0);
    kh_cgroups det;
    kh_cgroups_detect(&det, v1, NULL);
    CHECK(det.version == 1 && kh_cgroups_has(&det, "cpu") && !kh_cgroups_has(&det, "memory"));
    CHECK(strstr(det.missing, "memory") && strstr(det.missing, "cpuset") &&
          !strstr(det.missing, "cpu,") && strncmp(det.missing, "cpu", 4) != 0);
    kh_limits mem = { .memory_max_mib = 256 }, cpu = { .cpu_weight = 10 };
    kh_limits nodes = { .nodes = (unsigned[]){ 0 }, .nnodes = 1 };
    kh_err_clear(&err);
    CHECK(kh_quota_check_cgroup(&det, &mem, &err) < 0 && err.code == KH_E_UNSUPPORTED &&
          strstr(err.msg, "memory controller"));
    kh_err_clear(&err);
    CHECK(kh_quota_check_cgroup(&det, &nodes, &err) < 0 && strstr(err.msg, "cpuset"));
    kh_err_clear(&err);
    CHECK(kh_quota_check_cgroup(&det, &cpu, &err) == 0 && kh_quota_check_cgroup(&det, NULL,
                                                                                  &err) == 0);
    CHECK(kh_quota_check_cgroup(&none, &cpu, &err) < 0 && strstr(err.msg, "not mounted"));
    /* v2: the root's cgroup.controllers says what there is */
    kh_fmt(v1, sizeof(v1), "%s/detect2", base);
    CHECK(kh_fs_mkdir_p(v1, 0755, &err) == 0);
    kh_fmt(sub, sizeof(sub), "%s/cgroup.controllers", v1);
    FILE *f = fopen(sub, "w");
    if (f) {
        fputs("cpuset cpu io pids\n", f);
        fclose(f);
    }
    kh_cgroups_detect(&det, v1, NULL);
    CHECK(det.version == 2 && kh_cgroups_has(&det, "cpu") && kh_cgroups_has(&det, "cpuset") &&
          !kh_cgroups_has(&det, "memory"));
    CHECK_STR(det.missing, "memory");
    kh_err_clear(&err);
    CHECK(kh_quota_check_cgroup(&det, &mem, &err) < 0 && strstr(err.msg, "memory"));
    kh_fs_rm_rf(base, NULL);
}

/* Pinning on a real thread: this test's own. */
static void test_pin_self(void)
{
    cpu_set_t before, now;
    CHECK(sched_getaffinity(0, sizeof(before), &before) == 0);
    pid_t self = (pid_t)syscall(SYS_gettid);
    kh_err err = KH_ERR_INIT;
    kh_limits l = { .cpus = (unsigned[]){ 0 }, .ncpus = 1 };
    CHECK(kh_quota_pin(getpid(), &self, 1, &l, &err) == 0);
    CHECK(sched_getaffinity(0, sizeof(now), &now) == 0);
    CHECK(CPU_COUNT(&now) == 1 && CPU_ISSET(0, &now));
    CHECK(kh_quota_pin(getpid(), &self, 1, NULL, &err) == 0);
    CHECK(sched_getaffinity(0, sizeof(now), &now) == 0);
    CHECK(CPU_COUNT(&now) == sysconf(_SC_NPROCESSORS_ONLN) || CPU_COUNT(&now) >= CPU_COUNT(&before));
    json_t *reply = json_loads("[{\"cpu-index\":0,\"thread-id\":4242},{\"cpu-index\":1,"
                               "\"thread-id\":4243},{\"cpu-index\":2}]", 0, NULL);
    pid_t tids[4];
    CHECK(kh_quota_vcpu_threads(reply, tids, 4) == 2 && tids[0] == 4242 && tids[1] == 4243);
    CHECK(kh_quota_vcpu_threads(reply, tids, 1) == 1);
    json_decref(reply);
    sched_setaffinity(0, sizeof(before), &before);
}

static char seen[2048];

static void on_event(const kh_event *ev, void *opaque)
{
    (void)opaque;
    size_t n = strlen(seen);
    snprintf(seen + n, sizeof(seen) - n, "%s:%s:%s;", ev->type, ev->vm ? ev->vm : "-",
             json_string_value(json_object_get(ev->data, "rule")));
}

static void test_alerts(void)
{
    kh_events *ev = kh_events_new();
    kh_event_sub *sub = kh_events_subscribe(ev, 0, on_event, NULL);
    kh_alerts *a = kh_alerts_new(ev);
    json_t *j = kh_alerts_json(a);
    CHECK(json_array_size(json_object_get(j, "rules")) == 4); /* the defaults */
    CHECK(json_is_null(json_object_get(j, "webhook")));
    json_decref(j);
    kh_err err = KH_ERR_INIT;
    json_t *rules = json_loads(
        "[{\"name\":\"busy\",\"scope\":\"vm\",\"metric\":\"cpu_percent\",\"op\":\">\","
        "\"threshold\":50,\"for_seconds\":20},"
        "{\"name\":\"mem\",\"scope\":\"host\",\"metric\":\"memory_used_percent\",\"op\":\">=\","
        "\"threshold\":90}]", 0, NULL);
    CHECK(kh_alerts_set_rules(a, rules, &err) == 0);
    json_decref(rules);
    const char *vf[] = { "cpu_percent" };
    const char *hf[] = { "memory_used_percent" };
    double hi = 80, lo = 10, mem_hi = 95, mem_lo = 50;
    /* t=0: busy holds (pending), host memory fires at once (for 0 s). */
    kh_alerts_begin(a);
    kh_alerts_feed(a, "web1", vf, &hi, 1, 100);
    kh_alerts_feed(a, NULL, hf, &mem_hi, 1, 100);
    kh_alerts_end(a, 100);
    CHECK_STR(seen, "alert.firing:-:mem;");
    /* t=10: still pending; t=20: fires (held 20 s). */
    kh_alerts_begin(a);
    kh_alerts_feed(a, "web1", vf, &hi, 1, 110);
    kh_alerts_feed(a, NULL, hf, &mem_hi, 1, 110);
    kh_alerts_end(a, 110);
    CHECK_STR(seen, "alert.firing:-:mem;");
    j = kh_alerts_json(a);
    CHECK(json_array_size(json_object_get(j, "active")) == 2);
    json_decref(j);
    kh_alerts_begin(a);
    kh_alerts_feed(a, "web1", vf, &hi, 1, 120);
    kh_alerts_feed(a, NULL, hf, &mem_lo, 1, 120);
    kh_alerts_end(a, 120);
    CHECK_STR(seen, "alert.firing:-:mem;alert.firing:web1:busy;alert.resolved:-:mem;");
    /* A dip resets the clock: pending again, no event. */
    seen[0] = '\0';
    kh_alerts_begin(a);
    kh_alerts_feed(a, "web1", vf, &lo, 1, 130);
    kh_alerts_end(a, 130);
    CHECK_STR(seen, "alert.resolved:web1:busy;");
    kh_alerts_begin(a);
    kh_alerts_feed(a, "web1", vf, &hi, 1, 140);
    kh_alerts_end(a, 140);
    CHECK_STR(seen, "alert.resolved:web1:busy;");
    /* A VM no longer fed (it stopped) resolves; pending ones vanish quietly. */
    kh_alerts_begin(a);
    kh_alerts_feed(a, "web1", vf, &hi, 1, 160);
    kh_alerts_end(a, 160);
    CHECK_STR(seen, "alert.resolved:web1:busy;alert.firing:web1:busy;");
    kh_alerts_begin(a);
    kh_alerts_end(a, 170);
    CHECK_STR(seen, "alert.resolved:web1:busy;alert.firing:web1:busy;alert.resolved:web1:busy;");
    j = kh_alerts_json(a);
    CHECK(json_array_size(json_object_get(j, "active")) == 0);
    json_decref(j);
    /* Bad rules: clear messages, nothing changes. */
    const char *bad[][2] = {
        { "{}", "must be an array" },
        { "[{\"name\":\"x\",\"scope\":\"vm\",\"metric\":\"load1\",\"op\":\">\",\"threshold\":1}]",
          "rules[0].metric: not a vm metric" },
        { "[{\"name\":\"x\",\"scope\":\"pod\",\"metric\":\"load1\",\"op\":\">\",\"threshold\":1}]",
          "rules[0].scope" },
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\"!=\",\"threshold\":1}]",
          "rules[0].op" },
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\"}]",
          "rules[0].threshold" },
        { "[{\"name\":\"../x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\",\"threshold\":1}]",
          "rule name" },
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\",\"threshold\":1,"
          "\"for_seconds\":-1}]", "for_seconds" },
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\",\"threshold\":1,"
          "\"webhook\":\"http://x\"}]", "rules[0].webhook: unknown field" },
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\",\"threshold\":1},"
          "{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\"<\",\"threshold\":1}]",
          "appears twice" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *r = json_loads(bad[i][0], 0, NULL);
        kh_err_clear(&err);
        CHECK(r && kh_alerts_set_rules(a, r, &err) < 0 && strstr(err.msg, bad[i][1]));
        if (!strstr(err.msg, bad[i][1]))
            printf("# %s -> %s\n", bad[i][0], err.msg);
        json_decref(r);
    }
    j = kh_alerts_json(a);
    CHECK(json_array_size(json_object_get(j, "rules")) == 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(j, "rules"), 0),
                                                "name")), "busy");
    json_decref(j);
    kh_alerts_free(a);
    kh_events_unsubscribe(ev, sub);
    kh_events_free(ev);
}

static size_t rule_count(kh_alerts *a, const char *first)
{
    json_t *j = kh_alerts_json(a);
    const json_t *r = json_object_get(j, "rules");
    size_t n = json_array_size(r);
    if (first)
        CHECK_STR(json_string_value(json_object_get(json_array_get(r, 0), "name")), first);
    json_decref(j);
    return n;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Rules and webhook set through the API survive a restart (a new kh_alerts
 * on the same store); an --alert-rules file wins when new or changed, and
 * an unchanged file does not undo what the API set. */
static void test_alert_rules_saved(void)
{
    char dir[] = "/tmp/kh-alert-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *db = xasprintf("%s/kvmhost.db", dir), *file = xasprintf("%s/rules.json", dir);
    kh_err err = KH_ERR_INIT;
    kh_events *ev = kh_events_new();
    uv_loop_t *loop = uv_default_loop();
    const char *api_conf =
        "{\"rules\":[{\"name\":\"api1\",\"scope\":\"host\",\"metric\":\"load1\","
        "\"op\":\">\",\"threshold\":4},{\"name\":\"api2\",\"scope\":\"host\","
        "\"metric\":\"load1\",\"op\":\">\",\"threshold\":8}],"
        "\"webhook\":{\"url\":\"http://127.0.0.1:9/h\",\"timeout_seconds\":3}}";
    write_file(file, "{\"rules\":[{\"name\":\"file1\",\"scope\":\"host\","
                     "\"metric\":\"load1\",\"op\":\">\",\"threshold\":1}]}");

    /* 1: a fresh store, no file: the defaults, and an API change is saved */
    kh_store *st = kh_store_open(db, &err);
    CHECK(st != NULL);
    kh_webhook *w = kh_webhook_new(loop);
    kh_alerts *a = kh_alerts_new(ev);
    kh_alerts_set_webhook(a, w);
    CHECK(kh_alerts_open(a, st, NULL, &err) == 0);
    CHECK(rule_count(a, "host_memory_high") == 4);
    json_t *conf = json_loads(api_conf, 0, NULL);
    CHECK(kh_alerts_configure(a, conf, &err) == 0);
    json_decref(conf);
    kh_alerts_free(a);
    kh_webhook_free(w);
    kh_store_close(st);

    /* 2: restart without a file: what the API set, webhook included */
    st = kh_store_open(db, &err);
    w = kh_webhook_new(loop);
    a = kh_alerts_new(ev);
    kh_alerts_set_webhook(a, w);
    CHECK(kh_alerts_open(a, st, NULL, &err) == 0);
    CHECK(rule_count(a, "api1") == 2);
    json_t *wj = kh_webhook_json(w);
    CHECK_STR(json_string_value(json_object_get(wj, "url")), "http://127.0.0.1:9/h");
    CHECK(json_number_value(json_object_get(wj, "timeout_seconds")) == 3);
    json_decref(wj);
    kh_alerts_free(a);
    kh_webhook_free(w);
    kh_store_close(st);

    /* 3: restart with a new file: the file wins (the webhook it does not
     * name stays) */
    st = kh_store_open(db, &err);
    w = kh_webhook_new(loop);
    a = kh_alerts_new(ev);
    kh_alerts_set_webhook(a, w);
    CHECK(kh_alerts_open(a, st, file, &err) == 0);
    CHECK(rule_count(a, "file1") == 1);
    /* then the API changes them again */
    conf = json_loads(api_conf, 0, NULL);
    CHECK(kh_alerts_configure(a, conf, &err) == 0);
    json_decref(conf);
    kh_alerts_free(a);
    kh_webhook_free(w);
    kh_store_close(st);

    /* 4: restart with the same, unchanged file: the API's rules stay */
    st = kh_store_open(db, &err);
    w = kh_webhook_new(loop);
    a = kh_alerts_new(ev);
    kh_alerts_set_webhook(a, w);
    CHECK(kh_alerts_open(a, st, file, &err) == 0);
    CHECK(rule_count(a, "api1") == 2);
    kh_alerts_free(a);
    kh_webhook_free(w);

    /* 5: the file changed: it wins again; a bad file fails */
    write_file(file, "{\"rules\":[]}");
    w = kh_webhook_new(loop);
    a = kh_alerts_new(ev);
    kh_alerts_set_webhook(a, w);
    CHECK(kh_alerts_open(a, st, file, &err) == 0);
    CHECK(rule_count(a, NULL) == 0);
    kh_alerts_free(a);
    kh_webhook_free(w);
    write_file(file, "{\"rules\":[{\"name\":\"x\"}]}");
    w = kh_webhook_new(loop);
    a = kh_alerts_new(ev);
    kh_alerts_set_webhook(a, w);
    CHECK(kh_alerts_open(a, st, file, &err) < 0 && strstr(err.msg, "rules.json"));
    kh_alerts_free(a);
    kh_webhook_free(w);
    kh_store_close(st);

    kh_events_free(ev);
    kh_fs_rm_rf(dir, NULL);
    free(db);
    free(file);
}

/* The line a daemon restart leaves in the console log. */
static void test_console_gap_text(void)
{
    char buf[192];
    time_t from = 1700000000; /* 2023-11-14 22:13:20 UTC */
    kh_console_gap_text(buf, sizeof(buf), from, from + 125);
    CHECK_STR(buf, "\r\n[kvmhost: console output from 22:13:20 to 22:15:25 UTC was not "
                   "captured: the daemon was not running]\r\n");
    kh_console_gap_text(buf, sizeof(buf), from, from + 7200);
    CHECK_STR(buf, "\r\n[kvmhost: console output from 2023-11-14 22:13:20 to 2023-11-15 "
                   "00:13:20 UTC was not captured: the daemon was not running]\r\n");
}

/* Rules set again unchanged (as `alert webhook set` does: it PUTs the
 * rules it read back, numbers as reals) keep their alerts: nothing resolves
 * or fires again; a rule that changed resolves. */
static void test_alert_rules_kept(void)
{
    seen[0] = '\0';
    kh_events *ev = kh_events_new();
    kh_event_sub *sub = kh_events_subscribe(ev, 0, on_event, NULL);
    kh_alerts *a = kh_alerts_new(ev);
    kh_err err = KH_ERR_INIT;
    json_t *rules = json_loads(
        "[{\"name\":\"mem\",\"scope\":\"host\",\"metric\":\"memory_used_percent\","
        "\"op\":\">=\",\"threshold\":90},"
        "{\"name\":\"busy\",\"scope\":\"vm\",\"metric\":\"cpu_percent\",\"op\":\">\","
        "\"threshold\":50}]", 0, NULL);
    CHECK(kh_alerts_set_rules(a, rules, &err) == 0);
    json_decref(rules);
    const char *hf[] = { "memory_used_percent" };
    const char *vf[] = { "cpu_percent" };
    double mem_hi = 95, hi = 80;
    kh_alerts_begin(a);
    kh_alerts_feed(a, NULL, hf, &mem_hi, 1, 100);
    kh_alerts_feed(a, "web1", vf, &hi, 1, 100);
    kh_alerts_end(a, 100);
    CHECK_STR(seen, "alert.firing:-:mem;alert.firing:web1:busy;");
    seen[0] = '\0';
    json_t *j = kh_alerts_json(a);
    json_t *back = json_deep_copy(json_object_get(j, "rules"));
    json_decref(j);
    CHECK(kh_alerts_set_rules(a, back, &err) == 0);
    /* the same rules in another order: still the same rules */
    json_t *swapped = json_pack("[O, O]", json_array_get(back, 1), json_array_get(back, 0));
    CHECK(kh_alerts_set_rules(a, swapped, &err) == 0);
    json_decref(swapped);
    CHECK_STR(seen, "");
    j = kh_alerts_json(a);
    json_t *act = json_object_get(j, "active");
    CHECK(json_array_size(act) == 2);
    for (size_t i = 0; i < json_array_size(act); i++) {
        CHECK_STR(json_string_value(json_object_get(json_array_get(act, i), "state")), "firing");
        CHECK(json_real_value(json_object_get(json_array_get(act, i), "since")) == 100);
    }
    json_decref(j);
    kh_alerts_begin(a);
    kh_alerts_feed(a, NULL, hf, &mem_hi, 1, 110);
    kh_alerts_feed(a, "web1", vf, &hi, 1, 110);
    kh_alerts_end(a, 110);
    CHECK_STR(seen, "");
    /* busy's threshold changes: its alert resolves, mem's stays */
    json_object_set_new(json_array_get(back, 1), "threshold", json_real(60));
    CHECK(kh_alerts_set_rules(a, back, &err) == 0);
    CHECK_STR(seen, "alert.resolved:web1:busy;");
    json_decref(back);
    kh_alerts_free(a);
    kh_events_unsubscribe(ev, sub);
    kh_events_free(ev);
}

/* A trend rule: disk use rising 1 %/s from 50 % is predicted to reach 100 %
 * within 60 s once 5 samples span half the window; flat use resolves it. */
static void test_alert_trend(void)
{
    seen[0] = '\0';
    kh_events *ev = kh_events_new();
    kh_event_sub *sub = kh_events_subscribe(ev, 0, on_event, NULL);
    kh_alerts *a = kh_alerts_new(ev);
    kh_err err = KH_ERR_INIT;
    json_t *rules = json_loads(
        "[{\"name\":\"full\",\"scope\":\"host\",\"metric\":\"disk_used_percent\","
        "\"op\":\">=\",\"threshold\":100,\"predict_seconds\":60,\"window_seconds\":8}]",
        0, NULL);
    CHECK(kh_alerts_set_rules(a, rules, &err) == 0);
    json_decref(rules);
    const char *hf[] = { "disk_used_percent" };
    double t = 1000, v = 50;
    for (int i = 0; i < 4; i++, t += 1, v += 1) { /* 4 samples: too few to predict */
        kh_alerts_begin(a);
        kh_alerts_feed(a, NULL, hf, &v, 1, t);
        kh_alerts_end(a, t);
    }
    CHECK_STR(seen, "");
    kh_alerts_begin(a);
    kh_alerts_feed(a, NULL, hf, &v, 1, t); /* 5th: 54 %, +1 %/s -> 100 % in 46 s */
    kh_alerts_end(a, t);
    CHECK_STR(seen, "alert.firing:-:full;");
    json_t *j = kh_alerts_json(a);
    json_t *act = json_array_get(json_object_get(j, "active"), 0);
    double eta = json_number_value(json_object_get(act, "eta_seconds"));
    double pred = json_number_value(json_object_get(act, "predicted"));
    CHECK(eta > 45.9 && eta < 46.1);
    CHECK(pred > 113.9 && pred < 114.1);
    json_decref(j);
    /* Flat for a whole window: the line flattens, the alert resolves. */
    for (int i = 0; i < 12; i++) {
        t += 1;
        kh_alerts_begin(a);
        kh_alerts_feed(a, NULL, hf, &v, 1, t);
        kh_alerts_end(a, t);
    }
    CHECK_STR(seen, "alert.firing:-:full;alert.resolved:-:full;");
    /* A slow rise (0.01 %/s) is not predicted to cross within 60 s. */
    seen[0] = '\0';
    for (int i = 0; i < 20; i++, t += 1, v += 0.01) {
        kh_alerts_begin(a);
        kh_alerts_feed(a, NULL, hf, &v, 1, t);
        kh_alerts_end(a, t);
    }
    CHECK_STR(seen, "");
    /* Bad trend rules. */
    const char *bad[][2] = {
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\","
          "\"threshold\":1,\"predict_seconds\":0}]", "predict_seconds" },
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\","
          "\"threshold\":1,\"window_seconds\":60}]", "only for a trend rule" },
        { "[{\"name\":\"x\",\"scope\":\"host\",\"metric\":\"load1\",\"op\":\">\","
          "\"threshold\":1,\"predict_seconds\":60,\"window_seconds\":7200}]",
          "window_seconds" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *r = json_loads(bad[i][0], 0, NULL);
        kh_err_clear(&err);
        CHECK(r && kh_alerts_set_rules(a, r, &err) < 0 && strstr(err.msg, bad[i][1]));
        json_decref(r);
    }
    kh_alerts_free(a);
    kh_events_unsubscribe(ev, sub);
    kh_events_free(ev);
}

/* Webhook configuration: http/https URLs with a host, nothing else. */
static void test_webhook_config(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    kh_events *ev = kh_events_new();
    kh_alerts *a = kh_alerts_new(ev);
    kh_webhook *w = kh_webhook_new(&loop);
    kh_alerts_set_webhook(a, w);
    kh_err err = KH_ERR_INIT;
    const char *bad[][2] = {
        { "{\"rules\":[],\"webhook\":{\"url\":\"file:///etc/passwd\"}}", "webhook.url" },
        { "{\"rules\":[],\"webhook\":{\"url\":\"gopher://x/\"}}", "http or https" },
        { "{\"rules\":[],\"webhook\":{\"url\":\"/hook\"}}", "absolute URL" },
        { "{\"rules\":[],\"webhook\":{\"url\":\"http://a b/\"}}", "spaces" },
        { "{\"rules\":[],\"webhook\":{\"url\":\"http://x/\",\"timeout_seconds\":0}}",
          "timeout_seconds" },
        { "{\"rules\":[],\"webhook\":{\"url\":\"http://x/\",\"secret\":1}}", "unknown" },
        { "{\"rules\":[],\"webhook\":\"http://x/\"}", "must be an object" },
        { "{\"rules\":[],\"hook\":1}", "hook: unknown field" },
        { "{\"webhook\":null}", "rules" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *r = json_loads(bad[i][0], 0, NULL);
        kh_err_clear(&err);
        CHECK(r && kh_alerts_configure(a, r, &err) < 0 && strstr(err.msg, bad[i][1]));
        if (!strstr(err.msg, bad[i][1]))
            printf("# %s -> %s\n", bad[i][0], err.msg);
        json_decref(r);
    }
    json_t *j = kh_alerts_json(a); /* nothing changed */
    CHECK(json_array_size(json_object_get(j, "rules")) == 4);
    CHECK(json_is_null(json_object_get(j, "webhook")));
    json_decref(j);
    json_t *ok = json_loads("{\"rules\":[],\"webhook\":{\"url\":\"https://h.example:8443/x?a=1\","
                            "\"timeout_seconds\":2}}", 0, NULL);
    CHECK(kh_alerts_configure(a, ok, &err) == 0);
    json_decref(ok);
    j = kh_alerts_json(a);
    CHECK_STR(json_string_value(json_object_get(json_object_get(j, "webhook"), "url")),
              "https://h.example:8443/x?a=1");
    json_decref(j);
    kh_alerts_free(a);
    kh_webhook_free(w);
    kh_events_free(ev);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

int main(void)
{
    RUN(test_prom_values);
    RUN(test_prom_text);
    RUN(test_prom_histogram);
    RUN(test_series);
    RUN(test_limits_validation);
    RUN(test_limits_patch);
    RUN(test_throttle_args);
    RUN(test_quota_cgroup);
    RUN(test_alerts);
    RUN(test_alert_rules_kept);
    RUN(test_alert_rules_saved);
    RUN(test_console_gap_text);
    RUN(test_alert_trend);
    RUN(test_webhook_config);
    RUN(test_pin_self);
    TEST_DONE();
}
