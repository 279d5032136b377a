/* event.c - owns the event bus: lifecycle events to subscribers and
 * the replay ring (instance/event.h). */
#include "instance/event.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"
#include "util/misc.h"

typedef struct stored_event {
    uint64_t id;
    char *type;
    char *vm;
    double time;
    json_t *data;
    char *json;
} stored_event;

struct kh_event_sub {
    kh_event_cb cb;
    void *opaque;
    bool dead;
    kh_event_sub *next;
};

struct kh_events {
    stored_event ring[KH_EVENTS_RING];
    uint64_t next_id;
    kh_event_sub *subs;
    int delivering; /* > 0 while callbacks run: unsubscribe only marks */
};

kh_events *kh_events_new(void)
{
    kh_events *evs = xcalloc(1, sizeof(*evs));
    evs->next_id = 1;
    return evs;
}

static void stored_clear(stored_event *e)
{
    free(e->type);
    free(e->vm);
    json_decref(e->data);
    free(e->json);
    memset(e, 0, sizeof(*e));
}

void kh_events_free(kh_events *evs)
{
    if (!evs)
        return;
    for (size_t i = 0; i < KH_EVENTS_RING; i++)
        stored_clear(&evs->ring[i]);
    for (kh_event_sub *s = evs->subs, *n; s; s = n) {
        n = s->next;
        free(s);
    }
    free(evs);
}

static void view(const stored_event *e, kh_event *ev)
{
    ev->id = e->id;
    ev->type = e->type;
    ev->vm = e->vm;
    ev->time = e->time;
    ev->data = e->data;
    ev->json = e->json;
}

static void sweep(kh_events *evs)
{
    if (evs->delivering)
        return;
    for (kh_event_sub **pp = &evs->subs; *pp;) {
        if ((*pp)->dead) {
            kh_event_sub *d = *pp;
            *pp = d->next;
            free(d);
        } else {
            pp = &(*pp)->next;
        }
    }
}

void kh_events_publish(kh_events *evs, const char *type, const char *vm, json_t *data)
{
    stored_event *e = &evs->ring[evs->next_id % KH_EVENTS_RING];
    stored_clear(e);
    e->id = evs->next_id++;
    e->type = xstrdup(type);
    e->vm = xstrdup(vm);
    e->time = kh_wall_time();
    e->data = data ? data : json_object();
    char when[32];
    kh_time_format(e->time, when);
    json_t *whole = json_pack("{s:I, s:s, s:s, s:o?, s:O}", "id", (json_int_t)e->id, "type",
                              type, "time", when, "vm", vm ? json_string(vm) : NULL, "data",
                              e->data);
    e->json = json_dumps(whole, JSON_COMPACT);
    json_decref(whole);

    kh_event ev;
    view(e, &ev);
    evs->delivering++;
    for (kh_event_sub *s = evs->subs; s; s = s->next)
        if (!s->dead)
            s->cb(&ev, s->opaque);
    evs->delivering--;
    /* The ring keeps the serialised form only: a jansson tree costs several
     * times its text, and replays need just the text. */
    json_decref(e->data);
    e->data = NULL;
    sweep(evs);
}

kh_event_sub *kh_events_subscribe(kh_events *evs, uint64_t since, kh_event_cb cb, void *opaque)
{
    kh_event_sub *s = xcalloc(1, sizeof(*s));
    s->cb = cb;
    s->opaque = opaque;
    /* Replay what the ring still holds, oldest first. */
    uint64_t first = evs->next_id > KH_EVENTS_RING ? evs->next_id - KH_EVENTS_RING : 1;
    if (since + 1 > first)
        first = since + 1;
    evs->delivering++;
    for (uint64_t id = first; id < evs->next_id && !s->dead; id++) {
        kh_event ev;
        view(&evs->ring[id % KH_EVENTS_RING], &ev);
        cb(&ev, opaque);
    }
    evs->delivering--;
    s->next = evs->subs;
    evs->subs = s;
    sweep(evs);
    return s;
}

void kh_events_unsubscribe(kh_events *evs, kh_event_sub *sub)
{
    if (!sub)
        return;
    sub->dead = true;
    sweep(evs);
}

uint64_t kh_events_last_id(const kh_events *evs)
{
    return evs->next_id - 1;
}
