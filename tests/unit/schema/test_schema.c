/* test_schema.c - the schemas in src/schema against their C validators.
 *
 * For every request schema there is a fixture (data/NAME.json: a list of
 * valid samples that together use every property). Each sample must pass the
 * schema and the schema's C validator; the same sample with one key the
 * schema does not have must be refused by the validator with KH_E_INVALID
 * and a message naming the key, and a hostile key (quotes, newline, escape
 * characters, 300 bytes) must come back escaped and cut short. Also: every
 * schema a route names exists, and every file in src/schema is embedded.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <uv.h>
#include <jansson.h>
#include <string.h>

#include "api/api.h"
#include "conf/vm_spec.h"
#include "net/network.h"
#include "net/secgroup.h"
#include "schema/schema.h"
#include "storage/storage.h"
#include "instance/alert.h"
#include "instance/event.h"
#include "instance/nic.h"
#include "instance/snapshot.h"
#include "instance/template.h"
#include "instance/webhook.h"

#include "../kh_test.h"

static const char *data_dir, *schema_dir;
static kh_alerts *alerts;

/* A validator: 0 when it accepts body (freeing what it built), -1 with err. */
typedef int (*validate_fn)(const json_t *body, kh_err *err);

static json_t *load(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *load(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    if (!j)
        printf("# bad test JSON %s: %s\n", buf, jerr.text);
    return j;
}

static int spec_in(json_t *spec /* stolen */, kh_err *err)
{
    kh_vm_spec *s = spec ? kh_vm_spec_from_json(spec, err) : NULL;
    json_decref(spec);
    kh_vm_spec_free(s);
    return s ? 0 : -1;
}

static int v_vmspec(const json_t *b, kh_err *err)
{
    return spec_in(json_deep_copy(b), err);
}

static int v_vmpatch(const json_t *b, kh_err *err)
{
    json_t *base = load("{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":256}");
    kh_vm_spec *s = kh_vm_spec_from_json(base, err);
    json_decref(base);
    int rc = s ? kh_vm_spec_patch(s, b, err) : -1;
    kh_vm_spec_free(s);
    return rc;
}

static int wrap(const char *key, const json_t *b, bool array, kh_err *err)
{
    json_t *spec = load("{\"name\":\"a\",\"vcpus\":2,\"memory_mib\":512,"
                        "\"disks\":[{\"path\":\"/d\",\"format\":\"raw\"}],"
                        "\"nics\":[{\"network\":\"n\"}]}");
    json_t *v = json_deep_copy(b);
    if (array) {
        json_t *arr = json_array();
        json_array_append_new(arr, v);
        v = arr;
    }
    json_object_set_new(spec, key, v);
    return spec_in(spec, err);
}

static int v_boot(const json_t *b, kh_err *err) { return wrap("boot", b, false, err); }
static int v_disk(const json_t *b, kh_err *err) { return wrap("disks", b, true, err); }
static int v_nic(const json_t *b, kh_err *err) { return wrap("nics", b, true, err); }
static int v_limits(const json_t *b, kh_err *err) { return wrap("limits", b, false, err); }

static int v_network(const json_t *b, kh_err *err)
{
    kh_network *n = kh_network_from_json(b, "8a6e0804-2bd0-4672-b79d-d97027f1f86b", err);
    kh_network_free(n);
    return n ? 0 : -1;
}

static int v_forward(const json_t *b, kh_err *err)
{
    kh_net_forward f;
    int rc = kh_net_forward_parse(b, &f, err);
    if (rc == 0)
        kh_net_forward_clear(&f);
    return rc;
}

static int v_secgroup(const json_t *b, kh_err *err)
{
    kh_secgroup *g = kh_secgroup_from_json(b, err);
    kh_secgroup_free(g);
    return g ? 0 : -1;
}

static int v_sgrule(const json_t *b, kh_err *err)
{
    json_t *g = load("{\"name\":\"g\",\"rules\":[]}");
    json_array_append_new(json_object_get(g, "rules"), json_deep_copy(b));
    int rc = v_secgroup(g, err);
    json_decref(g);
    return rc;
}

static int v_alerts(const json_t *b, kh_err *err) { return kh_alerts_configure(alerts, b, err); }

static int v_rule(const json_t *b, kh_err *err)
{
    json_t *rules = json_array();
    json_array_append_new(rules, json_deep_copy(b));
    int rc = kh_alerts_set_rules(alerts, rules, err);
    json_decref(rules);
    return rc;
}

static int v_webhook(const json_t *b, kh_err *err) { return kh_webhook_check(b, err); }

/* Validators that need a daemon (a store, a VM): the schema check comes first
 * in them, so a bad body is refused before the NULL context is touched; a
 * valid body is only checked against the schema (refuse = NULL below). */
static int r_pool(const json_t *b, kh_err *err)
{
    return kh_storage_pool_create(NULL, b, err) ? 0 : -1;
}

static int r_volume(const json_t *b, kh_err *err)
{
    return kh_storage_volume_create(NULL, "p", b, NULL, NULL, err);
}

static int r_resize(const json_t *b, kh_err *err)
{
    return kh_storage_volume_resize(NULL, "p", "v", b, NULL, NULL, err);
}

static int r_snapshot(const json_t *b, kh_err *err)
{
    return kh_snapshot_create(NULL, "vm", b, err) ? 0 : -1;
}

static int r_nicpatch(const json_t *b, kh_err *err)
{
    return kh_nics_set(NULL, "vm", 0, b, err) ? 0 : -1;
}

static int r_clone(const json_t *b, kh_err *err)
{
    kh_task *t = NULL;
    return kh_template_clone(NULL, NULL, NULL, b, NULL, NULL, &t, err);
}

static const struct {
    const char *schema;
    validate_fn accept; /* NULL: the schema alone (the validator needs a daemon) */
    validate_fn refuse; /* NULL: the schema alone (the check sits in the route) */
} cases[] = {
    { "VMSpec", v_vmspec, v_vmspec },
    { "VMPatch", v_vmpatch, v_vmpatch },
    { "Boot", v_boot, v_boot },
    { "Disk", v_disk, v_disk },
    { "NIC", v_nic, v_nic },
    { "Limits", v_limits, v_limits },
    { "NetworkSpec", v_network, v_network },
    { "Forward", v_forward, v_forward },
    { "SecurityGroup", v_secgroup, v_secgroup },
    { "SecurityGroupRule", v_sgrule, v_sgrule },
    { "AlertConfig", v_alerts, v_alerts },
    { "AlertRule", v_rule, v_rule },
    { "Webhook", v_webhook, v_webhook },
    { "PoolSpec", NULL, r_pool },
    { "PoolPatch", NULL, NULL },
    { "VolumeSpec", NULL, r_volume },
    { "VolumeResize", NULL, r_resize },
    { "SnapshotSpec", NULL, r_snapshot },
    { "NICPatch", NULL, r_nicpatch },
    { "CloneSpec", NULL, r_clone },
    { "DiskAttach", NULL, NULL },
    { "ActionOptions", NULL, NULL },
    { "StopOptions", NULL, NULL },
    { "SessionLogin", NULL, NULL },
    { "UserSpec", NULL, NULL },
    { "UserPatch", NULL, NULL },
    { "TokenSpec", NULL, NULL },
    { "GroupSpec", NULL, NULL },
    { "RoleSpec", NULL, NULL },
    { "ACLEntry", NULL, NULL },
    { "ProjectSpec", NULL, NULL },
    { "ProjectPatch", NULL, NULL },
};

static int refuse(validate_fn fn, const char *schema, const json_t *b, kh_err *err)
{
    return fn ? fn(b, err) : kh_schema_check(schema, b, "", err);
}

/* Every property of the schema (read-only ones aside) appears in a sample. */
static void check_coverage(const char *schema, const json_t *samples)
{
    const json_t *props = json_object_get(kh_schema_get(schema), "properties");
    const char *key;
    json_t *p;
    json_object_foreach((json_t *)(uintptr_t)props, key, p) {
        if (json_is_true(json_object_get(p, "readOnly")))
            continue;
        bool seen = false;
        size_t i;
        json_t *s;
        json_array_foreach(samples, i, s)
            seen = seen || json_object_get(s, key);
        CHECK(seen);
        if (!seen)
            printf("# %s: no sample has %s\n", schema, key);
    }
}

static void test_cases(void)
{
    static const char hostile[] = "a\"b\\c\nd\x1b[31m\x7f\xc3\xa9";
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const char *name = cases[c].schema;
        CHECK(kh_schema_get(name) != NULL);
        CHECK(json_is_false(json_object_get(kh_schema_get(name), "additionalProperties")));
        char path[512];
        snprintf(path, sizeof(path), "%s/%s.json", data_dir, name);
        json_error_t jerr;
        json_t *samples = json_load_file(path, 0, &jerr);
        CHECK(json_is_array(samples) && json_array_size(samples) > 0);
        if (!samples) {
            printf("# %s: %s\n", path, jerr.text);
            continue;
        }
        check_coverage(name, samples);
        size_t i;
        json_t *s;
        json_array_foreach(samples, i, s) {
            kh_err err = KH_ERR_INIT;
            CHECK(kh_schema_check(name, s, "", &err) == 0);
            if (kh_err_isset(&err))
                printf("# %s[%zu] fails its schema: %s\n", name, i, err.msg);
            kh_err_clear(&err);
            if (cases[c].accept) {
                CHECK(cases[c].accept(s, &err) == 0);
                if (kh_err_isset(&err))
                    printf("# %s[%zu] refused: %s\n", name, i, err.msg);
            }
            /* one key too many */
            json_t *bad = json_deep_copy(s);
            json_object_set_new(bad, "owner", json_string("root"));
            kh_err_clear(&err);
            CHECK(refuse(cases[c].refuse, name, bad, &err) < 0 && err.code == KH_E_INVALID &&
                  strstr(err.msg, "owner: unknown field"));
            if (!strstr(err.msg, "owner: unknown field"))
                printf("# %s + owner: %s\n", name, err.msg);
            json_decref(bad);
            /* a hostile key: quoted, escaped, nothing raw in the message */
            char key[400];
            snprintf(key, sizeof(key), "%s%0300d", hostile, 0);
            bad = json_deep_copy(s);
            json_object_set_new(bad, key, json_true());
            kh_err_clear(&err);
            CHECK(refuse(cases[c].refuse, name, bad, &err) < 0 && err.code == KH_E_INVALID);
            CHECK(strstr(err.msg, "\"a\\\"b\\\\c\\u000ad\\u001b[31m\\u007f\\xc3\\xa9000") &&
                  strstr(err.msg, "...: unknown field"));
            bool raw = false;
            for (const char *m = err.msg; *m; m++)
                raw = raw || (unsigned char)*m < 0x20 || (unsigned char)*m >= 0x7f;
            CHECK(!raw && strlen(err.msg) < 200);
            if (raw || !strstr(err.msg, "...: unknown field"))
                printf("# %s + hostile key: %s\n", name, err.msg);
            json_decref(bad);
        }
        json_decref(samples);
    }
}

/* The messages of the checker itself: path, type, range, enum, length. */
static void test_messages(void)
{
    static const struct {
        const char *schema, *json, *msg;
    } t[] = {
        { "VMSpec", "[]", "must be a JSON object" },
        { "VMSpec", "{\"vcpus\":0}", "vcpus: must be an integer between 1 and 255" },
        { "VMSpec", "{\"vcpus\":1.5}", "vcpus: must be an integer between 1 and 255" },
        { "VMSpec", "{\"machine\":\"pc\"}", "machine: must be \"q35\" or \"microvm\"" },
        { "VMSpec", "{\"serial\":1}", "serial: must be true or false" },
        { "VMSpec", "{\"description\":7}", "description: must be a string of at most 1024 characters" },
        { "VMSpec", "{\"disks\":[{\"format\":\"vmdk\"}]}", "disks[0].format: must be \"raw\" or \"qcow2\"" },
        { "VMSpec", "{\"nics\":[{\"link\":\"sideways\"}]}", "nics[0].link: must be \"up\" or \"down\"" },
        { "VMSpec", "{\"limits\":{\"disk\":[{\"index\":0,\"rate\":1}]}}",
          "limits.disk[0].rate: unknown field" },
        { "VMSpec", "{\"nics\":[{\"hotplugged\":true}]}", "nics[0].hotplugged: unknown field" },
        { "NetworkSpec", "{\"type\":\"mesh\"}", "type: must be \"nat\", \"isolated\" or \"bridged\"" },
        { "NetworkSpec", "{\"bridge\":\"0123456789abcdef\"}", "bridge: at most 15 characters" },
        { "Forward", "{\"host_port\":70000}", "host_port: must be an integer between 1 and 65535" },
        { "Forward", "{\"ip\":\"10.0.0.1\"}", "ip: unknown field" },
        { "Limits", "{\"cpu_affinity\":[]}",
          "cpu_affinity: must be a non-empty array of host CPU numbers" },
        { "AlertRule", "{\"for_seconds\":-1}", "for_seconds: must be a number from 0 to 86400" },
        { "AlertConfig", "{\"webhook\":null}", "" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        kh_err err = KH_ERR_INIT;
        json_t *j = json_loads(t[i].json, 0, NULL);
        int rc = kh_schema_check(t[i].schema, j, "", &err);
        CHECK_STR(err.msg, t[i].msg);
        CHECK(*t[i].msg ? rc < 0 && err.code == KH_E_INVALID : rc == 0);
        json_decref(j);
    }
    kh_err err = KH_ERR_INIT;
    CHECK(kh_schema_check("NoSuchSchema", NULL, "", &err) < 0 && err.code == KH_E_INTERNAL);
    char buf[16];
    kh_schema_quote_key(buf, sizeof(buf), "a\nvery long key indeed", 22);
    CHECK(strlen(buf) < sizeof(buf) && buf[0] == '"');
    char big[64];
    kh_schema_quote_key(big, sizeof(big), "a\0b", 3);
    CHECK_STR(big, "\"a\\u0000b\"");
    kh_schema_quote_key(big, sizeof(big), "../x", 4);
    CHECK_STR(big, "../x");
}

/* Every schema a route names is embedded; every file is embedded. */
static void test_routes_and_files(void)
{
    size_t n;
    const kh_route *r = kh_routes_table(&n);
    for (size_t i = 0; i < n; i++) {
        CHECK(!r[i].request_schema || kh_schema_get(r[i].request_schema));
        CHECK(!r[i].response_schema || kh_schema_get(r[i].response_schema));
    }
    size_t files = 0;
    DIR *d = opendir(schema_dir);
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
            files++;
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)(len - 5), e->d_name);
            CHECK(kh_schema_get(name) != NULL);
            if (!kh_schema_get(name))
                printf("# %s is not in src/schema/meson.build\n", e->d_name);
        }
    }
    if (d)
        closedir(d);
    CHECK(files == kh_schema_nfiles);
    json_t *all = kh_schema_all();
    CHECK(json_object_size(all) == kh_schema_nfiles);
    json_decref(all);
}

int main(int argc, char **argv)
{
    data_dir = argc > 1 ? argv[1] : "data";
    schema_dir = argc > 2 ? argv[2] : "../../../src/schema";
    kh_events *ev = kh_events_new();
    alerts = kh_alerts_new(ev);
    kh_webhook *wh = kh_webhook_new(NULL);
    kh_alerts_set_webhook(alerts, wh);
    RUN(test_messages);
    RUN(test_cases);
    RUN(test_routes_and_files);
    kh_alerts_free(alerts);
    kh_webhook_free(wh);
    kh_events_free(ev);
    TEST_DONE();
}
