/* stream.c - streamed request bodies (KH_ROUTE_STREAM): the handler runs
 * before the body and hands it to a sink piece by piece; a refused body
 * is read and dropped up to a bound.
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

/* A streamed body: the handler runs now, before the body, and either
 * replies (an error: the body is then drained) or takes the body with
 * kh_http_req_stream. */
enum MHD_Result kh_stream_begin(kh_http_req *req)
{
    req->app_holds = true;
    req->route->handler(req, req->srv->app);
    if (req->resp) {
        req->early = true;
        return kh_reply_queue(req);
    }
    if (!req->app_holds)
        return MHD_NO;
    if (!req->stream_data) {
        kh_log(KH_LOG_ERROR, "http.bug", "reason=\"stream route took no body\" path=%s",
               req->path);
        return MHD_NO;
    }
    return MHD_YES;
}

/* A piece of a streamed body. After the sink refused one (it replied with
 * an error), the rest is read and dropped, up to a bound. */
enum MHD_Result kh_stream_data(kh_http_req *req, const char *data, size_t n)
{
    if (!req->stream_failed && !req->replied &&
        req->stream_data(req, data, n, req->stream_opaque) < 0)
        req->stream_failed = true;
    if (req->stream_failed || req->replied) {
        req->stream_dropped += n;
        if (req->stream_dropped > STREAM_DROP_MAX)
            return MHD_NO;
    }
    return MHD_YES;
}

enum MHD_Result kh_stream_done(kh_http_req *req)
{
    req->state = REQ_WAIT;
    if (!req->replied)
        req->stream_end(req, req->stream_opaque);
    if (req->resp)
        return kh_reply_queue(req);
    if (!req->app_holds)
        return MHD_NO;
    kh_req_suspend(req);
    return MHD_YES;
}

void kh_http_req_stream(kh_http_req *req, kh_http_data_fn on_data, kh_http_end_fn on_end,
                        void *opaque)
{
    req->stream_data = on_data;
    req->stream_end = on_end;
    req->stream_opaque = opaque;
}

uint64_t kh_http_req_content_length(const kh_http_req *req)
{
    const char *cl = kh_http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl || kh_http_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return UINT64_MAX;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    return errno || end == cl || *end ? UINT64_MAX : (uint64_t)n;
}

