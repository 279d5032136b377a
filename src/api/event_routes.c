/* event_routes.c - GET /api/v1/events as Server-Sent Events. */
#include <stdlib.h>

#include "api/api.h"
#include "util/mem.h"

typedef struct event_stream {
    kh_events *events;
    kh_event_sub *sub;
    uint64_t since;
} event_stream;

static void on_event(const kh_event *ev, void *opaque)
{
    kh_sse *sse = opaque;
    kh_sse_send(sse, ev->id, ev->type, ev->json);
}

static void on_open(kh_sse *sse, void *opaque)
{
    event_stream *es = opaque;
    es->sub = kh_events_subscribe(es->events, es->since, on_event, sse);
}

static void on_close(kh_sse *sse, void *opaque)
{
    (void)sse;
    event_stream *es = opaque;
    kh_events_unsubscribe(es->events, es->sub);
    free(es);
}

static const kh_sse_callbacks sse_cbs = { on_open, on_close };

void kh_event_routes_stream(kh_http_req *req, void *app)
{
    kh_api *api = app;
    event_stream *es = xcalloc(1, sizeof(*es));
    es->events = api->events;
    /* Replay from the client's last seen id, else only new events. */
    const char *since = kh_http_req_header(req, "Last-Event-ID");
    if (!since)
        since = kh_http_req_query(req, "since");
    es->since = kh_events_last_id(api->events);
    if (since) {
        char *end;
        unsigned long long v = strtoull(since, &end, 10);
        if (*since && !*end)
            es->since = v;
    }
    kh_http_reply_sse(req, &sse_cbs, es);
}
