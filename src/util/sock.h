/* sock.h - unix sockets addressed relative to a directory fd.
 *
 * sun_path holds 108 bytes; state directories can be longer. These bind and
 * connect through "/proc/self/fd/<dirfd>/<name>", which is short whatever
 * the directory's real path is.
 */
#ifndef KH_UTIL_SOCK_H
#define KH_UTIL_SOCK_H

#include "util/err.h"

/* Create a listening SOCK_STREAM socket at dirfd/name (a stale socket file
 * is replaced), close-on-exec, with the given backlog. */
int kh_sock_listen_at(int dirfd, const char *name, int backlog, kh_err *err);
/* Connect (blocking; a unix connect completes at once or fails) to
 * dirfd/name; close-on-exec. */
int kh_sock_connect_at(int dirfd, const char *name, kh_err *err);

#endif
