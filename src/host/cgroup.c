#include "host/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/mem.h"

static const char *const v1_controllers[] = { "cpu",   "cpuacct", "memory", "pids",
                                              "blkio", "devices", "cpuset" };

/* Device nodes QEMU may open (v1 devices controller): null, zero, full,
 * random, urandom, tty, ptmx, pts, kvm, net/tun, vhost-net. */
static const char *const v1_devices_allow[] = {
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
    "c 5:2 rwm", "c 136:* rwm", "c 10:232 rwm", "c 10:200 rwm", "c 10:238 rwm",
};

static int exists_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(s);
    ssize_t n = write(fd, s, len);
    int saved = errno;
    close(fd);
    if (n != (ssize_t)len) {
        errno = n < 0 ? saved : EIO;
        return -1;
    }
    return 0;
}

void kh_cgroups_detect(kh_cgroups *cg, const char *mount, const char *root)
{
    memset(cg, 0, sizeof(*cg));
    kh_fmt(cg->mount, sizeof(cg->mount), "%s", mount ? mount : "/sys/fs/cgroup");
    kh_fmt(cg->root, sizeof(cg->root), "%s", root ? root : "kvmhost");
    char p[600];
    kh_fmt(p, sizeof(p), "%s/cgroup.controllers", cg->mount);
    if (access(p, F_OK) == 0) {
        cg->version = 2;
        return;
    }
    for (size_t i = 0; i < KH_ARRAY_LEN(v1_controllers) && cg->v1_count < KH_CGROUP_V1_MAX; i++) {
        kh_fmt(p, sizeof(p), "%s/%s", cg->mount, v1_controllers[i]);
        if (exists_dir(p)) {
            kh_fmt(cg->v1_dirs[cg->v1_count], sizeof(cg->v1_dirs[0]), "%s", p);
            cg->v1_count++;
        }
    }
    if (cg->v1_count) {
        cg->version = 1;
        return;
    }
    kh_fmt(cg->reason, sizeof(cg->reason), "no cgroup v2 at %s and no v1 controllers",
             cg->mount);
}

/* The controller name of a v1 dir (its last component). */
static const char *v1_name(const char *dir)
{
    const char *s = strrchr(dir, '/');
    return s ? s + 1 : dir;
}

int kh_cgroups_vm_dir(const kh_cgroups *cg, const char *vm_id, const char *ctrl, char *out,
                      size_t size)
{
    if (cg->version == 2) {
        kh_fmt(out, size, "%s/%s/vm-%s", cg->mount, cg->root, vm_id);
        return 0;
    }
    for (size_t i = 0; i < cg->v1_count; i++) {
        if (!ctrl || strcmp(v1_name(cg->v1_dirs[i]), ctrl) == 0) {
            kh_fmt(out, size, "%s/%s/vm-%s", cg->v1_dirs[i], cg->root, vm_id);
            return 0;
        }
    }
    return -1;
}

static int v2_enable_controllers(const char *dir)
{
    /* Enable what the parent offers among the ones we use; missing ones
     * (io on some kernels) are skipped. */
    static const char *const want[] = { "+cpu", "+memory", "+io", "+pids", "+cpuset" };
    char p[600];
    kh_fmt(p, sizeof(p), "%s/cgroup.subtree_control", dir);
    for (size_t i = 0; i < KH_ARRAY_LEN(want); i++)
        (void)write_str(p, want[i]);
    return 0;
}

/* A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and no
 * task can join it: copy them from its parent where they are empty. */
static int v1_cpuset_fill(const char *dir, kh_err *err)
{
    static const char *const files[] = { "cpuset.cpus", "cpuset.mems" };
    for (size_t i = 0; i < KH_ARRAY_LEN(files); i++) {
        char p[700], pp[700], cur[256] = "", up[256] = "";
        kh_fmt(p, sizeof(p), "%s/%s", dir, files[i]);
        kh_fmt(pp, sizeof(pp), "%s/../%s", dir, files[i]);
        FILE *f = fopen(p, "re");
        if (!f)
            continue;
        bool empty = !fgets(cur, sizeof(cur), f) || cur[0] == '\n' || cur[0] == '\0';
        fclose(f);
        if (!empty)
            continue;
        f = fopen(pp, "re");
        if (!f || !fgets(up, sizeof(up), f)) {
            if (f)
                fclose(f);
            kh_err_set(err, KH_E_INTERNAL, "cannot read %s", pp);
            return -1;
        }
        fclose(f);
        up[strcspn(up, "\n")] = '\0';
        if (write_str(p, up) < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot write %s", p);
            return -1;
        }
    }
    return 0;
}

int kh_cgroups_vm_create(const kh_cgroups *cg, const char *vm_id, kh_err *err)
{
    char dir[600];
    if (cg->version == 2) {
        char parent[600];
        kh_fmt(parent, sizeof(parent), "%s/%s", cg->mount, cg->root);
        if (kh_fs_mkdir_p(parent, 0755, err) < 0)
            return -1;
        v2_enable_controllers(cg->mount);
        v2_enable_controllers(parent);
        kh_fmt(dir, sizeof(dir), "%s/vm-%s", parent, vm_id);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot create cgroup %s", dir);
            return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < cg->v1_count; i++) {
        kh_fmt(dir, sizeof(dir), "%s/%s/vm-%s", cg->v1_dirs[i], cg->root, vm_id);
        if (kh_fs_mkdir_p(dir, 0755, err) < 0)
            return -1;
        if (strcmp(v1_name(cg->v1_dirs[i]), "cpuset") == 0) {
            char top[600];
            kh_fmt(top, sizeof(top), "%s/%s", cg->v1_dirs[i], cg->root);
            if (v1_cpuset_fill(top, err) < 0 || v1_cpuset_fill(dir, err) < 0)
                return -1;
        }
        if (strcmp(v1_name(cg->v1_dirs[i]), "devices") == 0) {
            char p[600];
            kh_fmt(p, sizeof(p), "%s/devices.deny", dir);
            if (write_str(p, "a") < 0) {
                kh_err_errno(err, KH_E_INTERNAL, errno, "cannot write %s", p);
                return -1;
            }
            kh_fmt(p, sizeof(p), "%s/devices.allow", dir);
            for (size_t j = 0; j < KH_ARRAY_LEN(v1_devices_allow); j++) {
                if (write_str(p, v1_devices_allow[j]) < 0) {
                    kh_err_errno(err, KH_E_INTERNAL, errno, "cannot write %s", p);
                    return -1;
                }
            }
        }
    }
    return 0;
}

int kh_cgroups_vm_enter_self(const kh_cgroups *cg, const char *vm_id)
{
    char p[600];
    if (cg->version == 2) {
        kh_fmt(p, sizeof(p), "%s/%s/vm-%s/cgroup.procs", cg->mount, cg->root, vm_id);
        return write_str(p, "0");
    }
    for (size_t i = 0; i < cg->v1_count; i++) {
        kh_fmt(p, sizeof(p), "%s/%s/vm-%s/cgroup.procs", cg->v1_dirs[i], cg->root, vm_id);
        if (write_str(p, "0") < 0)
            return -1;
    }
    return 0;
}

int kh_cgroups_vm_pids(const kh_cgroups *cg, const char *vm_id, pid_t **out, kh_err *err)
{
    *out = NULL;
    if (cg->version == 0)
        return 0;
    char dir[600], p[600];
    if (kh_cgroups_vm_dir(cg, vm_id, cg->version == 1 ? "memory" : NULL, dir, sizeof(dir)) < 0 &&
        kh_cgroups_vm_dir(cg, vm_id, NULL, dir, sizeof(dir)) < 0)
        return 0;
    kh_fmt(p, sizeof(p), "%s/cgroup.procs", dir);
    kh_err local = KH_ERR_INIT;
    char *text = kh_fs_read(p, 1 << 20, NULL, &local);
    if (!text) {
        if (local.code == KH_E_NOTFOUND)
            return 0;
        kh_err_copy(err, &local);
        return -1;
    }
    size_t n = 0, cap = 4;
    pid_t *pids = xcalloc(cap, sizeof(pid_t));
    for (char *s = text, *end; *s; s = end) {
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        if (v > 0) {
            if (n == cap)
                pids = xreallocarray(pids, cap *= 2, sizeof(pid_t));
            pids[n++] = (pid_t)v;
        }
    }
    free(text);
    *out = pids;
    return (int)n;
}

int kh_cgroups_vm_remove(const kh_cgroups *cg, const char *vm_id, kh_err *err)
{
    char dir[600];
    if (cg->version == 2) {
        kh_fmt(dir, sizeof(dir), "%s/%s/vm-%s", cg->mount, cg->root, vm_id);
        if (rmdir(dir) < 0 && errno != ENOENT) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot remove cgroup %s", dir);
            return -1;
        }
        return 0;
    }
    int rc = 0;
    for (size_t i = 0; i < cg->v1_count; i++) {
        kh_fmt(dir, sizeof(dir), "%s/%s/vm-%s", cg->v1_dirs[i], cg->root, vm_id);
        if (rmdir(dir) < 0 && errno != ENOENT) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot remove cgroup %s", dir);
            rc = -1;
        }
    }
    return rc;
}
