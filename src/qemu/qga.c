/* qga.c - owns the qemu-guest-agent protocol: sessions, commands and the
 * guest info the VM view shows (see qga.h). */
#include "qemu/qga.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util/mem.h"

#define LINE_MAX_BYTES (1024 * 1024) /* one reply; interfaces of a big guest fit */

struct kh_qga {
    int fd;
    double deadline; /* monotonic seconds */
    char *buf;       /* bytes read and not consumed */
    size_t len;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int wait_fd(kh_qga *q, short events, kh_err *err)
{
    for (;;) {
        double left = q->deadline - mono();
        if (left <= 0) {
            kh_err_set(err, KH_E_CONFLICT, "the guest agent does not answer (is "
                       "qemu-guest-agent running in the guest?)");
            return -1;
        }
        struct pollfd p = { .fd = q->fd, .events = events };
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "guest agent: poll");
            return -1;
        }
    }
}

static int send_all(kh_qga *q, const char *data, size_t len, kh_err *err)
{
    while (len) {
        if (wait_fd(q, POLLOUT, err) < 0)
            return -1;
        ssize_t n = send(q->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0) {
            kh_err_errno(err, KH_E_QEMU, errno, "guest agent: send");
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read more bytes into buf. */
static int fill(kh_qga *q, kh_err *err)
{
    if (q->len >= LINE_MAX_BYTES) {
        kh_err_set(err, KH_E_QEMU, "guest agent: reply longer than %d bytes", LINE_MAX_BYTES);
        return -1;
    }
    if (wait_fd(q, POLLIN, err) < 0)
        return -1;
    char tmp[8192];
    ssize_t n = recv(q->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) {
        kh_err_set(err, KH_E_QEMU, "guest agent: channel closed");
        return -1;
    }
    q->buf = xrealloc(q->buf, q->len + (size_t)n + 1);
    memcpy(q->buf + q->len, tmp, (size_t)n);
    q->len += (size_t)n;
    q->buf[q->len] = '\0';
    return 0;
}

static void consume(kh_qga *q, size_t n)
{
    memmove(q->buf, q->buf + n, q->len - n);
    q->len -= n;
    q->buf[q->len] = '\0';
}

/* The next JSON object the agent sent (one per line); NULL with err. */
static json_t *read_reply(kh_qga *q, kh_err *err)
{
    for (;;) {
        char *nl = q->buf ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->buf) + 1;
            json_t *j = json_loadb(q->buf, n, JSON_DISABLE_EOF_CHECK, NULL);
            consume(q, n);
            if (json_is_object(j))
                return j;
            json_decref(j); /* a blank line or garbage: skip */
            continue;
        }
        if (fill(q, err) < 0)
            return NULL;
    }
}

void kh_qga_close(kh_qga *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->buf);
    free(q);
}

void kh_qga_deadline(kh_qga *q, unsigned timeout_ms)
{
    q->deadline = mono() + timeout_ms / 1000.0;
}

kh_qga *kh_qga_open(const char *sock_path, unsigned timeout_ms, kh_err *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(sock_path) >= sizeof(sa.sun_path)) {
        kh_err_set(err, KH_E_INTERNAL, "guest agent: socket path too long");
        return NULL;
    }
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    kh_qga *q = xcalloc(1, sizeof(*q));
    q->deadline = mono() + timeout_ms / 1000.0;
    q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->fd < 0 || connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        kh_err_errno(err, KH_E_CONFLICT, errno, "guest agent: connect %s", sock_path);
        kh_qga_close(q);
        return NULL;
    }
    /* 0xFF resets the agent's parser; the reply to guest-sync-delimited
     * comes after a 0xFF of its own, so anything older is dropped */
    long long id = ((long long)getpid() << 20) ^ (long long)(mono() * 1e6);
    char msg[128];
    int n = snprintf(msg, sizeof(msg),
                     "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%lld}}\n",
                     id);
    if (send_all(q, msg, (size_t)n, err) < 0)
        goto fail;
    for (;;) {
        char *ff = q->buf ? memchr(q->buf, 0xff, q->len) : NULL;
        if (ff) {
            consume(q, (size_t)(ff - q->buf) + 1);
            break;
        }
        q->len = 0; /* before the delimiter: stale */
        if (fill(q, err) < 0)
            goto fail;
    }
    for (;;) {
        json_t *r = read_reply(q, err);
        if (!r)
            goto fail;
        json_t *ret = json_object_get(r, "return");
        bool ok = json_is_integer(ret) && json_integer_value(ret) == id;
        json_decref(r);
        if (ok)
            return q;
    }
fail:
    kh_qga_close(q);
    return NULL;
}

json_t *kh_qga_call(kh_qga *q, const char *cmd, json_t *args, bool no_reply, kh_err *err)
{
    json_t *req = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set_new(req, "arguments", args);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *line = xasprintf("%s\n", text);
    free(text);
    int rc = send_all(q, line, strlen(line), err);
    free(line);
    if (rc < 0)
        return NULL;
    if (no_reply)
        return json_null();
    json_t *r = read_reply(q, err);
    if (!r)
        return NULL;
    json_t *ret = json_object_get(r, "return");
    if (ret) {
        json_incref(ret);
        json_decref(r);
        return ret;
    }
    const char *desc = json_string_value(json_object_get(json_object_get(r, "error"), "desc"));
    kh_err_set(err, KH_E_QEMU, "guest agent: %s: %.200s", cmd, desc ? desc : "no answer");
    json_decref(r);
    return NULL;
}

static json_t *interfaces_view(const json_t *ifs)
{
    json_t *out = json_array();
    size_t i, j;
    json_t *nic, *a;
    json_array_foreach(ifs, i, nic) {
        const char *name = json_string_value(json_object_get(nic, "name"));
        if (!name || strcmp(name, "lo") == 0)
            continue;
        json_t *o = json_pack("{s:s}", "name", name);
        const char *mac = json_string_value(json_object_get(nic, "hardware-address"));
        if (mac)
            json_object_set_new(o, "mac", json_string(mac));
        json_t *addrs = json_array();
        json_array_foreach(json_object_get(nic, "ip-addresses"), j, a) {
            const char *ip = json_string_value(json_object_get(a, "ip-address"));
            const char *type = json_string_value(json_object_get(a, "ip-address-type"));
            if (!ip || !type)
                continue;
            json_array_append_new(addrs, json_pack("{s:s, s:I, s:s}", "ip", ip, "prefix",
                                                   json_integer_value(json_object_get(a,
                                                                                      "prefix")),
                                                   "family", strcmp(type, "ipv6") == 0
                                                                 ? "ipv6" : "ipv4"));
        }
        json_object_set_new(o, "addresses", addrs);
        json_array_append_new(out, o);
    }
    return out;
}

json_t *kh_qga_guest_info(const char *sock_path, unsigned timeout_ms, kh_err *err)
{
    kh_qga *q = kh_qga_open(sock_path, timeout_ms, err);
    if (!q)
        return NULL;
    json_t *info = NULL, *os = NULL, *host = NULL, *ifs = NULL;
    if (!(os = kh_qga_call(q, "guest-get-osinfo", NULL, false, err)) ||
        !(host = kh_qga_call(q, "guest-get-host-name", NULL, false, err)) ||
        !(ifs = kh_qga_call(q, "guest-network-get-interfaces", NULL, false, err)))
        goto out;
    info = json_object();
    json_t *ov = json_object();
    static const char *const keys[][2] = { { "id", "id" }, { "name", "pretty-name" },
                                           { "version", "version-id" },
                                           { "kernel", "kernel-release" } };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v = json_string_value(json_object_get(os, keys[i][1]));
        if (v)
            json_object_set_new(ov, keys[i][0], json_string(v));
    }
    json_object_set_new(info, "os", ov);
    const char *h = json_string_value(json_object_get(host, "host-name"));
    if (h)
        json_object_set_new(info, "hostname", json_string(h));
    json_object_set_new(info, "interfaces", interfaces_view(ifs));
out:
    json_decref(os);
    json_decref(host);
    json_decref(ifs);
    kh_qga_close(q);
    return info;
}
