/* event_routes.c - GET /api/v1/events as Server-Sent Events: each caller
 * gets the events of the VMs it may see (VM.Audit), and host events with
 * Sys.Audit on /. */
#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "util/mem.h"

typedef struct event_stream {
    kh_events *events;
    kh_event_sub *sub;
    uint64_t since;
    const kh_auth *auth; /* lives as long as the server */
    char *principal;
    kh_sse *sse;
} event_stream;

static void on_event(const kh_event *ev, void *opaque)
{
    event_stream *es = opaque;
    char path[KH_AUTH_PATH_MAX];
    snprintf(path, sizeof(path), "/vms/%s", ev->vm ? ev->vm : "");
    if (!kh_auth_principal_can(es->auth, es->principal, ev->vm ? path : "/",
                               ev->vm ? KH_PRIV_VM_AUDIT : KH_PRIV_SYS_AUDIT))
        return;
    kh_sse_send(es->sse, ev->id, ev->type, ev->json);
}

static void on_open(kh_sse *sse, void *opaque)
{
    event_stream *es = opaque;
    es->sse = sse;
    es->sub = kh_events_subscribe(es->events, es->since, on_event, es);
}

static void on_close(kh_sse *sse, void *opaque)
{
    (void)sse;
    event_stream *es = opaque;
    kh_events_unsubscribe(es->events, es->sub);
    free(es->principal);
    free(es);
}

static const kh_sse_callbacks sse_cbs = { on_open, on_close };

void kh_event_routes_stream(kh_http_req *req, void *app)
{
    kh_api *api = app;
    event_stream *es = xcalloc(1, sizeof(*es));
    es->events = api->events;
    es->auth = kh_http_req_auth_data(req);
    es->principal = kh_auth_principal(req) ? xstrdup(kh_auth_principal(req)) : NULL;
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
