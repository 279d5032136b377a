/* test_router.c - the path matcher (src/http/router.c): literal and {param}
 * segments, %-decoding per segment, what does not match, the route lookup
 * with its Allow list, and the table check. Pure: no server. */
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "http/router.h"
#include "util/mem.h"

static void h(kh_http_req *req, void *app)
{
    (void)req;
    (void)app;
}

static const kh_route routes[] = {
    { "GET", "/", h, 0, "root", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/vms", h, 0, "list", NULL, NULL, NULL, NULL },
    { "POST", "/api/v1/vms", h, 0, "create", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/vms/{name}", h, 0, "get", NULL, NULL, NULL, NULL },
    { "DELETE", "/api/v1/vms/{name}", h, 0, "delete", NULL, NULL, NULL, NULL },
    { "POST", "/api/v1/vms/{name}/disks/{disk}/resize", h, 0, "resize", NULL, NULL, NULL, NULL },
};

/* Match path against pattern; the params land in p/np (cleared first). */
static bool match(const char *pattern, const char *path, kh_router_param *p, size_t *np)
{
    kh_router_path ps;
    *np = 0;
    if (kh_router_split(path, &ps) != 0)
        return false;
    bool ok = kh_router_match(pattern, &ps, p, np);
    kh_router_path_clear(&ps);
    return ok;
}

static void params_clear(kh_router_param *p, size_t *np)
{
    for (size_t i = 0; i < *np; i++)
        free(p[i].value);
    *np = 0;
}

static void test_match(void)
{
    kh_router_param p[KH_ROUTER_MAX_PARAMS];
    size_t np;
    CHECK(match("/", "/", p, &np) && np == 0);
    CHECK(match("/api/v1/vms", "/api/v1/vms", p, &np) && np == 0);
    CHECK(match("/api/v1/vms/{name}", "/api/v1/vms/web-1", p, &np) && np == 1);
    CHECK(p[0].name_len == 4 && strncmp(p[0].name, "name", 4) == 0);
    CHECK_STR(p[0].value, "web-1");
    params_clear(p, &np);
    /* a segment is decoded on its own: %2F stays inside the segment */
    CHECK(match("/api/v1/vms/{name}", "/api/v1/vms/a%20b%2Fc", p, &np) && np == 1);
    CHECK_STR(p[0].value, "a b/c");
    params_clear(p, &np);
    CHECK(match("/api/v1/vms/{name}/disks/{disk}/resize", "/api/v1/vms/v/disks/d0/resize", p,
                &np) && np == 2);
    CHECK_STR(p[0].value, "v");
    CHECK_STR(p[1].value, "d0");
    params_clear(p, &np);

    /* no match: other literal, too short, too long, empty parameter, trailing slash */
    CHECK(!match("/api/v1/vms", "/api/v1/vm", p, &np));
    CHECK(!match("/api/v1/vms/{name}", "/api/v1/vms", p, &np));
    CHECK(!match("/api/v1/vms", "/api/v1/vms/x", p, &np));
    params_clear(p, &np);
    CHECK(!match("/api/v1/vms/{name}", "/api/v1/vms/", p, &np));
    params_clear(p, &np);
    CHECK(!match("/api/v1/vms", "/api/v1/vms/", p, &np));
    CHECK(!match("/", "/x", p, &np));
    CHECK(!match("/x", "/", p, &np));
    params_clear(p, &np);

    /* paths the splitter refuses */
    kh_router_path ps;
    CHECK(kh_router_split("relative", &ps) == -1);
    CHECK(kh_router_split("/a%zz", &ps) == -1);
    CHECK(kh_router_split("/a%00b", &ps) == -1);
    CHECK(kh_router_split("/a%2", &ps) == -1);
    char longp[2 * (KH_ROUTER_MAX_SEGMENTS + 1) + 1];
    for (size_t i = 0; i <= KH_ROUTER_MAX_SEGMENTS; i++)
        memcpy(longp + 2 * i, "/a", 2);
    longp[sizeof(longp) - 1] = '\0';
    CHECK(kh_router_split(longp, &ps) == -1);
}

static void test_find(void)
{
    kh_router_path ps;
    bool known;
    char allow[64];
    CHECK(kh_router_split("/api/v1/vms/x", &ps) == 0);
    const kh_route *r = kh_router_find(routes, KH_ARRAY_LEN(routes), &ps, "DELETE", &known,
                                       allow, sizeof(allow));
    CHECK(r == &routes[4] && known);
    r = kh_router_find(routes, KH_ARRAY_LEN(routes), &ps, "PUT", &known, allow, sizeof(allow));
    CHECK(r == NULL && known);
    CHECK_STR(allow, "GET, DELETE");
    kh_router_path_clear(&ps);

    CHECK(kh_router_split("/api/v1/nothing", &ps) == 0);
    r = kh_router_find(routes, KH_ARRAY_LEN(routes), &ps, "GET", &known, allow, sizeof(allow));
    CHECK(r == NULL && !known);
    CHECK_STR(allow, "");
    kh_router_path_clear(&ps);
}

static void test_check(void)
{
    kh_err err = KH_ERR_INIT;
    CHECK(kh_router_check(routes, KH_ARRAY_LEN(routes), &err) == 0);
    const kh_route bad_path[] = { { "GET", "nope", h, 0, NULL, NULL, NULL, NULL, NULL } };
    CHECK(kh_router_check(bad_path, 1, &err) == -1 && err.code == KH_E_INTERNAL);
    kh_err_clear(&err);
    const kh_route no_handler[] = { { "GET", "/x", NULL, 0, NULL, NULL, NULL, NULL, NULL } };
    CHECK(kh_router_check(no_handler, 1, &err) == -1);
    kh_err_clear(&err);
    const kh_route many[] = { { "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", h, 0, NULL,
                                NULL, NULL, NULL, NULL } };
    CHECK(kh_router_check(many, 1, &err) == -1);
}

int main(void)
{
    RUN(test_match);
    RUN(test_find);
    RUN(test_check);
    TEST_DONE();
}
