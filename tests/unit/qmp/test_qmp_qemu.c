/* test_qmp_qemu.c - the QMP client against the real qemu-system-x86_64:
 * over a socket path and over an inherited fd (exit 77, a skip, when QEMU
 * is missing). The fast tests without QEMU are test_qmp.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kh_test.h"
#include "qemu/qmp.h"
#include "util/fs.h"
#include "util/err.h"
#include "util/mem.h"

#define RUN_ARG(fn, arg)                                                               \
    do {                                                                               \
        int before_ = kh_test_failures;                                                \
        fn(arg);                                                                       \
        printf("%s %s\n", kh_test_failures == before_ ? "ok" : "not ok", #fn);          \
    } while (0)

/* ======================================================================
 * Real QEMU
 * ==================================================================== */

typedef struct qtest {
    uv_loop_t loop;
    uv_timer_t timeout;
    kh_qmp *qmp;
    pid_t pid;
    int step;
    bool closed, timed_out, check_serial;
    char version[64];
    char serial_filename[256];
} qtest;

static void q_next(qtest *q, json_t *ret, const kh_err *err);

static void q_reply(kh_qmp *qmp, json_t *ret, const kh_err *err, void *opaque)
{
    (void)qmp;
    q_next(opaque, ret, err);
}

static void q_send(qtest *q, const char *cmd)
{
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qmp_command(q->qmp, cmd, NULL, q_reply, q, &err) == 0);
}

/* The conversation, one step per reply. */
static void q_next(qtest *q, json_t *ret, const kh_err *err)
{
    switch (q->step++) {
    case 0: /* ready */
        CHECK(err == NULL);
        if (err)
            printf("# qmp handshake: %s\n", err->msg);
        if (err)
            return;
        q_send(q, "query-status");
        break;
    case 1:
        CHECK(err == NULL);
        CHECK_STR(json_string_value(json_object_get(ret, "status")), "prelaunch");
        q_send(q, "query-version");
        break;
    case 2: {
        CHECK(err == NULL);
        json_t *v = json_object_get(ret, "qemu");
        snprintf(q->version, sizeof(q->version), "%d.%d.%d",
                 (int)json_integer_value(json_object_get(v, "major")),
                 (int)json_integer_value(json_object_get(v, "minor")),
                 (int)json_integer_value(json_object_get(v, "micro")));
        CHECK(json_integer_value(json_object_get(v, "major")) >= 2);
        q_send(q, "no-such-command");
        break;
    }
    case 3:
        CHECK(ret == NULL);
        CHECK(err && err->code == KH_E_QEMU);
        if (err) {
            printf("# unknown command -> %s\n", err->msg);
            CHECK_STR(err->msg, "The command no-such-command has not been found");
        }
        q_send(q, "cont");
        break;
    case 4:
        CHECK(err == NULL);
        q_send(q, "query-status");
        break;
    case 5:
        CHECK(err == NULL);
        CHECK_STR(json_string_value(json_object_get(ret, "status")), "running");
        printf("# qmp rtt of query-status: %lu us\n", kh_qmp_last_rtt_us(q->qmp));
        q_send(q, "query-chardev");
        break;
    case 6: {
        CHECK(err == NULL);
        size_t i;
        json_t *ch;
        json_array_foreach(ret, i, ch) {
            const char *label = json_string_value(json_object_get(ch, "label"));
            const char *fn = json_string_value(json_object_get(ch, "filename"));
            if (label && fn && strcmp(label, "ser0") == 0)
                snprintf(q->serial_filename, sizeof(q->serial_filename), "%s", fn);
        }
        /* An fd passed with the command's bytes (SCM_RIGHTS): disk hot-plug. */
        int fd = memfd_create("kh-test", MFD_CLOEXEC);
        kh_err e = KH_ERR_INIT;
        CHECK(fd >= 0 && kh_qmp_command_fd(q->qmp, "add-fd",
                                           json_pack("{s:i, s:s}", "fdset-id", 77, "opaque",
                                                     "kh-test-fd"),
                                           fd, q_reply, q, &e) == 0);
        break;
    }
    case 7:
        CHECK(err == NULL);
        if (err)
            printf("# add-fd: %s\n", err->msg);
        CHECK(json_integer_value(json_object_get(ret, "fdset-id")) == 77);
        CHECK(json_integer_value(json_object_get(ret, "fd")) > 2);
        q_send(q, "query-fdsets");
        break;
    case 8: {
        CHECK(err == NULL);
        bool found = false;
        size_t i;
        json_t *set;
        json_array_foreach(ret, i, set) {
            json_t *f0 = json_array_get(json_object_get(set, "fds"), 0);
            const char *op = json_string_value(json_object_get(f0, "opaque"));
            found = found || (json_integer_value(json_object_get(set, "fdset-id")) == 77 && op &&
                              strcmp(op, "kh-test-fd") == 0);
        }
        CHECK(found);
        q_send(q, "quit");
        break;
    }
    default: /* the quit reply, or the error when QEMU hangs up first */
        break;
    }
}

static void q_ready(kh_qmp *qmp, const kh_err *err, void *opaque)
{
    (void)qmp;
    qtest *q = opaque;
    q_next(q, NULL, err);
}

static void q_event(kh_qmp *qmp, const char *event, json_t *data, double ts, void *opaque)
{
    (void)qmp;
    (void)data;
    (void)opaque;
    printf("# event %s at %.6f\n", event, ts);
    CHECK(ts > 1e9);
}

static void q_closed(kh_qmp *qmp, void *opaque)
{
    (void)qmp;
    qtest *q = opaque;
    q->closed = true;
    q->qmp = NULL;
    uv_timer_stop(&q->timeout);
}

static void q_timeout(uv_timer_t *t)
{
    qtest *q = t->data;
    q->timed_out = true;
    printf("# timeout at step %d\n", q->step);
    if (q->pid > 0)
        kill(q->pid, SIGKILL);
    if (q->qmp)
        kh_qmp_close(q->qmp);
}

static const char *qemu_binary(void)
{
    const char *b = getenv("KH_QEMU");
    return b && *b ? b : "/usr/bin/qemu-system-x86_64";
}

/* Fork QEMU; keep_fds are made inheritable in the child only. */
static pid_t spawn_qemu(char **argv, const int *keep_fds, size_t nkeep)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        for (size_t i = 0; i < nkeep; i++)
            fcntl(keep_fds[i], F_SETFD, 0);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid, int seconds)
{
    for (int i = 0; i < seconds * 100; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int listen_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
        perror("listen_unix");
        exit(1);
    }
    return fd;
}

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("connect_unix");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void qtest_run(qtest *q)
{
    uv_timer_init(&q->loop, &q->timeout);
    q->timeout.data = q;
    uv_timer_start(&q->timeout, q_timeout, 30000, 0);
    uv_run(&q->loop, UV_RUN_DEFAULT);
    CHECK(!q->timed_out);
    CHECK(q->closed);
    CHECK(q->step >= 9);
    int code = wait_exit(q->pid, 10);
    CHECK(code == 0);
    uv_close((uv_handle_t *)&q->timeout, NULL);
    uv_run(&q->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&q->loop) == 0);
}

static const kh_qmp_callbacks q_cbs = { q_ready, q_event, q_closed };

/* QEMU creates the socket at a path; we connect when it exists. */
static void test_qemu_path(const char *dir)
{
    char sock[256];
    snprintf(sock, sizeof(sock), "%s/qmp.sock", dir);
    char chardev[320];
    snprintf(chardev, sizeof(chardev), "socket,id=qmp,path=%s,server=on,wait=off", sock);
    char *argv[] = { xstrdup(qemu_binary()), xstrdup("-S"), xstrdup("-nodefaults"),
                     xstrdup("-no-user-config"), xstrdup("-display"), xstrdup("none"),
                     xstrdup("-accel"), xstrdup("tcg"), xstrdup("-machine"), xstrdup("q35"),
                     xstrdup("-m"), xstrdup("64"), xstrdup("-chardev"), xstrdup(chardev),
                     xstrdup("-mon"), xstrdup("chardev=qmp,mode=control"), NULL };
    qtest q;
    memset(&q, 0, sizeof(q));
    uv_loop_init(&q.loop);
    q.pid = spawn_qemu(argv, NULL, 0);
    /* QEMU creates the socket file at bind() and listens a moment later:
     * wait until a connect is accepted, not merely until the file exists.
     * (The connection attempts that fail are refused, not accepted, so
     * QEMU's single client slot stays free.) */
    struct stat st;
    for (int i = 0; i < 1000 && stat(sock, &st) < 0; i++) {
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    int fd = -1;
    for (int i = 0; i < 500 && fd < 0; i++) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (kh_fmt(sa.sun_path, sizeof(sa.sun_path), "%s", sock) < 0)
            break;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            close(fd);
            fd = -1;
            struct timespec ts = { 0, 10 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    }
    q.qmp = kh_qmp_new(&q.loop, &q_cbs, &q);
    kh_err err = KH_ERR_INIT;
    CHECK(fd >= 0 && kh_qmp_attach_fd(q.qmp, fd, &err) == 0);
    qtest_run(&q);
    printf("# QEMU %s over path=%s\n", q.version, sock);
    for (size_t i = 0; argv[i]; i++)
        free(argv[i]);
    unlink(sock);
}

/* The daemon's way: we bind and listen, QEMU inherits the listening fd
 * (fd=N), and we connect at once, before QEMU is even running: the kernel
 * backlog accepts, the greeting comes when QEMU gets there. Same for a
 * serial chardev. */
static void test_qemu_fd(const char *dir)
{
    char qsock[256], ssock[256];
    snprintf(qsock, sizeof(qsock), "%s/qmp-fd.sock", dir);
    snprintf(ssock, sizeof(ssock), "%s/serial-fd.sock", dir);
    int lq = listen_unix(qsock), ls = listen_unix(ssock);
    char qdev[64], sdev[64];
    snprintf(qdev, sizeof(qdev), "socket,id=qmp,fd=%d,server=on,wait=off", lq);
    snprintf(sdev, sizeof(sdev), "socket,id=ser0,fd=%d,server=on,wait=off", ls);
    char *argv[] = { xstrdup(qemu_binary()), xstrdup("-S"), xstrdup("-nodefaults"),
                     xstrdup("-no-user-config"), xstrdup("-display"), xstrdup("none"),
                     xstrdup("-accel"), xstrdup("tcg"), xstrdup("-machine"), xstrdup("q35"),
                     xstrdup("-m"), xstrdup("64"), xstrdup("-chardev"), xstrdup(qdev),
                     xstrdup("-mon"), xstrdup("chardev=qmp,mode=control"),
                     xstrdup("-chardev"), xstrdup(sdev), xstrdup("-serial"),
                     xstrdup("chardev:ser0"), NULL };
    qtest q;
    memset(&q, 0, sizeof(q));
    uv_loop_init(&q.loop);
    int keep[] = { lq, ls };
    q.pid = spawn_qemu(argv, keep, 2);
    close(lq);
    close(ls);
    int cq = connect_unix(qsock);
    int cs = connect_unix(ssock);
    CHECK(cq >= 0);
    CHECK(cs >= 0);
    q.qmp = kh_qmp_new(&q.loop, &q_cbs, &q);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qmp_attach_fd(q.qmp, cq, &err) == 0);
    qtest_run(&q);
    printf("# QEMU %s over an inherited listening fd; serial ser0 filename: %s\n", q.version,
           q.serial_filename);
    /* The serial client was accepted: QEMU no longer calls it disconnected. */
    CHECK(q.serial_filename[0] != '\0');
    CHECK(strncmp(q.serial_filename, "disconnected", 12) != 0);
    if (cs >= 0)
        close(cs);
    for (size_t i = 0; argv[i]; i++)
        free(argv[i]);
    unlink(qsock);
    unlink(ssock);
}
int main(void)
{
    if (access(qemu_binary(), X_OK) < 0) {
        printf("# skip: %s not found\n", qemu_binary());
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/kh-qmp-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN_ARG(test_qemu_path, dir);
    RUN_ARG(test_qemu_fd, dir);
    rmdir(dir);
    TEST_DONE();
}

