#include "qemu/process.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/mem.h"

/* What the child reports through the pipe when a step fails. */
struct child_failure {
    int step;
    int errnum;
};

enum { STEP_SETSID = 1, STEP_CGROUP, STEP_STDIO, STEP_FDS, STEP_GROUPS, STEP_GID, STEP_UID,
       STEP_NNP, STEP_EXEC };

static const char *step_name(int step)
{
    switch (step) {
    case STEP_SETSID: return "setsid";
    case STEP_CGROUP: return "entering the vm cgroup";
    case STEP_STDIO: return "redirecting stdio";
    case STEP_FDS: return "placing inherited fds";
    case STEP_GROUPS: return "setgroups";
    case STEP_GID: return "setgid";
    case STEP_UID: return "setuid";
    case STEP_NNP: return "no_new_privs";
    case STEP_EXEC: return "exec";
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

/* Runs in the child between fork and exec: only async-signal-safe calls. */
static void __attribute__((noreturn)) child_run(const kh_process_spec *spec, int pipe_fd)
{
    /* Default signal dispositions and an empty mask: the daemon's handlers
     * and blocked signals must not leak into QEMU. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);

    if (setsid() < 0)
        child_fail(pipe_fd, STEP_SETSID);
    if (spec->cgroups && spec->cgroups->version && spec->vm_id &&
        kh_cgroups_vm_enter_self(spec->cgroups, spec->vm_id) < 0)
        child_fail(pipe_fd, STEP_CGROUP);

    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        child_fail(pipe_fd, STEP_STDIO);
    int out = spec->log_fd >= 0 ? spec->log_fd : devnull;
    if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
        child_fail(pipe_fd, STEP_STDIO);

    /* Move the pipe and every inherited fd above all targets first, so that
     * placing them at their targets cannot clobber one another. */
    int high = 3;
    for (size_t i = 0; i < spec->nfds; i++)
        if (spec->fds[i].target >= high)
            high = spec->fds[i].target + 1;
    int moved_pipe = fcntl(pipe_fd, F_DUPFD_CLOEXEC, high + (int)spec->nfds + 1);
    if (moved_pipe < 0)
        child_fail(pipe_fd, STEP_FDS);
    pipe_fd = moved_pipe;
    int moved[64];
    if (spec->nfds > KH_ARRAY_LEN(moved)) {
        errno = E2BIG;
        child_fail(pipe_fd, STEP_FDS);
    }
    for (size_t i = 0; i < spec->nfds; i++) {
        moved[i] = fcntl(spec->fds[i].fd, F_DUPFD_CLOEXEC, pipe_fd + 1);
        if (moved[i] < 0)
            child_fail(pipe_fd, STEP_FDS);
    }
    for (size_t i = 0; i < spec->nfds; i++)
        if (dup2(moved[i], spec->fds[i].target) < 0) /* dup2 clears CLOEXEC */
            child_fail(pipe_fd, STEP_FDS);
    /* Close everything else except the targets and the pipe (which is
     * close-on-exec and tells the parent the exec happened). */
    for (int fd = 3; fd < pipe_fd; fd++) {
        bool keep = false;
        for (size_t i = 0; i < spec->nfds; i++)
            keep = keep || spec->fds[i].target == fd;
        if (!keep)
            close(fd);
    }
    syscall(SYS_close_range, (unsigned)pipe_fd + 1, ~0U, 0);

    if (spec->drop_privileges) {
        if (setgroups(spec->ngroups, spec->groups) < 0)
            child_fail(pipe_fd, STEP_GROUPS);
        if (setresgid(spec->gid, spec->gid, spec->gid) < 0)
            child_fail(pipe_fd, STEP_GID);
        if (setresuid(spec->uid, spec->uid, spec->uid) < 0)
            child_fail(pipe_fd, STEP_UID);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(pipe_fd, STEP_NNP);
    execv(spec->argv[0], spec->argv);
    child_fail(pipe_fd, STEP_EXEC);
}

pid_t kh_process_spawn(const kh_process_spec *spec, kh_err *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "pipe");
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "fork");
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child_run(spec, p[1]);
    }
    close(p[1]);
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
        kh_err_errno(err, KH_E_INTERNAL, f.errnum, "starting %s: %s failed", spec->argv[0],
                     step_name(f.step));
        return -1;
    }
    return pid;
}

int kh_process_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}
