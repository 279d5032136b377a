#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "util/check.h"
#include "util/err.h"
#include "util/strv.h"
#include "util/misc.h"

static void test_names(void)
{
    kh_err err = KH_ERR_INIT;
    CHECK(kh_check_name("web-1_a.b", "name", &err) == 0);
    const char *bad[] = { "", "../../etc/x", "x,file=/etc/shadow", "a b", ".hidden", "-x",
                          "a/b", "a\nb", "x;rm", "$(id)",
                          "0123456789012345678901234567890123456789012345678901234567890123456789" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kh_err_clear(&err);
        CHECK(kh_check_name(bad[i], "vm name", &err) < 0);
        CHECK(err.code == KH_E_INVALID);
        CHECK(strstr(err.msg, "vm name") != NULL);
    }
}

static void test_paths(void)
{
    kh_err err = KH_ERR_INIT;
    CHECK(kh_check_abs_path("/var/lib/x.img", "path", &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_check_abs_path("rel/x", "path", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_check_abs_path("/a/../etc/shadow", "path", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_check_abs_path("/a\n", "path", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_check_text("console=ttyS0 quiet", 100, "cmdline", &err) == 0);
    CHECK(kh_check_text("bad\xff", 100, "cmdline", &err) < 0);
}

static void test_err_table(void)
{
    CHECK(kh_code_http_status(KH_E_INVALID) == 400);
    CHECK(kh_code_http_status(KH_E_NOTFOUND) == 404);
    CHECK(kh_code_http_status(KH_E_CONFLICT) == 409);
    CHECK(kh_code_http_status(KH_E_TOOLARGE) == 413);
    CHECK(kh_code_from_name("conflict") == KH_E_CONFLICT);
    kh_err err = KH_ERR_INIT;
    kh_err_set(&err, KH_E_CONFLICT, "first");
    kh_err_set(&err, KH_E_INVALID, "second");
    CHECK(err.code == KH_E_CONFLICT);
    CHECK_STR(err.msg, "first");
    kh_err_prefix(&err, "vm %s", "a");
    CHECK_STR(err.msg, "vm a: first");
}

static void test_strv_uuid(void)
{
    kh_strv *sv = kh_strv_new();
    for (int i = 0; i < 40; i++)
        kh_strv_addf(sv, "a%d", i);
    CHECK(sv->n == 40);
    CHECK(sv->v[40] == NULL);
    char *j = kh_strv_join(sv, " ");
    CHECK(strncmp(j, "a0 a1 a2", 8) == 0);
    free(j);
    kh_strv_free(sv);
    char u[37];
    kh_uuid_generate(u);
    CHECK(kh_check_uuid(u));
}

int main(void)
{
    RUN(test_names);
    RUN(test_paths);
    RUN(test_err_table);
    RUN(test_strv_uuid);
    TEST_DONE();
}
