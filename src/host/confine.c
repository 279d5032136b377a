/* confine.c - owns the confined filesystem view of a child (see confine.h):
 * the mount namespace set-up run between fork and exec, and the start-time
 * reachability check of a directory for an unprivileged uid. */
#include "host/confine.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* a + b into buf; -1 (ENAMETOOLONG) when it does not fit. */
static int cat2(char *buf, size_t size, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 1 > size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, a, la);
    memcpy(buf + la, b, lb);
    buf[la + lb] = '\0';
    return 0;
}

/* mkdir -p with each new directory root-owned 0711 (chmod: the umask). */
static int mkdir_p(const char *path)
{
    char p[PATH_MAX];
    if (cat2(p, sizeof(p), path, "") < 0)
        return -1;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0711) == 0) {
            if (chmod(p, 0711) < 0)
                return -1;
        } else if (errno != EEXIST) {
            return -1;
        }
        *s = c;
        if (c == '\0')
            return 0;
    }
}

static bool is_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n == 1 && dir[0] == '/')
        return true;
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

void kh_confine_hide(kh_confine *c, const char *dir)
{
    static const char *const vital[] = { "/usr", "/etc", "/proc", "/sys", "/dev", "/lib",
                                         "/bin", "/sbin", "/lib64" };
    if (!dir || dir[0] != '/' || c->nhide >= KH_CONFINE_HIDE_MAX)
        return;
    for (const char *p = strstr(dir, "/."); p; p = strstr(p + 1, "/."))
        if (p[2] == '/' || p[2] == '\0' || (p[2] == '.' && (p[3] == '/' || p[3] == '\0')))
            return; /* "." or ".." components: not a plain path */
    for (size_t i = 0; i < sizeof(vital) / sizeof(vital[0]); i++)
        if (is_under(vital[i], dir))
            return;
    for (size_t i = 0; i < c->nhide; i++)
        if (is_under(dir, c->hide[i]))
            return;
    /* a new outer one replaces those inside it */
    size_t k = 0;
    for (size_t i = 0; i < c->nhide; i++)
        if (!is_under(c->hide[i], dir))
            c->hide[k++] = c->hide[i];
    c->nhide = k;
    c->hide[c->nhide++] = dir;
}

int kh_confine_enter(const kh_confine *c)
{
    struct {
        char path[64];
        struct stat st;
        bool present;
    } dev[KH_CONFINE_DEVS_MAX];
    size_t ndev = c->ndevs < KH_CONFINE_DEVS_MAX ? c->ndevs : KH_CONFINE_DEVS_MAX;
    for (size_t i = 0; i < ndev; i++) {
        if (strchr(c->devs[i], '/') || cat2(dev[i].path, sizeof(dev[i].path), "/dev/",
                                             c->devs[i]) < 0) {
            errno = EINVAL;
            return -1;
        }
        dev[i].present = stat(dev[i].path, &dev[i].st) == 0 && S_ISCHR(dev[i].st.st_mode);
    }
    int keep = -1, rc = -1;
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        return -1;
    /* opened in the new namespace (a bind source must be in the caller's),
     * before the tmpfs covers it */
    if (c->keep && (keep = open(c->keep, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -1;
    if (mount("kvmhost-dev", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC,
              "mode=0755,size=64k,nr_inodes=64") < 0)
        goto out;
    for (size_t i = 0; i < ndev; i++) {
        if (!dev[i].present)
            continue;
        mode_t perm = dev[i].st.st_mode & 07777;
        if (mknod(dev[i].path, S_IFCHR | perm, dev[i].st.st_rdev) < 0 ||
            chown(dev[i].path, dev[i].st.st_uid, dev[i].st.st_gid) < 0 ||
            chmod(dev[i].path, perm) < 0)
            goto out;
    }
    if (symlink("/proc/self/fd", "/dev/fd") < 0 ||
        mount(NULL, "/dev", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) < 0)
        goto out;
    for (size_t i = 0; i < c->nhide && i < KH_CONFINE_HIDE_MAX; i++) {
        if (mkdir_p(c->hide[i]) < 0 ||
            mount("kvmhost-hidden", c->hide[i], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "mode=0711,size=64k,nr_inodes=256") < 0)
            goto out;
    }
    if (keep >= 0) {
        char src[32] = "/proc/self/fd/";
        char num[12];
        int n = 0;
        for (int v = keep; n == 0 || v > 0; v /= 10)
            num[n++] = (char)('0' + v % 10);
        size_t l = strlen(src);
        while (n > 0)
            src[l++] = num[--n];
        src[l] = '\0';
        if (mkdir_p(c->keep) < 0 || mount(src, c->keep, NULL, MS_BIND, NULL) < 0)
            goto out;
    }
    rc = 0;
out:
    if (keep >= 0) {
        int e = errno;
        close(keep);
        errno = e;
    }
    return rc;
}

/* Whether st grants search (x) to uid/gid. */
static bool searchable(const struct stat *st, uid_t uid, gid_t gid)
{
    if (st->st_uid == uid)
        return st->st_mode & S_IXUSR;
    if (st->st_gid == gid)
        return st->st_mode & S_IXGRP;
    return st->st_mode & S_IXOTH;
}

int kh_confine_check_reachable(const char *what, const char *dir, uid_t uid, gid_t gid,
                               kh_err *err)
{
    char p[PATH_MAX];
    if (strlen(dir) >= sizeof(p) || dir[0] != '/') {
        kh_err_set(err, KH_E_INVALID, "%s %s: not an absolute path", what, dir);
        return -1;
    }
    /* "/", then each prefix of dir ending before a '/', then dir itself */
    size_t len = strlen(dir);
    for (size_t n = 1; n <= len; n++) {
        if (n != 1 && n != len && dir[n] != '/')
            continue;
        if (n > 1 && dir[n - 1] == '/')
            continue; /* "//" or a trailing '/' */
        memcpy(p, dir, n);
        p[n] = '\0';
        struct stat st;
        if (stat(p, &st) < 0) {
            kh_err_errno(err, KH_E_INVALID, errno, "%s %s: cannot stat %s", what, dir, p);
            return -1;
        }
        if (!searchable(&st, uid, gid)) {
            bool self = n == len;
            kh_err_set(err, KH_E_INVALID, "%s %s: not reachable by QEMU uid %u: %s %s is %04o "
                       "(owner %u; QEMU needs search permission on every directory down to "
                       "its run dir: chmod o+x %s, or choose another directory)",
                       what, dir, (unsigned)uid, self ? "directory" : "parent", p,
                       (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, p);
            return -1;
        }
    }
    return 0;
}

int kh_confine_uid_range_parse(const char *s, uid_t *first, unsigned *count, kh_err *err)
{
    char *end;
    errno = 0;
    unsigned long long a = strtoull(s, &end, 10);
    bool ok = errno == 0 && end != s && *end == '-' && s[0] >= '0' && s[0] <= '9';
    unsigned long long b = 0;
    if (ok) {
        const char *t = end + 1;
        b = strtoull(t, &end, 10);
        ok = errno == 0 && end != t && *end == '\0' && t[0] >= '0' && t[0] <= '9';
    }
    if (!ok || a < 1000 || b <= a || b >= 0xffffffffULL || b - a + 1 > (1ULL << 24)) {
        kh_err_set(err, KH_E_INVALID, "--qemu-uid-range %s: want FIRST-LAST, e.g. "
                   "700000000-700065535 (FIRST >= 1000, 2 to 16777216 uids, below 4294967295)",
                   s);
        return -1;
    }
    *first = (uid_t)a;
    *count = (unsigned)(b - a + 1);
    return 0;
}

/* One subordinate id file: "name:first:count" lines. */
static int sub_overlap(const char *file, uid_t first, unsigned count, kh_err *err)
{
    FILE *fp = fopen(file, "re");
    if (!fp)
        return 0; /* none: no subordinate ids given out */
    char line[512];
    int rc = 0;
    unsigned long long lo = first, hi = (unsigned long long)first + count - 1;
    while (rc == 0 && fgets(line, sizeof(line), fp)) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || line[0] == '#')
            continue;
        unsigned long long s = strtoull(c1 + 1, NULL, 10), n = strtoull(c2 + 1, NULL, 10);
        if (n && s <= hi && s + n - 1 >= lo) {
            *c1 = '\0';
            kh_err_set(err, KH_E_INVALID, "--qemu-uid-range %u-%llu overlaps the subordinate "
                       "ids %llu-%llu of %s in %s: choose another range", (unsigned)first, hi, s,
                       s + n - 1, line, file);
            rc = -1;
        }
    }
    fclose(fp);
    return rc;
}

int kh_confine_uid_range_check(uid_t first, unsigned count, kh_err *err)
{
    if (sub_overlap("/etc/subuid", first, count, err) < 0 ||
        sub_overlap("/etc/subgid", first, count, err) < 0)
        return -1;
    return 0;
}
