/* backup.h - backups of VMs into backup stores: stores, backup jobs,
 * restores, verify, prune and garbage collection.
 *
 * A backup store is a directory (backup/chunks.h) registered under a name;
 * an encrypted store's random key is kept wrapped by the host master key
 * (storage/key.h) and shown once, when the store is made. A backup is a
 * task: every disk of the VM is read through NBD (backup/nbd.h) into
 * deduplicated chunks; the first backup of a VM into a store is full, the
 * next ones read only what a persistent dirty bitmap in the qcow2 image
 * ("kh-bk-<backup id>", added at the point in time of each backup) marks
 * as changed since the last committed backup. A backup is recorded (its
 * indexes renamed into place, then its row) only when complete; the old
 * bitmap is removed only after that, so an interrupted backup leaves the
 * previous one's bitmap and the next backup is incremental from it (or
 * full when the bitmap is gone or inconsistent), never wrong.
 *
 * The layer: backup/ sits beside instance/ and uses it (the VM manager for
 * specs, states and monitor commands; tasks and events) and storage/
 * (volumes, qemu-img runner, keys). It runs on the loop thread; the data
 * moves on the libuv thread pool.
 */
#ifndef KH_BACKUP_BACKUP_H
#define KH_BACKUP_BACKUP_H

#include <jansson.h>
#include <uv.h>

#include "instance/event.h"
#include "instance/manager.h"
#include "instance/task.h"
#include "storage/storage.h"
#include "store/store.h"
#include "util/err.h"

typedef struct kh_backups kh_backups;

kh_backups *kh_backup_new(uv_loop_t *loop, kh_store *store, kh_manager *mgr, kh_storage *st,
                          kh_tasks *tasks, kh_events *events, const char *state_dir,
                          kh_err *err);
void kh_backup_free(kh_backups *b);
/* Told of every backup record: added (its id and its VM's name, when a
 * backup is committed, by a request or a schedule) or removed (deleted or
 * pruned; vm NULL). The projects of backups hang on it (api/backup_routes.c). */
typedef void (*kh_backup_record_fn)(void *opaque, const char *id, const char *vm, bool added);
void kh_backup_set_record_hook(kh_backups *b, kh_backup_record_fn fn, void *opaque);

/* Prometheus text of the backups' figures (bkmetrics.c; caller frees; b
 * NULL: the families without series). */
char *kh_bkmetrics_render(const kh_backups *b, size_t *len);

/* Stores. add body {"name", "path", "encrypt", "key"}: a new store in an
 * empty (or missing) directory, or an existing store directory (an
 * encrypted one needs its "key", 64 hex digits: 403 when wrong). The reply
 * of a new encrypted store carries its "key" once. */
json_t *kh_backup_store_add(kh_backups *b, const json_t *body, kh_err *err);
json_t *kh_backup_store_list(kh_backups *b, kh_err *err);
json_t *kh_backup_store_get(kh_backups *b, const char *name, kh_err *err);
/* Forget a store (its directory stays); 409 while it has backups recorded. */
int kh_backup_store_delete(kh_backups *b, const char *name, kh_err *err);

/* Backups. create body {"store"} (optional when there is one store). */
kh_task *kh_backup_create(kh_backups *b, const char *vm, const json_t *body, kh_err *err);
/* ?vm=, ?store= filters (NULL: all), newest first. */
json_t *kh_backup_list(kh_backups *b, const char *vm, const char *store, kh_err *err);
json_t *kh_backup_get(kh_backups *b, const char *id, kh_err *err);
/* The record and its indexes go; chunks stay until a prune (GC). */
int kh_backup_delete(kh_backups *b, const char *id, kh_err *err);
/* body {"as": NEWVM} | {"vm": EXISTING (stopped), "disk": N (optional)}
 * (backup/restore.c). */
kh_task *kh_backup_restore(kh_backups *b, const char *id, const json_t *body, kh_err *err);
/* Re-read and re-hash every chunk (backup/tidy.c). */
kh_task *kh_backup_verify(kh_backups *b, const char *id, kh_err *err);
/* body {"store", "vm", "keep_last", "keep_daily", "keep_weekly",
 * "keep_monthly", "dry_run"}: retention, then GC of unreferenced chunks. */
kh_task *kh_backup_prune(kh_backups *b, const json_t *body, kh_err *err);

/* Schedules (backup/schedule.c): body {"store", "daily": "HH:MM"} (UTC);
 * one per VM, replaced by a new one. {"vm", "store", "daily", "last_run"}. */
json_t *kh_backup_schedule_set(kh_backups *b, const char *vm, const json_t *body, kh_err *err);
json_t *kh_backup_schedule_get(kh_backups *b, const char *vm, kh_err *err);
int kh_backup_schedule_delete(kh_backups *b, const char *vm, kh_err *err);

#endif
