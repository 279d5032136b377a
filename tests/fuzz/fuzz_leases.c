/* fuzz_leases.c - libFuzzer target: a dnsmasq lease file (written by
 * dnsmasq, whose DHCP clients choose their host names) through
 * kh_dnsmasq_leases_parse.
 * Properties: the result is an array of objects with a mac, an ip and an
 * integer expiry; every string is valid for JSON output (the dump works)
 * and holds no control character.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "net/dnsmasq.h"
#include "util/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void no_ctl(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = xmalloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    json_t *arr = kh_dnsmasq_leases_parse(text);
    if (!json_is_array(arr))
        abort();
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        if (!json_is_object(o) || !json_is_string(json_object_get(o, "mac")) ||
            !json_is_string(json_object_get(o, "ip")) ||
            !json_is_integer(json_object_get(o, "expires")))
            abort();
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v)
            if (json_is_string(v))
                no_ctl(json_string_value(v));
    }
    char *s = json_dumps(arr, JSON_COMPACT);
    if (!s)
        abort();
    free(s);
    json_decref(arr);
    free(text);
    return 0;
}
