/* tpm.c - owns the swtpm process of a VM with a TPM (see tpm.h). */
#include "qemu/tpm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/mem.h"
#include "util/strv.h"

/* Fixed fd numbers inside swtpm. */
enum { TPM_FD_CTRL = 3, TPM_FD_KEY = 4 };

int kh_tpm_start(const kh_tpm_opts *o, int *qemu_fd, pid_t *pid, kh_err *err)
{
    const char *bin = o->binary ? o->binary : "/usr/bin/swtpm";
    char *dir = xasprintf("%s/tpm", o->state_dir);
    char *log = xasprintf("%s/swtpm.log", o->state_dir);
    kh_strv *argv = kh_strv_new();
    int sv[2] = { -1, -1 }, log_fd = -1, rc = -1;

    if (access(bin, X_OK) < 0) {
        kh_err_set(err, KH_E_UNSUPPORTED, "tpm: %s is not installed (package swtpm)", bin);
        goto out;
    }
    if (kh_fs_mkdir_p(dir, 0700, err) < 0)
        goto out;
    if (o->drop_privileges && chown(dir, o->uid, o->gid) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "chown %s", dir);
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: socketpair");
        goto out;
    }
    log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    kh_strv_add(argv, bin);
    kh_strv_add(argv, "socket");
    kh_strv_add(argv, "--tpm2");
    kh_strv_add(argv, "-t");
    kh_strv_add(argv, "--tpmstate");
    kh_strv_addf(argv, "dir=%s,mode=0600", dir);
    kh_strv_add(argv, "--ctrl");
    kh_strv_addf(argv, "type=unixio,clientfd=%d", TPM_FD_CTRL);
    kh_strv_add(argv, "--log");
    kh_strv_add(argv, "fd=1,level=1");
    if (o->key_fd >= 0) {
        kh_strv_add(argv, "--key");
        kh_strv_addf(argv, "fd=%d,mode=aes-256-cbc,format=hex", TPM_FD_KEY);
    }
    kh_spawn_fd fds[2] = { { sv[1], TPM_FD_CTRL }, { o->key_fd, TPM_FD_KEY } };
    kh_spawn_spec spec = {
        .argv = argv->v,
        .stdin_fd = -1,
        .stdout_fd = log_fd,
        .stderr_fd = log_fd,
        .fds = fds,
        .nfds = o->key_fd >= 0 ? 2 : 1,
        .new_session = true, /* outlives the daemon, like its QEMU */
        .no_new_privs = true,
        .drop_privileges = o->drop_privileges,
        .uid = o->uid,
        .gid = o->gid,
        .cgroups = o->cgroups,
        .vm_id = o->vm_id,
    };
    kh_spawn_child child;
    if (kh_spawn(&spec, &child, err) < 0)
        goto out;
    *pid = child.pid;
    if (child.pidfd >= 0)
        close(child.pidfd);
    *qemu_fd = sv[0];
    sv[0] = -1;
    rc = 0;
out:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (log_fd >= 0)
        close(log_fd);
    kh_strv_free(argv);
    free(dir);
    free(log);
    return rc;
}
