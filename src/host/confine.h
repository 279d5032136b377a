/* confine.h - the filesystem view of a confined child (QEMU): a private
 * mount namespace with a minimal /dev and the daemon's directories hidden
 * but for the child's own, set up in the child between fork and exec by
 * host/spawn.c; and the start-time check that a directory is reachable by
 * an unprivileged uid.
 *
 * kh_confine_enter(), in the child (still root, before the uid switch):
 *   - unshare(CLONE_NEWNS), "/" made a recursive slave: host mounts still
 *     propagate in, nothing propagates out;
 *   - a tmpfs on /dev holding only the listed character devices (mknod with
 *     the host node's numbers, owner and mode; an absent node is skipped),
 *     /dev/fd -> /proc/self/fd, then remounted read-only;
 *   - a root-owned, 0711 tmpfs over each hidden directory (the state dir,
 *     the run dir, /tmp: other VMs' sockets, logs, disks and databases
 *     vanish), and the child's own directory bound back at its path.
 * Async-signal-safe: system calls only, on paths the parent prepared.
 */
#ifndef KH_HOST_CONFINE_H
#define KH_HOST_CONFINE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/err.h"

#define KH_CONFINE_DEVS_MAX 8
#define KH_CONFINE_HIDE_MAX 4

typedef struct kh_confine {
    /* Device nodes by name under /dev, e.g. "null", "kvm" (no '/'). */
    const char *devs[KH_CONFINE_DEVS_MAX];
    size_t ndevs;
    /* Absolute directories covered by an empty tmpfs, outer ones first. */
    const char *hide[KH_CONFINE_HIDE_MAX];
    size_t nhide;
    /* An absolute directory (inside a hidden one) bound back; NULL: none. */
    const char *keep;
} kh_confine;

/* Add dir to c->hide unless it lies inside one already there (or is "/",
 * holds /usr, /etc, /proc, /sys, /dev or /lib, or has "." or ".."
 * components); keeps the list outer-first. */
void kh_confine_hide(kh_confine *c, const char *dir);

/* In a forked child: enter the confined view. 0, or -1 with errno. */
int kh_confine_enter(const kh_confine *c);

/* Whether a process of uid (in group gid, no other groups) can walk to dir:
 * every directory from "/" to dir needs search permission for it. 0, or -1
 * with err set: "run dir /x/y: not reachable by QEMU uid N: parent /x is
 * 0700" (what names the directory). */
int kh_confine_check_reachable(const char *what, const char *dir, uid_t uid, gid_t gid,
                               kh_err *err);

/* The per-VM uid range "FIRST-LAST" (inclusive, FIRST >= 1000, at least 2
 * and at most 2^24 uids, below 2^32-1). 0, or -1 with err set. */
int kh_confine_uid_range_parse(const char *s, uid_t *first, unsigned *count, kh_err *err);
/* The range must not overlap a subordinate id range of /etc/subuid or
 * /etc/subgid (those uids belong to users' containers). 0, or -1 with err. */
int kh_confine_uid_range_check(uid_t first, unsigned count, kh_err *err);

#endif
