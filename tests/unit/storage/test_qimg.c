/* The qemu-img runner's line of jobs: at most max_running at once, the
 * rest waiting (argv and fds copied), past max_waiting KH_E_BUSY; a job's
 * next step, started from a done callback, always gets in line. Real
 * children (/bin/sh), a real libuv loop and SIGCHLD reaper. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "../kh_test.h"
#include "storage/qimg.h"

static kh_qimg *q;
static unsigned done_count, peak;
static char outputs[8][64];
static bool next_ok;

static void on_chld(uv_signal_t *h, int sig)
{
    (void)h;
    (void)sig;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        kh_qimg_child_exited(q, pid, status);
}

static void note_peak(void)
{
    if (kh_qimg_running(q) > peak)
        peak = kh_qimg_running(q);
}

static void on_sample(uv_timer_t *t)
{
    (void)t;
    note_peak();
}

static void on_done(const kh_qimg_result *r, void *opaque)
{
    size_t i = (size_t)(uintptr_t)opaque;
    note_peak();
    if (i < 8)
        snprintf(outputs[i], sizeof(outputs[i]), "%d:%s", r->status, r->out);
    done_count++;
}

static void on_first_done(const kh_qimg_result *r, void *opaque)
{
    on_done(r, opaque);
    /* The line is full now, but this is the job's next step: it gets in. */
    char *argv[] = { (char *)(uintptr_t)"/bin/sh", (char *)(uintptr_t)"-c", (char *)(uintptr_t)"printf next", NULL };
    kh_err err = KH_ERR_INIT;
    next_ok = kh_qimg_run(q, argv, 5000, NULL, on_done, (void *)(uintptr_t)7, &err) >= 0;
}

static void test_line(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_signal_t sig;
    uv_signal_init(&loop, &sig);
    uv_signal_start(&sig, on_chld, SIGCHLD);
    uv_timer_t sample;
    uv_timer_init(&loop, &sample);
    uv_timer_start(&sample, on_sample, 1, 1);

    q = kh_qimg_new(&loop, "/bin/true");
    kh_qimg_set_limits(q, 2, 2);
    char *slow[] = { (char *)(uintptr_t)"/bin/sh", (char *)(uintptr_t)"-c", (char *)(uintptr_t)"sleep 0.2; printf slow", NULL };
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qimg_run(q, slow, 5000, NULL, on_first_done, (void *)(uintptr_t)0, &err) > 0);
    CHECK(kh_qimg_run(q, slow, 5000, NULL, on_done, (void *)(uintptr_t)1, &err) > 0);
    CHECK(kh_qimg_running(q) == 2 && kh_qimg_waiting(q) == 0);
    /* Waiting: its fd 3 is a copy, the caller closes its own at once. */
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], "via-fd3", 7) == 7);
    close(p[1]);
    char *cat[] = { (char *)(uintptr_t)"/bin/sh", (char *)(uintptr_t)"-c", (char *)(uintptr_t)"cat <&3", NULL };
    CHECK(kh_qimg_run_fd(q, cat, p[0], 5000, NULL, on_done, (void *)(uintptr_t)2, &err) == 0);
    close(p[0]);
    CHECK(kh_qimg_run(q, slow, 5000, NULL, on_done, (void *)(uintptr_t)3, &err) == 0);
    CHECK(kh_qimg_waiting(q) == 2 && !kh_err_isset(&err));
    /* The line is full: busy, nothing started. */
    CHECK(kh_qimg_run(q, slow, 5000, NULL, on_done, (void *)(uintptr_t)4, &err) < 0);
    CHECK(err.code == KH_E_BUSY && strstr(err.msg, "try again later"));
    CHECK(kh_qimg_running(q) == 2 && kh_qimg_waiting(q) == 2);

    while (done_count < 5 && uv_run(&loop, UV_RUN_ONCE))
        ;
    CHECK(done_count == 5);
    CHECK(next_ok);
    CHECK(peak == 2);
    CHECK_STR(outputs[0], "0:slow");
    CHECK_STR(outputs[1], "0:slow");
    CHECK_STR(outputs[2], "0:via-fd3");
    CHECK_STR(outputs[3], "0:slow");
    CHECK_STR(outputs[7], "0:next");
    CHECK(outputs[4][0] == '\0'); /* refused: never ran */
    CHECK(kh_qimg_running(q) == 0 && kh_qimg_waiting(q) == 0);

    kh_qimg_free(q);
    uv_close((uv_handle_t *)&sig, NULL);
    uv_close((uv_handle_t *)&sample, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void)
{
    RUN(test_line);
    TEST_DONE();
}
