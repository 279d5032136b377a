/* sse.c - server-sent events: a text/event-stream reply fed from a queue
 * (MHD pulls it through a content reader), keep-alive comments, and the
 * slow-client cut-off. A stream is freed by MHD's response free callback;
 * the req link is cut at completion. on_close runs once: at completion,
 * at response free, or at server free, whichever is first.
 */
#include "http/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- server-sent events ---- */

/* on_close once; the stream leaves the server's list. */
void kh_sse_end(kh_sse *sse)
{
    if (sse->closed)
        return;
    sse->closed = true;
    if (sse->srv)
        DL_REMOVE(sse->srv->sses, sse);
    sse->srv = NULL;
    if (sse->cbs.on_close)
        sse->cbs.on_close(sse, sse->opaque);
}

static void sse_wake(kh_sse *sse)
{
    if (sse->req && sse->req->suspended)
        kh_req_resume(sse->req);
}

static void sse_append(kh_sse *sse, const char *s, size_t n)
{
    if (sse->off && sse->len + n > sse->cap) {
        memmove(sse->buf, sse->buf + sse->off, sse->len - sse->off);
        sse->len -= sse->off;
        sse->off = 0;
    }
    if (sse->len + n > sse->cap) {
        size_t cap = sse->cap ? sse->cap : 4096;
        while (cap < sse->len + n)
            cap *= 2;
        sse->buf = xrealloc(sse->buf, cap);
        sse->cap = cap;
    }
    memcpy(sse->buf + sse->len, s, n);
    sse->len += n;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    kh_sse *sse = cls;
    kh_http_req *req = sse->req;
    if (!req || !req->conn || req->peer_gone || sse->overflow || !sse->srv ||
        sse->srv->freeing)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (sse->off < sse->len) {
        size_t n = sse->len - sse->off;
        if (n > max)
            n = max;
        memcpy(buf, sse->buf + sse->off, n);
        sse->off += n;
        if (sse->off == sse->len)
            sse->off = sse->len = 0;
        return (ssize_t)n;
    }
    if (sse->ending)
        return MHD_CONTENT_READER_END_OF_STREAM;
    kh_req_suspend(req);
    return 0;
}

static void sse_resp_free(void *cls)
{
    kh_sse *sse = cls;
    if (sse->req) {
        sse->req->sse = NULL;
        sse->req = NULL;
    }
    kh_sse_end(sse);
    free(sse->buf);
    free(sse);
}

void kh_sse_keepalive(uv_timer_t *t)
{
    kh_http_server *srv = t->data;
    for (kh_sse *s = srv->sses; s; s = s->next) {
        if (s->off == s->len && !s->ending && s->req) {
            sse_append(s, ":\n\n", 3);
            sse_wake(s);
        }
    }
}

void kh_http_reply_sse(kh_http_req *req, const kh_sse_callbacks *cbs, void *opaque)
{
    kh_sse *sse = xcalloc(1, sizeof(*sse));
    if (cbs)
        sse->cbs = *cbs;
    sse->opaque = opaque;
    if (!req->conn || req->peer_gone || req->replied || !req->srv) {
        kh_sse_end(sse); /* the client is gone already */
        free(sse);
        if (!req->replied)
            kh_http_reply_error(req, NULL);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_reader, sse, sse_resp_free);
    if (!resp) {
        kh_sse_end(sse);
        free(sse);
        kh_err err = KH_ERR_INIT;
        kh_err_set(&err, KH_E_INTERNAL, "cannot create the event stream");
        kh_http_reply_error(req, &err);
        return;
    }
    kh_reply_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    kh_reply_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    kh_reply_header(resp, "X-Accel-Buffering", "no");
    MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    sse->srv = req->srv;
    sse->req = req;
    req->sse = sse;
    DL_INSERT(req->srv->sses, sse);
    sse_append(sse, ":\n\n", 3); /* gets the headers out at once */
    kh_reply_set(req, MHD_HTTP_OK, resp);
    if (sse->cbs.on_open && !sse->closed)
        sse->cbs.on_open(sse, sse->opaque);
}

int kh_sse_send(kh_sse *sse, unsigned long long id, const char *event, const char *data)
{
    if (!sse || sse->closed || sse->ending || sse->overflow || !sse->req)
        return -1;
    if (event && (strchr(event, '\n') || strchr(event, '\r')))
        return -1;
    char head[128];
    size_t need = 0;
    int hn = 0;
    if (id)
        hn = snprintf(head, sizeof(head), "id: %llu\n", id);
    need += (size_t)hn + (event ? strlen(event) + 8 : 0) + 1;
    const char *d = data ? data : "";
    size_t lines = 1;
    for (const char *p = d; *p; p++)
        lines += *p == '\n';
    need += strlen(d) + lines * 7;
    if ((sse->len - sse->off) + need > SSE_QUEUE_MAX) {
        kh_log(KH_LOG_WARN, "sse.overflow", "queued=%zu reason=\"client too slow, closing\"",
               sse->len - sse->off);
        sse->overflow = true;
        sse_wake(sse);
        return -1;
    }
    if (hn > 0)
        sse_append(sse, head, (size_t)hn);
    if (event) {
        sse_append(sse, "event: ", 7);
        sse_append(sse, event, strlen(event));
        sse_append(sse, "\n", 1);
    }
    const char *p = d;
    for (;;) {
        size_t n = strcspn(p, "\n");
        size_t m = n && p[n - 1] == '\r' ? n - 1 : n;
        sse_append(sse, "data: ", 6);
        sse_append(sse, p, m);
        sse_append(sse, "\n", 1);
        if (!p[n])
            break;
        p += n + 1;
    }
    sse_append(sse, "\n", 1);
    sse_wake(sse);
    return 0;
}

void kh_sse_close(kh_sse *sse)
{
    if (!sse || sse->closed || sse->ending)
        return;
    sse->ending = true;
    sse_wake(sse);
}
