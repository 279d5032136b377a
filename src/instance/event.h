/* event.h - the event bus: lifecycle events to subscribers and a replay ring.
 *
 * Events carry an increasing id; the last KH_EVENTS_RING are kept so a
 * client that reconnects (SSE Last-Event-ID) misses nothing recent.
 * Subscribers are plain callbacks (the API's SSE streams, the log): this
 * layer knows nothing of HTTP.
 */
#ifndef KH_VM_EVENT_H
#define KH_VM_EVENT_H

#include <jansson.h>
#include <stdint.h>

#define KH_EVENTS_RING 1024

typedef struct kh_events kh_events;
typedef struct kh_event_sub kh_event_sub;

typedef struct kh_event {
    uint64_t id;
    const char *type;   /* "vm.state", ... */
    const char *vm;     /* VM name or NULL */
    double time;
    json_t *data;       /* borrowed; NULL for events replayed from the ring */
    const char *json;   /* the whole event serialised (borrowed) */
} kh_event;

typedef void (*kh_event_cb)(const kh_event *ev, void *opaque);

kh_events *kh_events_new(void);
void kh_events_free(kh_events *evs);
/* Publish; data is stolen (may be NULL). Subscribers are called at once. */
void kh_events_publish(kh_events *evs, const char *type, const char *vm, json_t *data);
/* Subscribe; events with id > since (from the ring) are delivered first. */
kh_event_sub *kh_events_subscribe(kh_events *evs, uint64_t since, kh_event_cb cb, void *opaque);
/* Unsubscribe (safe from inside a callback). NULL is fine. */
void kh_events_unsubscribe(kh_events *evs, kh_event_sub *sub);
uint64_t kh_events_last_id(const kh_events *evs);

#endif
