/* fs.c - owns small file-system helpers with kh_err reporting: mkdir
 * -p, atomic writes, reads, rm -rf, fd flags (util/fs.h). */
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/mem.h"

int kh_fs_mkdir_p(const char *path, mode_t mode, kh_err *err)
{
    char *tmp = xstrdup(path);
    size_t len = strlen(tmp);
    while (len > 1 && tmp[len - 1] == '/')
        tmp[--len] = '\0';
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot create directory %s", tmp);
            free(tmp);
            return -1;
        }
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot create directory %s", tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

static int write_renamed(const char *path, const void *data, size_t len, mode_t mode, bool sync,
                         kh_err *err)
{
    char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot create %s", tmp);
        free(tmp);
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot write %s", tmp);
            goto fail;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fchmod(fd, mode) < 0 || (sync && fsync(fd) < 0)) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot sync %s", tmp);
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot rename %s", tmp);
        goto fail;
    }
    free(tmp);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return -1;
}

int kh_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, kh_err *err)
{
    return write_renamed(path, data, len, mode, true, err);
}

int kh_fs_write_replace(const char *path, const void *data, size_t len, mode_t mode,
                        kh_err *err)
{
    return write_renamed(path, data, len, mode, false, err);
}

char *kh_fs_read(const char *path, size_t max, size_t *len_out, kh_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        kh_err_errno(err, errno == ENOENT ? KH_E_NOTFOUND : KH_E_INTERNAL, errno,
                     "cannot open %s", path);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap >= max) {
                kh_err_set(err, KH_E_TOOLARGE, "%s is larger than %zu bytes", path, max);
                goto fail;
            }
            cap = cap * 2 > max ? max : cap * 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot read %s", path);
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
fail:
    close(fd);
    free(buf);
    return NULL;
}

json_t *kh_fs_read_json(const char *path, size_t max, kh_err *err)
{
    size_t len = 0;
    char *text = kh_fs_read(path, max, &len, err);
    if (!text)
        return NULL;
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!j)
        kh_err_set(err, KH_E_INVALID, "%s: %s at line %d", path, jerr.text, jerr.line);
    return j;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    return rc < 0 && errno != ENOENT ? -1 : 0;
}

int kh_fs_rm_rf(const char *path, kh_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : (kh_err_errno(err, KH_E_INTERNAL, errno, "cannot stat %s", path), -1);
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot remove %s", path);
        return -1;
    }
    return 0;
}

int kh_fd_set_cloexec(int fd, int on)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0)
        return -1;
    flags = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
    return fcntl(fd, F_SETFD, flags);
}

int kh_fd_set_nonblock(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    flags = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
    return fcntl(fd, F_SETFL, flags);
}

int kh_fmt(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

bool kh_fs_direct_ok(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}
