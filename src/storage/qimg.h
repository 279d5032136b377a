/* qimg.h - run qemu-img (or any short helper) asynchronously on the loop.
 *
 * fork + exec of an argv (never a shell), stdin from /dev/null, stdout and
 * stderr collected through pipes watched by libuv, a hard timeout (SIGKILL),
 * and one completion callback once the process has exited and both pipes
 * are drained. The loop never blocks.
 *
 * Load is bounded: at most max_running jobs run at once (default: one per
 * online CPU); the others wait in line, first come first served, up to
 * max_waiting (default 16 per CPU). Past that a new job is refused with
 * KH_E_BUSY (429, "try again later"), before anything is made. A job
 * started from another job's done callback (the next step of an
 * operation under way) always gets in line.
 *
 * The daemon has one SIGCHLD reaper (waitpid(-1)); it hands every exit to
 * kh_qimg_child_exited(), which returns true for the pids of this runner.
 */
#ifndef KH_STORAGE_QIMG_H
#define KH_STORAGE_QIMG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "util/err.h"

typedef struct kh_qimg kh_qimg;

typedef struct kh_qimg_result {
    int status;      /* exit status (0..255), or -1 when killed by a signal or the timeout */
    bool timed_out;
    const char *out; /* stdout, NUL-terminated (at most 4 MiB kept) */
    size_t outlen;
    const char *errtext; /* stderr, NUL-terminated, trailing newlines removed */
} kh_qimg_result;

/* Called once when the job ends; the result is valid during the call. */
typedef void (*kh_qimg_done_cb)(const kh_qimg_result *res, void *opaque);
/* Called for every line (ended by '\n' or '\r') on stdout while it runs. */
typedef void (*kh_qimg_line_cb)(const char *line, void *opaque);

/* binary: the default argv[0] for kh_qimg_run_img ("qemu-img" found in PATH
 * at start, or an absolute path). */
kh_qimg *kh_qimg_new(uv_loop_t *loop, const char *binary);
/* Change the bounds (max_running 0: 1). */
void kh_qimg_set_limits(kh_qimg *q, unsigned max_running, unsigned max_waiting);
/* Daemon shutdown, while the modules that own jobs still exist: every
 * job waiting or running (killed and reaped) ends now as a failed job
 * (status -1, "the daemon is shutting down"), so each owner's failure path
 * frees its operation and removes what it was making; new jobs are
 * refused from here on (KH_E_UNAVAILABLE, no callback). */
void kh_qimg_shutdown(kh_qimg *q);
/* Kills the jobs still running (SIGKILL) and drops those waiting; their
 * callbacks never run. */
void kh_qimg_free(kh_qimg *q);
const char *kh_qimg_binary(const kh_qimg *q);

/* Start argv (argv[0] absolute), now or when a slot is free. Returns the
 * pid, 0 when it waits in line (argv is copied), or -1 with err set and no
 * callback (KH_E_BUSY: the line is full). on_line may be NULL. */
pid_t kh_qimg_run(kh_qimg *q, char *const *argv, unsigned timeout_ms, kh_qimg_line_cb on_line,
                  kh_qimg_done_cb done, void *opaque, kh_err *err);
/* As kh_qimg_run, with fd3 (when >= 0) inherited as fd 3 in the child, for
 * a secret that must never touch the disk ("file=/proc/self/fd/3"). The
 * caller keeps and closes its fd. */
pid_t kh_qimg_run_fd(kh_qimg *q, char *const *argv, int fd3, unsigned timeout_ms,
                     kh_qimg_line_cb on_line, kh_qimg_done_cb done, void *opaque, kh_err *err);
/* As kh_qimg_run_fd with fds[k] inherited as fd 3 + k (k < KH_QIMG_FDS_MAX). */
#define KH_QIMG_FDS_MAX 16
pid_t kh_qimg_run_fds(kh_qimg *q, char *const *argv, const int *fds, size_t nfds,
                      unsigned timeout_ms, kh_qimg_line_cb on_line, kh_qimg_done_cb done,
                      void *opaque, kh_err *err);
/* The reaper's hook: true when pid was one of ours (its status is taken). */
bool kh_qimg_child_exited(kh_qimg *q, pid_t pid, int status);
/* Jobs still running; jobs waiting for a slot. */
unsigned kh_qimg_running(const kh_qimg *q);
unsigned kh_qimg_waiting(const kh_qimg *q);

#endif
