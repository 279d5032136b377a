/* snapshot.h - named snapshots of a VM, as internal qcow2 snapshots.
 *
 * A running VM is snapshotted with its memory and device state through
 * QEMU's job-based QMP commands (snapshot-save / snapshot-load /
 * snapshot-delete, QEMU >= 6.0): the state goes into the first writable
 * disk, every writable disk gets the same tag. A stopped VM gets a
 * disk-only snapshot with qemu-img snapshot. Internal snapshots are
 * independent of each other, so any one can be deleted without touching
 * the data of the others. Every writable disk must be a qcow2 volume.
 *
 * Each operation is a task. A snapshot is recorded only after it exists in
 * every image; a QEMU that dies mid-way fails the task and records nothing.
 * A daemon that dies mid-way is made good at its next start (and before
 * each create): the images' snapshot tables are reconciled with the
 * records, and a new name is checked against the images too.
 * One snapshot operation runs per VM at a time (409 otherwise).
 */
#ifndef KH_VM_SNAPSHOT_H
#define KH_VM_SNAPSHOT_H

#include <jansson.h>

#include "storage/storage.h"
#include "util/err.h"
#include "instance/manager.h"
#include "instance/task.h"

typedef struct kh_snapshots kh_snapshots;

kh_snapshots *kh_snapshots_new(uv_loop_t *loop, kh_manager *mgr, kh_storage *st,
                               kh_tasks *tasks);
void kh_snapshots_free(kh_snapshots *s);
/* At daemon start: each VM's qcow2 snapshot tables against its records
 * (instance/snapshot.c says which side wins when). Synchronous. */
void kh_snapshots_reconcile(kh_snapshots *s);

/* body {"name"}. Returns the running task, or NULL with err set. */
kh_task *kh_snapshot_create(kh_snapshots *s, const char *vm, const json_t *body, kh_err *err);
kh_task *kh_snapshot_revert(kh_snapshots *s, const char *vm, const char *snap, kh_err *err);
kh_task *kh_snapshot_delete(kh_snapshots *s, const char *vm, const char *snap, kh_err *err);
/* {"snapshots": [{"name", "memory", "created_at", "parent", "current"}],
 * "current": NAME|null}: a tree (storage.h, kh_storage_snapshot_list). */
json_t *kh_snapshot_list(kh_snapshots *s, const char *vm, kh_err *err);
/* One snapshot, with "children" (names). */
json_t *kh_snapshot_show(kh_snapshots *s, const char *vm, const char *snap, kh_err *err);

#endif
