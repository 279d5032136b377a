#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string.h>

#include "../kh_test.h"
#include "util/check.h"
#include "util/fs.h"
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

/* kh_fs_write_replace: the same result as kh_fs_write_atomic (content,
 * mode), only without the fsync. */
static void test_write_replace(void)
{
    char dir[] = "/tmp/kh-test-fs-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[64];
    snprintf(path, sizeof(path), "%s/boot.json", dir);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_fs_write_replace(path, "{\"a\":1}", 7, 0600, &err) == 0);
    CHECK(kh_fs_write_replace(path, "{}", 2, 0600, &err) == 0);
    size_t len = 0;
    char *text = kh_fs_read(path, 100, &len, &err);
    CHECK(text && len == 2 && strcmp(text, "{}") == 0);
    free(text);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(kh_fs_rm_rf(dir, &err) == 0);
    CHECK(access(dir, F_OK) < 0);
}

int main(void)
{
    RUN(test_names);
    RUN(test_paths);
    RUN(test_err_table);
    RUN(test_strv_uuid);
    RUN(test_write_replace);
    TEST_DONE();
}
