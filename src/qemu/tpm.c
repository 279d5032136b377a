/* tpm.c - owns the swtpm process of a VM with a TPM (see tpm.h). */
#include "qemu/tpm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/check.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/strv.h"

/* Fixed fd numbers inside swtpm. */
enum { TPM_FD_CTRL = 3, TPM_FD_KEY = 4 };

/* The state files to the swtpm user too: a state put back by a snapshot
 * revert or a restore was written by the daemon. */
static int own_files(const char *dir, const kh_tpm_opts *o, kh_err *err)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: open %s", dir);
        return -1;
    }
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: open %s", dir);
        return -1;
    }
    int rc = 0;
    const struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_type == DT_REG &&
            fchownat(dfd, e->d_name, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: chown %s/%s", dir, e->d_name);
            rc = -1;
            break;
        }
    }
    closedir(d);
    return rc;
}

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
    if (o->drop_privileges && (chown(dir, o->uid, o->gid) < 0 || own_files(dir, o, err) < 0)) {
        if (!kh_err_isset(err))
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

/* ---- the state as data: snapshots and backups ---- */

#define STATE_FILE_MAX (4u * 1024 * 1024) /* swtpm's files are a few tens of KiB */

static char *tpm_dir_of(const char *state_dir)
{
    return xasprintf("%s/tpm", state_dir);
}

/* swtpm's own names only: nothing that could leave the directory. */
static bool state_name_ok(const char *n)
{
    if (!*n || n[0] == '.' || strlen(n) > 64)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
              *p == '_'))
            return false;
    return true;
}

json_t *kh_tpm_state_get(const char *state_dir, kh_err *err)
{
    char *dir = tpm_dir_of(state_dir);
    json_t *files = json_object();
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: open %s", dir);
            json_decref(files);
            files = NULL;
        }
        free(dir);
        return files;
    }
    const struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_type != DT_REG || !state_name_ok(e->d_name))
            continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        size_t len = 0;
        char *data = kh_fs_read(p, STATE_FILE_MAX, &len, err);
        free(p);
        if (!data) {
            json_decref(files);
            files = NULL;
            break;
        }
        char *hex = xmalloc(2 * len + 1);
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < len; i++) {
            hex[2 * i] = digits[(unsigned char)data[i] >> 4];
            hex[2 * i + 1] = digits[(unsigned char)data[i] & 15];
        }
        hex[2 * len] = '\0';
        json_object_set_new(files, e->d_name, json_string(hex));
        free(hex);
        free(data);
    }
    closedir(d);
    free(dir);
    return files;
}

int kh_tpm_state_put(const char *state_dir, const json_t *files, kh_err *err)
{
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)(uintptr_t)files, name, v) {
        const char *hex = json_string_value(v);
        if (!state_name_ok(name) || !hex || strlen(hex) % 2 || strlen(hex) > 2 * STATE_FILE_MAX) {
            kh_err_set(err, KH_E_INVALID, "tpm: a bad state file %.64s", name);
            return -1;
        }
        for (const char *p = hex; *p; p++)
            if (kh_hex_digit(*p) < 0) {
                kh_err_set(err, KH_E_INVALID, "tpm: state file %.64s is not hex", name);
                return -1;
            }
    }
    char *dir = tpm_dir_of(state_dir);
    char *tmp = xasprintf("%s.new", dir);
    int rc = -1;
    if (kh_fs_rm_rf(tmp, err) < 0 || kh_fs_mkdir_p(tmp, 0700, err) < 0)
        goto out;
    json_object_foreach((json_t *)(uintptr_t)files, name, v) {
        const char *hex = json_string_value(v);
        size_t len = strlen(hex) / 2;
        unsigned char *data = xmalloc(len + 1);
        for (size_t i = 0; i < len; i++)
            data[i] = (unsigned char)(kh_hex_digit(hex[2 * i]) << 4 | kh_hex_digit(hex[2 * i + 1]));
        char *p = xasprintf("%s/%s", tmp, name);
        int w = kh_fs_write_atomic(p, data, len, 0600, err);
        free(p);
        free(data);
        if (w < 0)
            goto out;
    }
    /* the old state goes only once the new one is whole */
    if (kh_fs_rm_rf(dir, err) < 0)
        goto out;
    if (rename(tmp, dir) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: rename %s", tmp);
        goto out;
    }
    rc = 0;
out:
    if (rc < 0) {
        kh_err e = KH_ERR_INIT;
        kh_fs_rm_rf(tmp, &e);
    }
    free(tmp);
    free(dir);
    return rc;
}
