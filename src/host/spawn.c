/* spawn.c - the one child spawner (see spawn.h): the child-side set-up
 * routine, the exec-failure pipe, pidfds, and the synchronous run with
 * captured output and a timeout. */
#include "host/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/mem.h"

extern char **environ;

/* What the child reports through the pipe when a step fails. */
struct child_failure {
    int step;
    int errnum;
};

enum { STEP_SIGNALS = 1, STEP_PDEATHSIG, STEP_SETSID, STEP_CGROUP, STEP_STDIO, STEP_FDS,
       STEP_GROUPS, STEP_GID, STEP_UID, STEP_NNP, STEP_EXEC, STEP_CONFINE };

static const char *step_name(int step)
{
    switch (step) {
    case STEP_SIGNALS: return "resetting signals";
    case STEP_PDEATHSIG: return "setting the death signal";
    case STEP_SETSID: return "setsid";
    case STEP_CGROUP: return "entering the vm cgroup";
    case STEP_STDIO: return "redirecting stdio";
    case STEP_FDS: return "placing inherited fds";
    case STEP_GROUPS: return "setgroups";
    case STEP_GID: return "setgid";
    case STEP_UID: return "setuid";
    case STEP_NNP: return "no_new_privs";
    case STEP_EXEC: return "exec";
    case STEP_CONFINE: return "entering the private mount namespace";
    default: return "setup";
    }
}

static void __attribute__((noreturn)) child_fail(int pipe_fd, int step)
{
    struct child_failure f = { step, errno };
    ssize_t n = write(pipe_fd, &f, sizeof(f));
    (void)n;
    _exit(127);
}

/* Closes [from, to] (to may be ~0U); close_range(2), or one by one. */
static void close_span(unsigned from, unsigned to)
{
    if (from > to)
        return;
    if (syscall(SYS_close_range, from, to, 0u) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    unsigned last = max > 0 && (unsigned long)max - 1 < to ? (unsigned)max - 1 : to;
    for (unsigned fd = from; fd <= last && fd < 65536u; fd++)
        close((int)fd);
}

/* Runs in the child between fork and exec: only async-signal-safe calls.
 * ppid is the daemon's pid, for the death-signal race check. */
static void __attribute__((noreturn)) child_run(const kh_spawn_spec *spec, int pipe_fd,
                                                pid_t ppid)
{
    /* Default signal dispositions and an empty mask: the daemon's handlers
     * and blocked signals must not leak into the child. */
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        child_fail(pipe_fd, STEP_SIGNALS);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);

    /* A child that does not start its own session is a helper (qemu-img,
     * probes): it dies with the daemon, asked or not, so none writes on
     * after a kill -9 into files the next daemon cleans up. Only QEMU,
     * dnsmasq and etcd, in their own sessions, may outlive it. */
    if (spec->die_with_parent || !spec->new_session) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
            child_fail(pipe_fd, STEP_PDEATHSIG);
        if (getppid() != ppid) /* the daemon died before the prctl */
            _exit(127);
    }
    if (spec->new_session && setsid() < 0)
        child_fail(pipe_fd, STEP_SETSID);
    if (spec->cgroups && spec->cgroups->version && spec->vm_id &&
        kh_cgroups_vm_enter_self(spec->cgroups, spec->vm_id) < 0)
        child_fail(pipe_fd, STEP_CGROUP);
    /* confinement (host/confine.c): still root, before the fds move */
    if (spec->confine && kh_confine_enter(spec->confine) < 0)
        child_fail(pipe_fd, STEP_CONFINE);

    /* Every fd the child gets, stdio included: (source, target). */
    struct { int src, target; } place[3 + KH_SPAWN_FDS_MAX];
    size_t n = 0;
    int devnull = -1;
    const int stdio[3] = { spec->stdin_fd, spec->stdout_fd, spec->stderr_fd };
    for (int i = 0; i < 3; i++) {
        int src = stdio[i];
        if (src < 0) {
            if (devnull < 0 && (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
                child_fail(pipe_fd, STEP_STDIO);
            src = devnull;
        }
        place[n].src = src;
        place[n].target = i;
        n++;
    }
    if (spec->nfds > KH_SPAWN_FDS_MAX) {
        errno = E2BIG;
        child_fail(pipe_fd, STEP_FDS);
    }
    int high = 3;
    for (size_t i = 0; i < spec->nfds; i++) {
        if (spec->fds[i].target < 3) {
            errno = EINVAL;
            child_fail(pipe_fd, STEP_FDS);
        }
        place[n].src = spec->fds[i].fd;
        place[n].target = spec->fds[i].target;
        n++;
        if (spec->fds[i].target >= high)
            high = spec->fds[i].target + 1;
    }
    /* Move the report pipe and every source above all targets first, so
     * that placing them cannot clobber one another. */
    int moved_pipe = fcntl(pipe_fd, F_DUPFD_CLOEXEC, high);
    if (moved_pipe < 0)
        child_fail(pipe_fd, STEP_FDS);
    pipe_fd = moved_pipe;
    for (size_t i = 0; i < n; i++) {
        int m = fcntl(place[i].src, F_DUPFD_CLOEXEC, high);
        if (m < 0)
            child_fail(pipe_fd, i < 3 ? STEP_STDIO : STEP_FDS);
        place[i].src = m;
    }
    for (size_t i = 0; i < n; i++)
        if (dup2(place[i].src, place[i].target) < 0) /* dup2 clears CLOEXEC */
            child_fail(pipe_fd, i < 3 ? STEP_STDIO : STEP_FDS);
    /* Close everything else but the pipe (close-on-exec: its closing tells
     * the parent the exec happened). */
    for (int fd = 3; fd < high; fd++) {
        bool keep = false;
        for (size_t i = 3; i < n; i++)
            keep = keep || place[i].target == fd;
        if (!keep)
            close(fd);
    }
    close_span((unsigned)high, (unsigned)pipe_fd - 1);
    close_span((unsigned)pipe_fd + 1, ~0U);

    if (spec->drop_privileges) {
        if (setgroups(spec->ngroups, spec->groups) < 0)
            child_fail(pipe_fd, STEP_GROUPS);
        if (setresgid(spec->gid, spec->gid, spec->gid) < 0)
            child_fail(pipe_fd, STEP_GID);
        if (setresuid(spec->uid, spec->uid, spec->uid) < 0)
            child_fail(pipe_fd, STEP_UID);
    }
    if (spec->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(pipe_fd, STEP_NNP);
    execve(spec->argv[0], spec->argv, spec->envp ? spec->envp : environ);
    child_fail(pipe_fd, STEP_EXEC);
}

int kh_spawn_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int kh_spawn(const kh_spawn_spec *spec, kh_spawn_child *out, kh_err *err)
{
    out->pid = -1;
    out->pidfd = -1;
    if (!spec->argv || !spec->argv[0] || spec->argv[0][0] != '/') {
        kh_err_set(err, KH_E_INTERNAL, "spawn: argv[0] must be an absolute path");
        return -1;
    }
    if (spec->nfds > KH_SPAWN_FDS_MAX) {
        kh_err_set(err, KH_E_INTERNAL, "starting %s: more than %d inherited fds", spec->argv[0],
                   KH_SPAWN_FDS_MAX);
        return -1;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "pipe");
        return -1;
    }
    pid_t self = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "fork for %s", spec->argv[0]);
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child_run(spec, p[1], self);
    }
    close(p[1]);
    /* Not reaped yet (our reaper runs on this thread), so the pid is ours. */
    int pidfd = kh_spawn_pidfd_open(pid);
    struct child_failure f;
    ssize_t n;
    do {
        n = read(p[0], &f, sizeof(f));
    } while (n < 0 && errno == EINTR);
    close(p[0]);
    if (n == (ssize_t)sizeof(f)) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (pidfd >= 0)
            close(pidfd);
        kh_err_errno(err, KH_E_INTERNAL, f.errnum, "starting %s: %s failed", spec->argv[0],
                     step_name(f.step));
        return -1;
    }
    out->pid = pid;
    out->pidfd = pidfd;
    return 0;
}

/* ---- run to the end, output captured ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct capture {
    int fd;
    char *buf;
    size_t len, max;
} capture;

/* Read what is there; 0 at end of stream (fd closed), 1 otherwise. */
static int capture_read(capture *c)
{
    char tmp[4096];
    ssize_t n = read(c->fd, tmp, sizeof(tmp));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0) {
        close(c->fd);
        c->fd = -1;
        return 0;
    }
    size_t take = (size_t)n < c->max - c->len ? (size_t)n : c->max - c->len;
    memcpy(c->buf + c->len, tmp, take);
    c->len += take;
    c->buf[c->len] = '\0';
    return 1;
}

static void reap(pid_t pid, kh_spawn_output *res)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status)) {
        res->status = -1;
        res->signal = WTERMSIG(status);
    } else {
        res->status = WEXITSTATUS(status);
    }
}

int kh_spawn_run(const kh_spawn_spec *spec, const kh_spawn_run_opts *opts,
                 kh_spawn_output *res, kh_err *err)
{
    static const kh_spawn_run_opts defaults = { 0 };
    if (!opts)
        opts = &defaults;
    memset(res, 0, sizeof(*res));
    res->status = -1;
    size_t max = opts->max_output ? opts->max_output : (size_t)1 << 20;
    unsigned timeout = opts->timeout_ms ? opts->timeout_ms : 60000;
    capture c[2] = { { -1, xmalloc(max + 1), 0, max }, { -1, xmalloc(max + 1), 0, max } };
    c[0].buf[0] = c[1].buf[0] = '\0';
    int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, inp[2] = { -1, -1 };
    int rc = -1;
    kh_spawn_child child = { -1, -1 };

    if (pipe2(outp, O_CLOEXEC) < 0 || (!opts->merge_stderr && pipe2(errp, O_CLOEXEC) < 0) ||
        (opts->input && pipe2(inp, O_CLOEXEC) < 0)) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "pipe");
        goto out;
    }
    if (opts->input) {
        /* Small enough for the pipe buffer: written before the child runs,
         * so no SIGPIPE whatever it does. */
        size_t len = strlen(opts->input);
        if (len > 65536 || write(inp[1], opts->input, len) != (ssize_t)len) {
            kh_err_errno(err, KH_E_INTERNAL, len > 65536 ? E2BIG : errno,
                         "writing to a pipe");
            goto out;
        }
        close(inp[1]);
        inp[1] = -1;
    }
    kh_spawn_spec s = *spec;
    s.stdin_fd = inp[0];
    s.stdout_fd = outp[1];
    s.stderr_fd = opts->merge_stderr ? outp[1] : errp[1];
    if (kh_spawn(&s, &child, err) < 0)
        goto out;
    close(outp[1]);
    outp[1] = -1;
    if (errp[1] >= 0) {
        close(errp[1]);
        errp[1] = -1;
    }
    c[0].fd = outp[0];
    outp[0] = -1;
    c[1].fd = errp[0];
    errp[0] = -1;

    uint64_t deadline = now_ms() + timeout;
    bool exited = false;
    for (;;) {
        struct pollfd pfd[3];
        int np = 0, idx[3];
        for (int i = 0; i < 2; i++)
            if (c[i].fd >= 0) {
                pfd[np] = (struct pollfd){ c[i].fd, POLLIN, 0 };
                idx[np++] = i;
            }
        if (!exited && child.pidfd >= 0) {
            pfd[np] = (struct pollfd){ child.pidfd, POLLIN, 0 };
            idx[np++] = 2;
        }
        if (np == 0)
            break; /* both streams ended (and no pidfd, or it fired) */
        uint64_t now = now_ms();
        if (now >= deadline) {
            res->timed_out = true;
            break;
        }
        /* Once the child is gone, a stream kept open by a grandchild is
         * drained of what is there and not waited for. */
        int wait_ms = exited ? 0 : (int)(deadline - now);
        int pr = poll(pfd, (nfds_t)np, wait_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "poll");
            kill(child.pid, SIGKILL);
            reap(child.pid, res);
            goto out;
        }
        if (pr == 0 && exited)
            break;
        for (int k = 0; k < np; k++) {
            if (!pfd[k].revents)
                continue;
            if (idx[k] == 2)
                exited = true;
            else
                capture_read(&c[idx[k]]);
        }
    }
    if (res->timed_out)
        kill(child.pid, SIGKILL);
    reap(child.pid, res);
    rc = 0;
out:
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
        if (inp[i] >= 0)
            close(inp[i]);
        if (c[i].fd >= 0)
            close(c[i].fd);
    }
    if (child.pidfd >= 0)
        close(child.pidfd);
    res->out = c[0].buf;
    res->outlen = c[0].len;
    res->errtext = c[1].buf;
    res->errlen = c[1].len;
    return rc;
}

void kh_spawn_output_clear(kh_spawn_output *res)
{
    if (!res)
        return;
    free(res->out);
    free(res->errtext);
    memset(res, 0, sizeof(*res));
}
