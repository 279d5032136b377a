/* sse.h - server-sent events (text/event-stream) on a request.
 *
 * on_close runs exactly once per kh_http_reply_sse call, even when the
 * stream never started (then without on_open); never from inside
 * kh_sse_send or kh_sse_close. Streams are exempt from the idle timeout;
 * a comment line keeps them alive every 15 s.
 */
#ifndef KH_HTTP_SSE_H
#define KH_HTTP_SSE_H

#include "http/req.h"

typedef struct kh_sse kh_sse;

typedef struct kh_sse_callbacks {
    void (*on_open)(kh_sse *sse, void *opaque);
    void (*on_close)(kh_sse *sse, void *opaque); /* then sse is freed */
} kh_sse_callbacks;

void kh_http_reply_sse(kh_http_req *req, const kh_sse_callbacks *cbs, void *opaque);
/* Queue one event ("id: N\nevent: type\ndata: json\n\n"); id may be 0 for none.
 * A slow client (over 1 MiB queued) is disconnected. */
int kh_sse_send(kh_sse *sse, unsigned long long id, const char *event, const char *data);
void kh_sse_close(kh_sse *sse);

#endif
