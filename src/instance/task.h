/* task.h - long operations that clients can follow.
 *
 * A task is created running, may report progress, and finishes exactly once
 * (succeeded with a result, or failed with a kh_err). Every change is
 * published as a "task.updated" event; creation and the end are written to
 * the store so `GET /tasks/{id}` answers after a daemon restart too. Tasks
 * a previous daemon left running are marked failed at start.
 *
 * Ownership: the registry owns tasks. A running task stays in memory until
 * it finishes; the newest finished ones are kept (KH_TASKS_KEEP) and older
 * ones are read back from the store.
 */
#ifndef KH_VM_TASK_H
#define KH_VM_TASK_H

#include <jansson.h>
#include <stdbool.h>

#include "store/store.h"
#include "util/err.h"
#include "instance/event.h"

#define KH_TASKS_KEEP 256

typedef enum kh_task_state {
    KH_TASK_RUNNING,
    KH_TASK_SUCCEEDED,
    KH_TASK_FAILED,
} kh_task_state;

typedef struct kh_task kh_task;
typedef struct kh_tasks kh_tasks;
typedef struct kh_task_waiter kh_task_waiter;

/* Called once when the task finishes (the task is valid during the call). */
typedef void (*kh_task_done_cb)(kh_task *task, void *opaque);

kh_tasks *kh_tasks_new(kh_store *store, kh_events *events);
void kh_tasks_free(kh_tasks *tasks);

kh_task *kh_task_new(kh_tasks *tasks, const char *kind, const char *vm_name);
void kh_task_progress(kh_task *task, int percent, const char *message);
/* result is stolen (may be NULL). */
void kh_task_succeed(kh_task *task, json_t *result);
/* The same with a message other than "done" (e.g. a stop that was forced:
 * "forced: ..."). */
void kh_task_succeed_message(kh_task *task, json_t *result, const char *message);
void kh_task_fail(kh_task *task, const kh_err *err);

/* Cancel: a task whose owner can stop it sets a hook (NULL again once it
 * can no longer be stopped); kh_tasks_cancel() calls it for a running
 * task: 0 when the cancel was taken (the task then ends, failed, as its
 * owner rolls back), -1 with err (KH_E_CONFLICT: ended, or not
 * cancellable now; KH_E_NOTFOUND). */
typedef int (*kh_task_cancel_fn)(void *opaque, kh_err *err);
void kh_task_set_cancel(kh_task *task, kh_task_cancel_fn fn, void *opaque);
int kh_tasks_cancel(kh_tasks *tasks, const char *id, kh_err *err);

const char *kh_task_id(const kh_task *task);
kh_task_state kh_task_get_state(const kh_task *task);
const kh_err *kh_task_error(const kh_task *task);
/* The API's Task object (a new reference). */
json_t *kh_task_to_json(const kh_task *task);

/* Wait for a running task to finish. The waiter is freed after its callback
 * runs, or by kh_task_unwait(). */
kh_task_waiter *kh_task_wait(kh_task *task, kh_task_done_cb cb, void *opaque);
void kh_task_unwait(kh_task_waiter *w);

/* Look up a task as JSON (memory, then the store). NULL with KH_E_NOTFOUND. */
json_t *kh_tasks_get_json(kh_tasks *tasks, const char *id, kh_err *err);
/* The newest tasks, at most limit, as a JSON array. */
json_t *kh_tasks_list_json(kh_tasks *tasks, unsigned limit, kh_err *err);
/* Counts by state, for metrics and the host view. */
void kh_tasks_counts(const kh_tasks *tasks, unsigned *running, unsigned *finished);

#endif
