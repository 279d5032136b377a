/* test_nic_limits.c - limits.nic (per-NIC bandwidth) and NIC "link" in the
 * spec: parse, check against the NICs, round trip, removal shift. */
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "conf/limits.h"
#include "conf/vm_spec.h"
#include "util/err.h"

#define NICS "\"nics\":[{\"network\":\"a\"},{\"network\":\"b\",\"link\":\"down\"}]"

static kh_vm_spec *spec(const char *limits, kh_err *err)
{
    char text[1024];
    snprintf(text, sizeof(text), "{\"name\":\"v\"," NICS "%s%s%s}", limits ? ",\"limits\":" : "",
             limits ? limits : "", "");
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j) {
        printf("# bad test JSON: %s: %s\n", text, jerr.text);
        return NULL;
    }
    kh_vm_spec *s = kh_vm_spec_from_json(j, err);
    json_decref(j);
    return s;
}

static void test_parse(void)
{
    kh_err err = KH_ERR_INIT;
    kh_vm_spec *s = spec("{\"nic\":[{\"index\":1,\"inbound_bps\":1000000,"
                         "\"outbound_bps\":500000,\"outbound_burst\":200000}]}", &err);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK(s->nics[1].link_down && !s->nics[0].link_down);
    const kh_nic_limits *n = kh_limits_nic(s->limits, 1);
    CHECK(n && n->inbound_bps == 1000000 && n->outbound_bps == 500000);
    CHECK(n && n->outbound_burst == 200000 && n->inbound_burst == 0);
    CHECK(kh_limits_nic(s->limits, 0) == NULL);
    CHECK(kh_limits_nic_burst(1000000, 0) == 131072);
    CHECK(kh_limits_nic_burst(8000000, 0) == 1000000);
    CHECK(kh_limits_nic_burst(8000000, 70000) == 70000);
    /* round trip */
    json_t *j = kh_vm_spec_to_json(s);
    char *text = json_dumps(json_object_get(j, "limits"), JSON_COMPACT | JSON_SORT_KEYS);
    CHECK_STR(text, "{\"nic\":[{\"inbound_bps\":1000000,\"index\":1,\"outbound_bps\":500000,"
                    "\"outbound_burst\":200000}]}");
    free(text);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(j, "nics"), 1),
                                                "link")),
              "down");
    CHECK(!json_object_get(json_array_get(json_object_get(j, "nics"), 0), "link"));
    json_decref(j);
    /* a dup keeps them; removing NIC 0 moves NIC 1's limit to index 0 */
    kh_vm_spec *d = kh_vm_spec_dup(s);
    kh_limits_nic_removed(d->limits, 0);
    CHECK(d->limits->nnics == 1 && d->limits->nics[0].index == 0);
    kh_limits_nic_removed(d->limits, 0);
    CHECK(d->limits->nnics == 0);
    CHECK(s->limits->nnics == 1 && s->limits->nics[0].index == 1);
    kh_vm_spec_free(d);
    kh_vm_spec_free(s);
}

static void test_invalid(void)
{
    static const char *const bad[] = {
        "{\"nic\":[{\"index\":2,\"inbound_bps\":1000000}]}",           /* no NIC 2 */
        "{\"nic\":[{\"index\":0},{\"index\":0}]}",                      /* twice */
        "{\"nic\":[{\"inbound_bps\":1000000}]}",                        /* no index */
        "{\"nic\":[{\"index\":0,\"inbound_bps\":999}]}",                /* below the minimum */
        "{\"nic\":[{\"index\":0,\"inbound_bps\":-5}]}",
        "{\"nic\":[{\"index\":0,\"inbound_bps\":\"1M\"}]}",
        "{\"nic\":[{\"index\":0,\"inbound_burst\":100000}]}",           /* burst without rate */
        "{\"nic\":[{\"index\":0,\"outbound_bps\":10000,\"outbound_burst\":1500}]}", /* < 64 KiB */
        "{\"nic\":[{\"index\":0,\"bps\":10000}]}",                      /* unknown field */
        "{\"nic\":{}}",
        NULL,
    };
    for (size_t i = 0; bad[i]; i++) {
        kh_err err = KH_ERR_INIT;
        kh_vm_spec *s = spec(bad[i], &err);
        CHECK(s == NULL);
        if (s) {
            printf("# accepted: %s\n", bad[i]);
            kh_vm_spec_free(s);
        }
        CHECK(err.code == KH_E_INVALID && strstr(err.msg, "limits.nic"));
    }
    kh_err err = KH_ERR_INIT;
    json_t *j = json_loads("{\"name\":\"v\",\"nics\":[{\"network\":\"a\",\"link\":\"off\"}]}", 0,
                           NULL);
    CHECK(kh_vm_spec_from_json(j, &err) == NULL && strstr(err.msg, "nics[0].link"));
    json_decref(j);
}

int main(void)
{
    RUN(test_parse);
    RUN(test_invalid);
    TEST_DONE();
}
