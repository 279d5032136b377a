/* Unit tests of the CLI's output for people: spans, expiries, bytes, load
 * averages (output.c), the VM list, a VM's NIC lines, a network, a volume,
 * the host (render.c), --nic security_groups= (network.c) and an optional
 * positional ("volume list [POOL]", parse.c). */
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "cli/commands.h"
#include "cli/nouns.h"
#include "cli/output.h"
#include "cli/render.h"
#include "util/err.h"
#include "util/mem.h"

static json_t *parse(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    CHECK(j != NULL);
    return j;
}

static void test_fmt(void)
{
    char b[64];
    cli_fmt_span(3 * 86400 + 4 * 3600 + 12 * 60 + 7, b, sizeof(b));
    CHECK_STR(b, "3d 4h 12m");
    cli_fmt_span(4 * 3600 + 30, b, sizeof(b));
    CHECK_STR(b, "4h 0m");
    cli_fmt_span(52 * 60 + 59, b, sizeof(b));
    CHECK_STR(b, "52m");
    cli_fmt_span(1.852, b, sizeof(b));
    CHECK_STR(b, "1s");
    cli_fmt_span(-3, b, sizeof(b));
    CHECK_STR(b, "0s");
    cli_fmt_expiry(1000 + 52 * 60 + 5, 1000, b, sizeof(b));
    CHECK_STR(b, "in 52m");
    cli_fmt_expiry(1000, 1000 + 180, b, sizeof(b));
    CHECK_STR(b, "3m ago");
    cli_fmt_expiry(0, 1000, b, sizeof(b));
    CHECK_STR(b, "never");
    cli_fmt_bytes(21474836480LL, b, sizeof(b));
    CHECK_STR(b, "20.0 GiB");
    cli_fmt_bytes(200704, b, sizeof(b));
    CHECK_STR(b, "196.0 KiB");
    cli_fmt_bytes(512, b, sizeof(b));
    CHECK_STR(b, "512 B");
    json_t *l = parse("[0.52, 0.4, 0.3125]");
    cli_fmt_load(l, b, sizeof(b));
    CHECK_STR(b, "0.52 0.40 0.31");
    json_decref(l);
    l = json_array();
    cli_fmt_load(l, b, sizeof(b));
    CHECK_STR(b, "-");
    json_decref(l);
}

static void test_vm_list(void)
{
    json_t *r = parse(
        "{\"vms\": [{\"name\": \"web1\", \"state\": \"running\", \"vcpus\": 2, \"memory_mib\": 512,"
        " \"accelerator\": \"tcg\", \"pid\": 42, \"started_at\": \"1970-01-01T00:00:00Z\","
        " \"template\": false, \"nics\": [{\"network\": \"lan\", \"mac\": \"52:54:00:00:00:01\","
        " \"addresses\": [{\"ip\": \"10.0.0.5\", \"family\": \"ipv4\", \"source\": \"dhcp\"}]}]},"
        " {\"name\": \"base\", \"state\": \"stopped\", \"vcpus\": 1, \"memory_mib\": 256,"
        " \"template\": true, \"nics\": [{\"network\": \"lan\", \"ip\": \"10.0.0.9\"}]}]}");
    char *s = cli_render_vm_list(r, 3600 + 125);
    CHECK_STR(s, "NAME  TYPE      STATE    VCPUS  MEMORY  ADDRESS   ACCEL  PID  UPTIME\n"
                 "web1  vm        running  2      512MiB  10.0.0.5  tcg    42   1h02m\n"
                 "base  template  stopped  1      256MiB  10.0.0.9  -      -    -\n");
    free(s);
    json_decref(r);
}

static void test_nic(void)
{
    json_t *n = parse("{\"network\": \"lan\", \"mac\": \"52:54:00:00:00:01\", \"ip\": \"10.0.0.5\","
                      " \"security_groups\": [\"web\", \"ssh\"], \"link\": \"down\","
                      " \"addresses\": [{\"ip\": \"10.0.0.5\", \"family\": \"ipv4\","
                      " \"source\": \"reservation\", \"expires\": 4120}]}");
    char *s = cli_render_nic(0, n, 1000);
    CHECK_STR(s, "0: lan, mac 52:54:00:00:00:01, address 10.0.0.5 (reserved, lease expires in "
                 "52m), security groups web+ssh, link down");
    free(s);
    json_decref(n);
    n = parse("{\"network\": \"lan\", \"mac\": \"52:54:00:00:00:02\", \"addresses\": []}");
    s = cli_render_nic(1, n, 1000);
    CHECK_STR(s, "1: lan, mac 52:54:00:00:00:02, no address known");
    free(s);
    json_decref(n);
}

static void test_network_volume_host(void)
{
    json_t *n = parse("{\"name\": \"lan\", \"forwards\": [{\"proto\": \"tcp\", \"host_port\": 8080,"
                      " \"vm\": \"a\", \"vm_port\": 80, \"ip\": \"10.0.0.5\"}],"
                      " \"nics\": [{\"vm\": \"a\", \"mac\": \"52:54:00:00:00:01\"}]}");
    char *s = cli_render_network(n);
    CHECK_STR(s, "name:     lan\n"
                 "forwards: tcp host port 8080 -> vm a port 80 (10.0.0.5)\n"
                 "nics:     vm a, mac 52:54:00:00:00:01\n");
    free(s);
    json_decref(n);
    json_t *v = parse("{\"ref\": \"default/d\", \"capacity\": 21474836480, \"allocation\": 200704,"
                      " \"used_by\": [{\"vm\": \"a\"}], \"backing_chain\": [{\"volume\": \"default/d\","
                      " \"format\": \"qcow2\", \"virtual_size\": 21474836480, \"actual_size\": 200704}]}");
    s = cli_render_volume(v);
    CHECK_STR(s, "ref:           default/d\n"
                 "capacity:      20.0 GiB\n"
                 "allocation:    196.0 KiB\n"
                 "used_by:       a\n"
                 "backing_chain: default/d: qcow2, 20.0 GiB virtual, 196.0 KiB allocated\n");
    free(s);
    json_decref(v);
    json_t *h = parse("{\"cpus\": 2, \"load_average\": [0.52, 0.4, 0.31],"
                      " \"uptime_seconds\": 274327.5}");
    s = cli_render_host(h);
    CHECK_STR(s, "cpus:            2\n"
                 "load_average:    0.52 0.40 0.31\n"
                 "kvmhostd_uptime: 3d 4h 12m\n");
    free(s);
    json_decref(h);
}

static void test_nic_groups(void)
{
    kh_err err = KH_ERR_INIT;
    kh_strv *sv = kh_strv_new();
    kh_strv_add(sv, "lan,security_groups=web+ssh,ip=10.0.0.5");
    json_t *a = cli_nics_json(sv, &err);
    CHECK(a != NULL);
    char *d = json_dumps(a, JSON_COMPACT);
    CHECK_STR(d, "[{\"network\":\"lan\",\"security_groups\":[\"web\",\"ssh\"],"
                 "\"ip\":\"10.0.0.5\"}]");
    free(d);
    json_decref(a);
    const char *bad[] = { "lan,security_groups=", "lan,security_groups=a++b",
                          "lan,security_groups=+a" };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        kh_strv *one = kh_strv_new();
        kh_strv_add(one, bad[i]);
        kh_err_clear(&err);
        CHECK(cli_nics_json(one, &err) == NULL && strstr(err.msg, "'+'"));
        kh_strv_free(one);
    }
    kh_strv_free(sv);
}

static void test_optional_positional(void)
{
    const cli_cmd *list = cli_cmd_find("volume", "list");
    cli_ctx ctx;
    cli_args a;
    kh_err err = KH_ERR_INIT;
    memset(&ctx, 0, sizeof(ctx));
    const char *one[] = { "fast" };
    CHECK(cli_args_parse(list, 1, one, &ctx, &a, &err) == 0);
    CHECK_STR(a.pos, "fast");
    cli_args_clear(&a);
    CHECK(cli_args_parse(list, 0, one, &ctx, &a, &err) == 0 && a.pos == NULL);
    cli_args_clear(&a);
    const char *two[] = { "fast", "slow" };
    CHECK(cli_args_parse(list, 2, two, &ctx, &a, &err) < 0);
    cli_args_clear(&a);
    char *u = cli_usage_line(list, true);
    CHECK_STR(u, "kvmhost volume list [POOL] [--pool POOL]");
    free(u);
    /* a required one stays required */
    kh_err_clear(&err);
    CHECK(cli_args_parse(cli_cmd_find("volume", "show"), 0, one, &ctx, &a, &err) < 0);
    cli_args_clear(&a);
}

int main(void)
{
    RUN(test_fmt);
    RUN(test_vm_list);
    RUN(test_nic);
    RUN(test_network_volume_host);
    RUN(test_nic_groups);
    RUN(test_optional_positional);
    TEST_DONE();
}
