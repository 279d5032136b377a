/* spawn.h - the one way kvmhostd starts a child process.
 *
 * Every child (QEMU, qemu-img, dnsmasq, the capability probes, later etcd,
 * swtpm, lxc helpers) is started here: fork + exec of an argv (never a
 * shell). One child-side routine sets up, in order: default signal
 * dispositions and an empty mask, the death signal (when asked), a new
 * session (when asked), the cgroup, the confined mount namespace (when
 * asked: host/confine.h), stdin/stdout/stderr and the inherited
 * fds placed at their numbers with every other fd closed, supplementary
 * groups, gid and uid (when asked), no_new_privs (when asked), exec. A
 * failed step is reported to the parent through a close-on-exec pipe, so
 * kh_spawn() returns a real error instead of a child that dies at once.
 * The parent gets the pid and a pidfd (readable once the child exits).
 *
 * kh_spawn_run() is the synchronous form for short helpers: it runs the
 * child with its output captured and a timeout, polling the pidfd and the
 * pipes (no sleeps), and kills the child (SIGKILL) when time is up.
 */
#ifndef KH_HOST_SPAWN_H
#define KH_HOST_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "host/cgroup.h"
#include "host/confine.h"
#include "util/err.h"

/* At most this many inherited fds besides stdin/stdout/stderr. */
#define KH_SPAWN_FDS_MAX 60

typedef struct kh_spawn_fd {
    int fd;     /* in the parent (kept open by the caller) */
    int target; /* number in the child: >= 3, distinct */
} kh_spawn_fd;

typedef struct kh_spawn_spec {
    char *const *argv;        /* argv[0] is an absolute path */
    char *const *envp;        /* NULL: the daemon's environment */
    int stdin_fd;             /* -1: /dev/null */
    int stdout_fd;            /* -1: /dev/null */
    int stderr_fd;            /* -1: /dev/null */
    const kh_spawn_fd *fds;
    size_t nfds;
    bool new_session;         /* setsid: survives the daemon (QEMU, dnsmasq) */
    bool die_with_parent;     /* PR_SET_PDEATHSIG SIGKILL: helpers that must not outlive us
                               * (implied when new_session is false) */
    bool no_new_privs;
    bool drop_privileges;     /* switch to uid/gid/groups */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    const kh_cgroups *cgroups; /* NULL or version 0: stay where we are */
    const char *vm_id;         /* the VM cgroup to enter (with cgroups) */
    const kh_confine *confine; /* NULL: the daemon's mount namespace; else a
                                * private one (host/confine.h), entered after
                                * the cgroup, before stdio and the fds */
} kh_spawn_spec;

/* A started child. pidfd is -1 when the kernel has no pidfd_open. */
typedef struct kh_spawn_child {
    pid_t pid;
    int pidfd;
} kh_spawn_child;

/* Start the child. 0 with *out set (the caller owns out->pidfd and reaps
 * the pid), or -1 with err set (KH_E_INTERNAL; a failure in the child names
 * its step, e.g. "starting /usr/bin/x: exec failed: No such file or
 * directory") and nothing left running. */
int kh_spawn(const kh_spawn_spec *spec, kh_spawn_child *out, kh_err *err);
/* pidfd_open(2) of pid: -1 with errno on failure. */
int kh_spawn_pidfd_open(pid_t pid);

/* The result of kh_spawn_run. */
typedef struct kh_spawn_output {
    int status;      /* exit status 0..255; -1 when killed (signal or timeout) */
    int signal;      /* the signal that ended it, 0 when it exited */
    bool timed_out;
    char *out;       /* stdout (with stderr when merged), NUL-terminated */
    size_t outlen;
    char *errtext;   /* stderr, NUL-terminated ("" when merged) */
    size_t errlen;
} kh_spawn_output;

typedef struct kh_spawn_run_opts {
    const char *input;     /* written to stdin (NULL: /dev/null); at most 64 KiB */
    unsigned timeout_ms;   /* 0: 60 s */
    size_t max_output;     /* bytes kept of each stream; 0: 1 MiB */
    bool merge_stderr;     /* stderr into the same capture as stdout */
} kh_spawn_run_opts;

/* Run spec (its stdin/stdout/stderr fields are ignored) to the end with the
 * output captured. 0 when it ran (whatever its exit status: see res), -1
 * with err set when it could not start (res->status -1, nothing captured).
 * A timeout is 0 with res->timed_out (the child was killed and reaped).
 * Output beyond max_output is read and dropped. res is released with
 * kh_spawn_output_clear(). The caller's SIGCHLD reaper must not run
 * during the call (it runs on the loop thread; this call blocks it). */
int kh_spawn_run(const kh_spawn_spec *spec, const kh_spawn_run_opts *opts,
                 kh_spawn_output *res, kh_err *err);
void kh_spawn_output_clear(kh_spawn_output *res);

#endif
