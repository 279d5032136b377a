/* listen.c - listeners: the unix and TCP sockets, one MHD daemon per
 * listener (connection limit, idle timeout, TLS), and driving it from the
 * libuv loop: MHD's epoll fd is watched by a uv_poll_t, a uv_timer_t
 * follows MHD_get_timeout, and kh_listen_kick asks for a run soon.
 */
#include "http/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- MHD driving ---- */

static void lis_timer_cb(uv_timer_t *t);

static void lis_arm(listener *lis)
{
    if (!lis->mhd || lis->srv->freeing)
        return;
    MHD_UNSIGNED_LONG_LONG to = 0;
    if (lis->kick) {
        uv_timer_start(&lis->timer, lis_timer_cb, 0, 0);
    } else if (MHD_get_timeout(lis->mhd, &to) == MHD_YES) {
        uv_timer_start(&lis->timer, lis_timer_cb, to > 3600000 ? 3600000 : (uint64_t)to, 0);
    } else {
        uv_timer_stop(&lis->timer);
    }
}

static void lis_run(listener *lis)
{
    if (!lis->mhd || lis->srv->freeing || lis->running)
        return;
    lis->kick = false;
    lis->running = true;
    MHD_run(lis->mhd);
    lis->running = false;
    /* At the limit MHD takes its listening socket out of its epoll set and
     * puts it back only at the start of a later run: when connections
     * have gone since, make sure that run happens, or the backlog waits. */
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(lis->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (di) {
        bool full = di->num_connections >= lis->srv->max_conn;
        if (lis->was_full && !full)
            lis->kick = true;
        lis->was_full = full;
    }
    lis_arm(lis);
}

static void lis_timer_cb(uv_timer_t *t)
{
    lis_run(t->data);
}

static void lis_poll_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    lis_run(h->data);
}

/* Ask for MHD_run at the next loop iteration (safe inside MHD callbacks). */
void kh_listen_kick(listener *lis)
{
    if (!lis || !lis->mhd || lis->srv->freeing)
        return;
    lis->kick = true;
    if (!lis->running)
        uv_timer_start(&lis->timer, lis_timer_cb, 0, 0);
}

/* ---- listeners ---- */

int kh_listen_unix(const char *path, mode_t mode, kh_err *err)
{
    if (!path || !*path) {
        kh_err_set(err, KH_E_INVALID, "empty unix socket path");
        return -1;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    int dirfd = -1;
    if (strlen(path) < sizeof(sa.sun_path)) {
        memcpy(sa.sun_path, path, strlen(path) + 1);
    } else {
        /* Too long for sun_path: bind through /proc/self/fd/<dir>/<name>. */
        const char *slash = strrchr(path, '/');
        char *dir = slash ? xstrndup(path, (size_t)(slash - path)) : xstrdup(".");
        dirfd = open(dir[0] ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        free(dir);
        if (dirfd < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "opening the directory of %s", path);
            return -1;
        }
        int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dirfd,
                         slash ? slash + 1 : path);
        if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
            close(dirfd);
            kh_err_set(err, KH_E_INVALID, "unix socket name too long: %s", path);
            return -1;
        }
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            if (dirfd >= 0)
                close(dirfd);
            kh_err_set(err, KH_E_CONFLICT, "%s exists and is not a socket", path);
            return -1;
        }
        /* Replace a stale socket of an earlier run, never a live one:
         * another daemon may be serving on it. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            if (dirfd >= 0)
                close(dirfd);
            kh_err_set(err, KH_E_CONFLICT,
                       "another server is already listening on %s (another kvmhostd?)", path);
            return -1;
        }
        unlink(path); /* stale socket of an earlier run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "socket");
        if (dirfd >= 0)
            close(dirfd);
        return -1;
    }
    mode_t old = umask(0177); /* no window with a wider mode */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int bind_errno = errno;
    umask(old);
    if (dirfd >= 0)
        close(dirfd);
    if (rc != 0) {
        kh_err_errno(err, KH_E_INTERNAL, bind_errno, "binding %s", path);
        close(fd);
        return -1;
    }
    if (chmod(path, mode) != 0 || listen(fd, SOMAXCONN) != 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "setting up %s", path);
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

/* "ADDR:PORT", "[v6]:PORT", ":PORT" or "*:PORT" (all addresses). */
int kh_listen_tcp(const char *spec, int *port_out, kh_err *err)
{
    char host[256];
    const char *port;
    if (spec[0] == '[') {
        const char *e = strchr(spec, ']');
        if (!e || e[1] != ':' || (size_t)(e - spec - 1) >= sizeof(host)) {
            kh_err_set(err, KH_E_INVALID, "bad listen address %s (want [ADDR]:PORT)", spec);
            return -1;
        }
        memcpy(host, spec + 1, (size_t)(e - spec - 1));
        host[e - spec - 1] = '\0';
        port = e + 2;
    } else {
        const char *c = strrchr(spec, ':');
        if (!c || memchr(spec, ':', (size_t)(c - spec)) || (size_t)(c - spec) >= sizeof(host)) {
            kh_err_set(err, KH_E_INVALID, "bad listen address %s (want ADDR:PORT)", spec);
            return -1;
        }
        memcpy(host, spec, (size_t)(c - spec));
        host[c - spec] = '\0';
        port = c + 1;
    }
    if (!*port || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5 ||
        strtol(port, NULL, 10) > 65535) {
        kh_err_set(err, KH_E_INVALID, "bad port in listen address %s", spec);
        return -1;
    }
    bool any = host[0] == '\0' || strcmp(host, "*") == 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(any ? NULL : host, port, &hints, &res);
    if (gai != 0) {
        kh_err_set(err, KH_E_INVALID, "listen address %s: %s", spec, gai_strerror(gai));
        return -1;
    }
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1, v6only = any ? 0 : 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
            break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, last_errno, "listening on %s", spec);
        return -1;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl = sizeof(ss);
    *port_out = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *port_out = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *port_out = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

/* Start an MHD daemon on the listening fd (taken: closed on failure) and
 * hook it to the loop. */
int kh_listen_start(kh_http_server *srv, listener *lis, int fd, kh_err *err)
{
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE |
                     MHD_USE_ERROR_LOG;
    struct MHD_OptionItem tls_opts[4] = {
        { MHD_OPTION_END, 0, NULL }, { MHD_OPTION_END, 0, NULL }, { MHD_OPTION_END, 0, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    if (lis->tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            kh_err_set(err, KH_E_UNSUPPORTED, "this libmicrohttpd has no TLS support");
            close(fd);
            return -1;
        }
        flags |= MHD_USE_TLS;
        tls_opts[0] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, lis->tls_cert };
        tls_opts[1] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, lis->tls_key };
        if (lis->tls_trust)
            tls_opts[2] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0,
                                                   lis->tls_trust };
    }
    lis->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, kh_server_on_access, lis,
        MHD_OPTION_EXTERNAL_LOGGER, kh_server_on_log, lis, /* first, to catch all messages */
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)srv->max_conn,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)srv->idle_timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, kh_server_on_completed, lis,
        MHD_OPTION_URI_LOG_CALLBACK, kh_server_on_uri, lis,
        MHD_OPTION_NOTIFY_CONNECTION, kh_guard_on_connection, lis,
        /* not MHD's strict mode: its missing-Host answer sends its status
         * line twice; guard.c checks Host and header names itself */
        MHD_OPTION_STRICT_FOR_CLIENT, (int)0,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)(lis->local ? 0 : srv->per_ip),
        MHD_OPTION_ARRAY, tls_opts,
        MHD_OPTION_END);
    if (!lis->mhd) {
        kh_err_set(err, KH_E_INTERNAL, "cannot start the HTTP server on %s",
                   lis->local ? "the unix socket" : "TCP");
        close(fd);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(lis->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || uv_poll_init(srv->loop, &lis->poll, di->epoll_fd) != 0) {
        kh_err_set(err, KH_E_INTERNAL, "cannot watch the HTTP server's epoll fd");
        MHD_stop_daemon(lis->mhd);
        lis->mhd = NULL;
        return -1;
    }
    uv_timer_init(srv->loop, &lis->timer);
    lis->poll.data = lis;
    lis->timer.data = lis;
    srv->refs += 2;
    lis->handles = true;
    uv_poll_start(&lis->poll, UV_READABLE, lis_poll_cb);
    kh_listen_kick(lis);
    return 0;
}

static void lis_handle_closed(uv_handle_t *h)
{
    listener *lis = h->data;
    kh_server_unref(lis->srv);
}

void kh_listen_stop(listener *lis)
{
    if (lis->handles) {
        /* Before MHD closes its epoll fd. */
        uv_close((uv_handle_t *)&lis->poll, lis_handle_closed);
        uv_close((uv_handle_t *)&lis->timer, lis_handle_closed);
    }
    if (lis->mhd)
        MHD_stop_daemon(lis->mhd); /* completions: aborts, pending WebSockets */
    lis->mhd = NULL;
    struct stat st;
    if (lis->unix_path && lstat(lis->unix_path, &st) == 0 && st.st_dev == lis->unix_dev &&
        st.st_ino == lis->unix_ino)
        unlink(lis->unix_path); /* not a socket a successor bound meanwhile */
}

void kh_listen_free(listener *lis)
{
    free(lis->unix_path);
    free(lis->tls_cert);
    free(lis->tls_trust);
    if (lis->tls_key) {
        OPENSSL_cleanse(lis->tls_key, strlen(lis->tls_key));
        free(lis->tls_key);
    }
    free(lis);
}
