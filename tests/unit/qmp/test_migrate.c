/* test_migrate.c - the QMP vocabulary of live migration (qemu/migrate.c):
 * argument shapes, answer parsing, the convergence forecast. */
#include <string.h>

#include <jansson.h>

#include "../kh_test.h"
#include "qemu/migrate.h"

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    return s;
}

static void check_json(json_t *j, const char *want)
{
    char *s = dump(j);
    CHECK_STR(s, want);
    free(s);
}

static void test_args(void)
{
    kh_qmig_opts o = { .downtime_ms = 100, .bandwidth = 1000000000, .auto_converge = true,
                       .pause_switchover = true };
    check_json(kh_qmig_caps(&o, true),
               "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
               "{\"capability\":\"pause-before-switchover\",\"state\":true},"
               "{\"capability\":\"auto-converge\",\"state\":true},"
               "{\"capability\":\"multifd\",\"state\":false}]}");
    check_json(kh_qmig_caps(&o, false),
               "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
               "{\"capability\":\"multifd\",\"state\":false}]}");
    /* shared storage: no pause before the switch-over */
    kh_qmig_opts sh = { .auto_converge = false };
    check_json(kh_qmig_caps(&sh, true),
               "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
               "{\"capability\":\"pause-before-switchover\",\"state\":false},"
               "{\"capability\":\"auto-converge\",\"state\":false},"
               "{\"capability\":\"multifd\",\"state\":false}]}");
    check_json(kh_qmig_params(&o, true), "{\"downtime-limit\":100,\"max-bandwidth\":1000000000}");
    check_json(kh_qmig_params(&o, false), "{}");
    kh_qmig_opts t = { .multifd_channels = 4, .tls_creds = KH_QMIG_TLS_ID, .tls_hostname = "h2" };
    check_json(kh_qmig_params(&t, true),
               "{\"downtime-limit\":10,\"max-bandwidth\":10737418240,\"multifd-channels\":4,"
               "\"tls-creds\":\"kh-mig-tls\",\"tls-hostname\":\"h2\"}");
    check_json(kh_qmig_params(&t, false),
               "{\"multifd-channels\":4,\"tls-creds\":\"kh-mig-tls\"}");
    check_json(kh_qmig_uri_args("10.0.0.2", 49152), "{\"uri\":\"tcp:10.0.0.2:49152\"}");
    check_json(kh_qmig_uri_args("fd00::2", 1), "{\"uri\":\"tcp:[fd00::2]:1\"}");
    CHECK(kh_qmig_uri_args("a,b", 1) == NULL);
    CHECK(kh_qmig_uri_args("h", 0) == NULL);
    CHECK(kh_qmig_uri_args("", 1) == NULL);
    check_json(kh_qmig_nbd_server("10.0.0.2", 10809, NULL),
               "{\"addr\":{\"data\":{\"host\":\"10.0.0.2\",\"port\":\"10809\"},\"type\":\"inet\"}}");
    check_json(kh_qmig_export("disk0"),
               "{\"id\":\"mig-disk0\",\"name\":\"disk0\",\"node-name\":\"disk0\",\"type\":\"nbd\","
               "\"writable\":true}");
    check_json(kh_qmig_nbd_node("disk0", "10.0.0.2", 10809, KH_QMIG_TLS_ID),
               "{\"driver\":\"nbd\",\"export\":\"disk0\",\"node-name\":\"mig-disk0\",\"server\":"
               "{\"host\":\"10.0.0.2\",\"port\":\"10809\",\"type\":\"inet\"},\"tls-creds\":"
               "\"kh-mig-tls\"}");
    check_json(kh_qmig_mirror("disk3", "disk0"),
               "{\"auto-dismiss\":false,\"device\":\"disk3\",\"job-id\":\"mig-disk0\",\"sync\":"
               "\"full\",\"target\":\"mig-disk0\"}");
    check_json(kh_qmig_calc_dirty_rate(0), "{\"calc-time\":1}");
    check_json(kh_qmig_tls_object("/etc/kvmhost/tls", true),
               "{\"dir\":\"/etc/kvmhost/tls\",\"endpoint\":\"server\",\"id\":\"kh-mig-tls\","
               "\"qom-type\":\"tls-creds-x509\",\"verify-peer\":true}");
}

static void test_parse(void)
{
    json_t *r = json_loads("{\"status\":\"pre-switchover\",\"total-time\":1234,\"expected-downtime\":"
                           "12,\"ram\":{\"total\":268435456,\"transferred\":1000,\"remaining\":5,"
                           "\"dirty-sync-count\":3}}", 0, NULL);
    kh_qmig_status st;
    CHECK(kh_qmig_status_parse(r, &st) == 0);
    CHECK_STR(st.status, "pre-switchover");
    CHECK(st.ram_total == 268435456 && st.ram_transferred == 1000 && st.ram_remaining == 5);
    CHECK(st.total_time_ms == 1234 && st.expected_downtime_ms == 12 && st.dirty_sync_count == 3);
    CHECK(!kh_qmig_status_failed(&st));
    json_decref(r);
    r = json_loads("{\"status\":\"failed\",\"error-desc\":\"Unable to write\"}", 0, NULL);
    CHECK(kh_qmig_status_parse(r, &st) == 0 && kh_qmig_status_failed(&st));
    CHECK_STR(st.error, "Unable to write");
    json_decref(r);
    r = json_loads("{}", 0, NULL);
    CHECK(kh_qmig_status_parse(r, &st) == -1);
    json_decref(r);

    r = json_loads("{\"status\":\"measured\",\"dirty-rate\":42}", 0, NULL);
    CHECK(kh_qmig_dirty_rate_parse(r) == 42);
    json_decref(r);
    r = json_loads("{\"status\":\"measuring\"}", 0, NULL);
    CHECK(kh_qmig_dirty_rate_parse(r) == -1);
    json_decref(r);

    r = json_loads("[{\"device\":\"mig-disk0\",\"ready\":true,\"offset\":10,\"len\":10},"
                   "{\"device\":\"mig-disk1\",\"ready\":false,\"offset\":5,\"len\":20},"
                   "{\"device\":\"backup\",\"ready\":true,\"offset\":1,\"len\":1}]", 0, NULL);
    kh_qmig_mirrors m;
    kh_qmig_mirrors_parse(r, &m);
    CHECK(m.jobs == 2 && m.ready == 1 && m.done == 15 && m.total == 30 && m.failed == 0);
    json_decref(r);
    r = json_loads("[{\"device\":\"mig-disk0\",\"status\":\"concluded\",\"ready\":false,"
                   "\"error\":\"Connection reset\",\"offset\":1,\"len\":9}]", 0, NULL);
    kh_qmig_mirrors_parse(r, &m);
    CHECK(m.jobs == 1 && m.ready == 0 && m.failed == 1);
    CHECK_STR(m.error, "mig-disk0: Connection reset");
    json_decref(r);
}

/* QEMU before 9.0 under TCG loses writes made during a migration. */
static void test_lossy_passes(void)
{
    CHECK(kh_qmig_lossy_passes(true, 70222));
    CHECK(kh_qmig_lossy_passes(true, 80204));
    CHECK(!kh_qmig_lossy_passes(true, 90000));
    CHECK(!kh_qmig_lossy_passes(false, 70222));
}

static void test_decide(void)
{
    kh_qmig_decision d;
    /* unmeasured: go */
    kh_qmig_forecast_in in = { .dirty_mbps = -1, .ram_bytes = 256u << 20 };
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_GO && d.downtime_ms == 10 && !d.auto_converge);
    /* an idle guest over 1 GB/s: go as asked */
    in = (kh_qmig_forecast_in){ .dirty_mbps = 2, .ram_bytes = 256u << 20, .downtime_ms = 100,
                                .downtime_cap_ms = 2000 };
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_GO && d.downtime_ms == 100 && d.passes >= 1);
    /* 90 of 100 MB/s: too many passes at 100 ms, fewer with a longer limit */
    in = (kh_qmig_forecast_in){ .dirty_mbps = 90, .bandwidth = 100000000,
                                .ram_bytes = 1024ull << 20, .downtime_ms = 100,
                                .downtime_cap_ms = 2000 };
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_RAISE_DOWNTIME && d.downtime_ms > 100 && d.downtime_ms <= 2000);
    CHECK(d.passes > 0 && d.passes <= 30);
    /* 1.5 times the link: only throttling gets through */
    in.dirty_mbps = 150;
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_AUTO_CONVERGE && d.auto_converge && d.downtime_ms == 2000);
    /* 50 times the link: refuse, with a message; force goes with throttling */
    in.dirty_mbps = 5000;
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_REFUSE && !d.auto_converge && strstr(d.why, "force"));
    in.force = true;
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_AUTO_CONVERGE && d.auto_converge);
    /* a guest whose RAM fits in the downtime window goes at once */
    in = (kh_qmig_forecast_in){ .dirty_mbps = 5000, .bandwidth = 1000000000,
                                .ram_bytes = 64u << 20, .downtime_ms = 300 };
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_GO && d.passes == 1);
    /* paused for the copy: one pass, no measurement; 1 GiB over the
     * assumed 1 GB/s fits a 2 s cap, over 1 MB/s it does not (force goes) */
    in = (kh_qmig_forecast_in){ .dirty_mbps = -1, .paused = true, .ram_bytes = 1024ull << 20,
                                .downtime_cap_ms = 2000 };
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_GO && d.passes == 1 && strstr(d.why, "paused"));
    in.bandwidth = 1000000;
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_REFUSE && strstr(d.why, "force") && strstr(d.why, "1074 MB"));
    in.force = true;
    kh_qmig_decide(&in, &d);
    CHECK(d.verdict == KH_QMIG_GO && strstr(d.why, "forced"));
}

static void test_predict(void)
{
    CHECK(kh_qmig_predict(-1, 0, false) == KH_QMIG_CONVERGES);
    CHECK(kh_qmig_predict(10, 100000000, false) == KH_QMIG_CONVERGES);   /* 10 of 100 MB/s */
    CHECK(kh_qmig_predict(80, 100000000, false) == KH_QMIG_NEVER);
    CHECK(kh_qmig_predict(80, 100000000, true) == KH_QMIG_THROTTLE);
    CHECK(kh_qmig_predict(1000, 100000000, true) == KH_QMIG_NEVER);
    CHECK(kh_qmig_predict(400, 0, false) == KH_QMIG_CONVERGES);          /* assumed 1 GB/s */
}

int main(void)
{
    RUN(test_lossy_passes);
    RUN(test_args);
    RUN(test_parse);
    RUN(test_predict);
    RUN(test_decide);
    TEST_DONE();
}
