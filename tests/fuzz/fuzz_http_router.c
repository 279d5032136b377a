/* fuzz_http_router.c - libFuzzer target: a raw request path (as sent)
 * through the router: %-decoding and splitting, route lookup and matching.
 * Properties: a split path re-encoded (every byte but unreserved ones as
 * %XX) splits to the same segments; a route found for it matches it, with
 * one parameter value per {param}, none empty.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/router.h"
#include "util/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void h(kh_http_req *req, void *app)
{
    (void)req;
    (void)app;
}

static const kh_route routes[] = {
    { "GET", "/api/v1/vms", h, 0, "", NULL, NULL, NULL, NULL },
    { "POST", "/api/v1/vms", h, 0, "", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/vms/{name}", h, 0, "", NULL, NULL, NULL, NULL },
    { "DELETE", "/api/v1/vms/{name}", h, 0, "", NULL, NULL, NULL, NULL },
    { "POST", "/api/v1/vms/{name}/kill", h, 0, "", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/vms/{name}/snapshots/{snap}", h, 0, "", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/pools/{pool}/volumes/{volume}", h, 0, "", NULL, NULL, NULL, NULL },
    { "PUT", "/api/v1/pools/{pool}/volumes/{volume}/data", h, 0, "", NULL, NULL, NULL, NULL },
    { "GET", "/", h, 0, "", NULL, NULL, NULL, NULL },
    { "GET", "/metrics", h, 0, "", NULL, NULL, NULL, NULL },
};

static const char *const methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD" };

static char *encode(const kh_router_path *ps)
{
    size_t cap = 2;
    for (size_t i = 0; i < ps->n; i++)
        cap += 3 * strlen(ps->seg[i]) + 1;
    char *out = xmalloc(cap), *o = out;
    if (ps->n == 0)
        *o++ = '/';
    for (size_t i = 0; i < ps->n; i++) {
        *o++ = '/';
        for (const unsigned char *c = (const unsigned char *)ps->seg[i]; *c; c++) {
            if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_' || *c == '~')
                *o++ = (char)*c;
            else
                o += sprintf(o, "%%%02X", *c);
        }
    }
    *o = '\0';
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *method = methods[data[0] % (sizeof(methods) / sizeof(methods[0]))];
    char *path = xmalloc(size);
    memcpy(path, data + 1, size - 1);
    path[size - 1] = '\0'; /* a NUL inside ends the path, as in a C string */
    kh_router_path ps;
    if (kh_router_split(path, &ps) == 0) {
        char *again = encode(&ps);
        kh_router_path ps2;
        if (kh_router_split(again, &ps2) != 0 || ps2.n != ps.n)
            abort();
        for (size_t i = 0; i < ps.n; i++)
            if (strcmp(ps.seg[i], ps2.seg[i]) != 0)
                abort();
        kh_router_path_clear(&ps2);
        free(again);
        bool known = false;
        char allow[128];
        const kh_route *r = kh_router_find(routes, sizeof(routes) / sizeof(routes[0]), &ps,
                                           method, &known, allow, sizeof(allow));
        if (r) {
            kh_router_param params[KH_ROUTER_MAX_PARAMS];
            size_t n = 0;
            if (!kh_router_match(r->path, &ps, params, &n) || strcmp(r->method, method) != 0)
                abort();
            size_t want = 0;
            for (const char *p = r->path; *p; p++)
                want += *p == '{';
            if (n != want)
                abort();
            for (size_t i = 0; i < n; i++) {
                if (!params[i].value[0])
                    abort();
                free(params[i].value);
            }
        }
        kh_router_path_clear(&ps);
    }
    free(path);
    return 0;
}
