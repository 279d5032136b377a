/* limits.c - what a request may send: the announced body checked against
 * max_body and the content type before anything is read, the collected
 * body capped at max_body, and the draining of a body the server answered
 * early (413, 401, 404...) so the client reads the answer instead of a
 * reset. Connection limits and idle timeouts are MHD options (listen.c).
 */
#include "http/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* "application/json", any case, optionally followed by parameters. */
static bool is_json_type(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = sizeof(want) - 1;
    if (strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static void drainer_closed(uv_handle_t *h)
{
    drainer *d = h->data;
    if (--d->open_handles == 0)
        free(d);
}

static void drainer_stop(drainer *d)
{
    DL_REMOVE(d->srv->drainers, d);
    d->srv->ndrainers--;
    uv_close((uv_handle_t *)&d->poll, drainer_closed); /* leaves the loop's epoll now */
    uv_close((uv_handle_t *)&d->timer, drainer_closed);
    close(d->fd);
}

static void drainer_poll_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    drainer *d = h->data;
    char buf[16384];
    for (int i = 0; status == 0 && i < 16; i++) {
        ssize_t n = recv(d->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0 || (uint64_t)n >= d->left)
            break;
        d->left -= (uint64_t)n;
    }
    if (status == 0 && d->left > 0 && !(events & UV_DISCONNECT))
        return; /* budget for this round used: more at the next */
    drainer_stop(d);
}

static void drainer_timer_cb(uv_timer_t *t)
{
    drainer_stop(t->data);
}

void kh_limits_drain(kh_http_server *srv, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || srv->freeing || srv->ndrainers >= DRAIN_MAX_OPEN)
        return;
    int fd = fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return;
    drainer *d = xcalloc(1, sizeof(*d));
    d->fd = fd;
    d->srv = srv;
    d->left = 8 * (uint64_t)srv->max_body + 65536;
    if (uv_poll_init(srv->loop, &d->poll, fd) != 0) {
        close(fd);
        free(d);
        return;
    }
    uv_timer_init(srv->loop, &d->timer);
    d->poll.data = d;
    d->timer.data = d;
    d->open_handles = 2;
    DL_INSERT(srv->drainers, d);
    srv->ndrainers++;
    uv_poll_start(&d->poll, UV_READABLE | UV_DISCONNECT, drainer_poll_cb);
    uv_timer_start(&d->timer, drainer_timer_cb, DRAIN_MS, 0);
}

enum MHD_Result kh_limits_body(kh_http_req *req, const char *data, size_t n)
{
    size_t max = req->srv->max_body;
    req->body_seen += n;
    if (!req->too_large && req->body_len + n > max) {
        req->too_large = true;
        KH_FREE(req->body);
        req->body_len = req->body_cap = 0;
    }
    if (req->too_large) {
        /* Discard; a client that keeps streaming far past the limit is
         * cut off instead of answered. */
        if (req->body_seen - n > 4 * (uint64_t)max + 65536)
            return MHD_NO;
        return MHD_YES;
    }
    if (req->body_len + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 1024;
        while (cap < req->body_len + n + 1)
            cap *= 2;
        if (cap > max + 1)
            cap = max + 1;
        req->body = xrealloc(req->body, cap);
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return MHD_YES;
}

bool kh_limits_announced(kh_http_req *req, const kh_route *route, kh_err *err)
{
    const char *cl = kh_http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = kh_http_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    bool has_body = te != NULL;
    if (cl) {
        errno = 0;
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || *end || cl[0] == '-') {
            kh_err_set(err, KH_E_INVALID, "bad Content-Length");
            return false;
        }
        if (n > req->srv->max_body && !(route->flags & KH_ROUTE_STREAM)) {
            kh_err_set(err, KH_E_TOOLARGE, "request body over %zu bytes", req->srv->max_body);
            return false;
        }
        has_body = has_body || n > 0;
    }
    if (has_body && !(route->flags & KH_ROUTE_RAW) &&
        !is_json_type(kh_http_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
        kh_err_set(err, KH_E_UNSUPPORTED, "the request body must be application/json");
        return false;
    }
    return true;
}

void kh_limits_drain_stop_all(kh_http_server *srv)
{
    while (srv->drainers)
        drainer_stop(srv->drainers);
}
