/* test_accel.c - the KVM probe: bounded, always a reason, forced modes. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "qemu/accel.h"
#include "util/misc.h"

static void test_real_probe(void)
{
    unsetenv("KVMHOST_ACCEL");
    kh_accel_probe p;
    memset(&p, 0x55, sizeof(p));
    uint64_t t = kh_now_ms();
    kh_accel_probe_run(NULL, &p);
    uint64_t ms = kh_now_ms() - t;
    CHECK(ms < 3000);
    CHECK(p.accel == KH_ACCEL_KVM || p.accel == KH_ACCEL_TCG);
    CHECK(memchr(p.reason, '\0', sizeof(p.reason)) != NULL);
    CHECK(p.reason[0] != '\0');
    printf("# /dev/kvm: %s: %s (%llu ms)\n", p.accel == KH_ACCEL_KVM ? "kvm" : "tcg", p.reason,
           (unsigned long long)ms);
}

/* A daemon may block SIGALRM in its threads; the probe's own run timer
 * must still work (else a slow KVM would show as "hung"). */
static void test_blocked_alarm(void)
{
    unsetenv("KVMHOST_ACCEL");
    kh_accel_probe free_run, blocked;
    kh_accel_probe_run(NULL, &free_run);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, &old);
    uint64_t t = kh_now_ms();
    kh_accel_probe_run(NULL, &blocked);
    CHECK(kh_now_ms() - t < 3000);
    sigprocmask(SIG_SETMASK, &old, NULL);
    CHECK(blocked.accel == free_run.accel);
    if (!strstr(free_run.reason, "hung for"))
        CHECK(strstr(blocked.reason, "hung for") == NULL);
}

static void test_missing_device(void)
{
    unsetenv("KVMHOST_ACCEL");
    kh_accel_probe p;
    kh_accel_probe_run("/nonexistent/kvm", &p);
    CHECK(p.accel == KH_ACCEL_TCG);
    CHECK(strstr(p.reason, "/nonexistent/kvm not present") != NULL);

    /* Not a KVM device at all: open works, the API version does not. */
    kh_accel_probe_run("/dev/null", &p);
    CHECK(p.accel == KH_ACCEL_TCG);
    CHECK(strstr(p.reason, "API version") != NULL);
    printf("# /dev/null: %s\n", p.reason);
}

static void test_forced(void)
{
    kh_accel_probe p;
    setenv("KVMHOST_ACCEL", "tcg", 1);
    kh_accel_probe_run(NULL, &p);
    CHECK(p.accel == KH_ACCEL_TCG);
    CHECK(strstr(p.reason, "KVMHOST_ACCEL=tcg") != NULL);

    setenv("KVMHOST_ACCEL", "kvm", 1);
    kh_accel_probe_run("/nonexistent/kvm", &p);
    CHECK(p.accel == KH_ACCEL_KVM);
    CHECK(strstr(p.reason, "KVMHOST_ACCEL=kvm") != NULL);

    setenv("KVMHOST_ACCEL", "fast", 1);
    kh_accel_probe_run("/nonexistent/kvm", &p);
    CHECK(p.accel == KH_ACCEL_TCG);
    CHECK(strstr(p.reason, "KVMHOST_ACCEL=fast ignored") != NULL);
    CHECK(strstr(p.reason, "not present") != NULL);
    unsetenv("KVMHOST_ACCEL");
}

int main(void)
{
    RUN(test_real_probe);
    RUN(test_blocked_alarm);
    RUN(test_missing_device);
    RUN(test_forced);
    TEST_DONE();
}
