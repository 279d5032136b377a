/* task.c - owns the long operations that clients can follow: state,
 * progress, result, waiters, their rows in the store (instance/task.h). */
#include "instance/task.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

struct kh_task_waiter {
    kh_task *task;
    kh_task_done_cb cb;
    void *opaque;
    kh_task_waiter *next;
};

struct kh_task {
    kh_tasks *owner;
    char id[37];
    char *kind;
    char *vm_name;
    kh_task_state state;
    int progress;
    char *message;
    kh_err error;
    json_t *result;
    double created_at, finished_at;
    kh_task_waiter *waiters;
    kh_task_cancel_fn cancel; /* NULL: cannot be cancelled */
    void *cancel_opaque;
    kh_task *next; /* registry list, newest first */
};

struct kh_tasks {
    kh_store *store;
    kh_events *events;
    kh_task *list;
    unsigned running, finished;
};

static const char *state_name(kh_task_state s)
{
    switch (s) {
    case KH_TASK_RUNNING: return "running";
    case KH_TASK_SUCCEEDED: return "succeeded";
    case KH_TASK_FAILED: return "failed";
    }
    return "failed";
}

kh_tasks *kh_tasks_new(kh_store *store, kh_events *events)
{
    kh_tasks *t = xcalloc(1, sizeof(*t));
    t->store = store;
    t->events = events;
    return t;
}

static void task_free(kh_task *task)
{
    for (kh_task_waiter *w = task->waiters, *n; w; w = n) {
        n = w->next;
        free(w);
    }
    free(task->kind);
    free(task->vm_name);
    free(task->message);
    json_decref(task->result);
    free(task);
}

void kh_tasks_free(kh_tasks *tasks)
{
    if (!tasks)
        return;
    for (kh_task *t = tasks->list, *n; t; t = n) {
        n = t->next;
        task_free(t);
    }
    free(tasks);
}

static void persist(kh_task *task)
{
    kh_task_row row;
    memset(&row, 0, sizeof(row));
    memcpy(row.id, task->id, sizeof(row.id));
    row.kind = task->kind;
    row.vm_name = task->vm_name;
    row.state = (char *)(uintptr_t)state_name(task->state);
    row.progress = task->progress;
    row.message = task->message;
    if (task->state == KH_TASK_FAILED) {
        row.error_code = (char *)(uintptr_t)kh_code_name(task->error.code);
        row.error_message = task->error.msg;
    }
    char *result = task->result ? json_dumps(task->result, JSON_COMPACT) : NULL;
    row.result_json = result;
    row.created_at = task->created_at;
    row.finished_at = task->finished_at;
    kh_err err = KH_ERR_INIT;
    if (kh_store_task_put(task->owner->store, &row, &err) < 0)
        kh_log(KH_LOG_ERROR, "task.persist", "task=%s error=\"%s\"", task->id, err.msg);
    free(result);
}

static void publish(kh_task *task)
{
    kh_events_publish(task->owner->events, "task.updated", task->vm_name, kh_task_to_json(task));
}

/* Drop the oldest finished tasks beyond KH_TASKS_KEEP (they stay in the store). */
static void trim(kh_tasks *tasks)
{
    unsigned kept = 0;
    for (kh_task **pp = &tasks->list; *pp;) {
        kh_task *t = *pp;
        if (t->state != KH_TASK_RUNNING && ++kept > KH_TASKS_KEEP) {
            *pp = t->next;
            task_free(t);
            continue;
        }
        pp = &t->next;
    }
}

kh_task *kh_task_new(kh_tasks *tasks, const char *kind, const char *vm_name)
{
    kh_task *task = xcalloc(1, sizeof(*task));
    task->owner = tasks;
    kh_uuid_generate(task->id);
    task->kind = xstrdup(kind);
    task->vm_name = xstrdup(vm_name);
    task->state = KH_TASK_RUNNING;
    task->created_at = kh_wall_time();
    task->next = tasks->list;
    tasks->list = task;
    tasks->running++;
    persist(task);
    publish(task);
    return task;
}

void kh_task_progress(kh_task *task, int percent, const char *message)
{
    if (task->state != KH_TASK_RUNNING)
        return;
    task->progress = percent < 0 ? 0 : percent > 100 ? 100 : percent;
    if (message) {
        free(task->message);
        task->message = xstrdup(message);
    }
    publish(task);
}

static void finish(kh_task *task)
{
    kh_tasks *tasks = task->owner;
    task->cancel = NULL;
    task->finished_at = kh_wall_time();
    tasks->running--;
    tasks->finished++;
    persist(task);
    publish(task);
    kh_task_waiter *w = task->waiters;
    task->waiters = NULL;
    while (w) {
        kh_task_waiter *n = w->next;
        w->cb(task, w->opaque);
        free(w);
        w = n;
    }
    trim(tasks);
}

void kh_task_succeed_message(kh_task *task, json_t *result, const char *message)
{
    if (task->state != KH_TASK_RUNNING) {
        json_decref(result);
        return;
    }
    task->state = KH_TASK_SUCCEEDED;
    task->progress = 100;
    free(task->message);
    task->message = xstrdup(message);
    task->result = result;
    finish(task);
}

void kh_task_succeed(kh_task *task, json_t *result)
{
    kh_task_succeed_message(task, result, "done");
}

void kh_task_fail(kh_task *task, const kh_err *err)
{
    if (task->state != KH_TASK_RUNNING)
        return;
    task->state = KH_TASK_FAILED;
    if (err && err->code != KH_OK)
        task->error = *err;
    else
        kh_err_set(&task->error, KH_E_INTERNAL, "task failed");
    finish(task);
}

void kh_task_set_cancel(kh_task *task, kh_task_cancel_fn fn, void *opaque)
{
    task->cancel = fn;
    task->cancel_opaque = opaque;
}

int kh_tasks_cancel(kh_tasks *tasks, const char *id, kh_err *err)
{
    for (kh_task *t = tasks->list; t; t = t->next) {
        if (strcmp(t->id, id) != 0)
            continue;
        if (t->state != KH_TASK_RUNNING) {
            kh_err_set(err, KH_E_CONFLICT, "task %s has already ended (%s)", id,
                       state_name(t->state));
            return -1;
        }
        if (!t->cancel) {
            kh_err_set(err, KH_E_CONFLICT, "a %s task cannot be cancelled", t->kind);
            return -1;
        }
        kh_log(KH_LOG_INFO, "task.cancel", "task=%s kind=%s", id, t->kind);
        return t->cancel(t->cancel_opaque, err);
    }
    kh_err_set(err, KH_E_NOTFOUND, "no running task %s", id);
    return -1;
}

const char *kh_task_id(const kh_task *task) { return task->id; }
kh_task_state kh_task_get_state(const kh_task *task) { return task->state; }
const kh_err *kh_task_error(const kh_task *task) { return &task->error; }

static json_t *time_or_null(double t)
{
    if (t <= 0)
        return json_null();
    char s[32];
    kh_time_format(t, s);
    return json_string(s);
}

static json_t *task_json(const char *id, const char *kind, const char *vm, const char *state,
                         int progress, const char *message, const char *ecode,
                         const char *emsg, json_t *result, double created, double finished)
{
    json_t *error = ecode ? json_pack("{s:s, s:s}", "code", ecode, "message", emsg ? emsg : "")
                          : json_null();
    return json_pack("{s:s, s:s, s:s?, s:s, s:i, s:s?, s:o, s:o, s:o, s:o}", "id", id, "kind",
                     kind, "vm", vm, "state", state, "progress", progress, "message", message,
                     "error", error, "result", result ? result : json_null(), "created_at",
                     time_or_null(created), "finished_at", time_or_null(finished));
}

json_t *kh_task_to_json(const kh_task *task)
{
    bool failed = task->state == KH_TASK_FAILED;
    return task_json(task->id, task->kind, task->vm_name, state_name(task->state),
                     task->progress, task->message, failed ? kh_code_name(task->error.code) : NULL,
                     failed ? task->error.msg : NULL, json_incref(task->result), task->created_at,
                     task->finished_at);
}

static json_t *row_json(const kh_task_row *row)
{
    json_t *result = row->result_json ? json_loads(row->result_json, 0, NULL) : NULL;
    return task_json(row->id, row->kind, row->vm_name, row->state, row->progress, row->message,
                     row->error_code, row->error_message, result, row->created_at,
                     row->finished_at);
}

kh_task_waiter *kh_task_wait(kh_task *task, kh_task_done_cb cb, void *opaque)
{
    kh_task_waiter *w = xcalloc(1, sizeof(*w));
    w->task = task;
    w->cb = cb;
    w->opaque = opaque;
    w->next = task->waiters;
    task->waiters = w;
    return w;
}

void kh_task_unwait(kh_task_waiter *w)
{
    if (!w)
        return;
    for (kh_task_waiter **pp = &w->task->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            free(w);
            return;
        }
    }
}

json_t *kh_tasks_get_json(kh_tasks *tasks, const char *id, kh_err *err)
{
    for (kh_task *t = tasks->list; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return kh_task_to_json(t);
    kh_task_row row;
    if (kh_store_task_get(tasks->store, id, &row, err) < 0)
        return NULL;
    json_t *j = row_json(&row);
    kh_task_row_clear(&row);
    return j;
}

static int add_row(const kh_task_row *row, void *opaque)
{
    json_array_append_new(opaque, row_json(row));
    return 0;
}

json_t *kh_tasks_list_json(kh_tasks *tasks, unsigned limit, kh_err *err)
{
    json_t *arr = json_array();
    if (kh_store_task_foreach(tasks->store, limit, add_row, arr, err) < 0) {
        json_decref(arr);
        return NULL;
    }
    /* The store has every task's creation; running ones have fresher
     * progress in memory. */
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item) {
        const char *id = json_string_value(json_object_get(item, "id"));
        for (kh_task *t = tasks->list; id && t; t = t->next) {
            if (strcmp(t->id, id) == 0) {
                json_array_set_new(arr, i, kh_task_to_json(t));
                break;
            }
        }
    }
    return arr;
}

void kh_tasks_counts(const kh_tasks *tasks, unsigned *running, unsigned *finished)
{
    *running = tasks->running;
    *finished = tasks->finished;
}
