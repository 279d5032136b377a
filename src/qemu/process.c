/* process.c - QEMU's launch settings over the one spawner (host/spawn.c):
 * a new session (QEMU survives a daemon restart: no death signal), the VM's
 * cgroup, stdout/stderr to the log, no_new_privs. */
#include "qemu/process.h"

#include <errno.h>
#include <unistd.h>

#include "host/spawn.h"
#include "util/mem.h"

pid_t kh_process_spawn(const kh_process_spec *spec, int *pidfd, kh_err *err)
{
    kh_spawn_fd fds[KH_SPAWN_FDS_MAX];
    if (spec->nfds > KH_ARRAY_LEN(fds)) {
        kh_err_set(err, KH_E_INTERNAL, "starting %s: too many inherited fds", spec->argv[0]);
        return -1;
    }
    for (size_t i = 0; i < spec->nfds; i++) {
        fds[i].fd = spec->fds[i].fd;
        fds[i].target = spec->fds[i].target;
    }
    kh_spawn_spec s = {
        .argv = spec->argv,
        .stdin_fd = -1,
        .stdout_fd = spec->log_fd,
        .stderr_fd = spec->log_fd,
        .fds = fds,
        .nfds = spec->nfds,
        .new_session = true,
        .die_with_parent = false,
        .no_new_privs = true,
        .drop_privileges = spec->drop_privileges,
        .uid = spec->uid,
        .gid = spec->gid,
        .groups = spec->groups,
        .ngroups = spec->ngroups,
        .cgroups = spec->cgroups,
        .vm_id = spec->vm_id,
    };
    kh_spawn_child child;
    if (kh_spawn(&s, &child, err) < 0)
        return -1;
    if (pidfd)
        *pidfd = child.pidfd;
    else if (child.pidfd >= 0)
        close(child.pidfd);
    return child.pid;
}
