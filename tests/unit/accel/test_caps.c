/* test_caps.c - QEMU binary discovery and capability probing, with the
 * real binary when installed and with fake ones (shell scripts). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kh_test.h"
#include "qemu/caps.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/misc.h"

static char tmpdir[] = "/tmp/kh-caps-test.XXXXXX";

/* Write an executable shell script tmpdir/name with the given body. */
static char *fake(const char *name, const char *body, mode_t mode)
{
    char *path = xasprintf("%s/%s", tmpdir, name);
    char *text = xasprintf("#!/bin/sh\n%s\n", body);
    kh_err err = KH_ERR_INIT;
    if (kh_fs_write_atomic(path, text, strlen(text), mode, &err) < 0)
        abort();
    free(text);
    return path;
}

static void test_real_binary(void)
{
    unsetenv("KVMHOST_QEMU");
    kh_err err = KH_ERR_INIT;
    kh_qemu_caps caps;
    uint64_t t = kh_now_ms();
    char *bin = kh_qemu_caps_probe(NULL, &caps, &err);
    uint64_t ms = kh_now_ms() - t;
    if (!bin && strstr(err.msg, "not found in PATH")) {
        printf("# skip: %s\n", err.msg);
        return;
    }
    CHECK(bin != NULL);
    if (!bin) {
        printf("# %s\n", err.msg);
        return;
    }
    CHECK(bin[0] == '/');
    CHECK(caps.version >= KH_QEMU_MIN_VERSION);
    printf("# %s: version %u sandbox %d io_uring %d (%llu ms)\n", bin, caps.version,
           caps.sandbox, caps.io_uring, (unsigned long long)ms);
    free(bin);
}

static void test_fake_binaries(void)
{
    kh_err err = KH_ERR_INIT;
    kh_qemu_caps caps;
    unsetenv("KVMHOST_QEMU");

    /* Knows -version only: no sandbox, no io_uring. */
    char *plain = fake("qemu-plain",
                       "case \"$1\" in -version) echo 'QEMU emulator version 9.1.3 (fake)';"
                       " echo 'Copyright (c) fake'; exit 0;; esac\nexit 1",
                       0755);
    char *bin = kh_qemu_caps_probe(plain, &caps, &err);
    CHECK_STR(bin, plain);
    CHECK(caps.version == 90103);
    CHECK(!caps.sandbox && !caps.io_uring);
    free(bin);

    /* Accepts everything and reads "quit" from its monitor: the sandbox
     * check passes, through stdin. */
    char *all = fake("qemu-all",
                     "case \"$1\" in -version) echo 'QEMU emulator version 8.0 (two parts)'; exit 0;; esac\n"
                     "read cmd; [ \"$cmd\" = quit ]",
                     0755);
    memset(&caps, 0, sizeof(caps));
    bin = kh_qemu_caps_probe(all, &caps, &err);
    CHECK_STR(bin, all);
    CHECK(caps.version == 80000);
    CHECK(caps.sandbox);
    free(bin);

    /* Sandbox fine, io_uring refused; and the other way round. */
    char *nouring = fake("qemu-nouring",
                         "case \"$*\" in -version) echo 'QEMU emulator version 7.2.0'; exit 0;;"
                         " *aio=io_uring*) echo 'qemu-system-x86_64: no io_uring' >&2; exit 1;; esac\n"
                         "read cmd; [ \"$cmd\" = quit ]",
                         0755);
    bin = kh_qemu_caps_probe(nouring, &caps, &err);
    CHECK(bin && caps.sandbox && !caps.io_uring);
    free(bin);
    free(nouring);
    char *nosandbox = fake("qemu-nosandbox",
                           "case \"$*\" in -version) echo 'QEMU emulator version 7.2.0'; exit 0;;"
                           " *-sandbox*) exit 1;; esac\nread cmd; [ \"$cmd\" = quit ]",
                           0755);
    bin = kh_qemu_caps_probe(nosandbox, &caps, &err);
    CHECK(bin && !caps.sandbox);
    printf("# no sandbox: io_uring %d (the host kernel decides)\n", caps.io_uring);
    free(bin);
    free(nosandbox);

    /* KVMHOST_QEMU, and an explicit argument over it. */
    setenv("KVMHOST_QEMU", plain, 1);
    bin = kh_qemu_caps_probe(NULL, &caps, &err);
    CHECK_STR(bin, plain);
    free(bin);
    bin = kh_qemu_caps_probe(all, &caps, &err);
    CHECK_STR(bin, all);
    free(bin);
    unsetenv("KVMHOST_QEMU");

    /* PATH search for the default name. */
    char *dflt = fake("qemu-system-x86_64", "echo 'QEMU emulator version 7.2.22 (x)'", 0755);
    char *saved = xstrdup(getenv("PATH"));
    setenv("PATH", tmpdir, 1);
    bin = kh_qemu_caps_probe(NULL, &caps, &err);
    CHECK_STR(bin, dflt);
    CHECK(caps.version == 70222);
    free(bin);
    setenv("PATH", saved, 1);
    free(saved);
    CHECK(!kh_err_isset(&err));
    free(dflt);
    free(plain);
    free(all);
}

static void expect_fail(const char *binary, kh_code code, const char *want)
{
    kh_err err = KH_ERR_INIT;
    kh_qemu_caps caps;
    memset(&caps, 0x55, sizeof(caps));
    char *bin = kh_qemu_caps_probe(binary, &caps, &err);
    CHECK(bin == NULL);
    CHECK(err.code == code);
    CHECK(strstr(err.msg, want) != NULL);
    CHECK(caps.version == 0 && !caps.sandbox && !caps.io_uring);
    if (!strstr(err.msg, want))
        printf("# \"%s\" lacks \"%s\"\n", err.msg, want);
    free(bin);
}

static void test_errors(void)
{
    expect_fail("/nonexistent/qemu-system-x86_64", KH_E_UNAVAILABLE, "does not exist");

    char *saved = xstrdup(getenv("PATH"));
    setenv("PATH", tmpdir, 1);
    expect_fail("qemu-nope", KH_E_UNAVAILABLE, "qemu-nope not found in PATH");
    setenv("PATH", saved, 1);
    free(saved);

    setenv("KVMHOST_QEMU", "/nonexistent/q", 1);
    expect_fail(NULL, KH_E_UNAVAILABLE, "KVMHOST_QEMU /nonexistent/q does not exist");
    unsetenv("KVMHOST_QEMU");

    char *p = fake("noexec", "exit 0", 0644);
    expect_fail(p, KH_E_UNAVAILABLE, "not an executable file");
    free(p);
    expect_fail(tmpdir, KH_E_UNAVAILABLE, "not an executable file");

    p = fake("garbage", "echo 'hello world'", 0755);
    expect_fail(p, KH_E_QEMU, "no \"QEMU emulator version");
    free(p);
    p = fake("fails", "echo 'qemu: broken' >&2; exit 3", 0755);
    expect_fail(p, KH_E_QEMU, "failed (exit 3): qemu: broken");
    free(p);
    p = fake("old", "echo 'QEMU emulator version 6.2.0'", 0755);
    expect_fail(p, KH_E_UNSUPPORTED, "needs 7.2 or later");
    free(p);
    p = fake("crashes", "kill -SEGV $$", 0755);
    expect_fail(p, KH_E_QEMU, "signal 11");
    free(p);
    p = fake("badexec", "", 0755);
    /* A script with a missing interpreter cannot be run. */
    char *text = xstrdup("#!/nonexistent/sh\n");
    kh_fs_write_atomic(p, text, strlen(text), 0755, NULL);
    free(text);
    expect_fail(p, KH_E_QEMU, "cannot run");
    free(p);

    p = fake("hangs", "exec sleep 10", 0755);
    uint64_t t = kh_now_ms();
    expect_fail(p, KH_E_TIMEOUT, "did not finish");
    CHECK(kh_now_ms() - t < 4000);
    free(p);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_real_binary);
    RUN(test_fake_binaries);
    RUN(test_errors);
    kh_fs_rm_rf(tmpdir, NULL);
    TEST_DONE();
}
