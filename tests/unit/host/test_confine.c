/* The confined view of a child (host/confine.c): the hide list, the uid
 * range, the reachability check, and (as root) a real child's /dev and
 * hidden directories. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kh_test.h"
#include "host/confine.h"
#include "host/spawn.h"

static void test_hide_list(void)
{
    kh_confine c = { 0 };
    kh_confine_hide(&c, "/tmp/x/state/run");
    kh_confine_hide(&c, "/tmp/x/state");
    kh_confine_hide(&c, "/var/lib/kh");
    kh_confine_hide(&c, "/tmp");
    kh_confine_hide(&c, "/var/lib/kh/run");
    kh_confine_hide(&c, "/");
    kh_confine_hide(&c, "/usr");
    kh_confine_hide(&c, "/etc/kvmhost/..");
    kh_confine_hide(&c, "relative");
    CHECK(c.nhide == 2);
    CHECK_STR(c.hide[0], "/var/lib/kh");
    CHECK_STR(c.hide[1], "/tmp");
}

static void test_uid_range(void)
{
    kh_err err = KH_ERR_INIT;
    uid_t first = 0;
    unsigned count = 0;
    CHECK(kh_confine_uid_range_parse("700000000-700065535", &first, &count, &err) == 0);
    CHECK(first == 700000000 && count == 65536);
    static const char *const bad[] = { "5-10", "2000-1000", "abc", "1000-", "-5", "1000",
                                       "1000-99999999999", "1000-2000x", "1000--2000",
                                       "1000-20000000" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(kh_confine_uid_range_parse(bad[i], &first, &count, &err) < 0);
        CHECK(err.code == KH_E_INVALID && strstr(err.msg, "--qemu-uid-range") != NULL);
        kh_err_clear(&err);
    }
}

static void test_reachable(void)
{
    char dir[] = "/tmp/kh-confine-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK(chmod(dir, 0700) == 0);
    char run[64];
    snprintf(run, sizeof(run), "%s/run", dir);
    CHECK(mkdir(run, 0711) == 0);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_confine_check_reachable("run dir", run, 700000000, 700000000, &err) < 0);
    char want[256];
    snprintf(want, sizeof(want), "run dir %s: not reachable by QEMU uid 700000000: parent %s "
             "is 0700", run, dir);
    CHECK(strncmp(err.msg, want, strlen(want)) == 0);
    kh_err_clear(&err);
    /* its owner may pass */
    struct stat st;
    CHECK(stat(dir, &st) == 0);
    CHECK(kh_confine_check_reachable("run dir", run, st.st_uid, st.st_gid, &err) == 0);
    CHECK(chmod(dir, 0711) == 0);
    CHECK(kh_confine_check_reachable("run dir", run, 700000000, 700000000, &err) == 0);
    CHECK(chmod(run, 0700) == 0);
    CHECK(kh_confine_check_reachable("run dir", run, 700000000, 700000000, &err) < 0);
    CHECK(strstr(err.msg, "directory ") != NULL);
    kh_err_clear(&err);
    rmdir(run);
    rmdir(dir);
}

/* As root: a child in the confined view sees /dev with the listed nodes
 * only, the hidden dir empty but for the kept one, and its own writes to
 * the kept dir land in the host's. */
static void test_child_view(void)
{
    if (geteuid() != 0) {
        printf("# skipped: not root\n");
        return;
    }
    char dir[] = "/var/tmp/kh-confine-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char keep[64], other[64], script[512];
    snprintf(keep, sizeof(keep), "%s/a/keep", dir);
    snprintf(other, sizeof(other), "%s/other", dir);
    CHECK(mkdir(other, 0700) == 0);
    char a[64];
    snprintf(a, sizeof(a), "%s/a", dir);
    CHECK(mkdir(a, 0700) == 0 && mkdir(keep, 0700) == 0);
    snprintf(script, sizeof(script),
             "ls /dev | tr '\\n' ' '; echo; ls %s | tr '\\n' ' '; echo; "
             "echo hi > %s/out && echo wrote; test -e %s/a/keep && echo kept",
             dir, keep, dir);
    char sh[] = "/bin/sh", dash_c[] = "-c";
    char *argv[] = { sh, dash_c, script, NULL };
    kh_confine c = { .devs = { "null", "zero", "nonexistent-dev" }, .ndevs = 3 };
    kh_confine_hide(&c, dir);
    c.keep = keep;
    kh_spawn_spec spec = { .argv = argv, .die_with_parent = true, .confine = &c };
    kh_spawn_output res;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_spawn_run(&spec, NULL, &res, &err) == 0);
    CHECK(res.status == 0);
    CHECK_STR(res.out, "fd null zero \na \nwrote\nkept\n");
    kh_spawn_output_clear(&res);
    char out[80];
    snprintf(out, sizeof(out), "%s/out", keep);
    CHECK(access(out, F_OK) == 0);
    unlink(out);
    rmdir(keep);
    rmdir(a);
    rmdir(other);
    rmdir(dir);
}

int main(void)
{
    RUN(test_hide_list);
    RUN(test_uid_range);
    RUN(test_reachable);
    RUN(test_child_view);
    TEST_DONE();
}
