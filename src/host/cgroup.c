/* cgroup.c - the VMs' cgroups on v1 or v2, and finding the hierarchies
 * (cgroup.h). */
#include "host/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/mem.h"

static const char *const v1_controllers[] = { "cpu",   "cpuacct", "memory", "pids",
                                              "blkio", "devices", "cpuset" };

/* Device nodes QEMU may open (v1: the devices controller's allow-list; v2:
 * the device program, host/devbpf.c): null, zero, full, random, urandom,
 * kvm - the nodes of its private /dev (qemu/launch.c). Taps and vhost-net
 * reach it as fds the daemon opened (an open fd is not checked again), and
 * its consoles are sockets: no tun, tty, ptmx or pts. */
const kh_devbpf_rule kh_cgroups_devices[] = {
    { 'c', 1, 3 }, { 'c', 1, 5 }, { 'c', 1, 7 }, { 'c', 1, 8 }, { 'c', 1, 9 }, { 'c', 10, 232 },
};
const size_t kh_cgroups_ndevices = KH_ARRAY_LEN(kh_cgroups_devices);

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

/* The controllers we use that the layout lacks, into cg->missing. */
static void note_missing(kh_cgroups *cg)
{
    static const char *const v2_used[] = { "cpu", "memory", "io", "pids", "cpuset" };
    const char *const *used = cg->version == 1 ? v1_controllers : v2_used;
    size_t n = cg->version == 1 ? KH_ARRAY_LEN(v1_controllers) : KH_ARRAY_LEN(v2_used);
    cg->missing[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (kh_cgroups_has(cg, used[i]))
            continue;
        size_t len = strlen(cg->missing);
        kh_fmt(cg->missing + len, sizeof(cg->missing) - len, "%s%s", len ? "," : "", used[i]);
    }
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
        FILE *f = fopen(p, "re");
        if (f) {
            if (!fgets(cg->controllers, sizeof(cg->controllers), f))
                cg->controllers[0] = '\0';
            fclose(f);
        }
        cg->controllers[strcspn(cg->controllers, "\n")] = '\0';
        if (!cg->controllers[0]) /* read, and empty: none */
            kh_fmt(cg->controllers, sizeof(cg->controllers), " ");
        note_missing(cg);
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
        note_missing(cg);
        return;
    }
    kh_fmt(cg->reason, sizeof(cg->reason), "no cgroup v2 at %s and no v1 controllers",
             cg->mount);
    note_missing(cg);
}

bool kh_cgroups_has(const kh_cgroups *cg, const char *ctrl)
{
    if (!cg || cg->version == 0)
        return false;
    if (cg->version == 2) {
        if (!cg->controllers[0])
            return true; /* not read (a layout made by hand) */
        size_t n = strlen(ctrl);
        for (const char *s = cg->controllers; (s = strstr(s, ctrl)) != NULL; s += n)
            if ((s == cg->controllers || s[-1] == ' ') && (s[n] == ' ' || s[n] == '\0'))
                return true;
        return false;
    }
    const char *name = strcmp(ctrl, "io") == 0 ? "blkio" : ctrl;
    for (size_t i = 0; i < cg->v1_count; i++) {
        const char *d = strrchr(cg->v1_dirs[i], '/');
        if (strcmp(d ? d + 1 : cg->v1_dirs[i], name) == 0)
            return true;
    }
    return false;
}

#define MOUNT_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

int kh_cgroups_mount_private(const char *at, kh_err *err)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot read /proc/self/cgroup");
        return -1;
    }
    /* "ID:CONTROLLERS:PATH": a v1 hierarchy per line with controllers
     * (named ones, "name=systemd", are not ours); "0::PATH" is cgroup2. */
    char sets[KH_CGROUP_V1_MAX * 2][64];
    size_t nsets = 0;
    bool v2 = false;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *c = strchr(line, ':');
        char *e = c ? strchr(c + 1, ':') : NULL;
        if (!e)
            continue;
        *e = '\0';
        const char *ctrls = c + 1;
        if (!*ctrls)
            v2 = v2 || strncmp(line, "0:", 2) == 0;
        else if (strncmp(ctrls, "name=", 5) != 0 && nsets < KH_ARRAY_LEN(sets) &&
                 strlen(ctrls) < sizeof(sets[0]))
            kh_fmt(sets[nsets++], sizeof(sets[0]), "%s", ctrls);
    }
    fclose(f);
    if (!nsets && !v2) {
        kh_err_set(err, KH_E_UNSUPPORTED, "/proc/self/cgroup names no cgroup hierarchy");
        return -1;
    }
    if (unshare(CLONE_NEWNS) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot make a mount namespace of our own");
        return -1;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot make / a slave mount");
        return -1;
    }
    if (!nsets) { /* pure v2 */
        if (mount("cgroup2", at, "cgroup2", MOUNT_FLAGS, NULL) < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot mount cgroup2 at %s", at);
            return -1;
        }
        return 0;
    }
    if (mount("kvmhost-cgroup", at, "tmpfs", MOUNT_FLAGS, "mode=755") < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot mount a tmpfs at %s", at);
        return -1;
    }
    for (size_t i = 0; i < nsets; i++) {
        char dir[600];
        kh_fmt(dir, sizeof(dir), "%s/%s", at, sets[i]);
        if (mkdir(dir, 0755) < 0 || mount("cgroup", dir, "cgroup", MOUNT_FLAGS, sets[i]) < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot mount the cgroup hierarchy %s at %s",
                         sets[i], dir);
            return -1;
        }
        /* "cpu,cpuacct": reachable as cpu and cpuacct too, as systemd does */
        if (!strchr(sets[i], ','))
            continue;
        char copy[64];
        kh_fmt(copy, sizeof(copy), "%s", sets[i]);
        char *save = NULL;
        for (char *n = strtok_r(copy, ",", &save); n; n = strtok_r(NULL, ",", &save)) {
            char link[600];
            kh_fmt(link, sizeof(link), "%s/%s", at, n);
            if (symlink(sets[i], link) < 0 && errno != EEXIST) {
                kh_err_errno(err, KH_E_INTERNAL, errno, "cannot link %s", link);
                return -1;
            }
        }
    }
    if (v2) { /* hybrid: best effort, as nothing of ours needs it */
        char dir[600];
        kh_fmt(dir, sizeof(dir), "%s/unified", at);
        if (mkdir(dir, 0755) == 0)
            (void)mount("cgroup2", dir, "cgroup2", MOUNT_FLAGS, NULL);
    }
    return 0;
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
        /* v2 has no devices.allow: the device program is the allow-list */
        return kh_devbpf_attach(dir, kh_cgroups_devices, kh_cgroups_ndevices, err);
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
            for (size_t j = 0; j < kh_cgroups_ndevices; j++) {
                const kh_devbpf_rule *r = &kh_cgroups_devices[j];
                char rule[48];
                kh_fmt(rule, sizeof(rule), "%c %u:%u rwm", r->type, r->major, r->minor);
                if (write_str(p, rule) < 0) {
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
        kh_fmt(p, sizeof(p), "%s/%s/vm-%s/tasks", cg->v1_dirs[i], cg->root, vm_id);
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
