/* fs.h - small file-system helpers with kh_err reporting. */
#ifndef KH_UTIL_FS_H
#define KH_UTIL_FS_H

#include <stddef.h>
#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

#include "util/err.h"

/* mkdir -p with the given mode for the directories it creates. */
int kh_fs_mkdir_p(const char *path, mode_t mode, kh_err *err);
/* Write data to path atomically (temp file in the same folder, fsync,
 * rename), with the given mode. */
int kh_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, kh_err *err);
/* The same without the fsync: readers see the old or the new content,
 * never a mix, and a crash of the writer loses nothing (the page cache
 * keeps it); for files whose meaning ends with the machine's uptime
 * (RUN_DIR), where waiting for the disk buys nothing. */
int kh_fs_write_replace(const char *path, const void *data, size_t len, mode_t mode,
                        kh_err *err);
/* Read a whole file (at most max bytes; more is an error). NUL-terminated;
 * *len_out gets the length when not NULL. The caller frees. */
char *kh_fs_read(const char *path, size_t max, size_t *len_out, kh_err *err);
/* kh_fs_read, then parse the text as JSON: a new reference, or NULL with
 * err (KH_E_INVALID "PATH: TEXT at line N" when it is not JSON). */
json_t *kh_fs_read_json(const char *path, size_t max, kh_err *err);
/* Remove a directory tree (no symlinks followed). Missing is not an error. */
int kh_fs_rm_rf(const char *path, kh_err *err);
/* Whether path's filesystem takes O_DIRECT for it (an open with O_DIRECT
 * works: not on tmpfs before Linux 6.6, nor on some FUSE). */
bool kh_fs_direct_ok(const char *path);
/* snprintf that reports truncation: returns -1 (and leaves a truncated
 * string) when the result does not fit. Paths are built with it so that a
 * long name can never silently become another path. */
int kh_fmt(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Set FD_CLOEXEC / O_NONBLOCK. */
int kh_fd_set_cloexec(int fd, int on);
int kh_fd_set_nonblock(int fd, int on);

#endif
