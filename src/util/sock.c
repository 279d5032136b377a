/* sock.c - owns unix sockets addressed relative to a directory fd
 * (util/sock.h). */
#include "util/sock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fill_addr(struct sockaddr_un *sa, int dirfd, const char *name, kh_err *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    int n = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", dirfd, name);
    if (n < 0 || (size_t)n >= sizeof(sa->sun_path)) {
        kh_err_set(err, KH_E_INTERNAL, "socket name %s is too long", name);
        return -1;
    }
    return 0;
}

/* A unix stream socket (close-on-exec) for dirfd/name: -1 with err. */
static int new_socket(struct sockaddr_un *sa, int dirfd, const char *name, kh_err *err)
{
    if (fill_addr(sa, dirfd, name, err) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        kh_err_errno(err, KH_E_INTERNAL, errno, "socket");
    return fd;
}

int kh_sock_listen_at(int dirfd, const char *name, int backlog, kh_err *err)
{
    struct sockaddr_un sa;
    int fd = new_socket(&sa, dirfd, name, err);
    if (fd < 0)
        return -1;
    if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot remove stale socket %s", name);
        close(fd);
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot listen on %s", name);
        close(fd);
        return -1;
    }
    return fd;
}

int kh_sock_connect_at(int dirfd, const char *name, kh_err *err)
{
    struct sockaddr_un sa;
    int fd = new_socket(&sa, dirfd, name, err);
    if (fd < 0)
        return -1;
    int rc;
    do {
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot connect to %s", name);
        close(fd);
        return -1;
    }
    return fd;
}
