/* fuzz_bodies.c - libFuzzer target: the JSON request bodies of networks,
 * network forwards, security groups, pools, volumes (sizes such as "10G"),
 * alert rules and VM limits, through the same parsers the API uses. The
 * first byte picks the parser, the rest is the body (NUL bytes allowed).
 * Properties: a network (with its subnet) or security group accepted
 * prints to JSON that parses again to the same JSON (stored form for
 * networks); a size
 * accepted is > 0 and at most 2^63; a refusal always comes with a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "conf/limits.h"
#include "instance/alert.h"
#include "net/network.h"
#include "net/secgroup.h"
#include "schema/schema.h"
#include "storage/storage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void refused(const kh_err *err)
{
    if (!kh_err_isset(err) || !err->msg[0])
        abort();
}

static void same_json(const json_t *a, const json_t *b)
{
    if (!json_equal(a, b))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    json_t *j = json_loadb((const char *)data + 1, size - 1,
                           JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
    if (!j)
        return 0;
    kh_err err = KH_ERR_INIT;
    switch (data[0] % 8) {
    case 0: {
        kh_network *n = kh_network_from_json(j, "00000000-0000-4000-8000-000000000001", &err);
        if (n && n->type != KH_NET_BRIDGED && n->prefix == 0) {
            kh_network_free(n); /* no subnet yet: the API picks one before storing */
        } else if (n) {
            json_t *s = kh_network_to_json(n);
            kh_err e2 = KH_ERR_INIT;
            kh_network *n2 = kh_network_from_stored(s, n->id, &e2);
            if (!n2)
                abort();
            json_t *s2 = kh_network_to_json(n2);
            same_json(s, s2);
            json_decref(s2);
            json_decref(s);
            kh_network_free(n2);
            kh_network_free(n);
        } else {
            refused(&err);
        }
        break;
    }
    case 1: {
        kh_net_forward f;
        memset(&f, 0, sizeof(f));
        if (kh_net_forward_parse(j, &f, &err) == 0)
            kh_net_forward_clear(&f);
        else
            refused(&err);
        break;
    }
    case 2: {
        kh_secgroup *g = kh_secgroup_from_json(j, &err);
        if (g) {
            json_t *s = kh_secgroup_to_json(g);
            json_t *in = json_deep_copy(s);
            json_object_del(in, "created_at");
            json_object_del(in, "id");
            kh_err e2 = KH_ERR_INIT;
            kh_secgroup *g2 = kh_secgroup_from_json(in, &e2);
            if (!g2)
                abort();
            json_t *s2 = kh_secgroup_to_json(g2);
            json_object_del(s, "created_at");
            json_object_del(s2, "created_at");
            same_json(s, s2);
            json_decref(s2);
            json_decref(in);
            json_decref(s);
            kh_secgroup_free(g2);
            kh_secgroup_free(g);
        } else {
            refused(&err);
        }
        break;
    }
    case 3: {
        uint64_t n = 0;
        if (kh_volume_size_parse(j, &n, &err) == 0) {
            if (n == 0 || n > ((uint64_t)1 << 63))
                abort();
        } else {
            refused(&err);
        }
        break;
    }
    case 4:
        if (kh_schema_check("VolumeSpec", j, "", &err) < 0)
            refused(&err);
        break;
    case 5:
        if (kh_schema_check("PoolSpec", j, "", &err) < 0)
            refused(&err);
        break;
    case 6: {
        static kh_alerts *a;
        if (!a)
            a = kh_alerts_new(NULL);
        if (kh_alerts_set_rules(a, j, &err) < 0)
            refused(&err);
        break;
    }
    case 7: {
        kh_limits *l = kh_limits_from_json(j, &err);
        if (l)
            kh_limits_free(l);
        else
            refused(&err);
        break;
    }
    }
    json_decref(j);
    return 0;
}
