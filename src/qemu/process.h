/* process.h - start a QEMU the safe way: a thin QEMU-specific wrapper over
 * the one spawner, host/spawn.h (kh_spawn), for qemu/launch.c.
 *
 * fork + exec of an argv (never a shell). In the child: a new session
 * (setsid, so it survives the daemon and its terminal), the VM's cgroup,
 * stdin from /dev/null, stdout/stderr to a log fd, the inherited fds placed
 * at fixed numbers with every other fd closed, supplementary groups, gid and
 * uid dropped when asked, no new privileges. An exec failure in the child is
 * reported to the parent through a close-on-exec pipe, so the caller gets a
 * real error instead of a process that dies at once.
 */
#ifndef KH_QEMU_PROCESS_H
#define KH_QEMU_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "host/cgroup.h"
#include "util/err.h"

typedef struct kh_process_fd {
    int fd;     /* in the parent */
    int target; /* number in the child; targets are >= 3 and distinct */
} kh_process_fd;

typedef struct kh_process_spec {
    char *const *argv;          /* argv[0] is an absolute path */
    const kh_process_fd *fds;
    size_t nfds;
    int log_fd;                 /* stdout+stderr; -1: /dev/null */
    bool drop_privileges;       /* switch to uid/gid/groups */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    const kh_cgroups *cgroups;  /* NULL or version 0: stay where we are */
    const char *vm_id;          /* the cgroup to enter */
} kh_process_spec;

/* Start the process. Returns its pid, or -1 with err set (KH_E_INTERNAL
 * for fork/setup failures, with the child's failing step named). *pidfd
 * gets the spawner's pidfd of it (the caller owns it; -1 when the kernel
 * has none); pidfd NULL: it is closed. */
pid_t kh_process_spawn(const kh_process_spec *spec, int *pidfd, kh_err *err);

#endif
