/* guard.c - what protects the TCP listener from slow and malformed
 * clients, before any handler runs:
 *   - connection accounting (MHD's connection notification): each TCP
 *     connection's phase (head, body, handler) and since when;
 *   - a sweep each second that closes a connection whose request head
 *     (TLS handshake included) took longer than head_timeout since it
 *     opened or since its previous reply, and one whose body arrives
 *     slower than GUARD_BODY_MIN_RATE over a GUARD_BODY_WINDOW_MS window;
 *   - eviction: near the connection limit, the oldest connection still
 *     sending its head is closed for each new one, so a slowloris can hold
 *     no slot a real client needs;
 *   - framing checks on the parsed head (kh_guard_head): differing
 *     Content-Length headers, Content-Length with Transfer-Encoding, a
 *     transfer coding other than chunked (501), control characters in a
 *     header value, HTTP/1.1 without exactly one Host, too many query
 *     arguments. The raw-byte cases MHD would otherwise fold away
 *     (whitespace before a colon, a bare CR) are refused by MHD itself in
 *     strict mode (listen.c), and a NUL in the head is caught by comparing
 *     MHD's value lengths with the C string lengths.
 * The unix socket is trusted (root only) and not swept.
 */
#include "http/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- connection accounting ---- */

void kh_guard_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe)
{
    listener *lis = cls;
    kh_http_server *srv = lis->srv;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        guard_conn *g = xcalloc(1, sizeof(*g));
        g->fd = ci ? ci->connect_fd : -1;
        g->lis = lis;
        g->phase = GUARD_HEAD;
        g->since_ms = kh_now_ms();
        DL_INSERT(lis->conns, g);
        lis->nconns++;
        *socket_context = g;
        if (!lis->local && srv->max_conn >= 64 &&
            lis->nconns + srv->max_conn / GUARD_EVICT_RESERVE_DIV > srv->max_conn)
            kh_guard_evict_oldest(lis, g);
        return;
    }
    guard_conn *g = *socket_context;
    if (!g)
        return;
    *socket_context = NULL;
    DL_REMOVE(lis->conns, g);
    lis->nconns--;
    free(g);
}

guard_conn *kh_guard_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    return ci ? ci->socket_context : NULL;
}

void kh_guard_phase(struct MHD_Connection *conn, enum guard_phase phase)
{
    guard_conn *g = kh_guard_of(conn);
    if (!g || g->upgraded)
        return;
    g->phase = phase;
    g->since_ms = kh_now_ms();
    g->body_bytes = g->mark_bytes = 0;
}

void kh_guard_body_bytes(struct MHD_Connection *conn, size_t n)
{
    guard_conn *g = kh_guard_of(conn);
    if (g)
        g->body_bytes += n;
}

static void guard_close(guard_conn *g, const char *why)
{
    if (g->closing || g->fd < 0)
        return;
    g->closing = true;
    kh_log(KH_LOG_DEBUG, "http.guard", "reason=\"%s\" ms=%llu", why,
           (unsigned long long)(kh_now_ms() - g->since_ms));
    /* MHD sees the hang-up at its next run and closes the connection. */
    shutdown(g->fd, SHUT_RDWR);
    kh_listen_kick(g->lis);
}

void kh_guard_evict_oldest(listener *lis, guard_conn *except)
{
    guard_conn *old = NULL;
    for (guard_conn *g = lis->conns; g; g = g->next)
        if (g != except && g->phase == GUARD_HEAD && !g->closing &&
            (!old || g->since_ms < old->since_ms))
            old = g;
    if (old)
        guard_close(old, "connection limit near: the oldest unfinished request head is dropped");
}

void kh_guard_sweep(kh_http_server *srv)
{
    uint64_t now = kh_now_ms();
    for (size_t i = 0; i < srv->nlis; i++) {
        listener *lis = srv->lis[i];
        if (lis->local)
            continue;
        for (guard_conn *g = lis->conns; g; g = g->next) {
            if (g->closing)
                continue;
            if (g->phase == GUARD_HEAD && now - g->since_ms > srv->head_timeout_ms) {
                guard_close(g, "request head not complete in time");
            } else if (g->phase == GUARD_BODY && now - g->since_ms >= GUARD_BODY_WINDOW_MS) {
                uint64_t got = g->body_bytes - g->mark_bytes;
                if (got * 1000 < (uint64_t)GUARD_BODY_MIN_RATE * (now - g->since_ms)) {
                    guard_close(g, "request body slower than the minimum rate");
                } else {
                    g->mark_bytes = g->body_bytes;
                    g->since_ms = now;
                }
            }
        }
    }
}

/* ---- framing ---- */

typedef struct head_scan {
    const char *lo, *hi;      /* the head in MHD's buffer, or lo NULL */
    const char *prev_end;     /* just past the previous header's value */
    bool nul;
    unsigned n_cl, n_te, n_host;
    const char *cl;
    bool cl_differ;
    const char *bad_name;
    bool bad_value;
} head_scan;

static bool value_ok(const char *v, size_t len)
{
    if (strlen(v) != len)
        return false; /* a NUL inside */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static void hidden_check(head_scan *s, const char *from, const char *to)
{
    for (const char *p = from; p < to; p++)
        if (*p && *p != '\r' && *p != '\n' && *p != ' ' && *p != '\t')
            s->nul = true;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    head_scan *s = cls;
    /* MHD 0.9.75 parses the head in place and cuts a value at a NUL: the
     * bytes between one value's end and the next name (or the head's end)
     * then hold the hidden rest of the line, where only what MHD wrote
     * over (CR LF as NULs) and blanks belong. Checked only while every
     * header lies in order inside the head's bytes [lo, hi). */
    if (key && value && s->lo) {
        if (key < s->lo || key < s->prev_end || value + value_size > s->hi) {
            s->lo = NULL; /* not one buffer: no check */
        } else {
            if (s->prev_end)
                hidden_check(s, s->prev_end, key);
            s->prev_end = value + value_size;
        }
    }
    if (!key || strlen(key) != key_size || key_size == 0 ||
        strcspn(key, " \t\r\n\"(),/:;<=>?@[\\]{}") != key_size) {
        s->bad_name = key ? key : "";
        return MHD_YES;
    }
    if (value && !value_ok(value, value_size))
        s->bad_value = true;
    if (!value)
        value = "";
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (s->n_cl++ && strcmp(s->cl, value) != 0)
            s->cl_differ = true;
        s->cl = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        s->n_te++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        s->n_host++;
    }
    return MHD_YES;
}

static bool te_is_chunked(const char *te)
{
    while (*te == ' ' || *te == '\t')
        te++;
    size_t n = strlen(te);
    while (n && (te[n - 1] == ' ' || te[n - 1] == '\t'))
        n--;
    return n == 7 && strncasecmp(te, "chunked", 7) == 0;
}

static unsigned count_args(const char *target)
{
    const char *q = strchr(target, '?');
    if (!q)
        return 0;
    unsigned n = 1;
    for (q++; *q && *q != '#'; q++)
        n += *q == '&';
    return n;
}

int kh_guard_head(kh_http_req *req, const char *version, unsigned *status, kh_err *err)
{
    *status = 400;
    if (req->too_many_args) {
        *status = 414;
        kh_err_set(err, KH_E_TOOLARGE, "too many query arguments (at most %u)",
                   GUARD_MAX_QUERY_ARGS);
        return -1;
    }
    head_scan s = { 0 };
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (ci && req->uri_raw && req->method) {
        /* the request line starts at the method, one space before the URI */
        s.lo = req->uri_raw - strlen(req->method) - 1;
        s.hi = s.lo + ci->header_size;
    }
    MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, scan_header, &s);
    if (s.lo && s.prev_end && s.prev_end <= s.hi)
        hidden_check(&s, s.prev_end, s.hi);
    if (s.bad_name) {
        kh_err_set(err, KH_E_INVALID, "malformed header name");
        return -1;
    }
    if (s.bad_value || s.nul) {
        kh_err_set(err, KH_E_INVALID, "a header value holds a control character (NUL, CR, LF)");
        return -1;
    }
    if (s.cl_differ) {
        kh_err_set(err, KH_E_INVALID, "differing Content-Length headers");
        return -1;
    }
    if (s.cl && (!s.cl[0] || strspn(s.cl, "0123456789") != strlen(s.cl))) {
        kh_err_set(err, KH_E_INVALID, "bad Content-Length");
        return -1;
    }
    if (s.n_te && s.n_cl) {
        kh_err_set(err, KH_E_INVALID, "Content-Length together with Transfer-Encoding");
        return -1;
    }
    const char *te = kh_http_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (s.n_te > 1 || (te && !te_is_chunked(te))) {
        *status = 501;
        kh_err_set(err, KH_E_UNSUPPORTED, "unsupported Transfer-Encoding (only chunked)");
        return -1;
    }
    bool http11 = version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
    if ((http11 && s.n_host != 1) || s.n_host > 1) {
        kh_err_set(err, KH_E_INVALID, "an HTTP/1.1 request needs exactly one Host header");
        return -1;
    }
    return 0;
}

/* From the URI-log callback, before MHD parses the query (0.9.75 parses
 * it in place right after the callback, one list entry per argument from
 * its 64 KiB connection pool: ~1,000 arguments exhaust it and MHD closes
 * the connection without an answer). Over the limit, the query is cut
 * where MHD will read it, and kh_guard_head answers 414. */
bool kh_guard_uri(const char *uri)
{
    if (!uri || count_args(uri) <= GUARD_MAX_QUERY_ARGS)
        return false;
    char *q = strchr(uri, '?');
    if (q)
        q[1] = '\0';
    return true;
}
