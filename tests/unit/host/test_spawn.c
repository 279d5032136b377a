/* The one spawner (host/spawn.c): fd placement and closing, exec failure
 * reported, output captured, input fed, timeout kills, pidfd on exit. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kh_test.h"
#include "host/spawn.h"

static char sh[] = "/bin/sh", dash_c[] = "-c";

static void test_fds_placed_and_others_closed(void)
{
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    /* An fd the daemon leaked without close-on-exec: the child must not
     * get it. */
    int leak = open("/dev/null", O_RDONLY);
    CHECK(leak >= 0);
    CHECK(dup2(leak, 9) == 9);
    char script[] = "echo placed >&5; "
                    "if [ -e /proc/$$/fd/9 ]; then echo leaked; else echo closed; fi; "
                    "if [ -e /proc/$$/fd/6 ]; then echo six; fi";
    char *argv[] = { sh, dash_c, script, NULL };
    kh_spawn_fd fds[] = { { p[1], 5 } };
    kh_spawn_spec spec = { .argv = argv, .fds = fds, .nfds = 1, .die_with_parent = true };
    kh_spawn_output res;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_spawn_run(&spec, NULL, &res, &err) == 0);
    CHECK(res.status == 0);
    CHECK_STR(res.out, "closed\n");
    close(p[1]);
    char buf[64] = "";
    ssize_t n = read(p[0], buf, sizeof(buf) - 1);
    CHECK(n > 0);
    buf[n > 0 ? n : 0] = '\0';
    CHECK_STR(buf, "placed\n");
    close(p[0]);
    close(9);
    close(leak);
    kh_spawn_output_clear(&res);
}

/* A target that is also another fd's source is not clobbered. */
static void test_fds_swap(void)
{
    int a[2], b[2];
    CHECK(pipe(a) == 0 && pipe(b) == 0);
    kh_spawn_fd fds[] = { { a[1], b[1] }, { b[1], a[1] } };
    if (a[1] < 3 || b[1] < 3)
        return;
    char script[64];
    snprintf(script, sizeof(script), "echo A >&%d; echo B >&%d", b[1], a[1]);
    char *argv[] = { sh, dash_c, script, NULL };
    kh_spawn_spec spec = { .argv = argv, .fds = fds, .nfds = 2 };
    kh_spawn_output res;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_spawn_run(&spec, NULL, &res, &err) == 0 && res.status == 0);
    close(a[1]);
    close(b[1]);
    char buf[8] = "";
    CHECK(read(a[0], buf, sizeof(buf)) == 2 && buf[0] == 'A');
    CHECK(read(b[0], buf, sizeof(buf)) == 2 && buf[0] == 'B');
    close(a[0]);
    close(b[0]);
    kh_spawn_output_clear(&res);
}

static void test_exec_failure_reported(void)
{
    char bin[] = "/nonexistent/kh-no-such-binary";
    char *argv[] = { bin, NULL };
    kh_spawn_spec spec = { .argv = argv };
    kh_spawn_child child = { 1, 1 };
    kh_err err = KH_ERR_INIT;
    CHECK(kh_spawn(&spec, &child, &err) < 0);
    CHECK(err.code == KH_E_INTERNAL);
    CHECK(strstr(err.msg, "exec failed") != NULL);
    CHECK(strstr(err.msg, bin) != NULL);
    CHECK(child.pid == -1 && child.pidfd == -1);
    kh_err_clear(&err);
    /* Nothing was left to reap. */
    CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);

    char rel[] = "sh";
    char *argv2[] = { rel, NULL };
    spec.argv = argv2;
    CHECK(kh_spawn(&spec, &child, &err) < 0);
    kh_err_clear(&err);
}

static void test_output_captured(void)
{
    char script[] = "echo out; echo err >&2; exit 3";
    char *argv[] = { sh, dash_c, script, NULL };
    kh_spawn_spec spec = { .argv = argv };
    kh_spawn_output res;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_spawn_run(&spec, NULL, &res, &err) == 0);
    CHECK(res.status == 3 && !res.timed_out && res.signal == 0);
    CHECK_STR(res.out, "out\n");
    CHECK_STR(res.errtext, "err\n");
    kh_spawn_output_clear(&res);

    /* merged, with input, and a cap on what is kept */
    char script2[] = "cat; echo tail >&2";
    char *argv2[] = { sh, dash_c, script2, NULL };
    spec.argv = argv2;
    kh_spawn_run_opts opts = { .input = "hello\n", .merge_stderr = true, .max_output = 8 };
    CHECK(kh_spawn_run(&spec, &opts, &res, &err) == 0);
    CHECK(res.status == 0);
    CHECK_STR(res.out, "hello\nta");
    CHECK(res.outlen == 8);
    CHECK_STR(res.errtext, "");
    kh_spawn_output_clear(&res);
}

static void test_timeout_kills(void)
{
    char script[] = "echo started; exec sleep 30";
    char *argv[] = { sh, dash_c, script, NULL };
    kh_spawn_spec spec = { .argv = argv };
    kh_spawn_run_opts opts = { .timeout_ms = 200 };
    kh_spawn_output res;
    kh_err err = KH_ERR_INIT;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(kh_spawn_run(&spec, &opts, &res, &err) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(res.timed_out);
    CHECK(res.status == -1 && res.signal == 9);
    CHECK(took >= 0.15 && took < 5);
    CHECK_STR(res.out, "started\n");
    kh_spawn_output_clear(&res);
    CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD); /* reaped */
}

static void test_pidfd_readable_on_exit(void)
{
    char script[] = "exit 7";
    char *argv[] = { sh, dash_c, script, NULL };
    kh_spawn_spec spec = { .argv = argv, .new_session = true };
    kh_spawn_child child;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_spawn(&spec, &child, &err) == 0);
    CHECK(child.pid > 0);
    if (child.pidfd < 0) { /* a kernel without pidfd_open */
        waitpid(child.pid, NULL, 0);
        return;
    }
    struct pollfd p = { child.pidfd, POLLIN, 0 };
    CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLIN));
    int status = 0;
    CHECK(waitpid(child.pid, &status, 0) == child.pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
    close(child.pidfd);
}

int main(void)
{
    RUN(test_fds_placed_and_others_closed);
    RUN(test_fds_swap);
    RUN(test_exec_failure_reported);
    RUN(test_output_captured);
    RUN(test_timeout_kills);
    RUN(test_pidfd_readable_on_exit);
    TEST_DONE();
}
