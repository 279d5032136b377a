/* snapshot.c - owns the named snapshots of a VM (internal qcow2
 * snapshots, with memory while it runs): take, revert, delete, list
 * (instance/snapshot.h). */
#include "instance/snapshot.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "instance/guest.h"
#include "instance/instance_int.h"
#include "qemu/tpm.h"
#include "schema/schema.h"
#include "storage/qcow2.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/strv.h"

#define POLL_MS 50
#define QIMG_SNAPSHOT_TIMEOUT_MS (10u * 60 * 1000)

typedef enum snap_kind { SNAP_CREATE, SNAP_REVERT, SNAP_DELETE } snap_kind;

static const char *const kind_names[] = { "snapshot.create", "snapshot.revert",
                                          "snapshot.delete" };
static const char *const qmp_commands[] = { "snapshot-save", "snapshot-load", "snapshot-delete" };
static const char *const qimg_flags[] = { "-c", "-a", "-d" };

typedef struct snap_op snap_op;

struct kh_snapshots {
    uv_loop_t *loop;
    kh_manager *mgr;
    kh_storage *st;
    kh_tasks *tasks;
    snap_op *ops; /* in progress, one per VM */
    struct settle *settles; /* running VMs waiting for a previous daemon's jobs */
    unsigned seq;
};

struct snap_op {
    kh_snapshots *s;
    snap_kind kind;
    char *vm, *vm_id, *name;
    bool memory; /* the snapshot holds the VM's memory */
    bool live;   /* through QMP (the VM runs) */
    kh_task *task;
    json_t *devices; /* node names of the writable disks */
    char *vmstate;   /* the node that keeps the memory */
    kh_strv *files;  /* their files (a stopped VM) */
    kh_strv *pools;  /* the pool of each file */
    unsigned long long memory_mib; /* the VM's RAM: the most a VM state takes */
    size_t undo;     /* a failed create: files that got the snapshot */
    size_t next;     /* qemu-img: the file being done */
    json_t *drop;    /* a revert: the backups' bitmaps of that file still to remove */
    bool dropped;    /* ... removed: the snapshot may be applied */
    kh_err failure;  /* a live failure, kept while the images are repaired */
    int repair_tries;
    char job_id[64];
    uv_timer_t *timer;
    snap_op *link;
};

kh_snapshots *kh_snapshots_new(uv_loop_t *loop, kh_manager *mgr, kh_storage *st, kh_tasks *tasks)
{
    kh_snapshots *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->mgr = mgr;
    s->st = st;
    s->tasks = tasks;
    return s;
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

/* A running VM whose QEMU may still run a job of the previous daemon:
 * polled until none runs, then dismissed and reconciled (see below). */
typedef struct settle {
    kh_snapshots *s; /* NULL once the daemon shuts down */
    char *vm, *vm_id;
    uv_timer_t *timer;
    unsigned tries;
    bool asking; /* a query-jobs is out: its reply frees an orphan */
    struct settle *link;
} settle;

static void settle_free(settle *e)
{
    if (e->timer)
        uv_close((uv_handle_t *)e->timer, timer_closed);
    free(e->vm);
    free(e->vm_id);
    free(e);
}

static void settle_unlink(settle *e)
{
    for (settle **pp = &e->s->settles; *pp; pp = &(*pp)->link) {
        if (*pp == e) {
            *pp = e->link;
            return;
        }
    }
}

void kh_snapshots_free(kh_snapshots *s)
{
    if (!s)
        return;
    for (settle *e = s->settles, *next; e; e = next) {
        next = e->link;
        e->s = NULL;
        if (!e->asking)
            settle_free(e);
        else
            uv_timer_stop(e->timer);
    }
    free(s); /* operations still running end with the daemon */
}

static bool busy(kh_snapshots *s, const char *vm)
{
    for (snap_op *o = s->ops; o; o = o->link)
        if (strcmp(o->vm, vm) == 0)
            return true;
    for (settle *e = s->settles; e; e = e->link)
        if (strcmp(e->vm, vm) == 0)
            return true;
    return false;
}

static void op_free(snap_op *o)
{
    for (snap_op **pp = &o->s->ops; *pp; pp = &(*pp)->link) {
        if (*pp == o) {
            *pp = o->link;
            break;
        }
    }
    if (o->timer)
        uv_close((uv_handle_t *)o->timer, timer_closed);
    free(o->vm);
    free(o->vm_id);
    free(o->name);
    free(o->vmstate);
    json_decref(o->devices);
    json_decref(o->drop);
    kh_strv_free(o->files);
    kh_strv_free(o->pools);
    free(o);
}

/* ---- the TPM state of disk-only snapshots ----
 *
 * A snapshot with memory holds the TPM state already (QEMU's tpm-emulator
 * puts swtpm's state blobs in the VM state, and snapshot-load gives them
 * back). A disk-only snapshot of a stopped VM keeps a copy of swtpm's files
 * in STATE/vms/<id>/tpm-snapshots/<name>.json (kh_tpm_state_get), put back
 * by a revert; a snapshot taken before the VM had a TPM state has none, and
 * its revert leaves the TPM as it is. */

static int write_json_file(const char *path, const json_t *j, kh_err *err)
{
    char *text = json_dumps(j, JSON_COMPACT);
    int rc = kh_fs_write_atomic(path, text, strlen(text), 0600, err);
    free(text);
    return rc;
}

static char *tpm_snap_path(const snap_op *o, const char *vm_state)
{
    return xasprintf("%s/tpm-snapshots/%s.json", vm_state, o->name);
}

static int tpm_snap(const snap_op *o, kh_err *err)
{
    kh_inst *v = kh_manager_find_id(o->s->mgr, o->vm_id);
    if (!v || o->memory || !v->spec->tpm)
        return 0;
    char *state = kh_runtime_state_path(v, NULL);
    char *path = tpm_snap_path(o, state);
    int rc = 0;
    if (o->kind == SNAP_CREATE) {
        json_t *files = kh_tpm_state_get(state, err);
        char *dir = xasprintf("%s/tpm-snapshots", state);
        if (!files || (json_object_size(files) > 0 &&
                       (kh_fs_mkdir_p(dir, 0700, err) < 0 ||
                        write_json_file(path, files, err) < 0)))
            rc = -1;
        free(dir);
        json_decref(files);
    } else if (o->kind == SNAP_REVERT) {
        kh_err e = KH_ERR_INIT;
        json_t *files = kh_fs_read_json(path, 64u * 1024 * 1024, &e);
        if (files && kh_tpm_state_put(state, files, err) < 0)
            rc = -1;
        else if (!files && e.code != KH_E_NOTFOUND) {
            kh_err_copy(err, &e);
            rc = -1;
        }
        json_decref(files);
    } else if (unlink(path) < 0 && errno != ENOENT) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "remove %s", path);
        rc = -1;
    }
    if (rc < 0)
        kh_err_prefix(err, "vm %s: the TPM state", o->vm);
    free(path);
    free(state);
    return rc;
}

static void op_finish(snap_op *o, const kh_err *err)
{
    kh_err e = KH_ERR_INIT;
    if (!err && tpm_snap(o, &e) < 0)
        err = &e;
    if (!err) {
        if (o->kind == SNAP_CREATE)
            kh_storage_snapshot_add(o->s->st, o->vm_id, o->name, o->memory, &e);
        else if (o->kind == SNAP_DELETE)
            kh_storage_snapshot_remove(o->s->st, o->vm_id, o->name, &e);
        else if (o->kind == SNAP_REVERT)
            kh_storage_snapshot_set_current(o->s->st, o->vm_id, o->name, &e);
        if (kh_err_isset(&e))
            err = &e;
    }
    if (err) {
        kh_log(KH_LOG_WARN, kind_names[o->kind], "vm=%s snapshot=%s error=\"%s\"", o->vm,
               o->name, err->msg);
        kh_task_fail(o->task, err);
    } else {
        kh_log(KH_LOG_INFO, kind_names[o->kind], "vm=%s snapshot=%s memory=%s", o->vm, o->name,
               o->memory ? "yes" : "no");
        kh_task_succeed(o->task, json_pack("{s:s, s:s, s:b}", "vm", o->vm, "snapshot", o->name,
                                           "memory", o->memory));
    }
    op_free(o);
}

/* ---- after a QEMU died mid-snapshot ----
 *
 * An interrupted internal snapshot can leave clusters allocated but
 * referenced by nothing (qemu-img check: "leaked clusters"; harmless, no
 * data is at risk). When a live operation fails because its QEMU is gone,
 * kvmhost reclaims them with qemu-img check -r leaks before the task ends
 * (the operation stays in progress meanwhile), so the images check clean. */

static void repair_step(snap_op *o);

static void repair_done(const kh_qimg_result *res, void *opaque)
{
    snap_op *o = opaque;
    kh_log(res->status == 0 ? KH_LOG_INFO : KH_LOG_WARN, "snapshot.repair",
           "vm=%s file=%s status=%d error=\"%s\"", o->vm, o->files->v[o->next], res->status,
           res->errtext ? res->errtext : "");
    o->next++;
    repair_step(o);
}

static void repair_step(snap_op *o)
{
    kh_qimg *q = kh_storage_qimg(o->s->st);
    while (o->next < o->files->n) {
        char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(q), (char *)(uintptr_t)"check",
                         (char *)(uintptr_t)"-q", (char *)(uintptr_t)"-r",
                         (char *)(uintptr_t)"leaks", (char *)(uintptr_t)"-f",
                         (char *)(uintptr_t)"qcow2", o->files->v[o->next], NULL };
        if (kh_qimg_run(q, argv, QIMG_SNAPSHOT_TIMEOUT_MS, NULL, repair_done, o, NULL) >= 0)
            return;
        o->next++;
    }
    op_finish(o, &o->failure);
}

static void repair_tick(uv_timer_t *t)
{
    snap_op *o = t->data;
    json_t *vm = kh_manager_vm_json(o->s->mgr, o->vm, NULL);
    const char *state = json_string_value(json_object_get(vm, "state"));
    bool gone = !vm || (state && strcmp(state, "stopped") == 0 &&
                        json_is_null(json_object_get(vm, "pid")));
    bool alive = vm && state && strcmp(state, "stopped") != 0 &&
                 kh_manager_qmp(o->s->mgr, o->vm_id, "query-status", NULL, NULL, NULL, NULL) == 0;
    json_decref(vm);
    if (gone) {
        o->next = 0;
        repair_step(o);
    } else if (alive || ++o->repair_tries >= 100) {
        op_finish(o, &o->failure); /* QEMU lives on: it keeps its images consistent */
    } else {
        uv_timer_start(o->timer, repair_tick, 100, 0);
    }
}

/* A live operation failed: if its QEMU died, repair first, then fail. */
static void live_failed(snap_op *o, const kh_err *err)
{
    kh_err_copy(&o->failure, err);
    if (o->kind == SNAP_REVERT) {
        op_finish(o, &o->failure);
        return;
    }
    kh_task_progress(o->task, 95, "checking the images");
    uv_timer_start(o->timer, repair_tick, 100, 0);
}

/* ---- a full pool ----
 *
 * A snapshot needs room in each image's file system: a few clusters of
 * metadata (the L1 table copy, refcounts, the snapshot table), and with a
 * running VM the VM state (at most its RAM, in the first disk). A create
 * that fails for lack of space (QEMU may say "Input/output error" only:
 * then the pools' free space decides) is told as no_space (507), naming
 * the pool, the space needed and the space free. */

#define SNAP_META_BYTES (1u << 20)

static uint64_t fs_free(const char *path)
{
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return UINT64_MAX;
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* Bytes file i needs. */
static uint64_t need_of(const snap_op *o, size_t i)
{
    return SNAP_META_BYTES + (o->memory && i == 0 ? o->memory_mib << 20 : 0);
}

/* Set err to no_space when file i's pool is short (or the failure says
 * so): 0 if it was, -1 otherwise. why: the failure, or NULL. */
static int nospace(const snap_op *o, const char *why, kh_err *err)
{
    bool said = why && strstr(why, "No space left");
    for (size_t i = 0; i < o->files->n; i++) {
        uint64_t need = need_of(o, i), free_b = fs_free(o->files->v[i]);
        if (free_b >= need && !(said && o->files->n == 1))
            continue;
        kh_err_set(err, KH_E_NOSPACE, "pool %s: no space left on device (needed ~%llu MiB, "
                   "%llu MiB free)%s%s", o->pools->v[i],
                   (unsigned long long)((need + (1u << 20) - 1) >> 20),
                   (unsigned long long)(free_b >> 20), why ? ": " : "", why ? why : "");
        return 0;
    }
    if (said) {
        kh_err_set(err, KH_E_NOSPACE, "pool %s: no space left on device: %s", o->pools->v[0],
                   why);
        return 0;
    }
    return -1;
}

/* ---- live: QMP jobs ---- */

static void poll_jobs(uv_timer_t *t);

static void on_jobs(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    snap_op *o = opaque;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_copy(&e, err);
        kh_err_prefix(&e, "%s", qmp_commands[o->kind]);
        live_failed(o, &e);
        return;
    }
    size_t i;
    json_t *job;
    json_array_foreach(ret, i, job) {
        const char *id = json_string_value(json_object_get(job, "id"));
        const char *jst = json_string_value(json_object_get(job, "status"));
        if (id && strncmp(id, "kh-", 3) == 0 && strcmp(id, o->job_id) != 0 && jst &&
            strcmp(jst, "concluded") == 0) /* a previous daemon's, ended since */
            kh_manager_qmp(o->s->mgr, o->vm_id, "job-dismiss", json_pack("{s:s}", "id", id),
                           NULL, NULL, NULL);
        if (!id || strcmp(id, o->job_id) != 0)
            continue;
        const char *status = json_string_value(json_object_get(job, "status"));
        if (status && strcmp(status, "concluded") == 0) {
            const char *jerr = json_string_value(json_object_get(job, "error"));
            kh_err e = KH_ERR_INIT;
            if (jerr && (o->kind != SNAP_CREATE || nospace(o, jerr, &e) < 0))
                kh_err_set(&e, KH_E_QEMU, "%s: %s", qmp_commands[o->kind], jerr);
            kh_manager_qmp(o->s->mgr, o->vm_id, "job-dismiss",
                           json_pack("{s:s}", "id", o->job_id), NULL, NULL, NULL);
            op_finish(o, jerr ? &e : NULL);
            return;
        }
        json_int_t cur = json_integer_value(json_object_get(job, "current-progress"));
        json_int_t tot = json_integer_value(json_object_get(job, "total-progress"));
        if (tot > 0)
            kh_task_progress(o->task, 10 + (int)(80 * cur / tot), "QEMU is working");
        uv_timer_start(o->timer, poll_jobs, POLL_MS, 0);
        return;
    }
    kh_err e = KH_ERR_INIT;
    kh_err_set(&e, KH_E_QEMU, "%s: the job %s vanished", qmp_commands[o->kind], o->job_id);
    op_finish(o, &e);
}

static void poll_jobs(uv_timer_t *t)
{
    snap_op *o = t->data;
    kh_err err = KH_ERR_INIT;
    if (kh_manager_qmp(o->s->mgr, o->vm_id, "query-jobs", NULL, on_jobs, o, &err) < 0) {
        kh_err_prefix(&err, "%s", qmp_commands[o->kind]);
        live_failed(o, &err);
    }
}

static void on_job_started(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    snap_op *o = opaque;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_copy(&e, err);
        kh_err_prefix(&e, "%s", qmp_commands[o->kind]);
        live_failed(o, &e);
        return;
    }
    kh_task_progress(o->task, 10, "QEMU is working");
    uv_timer_start(o->timer, poll_jobs, POLL_MS, 0);
}

static int start_job(snap_op *o, kh_err *err)
{
    json_t *args = json_pack("{s:s, s:s, s:O}", "job-id", o->job_id, "tag", o->name, "devices",
                             o->devices);
    if (o->kind != SNAP_DELETE)
        json_object_set_new(args, "vmstate", json_string(o->vmstate));
    return kh_manager_qmp(o->s->mgr, o->vm_id, qmp_commands[o->kind], args, on_job_started, o, err);
}

/* A revert of a running VM: the backups' bitmaps (kh-bk-*) of its disks go
 * first, as for a stopped VM (see "a revert and the backups' dirty bitmaps"
 * below); the removes are queued on the monitor before snapshot-load. */
static void live_bitmaps_listed(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    snap_op *o = opaque;
    kh_err e = KH_ERR_INIT;
    if (err) {
        kh_err_copy(&e, err);
        kh_err_prefix(&e, "query-named-block-nodes");
        op_finish(o, &e);
        return;
    }
    size_t i, k, d, removed = 0;
    json_t *n, *bm, *dev;
    json_array_foreach(ret, i, n) {
        const char *node = json_string_value(json_object_get(n, "node-name"));
        bool ours = false;
        json_array_foreach(o->devices, d, dev) {
            ours |= node && strcmp(node, json_string_value(dev)) == 0;
        }
        json_array_foreach(ours ? json_object_get(n, "dirty-bitmaps") : NULL, k, bm) {
            const char *name = json_string_value(json_object_get(bm, "name"));
            if (!name || strncmp(name, "kh-bk-", 6) != 0)
                continue;
            kh_manager_qmp(o->s->mgr, o->vm_id, "block-dirty-bitmap-remove",
                           json_pack("{s:s, s:s}", "node", node, "name", name), NULL, NULL, NULL);
            removed++;
        }
    }
    if (removed)
        kh_log(KH_LOG_INFO, "snapshot.revert", "vm=%s backup_bitmaps=%zu removed: the next "
               "backup is full", o->vm, removed);
    if (start_job(o, &e) < 0)
        op_finish(o, &e);
}

static int start_live(snap_op *o, kh_err *err)
{
    if (o->kind != SNAP_REVERT)
        return start_job(o, err);
    return kh_manager_qmp(o->s->mgr, o->vm_id, "query-named-block-nodes",
                          json_pack("{s:b}", "flat", true), live_bitmaps_listed, o, err);
}

/* ---- live, disk-only: the guest's filesystems frozen around it ----
 *
 * {"memory": false} on a running VM: the disks' internal snapshots in one
 * QMP transaction (blockdev-snapshot-internal-sync, all or none), taken
 * while the guest agent holds the guest's filesystems frozen
 * (instance/guest.h: guest-fsfreeze-freeze, bounded; then a thaw, always,
 * whatever the freeze or the snapshot did). A guest without an agent gets
 * the snapshot unfrozen (crash-consistent, as a power cut); the daemon log
 * says vm.fsfreeze ... error=. Memory snapshots are never frozen: a revert
 * would resume a guest with frozen filesystems. */

static void disk_thawed(int count, const kh_err *err, void *opaque)
{
    (void)count;
    (void)err; /* logged by guest.c */
    snap_op *o = opaque;
    op_finish(o, kh_err_isset(&o->failure) ? &o->failure : NULL);
}

static void thaw(snap_op *o)
{
    kh_err err = KH_ERR_INIT;
    kh_task_progress(o->task, 90, "thawing the guest's filesystems");
    if (kh_guest_thaw(o->s->mgr, o->vm, disk_thawed, o, &err) < 0)
        op_finish(o, kh_err_isset(&o->failure) ? &o->failure : NULL);
}

static void disk_taken(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    snap_op *o = opaque;
    if (err) {
        kh_err_copy(&o->failure, err);
        kh_err_prefix(&o->failure, "blockdev-snapshot-internal-sync");
    }
    thaw(o);
}

static void disk_frozen(int count, const kh_err *err, void *opaque)
{
    (void)count;
    (void)err; /* no agent: the snapshot is taken unfrozen */
    snap_op *o = opaque;
    kh_task_progress(o->task, 50, "snapshotting the disks");
    json_t *actions = json_array();
    size_t i;
    json_t *dev;
    json_array_foreach(o->devices, i, dev) {
        json_array_append_new(actions,
                              json_pack("{s:s, s:{s:O, s:s}}", "type",
                                        "blockdev-snapshot-internal-sync", "data", "device", dev,
                                        "name", o->name));
    }
    kh_err e = KH_ERR_INIT;
    if (kh_manager_qmp(o->s->mgr, o->vm_id, "transaction", json_pack("{s:o}", "actions", actions),
                       disk_taken, o, &e) < 0) {
        kh_err_copy(&o->failure, &e);
        thaw(o);
    }
}

static void freeze_skipped(uv_timer_t *t)
{
    disk_frozen(-1, NULL, t->data);
}

static int start_live_disks(snap_op *o, kh_err *err)
{
    (void)err;
    kh_err e = KH_ERR_INIT;
    if (kh_guest_freeze(o->s->mgr, o->vm, 0, disk_frozen, o, &e) < 0) {
        /* after start() has returned: the task exists by then */
        uv_timer_start(o->timer, freeze_skipped, 0, 0);
    }
    return 0;
}

/* ---- stopped: qemu-img snapshot per file ---- */

static int qimg_step(snap_op *o, kh_err *err);

static void undo_done(const kh_qimg_result *r, void *opaque);

/* A failed create: take back what was made, one file after the other (no
 * half snapshot stays), then reclaim the clusters the failure leaked
 * (qemu-img check -r leaks on every file), then fail with o->failure. */
static void undo_step(snap_op *o)
{
    kh_qimg *q = kh_storage_qimg(o->s->st);
    while (o->next < o->undo) {
        char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(q), (char *)(uintptr_t)"snapshot",
                         (char *)(uintptr_t)"-d", o->name, o->files->v[o->next], NULL };
        if (kh_qimg_run(q, argv, QIMG_SNAPSHOT_TIMEOUT_MS, NULL, undo_done, o, NULL) >= 0)
            return;
        o->next++;
    }
    o->next = 0;
    kh_task_progress(o->task, 95, "checking the images");
    repair_step(o);
}

static void undo_done(const kh_qimg_result *r, void *opaque)
{
    snap_op *o = opaque;
    if (r->status != 0)
        kh_log(KH_LOG_WARN, "snapshot.undo", "vm=%s file=%s error=\"%s\"", o->vm,
               o->files->v[o->next], r->errtext ? r->errtext : "");
    o->next++;
    undo_step(o);
}

static void on_qimg(const kh_qimg_result *r, void *opaque)
{
    snap_op *o = opaque;
    kh_err err = KH_ERR_INIT;
    if (r->status != 0) {
        const char *why = r->errtext && *r->errtext ? r->errtext : "failed";
        if (o->kind != SNAP_CREATE || r->timed_out || nospace(o, why, &err) < 0)
            kh_err_set(&err, r->timed_out ? KH_E_TIMEOUT : KH_E_QEMU, "qemu-img snapshot: %s",
                       why);
        if (o->kind == SNAP_CREATE) {
            kh_err_copy(&o->failure, &err);
            o->undo = o->next;
            o->next = 0;
            undo_step(o);
            return;
        }
        op_finish(o, &err);
        return;
    }
    o->next++;
    o->dropped = false;
    if (o->next == o->files->n) {
        op_finish(o, NULL);
        return;
    }
    kh_task_progress(o->task, (int)(100 * o->next / o->files->n), "qemu-img snapshot");
    if (qimg_step(o, &err) < 0)
        op_finish(o, &err);
}

/* ---- a revert and the backups' dirty bitmaps ----
 * QEMU applies no snapshot to an image with dirty bitmaps ("Device has
 * active dirty bitmaps": they could not follow the jump back). A revert of
 * a stopped VM first removes the backups' persistent bitmaps (kh-bk-*,
 * backup/job.c) from each image: the VM's next backup finds no base bitmap
 * and reads the whole disk, as it must after its disks went back in time. */

static void bitmap_next(snap_op *o);

static void bitmap_removed(const kh_qimg_result *r, void *opaque)
{
    snap_op *o = opaque;
    if (r->status != 0)
        kh_log(KH_LOG_WARN, "snapshot.revert", "vm=%s file=%s error=\"%s\"", o->vm,
               o->files->v[o->next], r->errtext ? r->errtext : "");
    bitmap_next(o);
}

static void bitmap_next(snap_op *o)
{
    kh_err err = KH_ERR_INIT;
    kh_qimg *q = kh_storage_qimg(o->s->st);
    char *name = json_array_size(o->drop)
                     ? xstrdup(json_string_value(json_array_get(o->drop, 0)))
                     : NULL;
    json_array_remove(o->drop, 0);
    int rc;
    if (!name) {
        o->dropped = true;
        rc = qimg_step(o, &err);
    } else {
        char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(q), (char *)(uintptr_t)"bitmap",
                         (char *)(uintptr_t)"--remove", o->files->v[o->next], name, NULL };
        rc = kh_qimg_run(q, argv, QIMG_SNAPSHOT_TIMEOUT_MS, NULL, bitmap_removed, o, &err) < 0
                 ? -1 : 0;
    }
    free(name);
    if (rc < 0)
        op_finish(o, &err);
}

static void bitmaps_listed(const kh_qimg_result *r, void *opaque)
{
    snap_op *o = opaque;
    json_decref(o->drop);
    o->drop = json_array();
    json_t *info = r->status == 0 && r->out ? json_loads(r->out, 0, NULL) : NULL;
    size_t i;
    json_t *bm;
    json_array_foreach(json_object_get(json_object_get(json_object_get(info, "format-specific"),
                                                       "data"), "bitmaps"), i, bm) {
        const char *name = json_string_value(json_object_get(bm, "name"));
        if (name && strncmp(name, "kh-bk-", 6) == 0)
            json_array_append_new(o->drop, json_string(name));
    }
    json_decref(info);
    if (json_array_size(o->drop))
        kh_log(KH_LOG_INFO, "snapshot.revert", "vm=%s file=%s backup_bitmaps=%zu removed: the "
               "next backup is full", o->vm, o->files->v[o->next], json_array_size(o->drop));
    bitmap_next(o);
}

static int qimg_step(snap_op *o, kh_err *err)
{
    kh_qimg *q = kh_storage_qimg(o->s->st);
    if (o->kind == SNAP_REVERT && !o->dropped) {
        char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(q), (char *)(uintptr_t)"info",
                         (char *)(uintptr_t)"-U", (char *)(uintptr_t)"--output=json",
                         (char *)(uintptr_t)"-f", (char *)(uintptr_t)"qcow2",
                         o->files->v[o->next], NULL };
        return kh_qimg_run(q, argv, QIMG_SNAPSHOT_TIMEOUT_MS, NULL, bitmaps_listed, o, err) < 0
                   ? -1 : 0;
    }
    char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(q), (char *)(uintptr_t)"snapshot",
                     (char *)(uintptr_t)qimg_flags[o->kind], o->name, o->files->v[o->next],
                     NULL };
    return kh_qimg_run(q, argv, QIMG_SNAPSHOT_TIMEOUT_MS, NULL, on_qimg, o, err) < 0 ? -1 : 0;
}

/* ---- common ---- */

/* The VM's writable disks: qcow2 volumes only. */
static int collect_disks(snap_op *o, const json_t *vm, kh_err *err)
{
    o->devices = json_array();
    o->files = kh_strv_new();
    o->pools = kh_strv_new();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(vm, "disks"), i, d) {
        if (json_is_true(json_object_get(d, "readonly")))
            continue; /* unchanged by the guest: nothing to keep */
        const char *ref = json_string_value(json_object_get(d, "volume"));
        if (!ref) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu] is a host file: snapshots need every "
                                          "writable disk to be a qcow2 volume", i);
            return -1;
        }
        kh_volume_chain c;
        if (kh_storage_resolve(o->s->st, ref, &c, err) < 0)
            return -1;
        bool ok = c.layer[0].format == KH_DISK_QCOW2;
        if (ok) {
            kh_strv_add(o->files, c.layer[0].path);
            const char *slash = strchr(ref, '/');
            kh_strv_addf(o->pools, "%.*s", slash ? (int)(slash - ref) : (int)strlen(ref), ref);
        }
        kh_volume_chain_clear(&c);
        if (!ok) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: volume %s is raw: snapshots need qcow2",
                       i, ref);
            return -1;
        }
        char node[32];
        snprintf(node, sizeof(node), "disk%d", kh_manager_disk_node(o->s->mgr, o->vm_id, i));
        json_array_append_new(o->devices, json_string(node));
        if (!o->vmstate)
            o->vmstate = xstrdup(node);
    }
    if (o->files->n == 0) {
        kh_err_set(err, KH_E_INVALID, "vm %s has no writable qcow2 volume to snapshot", o->vm);
        return -1;
    }
    return 0;
}

/* ---- the images' snapshot tables against the records ----
 *
 * A record is written after the snapshot exists in every image; a daemon
 * killed in between (QEMU's job or qemu-img finishes alone) leaves a
 * snapshot in the images and none in the database, and one killed during
 * a delete leaves a record of nothing. At start, and before every create,
 * each VM's tables are read (qemu-img info -U) and:
 *  - a snapshot in every writable image but unrecorded is recorded: the
 *    user asked for it and it is whole, so keeping it is the safe side
 *    (deleting it would throw away a good copy of the data);
 *  - one in some images only (a multi-disk create cut short) is left
 *    alone, never deleted by kvmhost, and its name is refused (409);
 *  - a record in no image is dropped (there is nothing to revert to). */

/* The writable qcow2 files of vm (as collect_disks), or NULL. */
static kh_strv *vm_files(kh_snapshots *s, const json_t *vm)
{
    kh_strv *files = kh_strv_new();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(vm, "disks"), i, d) {
        const char *ref = json_string_value(json_object_get(d, "volume"));
        if (json_is_true(json_object_get(d, "readonly")) || !ref)
            continue;
        kh_volume_chain c;
        kh_err e = KH_ERR_INIT;
        if (kh_storage_resolve(s->st, ref, &c, &e) < 0)
            continue;
        if (c.layer[0].format == KH_DISK_QCOW2)
            kh_strv_add(files, c.layer[0].path);
        kh_volume_chain_clear(&c);
    }
    return files;
}

/* In how many of tables (an array of {name: vm-state-size}) name is;
 * *memory when one of them holds a VM state. */
static size_t tables_count(const json_t *tables, const char *name, bool *memory)
{
    size_t n = 0, i;
    json_t *t;
    *memory = false;
    json_array_foreach(tables, i, t) {
        json_t *size = json_object_get(t, name);
        if (size) {
            n++;
            *memory = *memory || json_integer_value(size) > 0;
        }
    }
    return n;
}

/* Reconcile one VM (a JSON view). want: a name about to be created: -1
 * with KH_E_CONFLICT when an image holds it only in part. -1 with err also
 * when the tables cannot be read while want is given. */
static int reconcile_vm(kh_snapshots *s, const json_t *vm, const char *want, kh_err *err)
{
    const char *vm_name = json_string_value(json_object_get(vm, "name"));
    const char *id = json_string_value(json_object_get(vm, "id"));
    kh_strv *files = vm_files(s, vm);
    if (!id || !vm_name || files->n == 0) {
        kh_strv_free(files);
        return 0;
    }
    json_t *tables = json_array();
    const char *qemu_img = kh_qimg_binary(kh_storage_qimg(s->st));
    kh_err e = KH_ERR_INIT;
    for (size_t i = 0; i < files->n; i++) {
        json_t *t = kh_qcow2_snapshots(qemu_img, files->v[i], &e);
        if (!t) {
            kh_log(KH_LOG_WARN, "snapshot.reconcile", "vm=%s error=\"%s\"", vm_name, e.msg);
            kh_strv_free(files);
            json_decref(tables);
            if (want) {
                kh_err_copy(err, &e);
                return -1;
            }
            return 0;
        }
        json_array_append_new(tables, t);
    }
    size_t nfiles = files->n;
    kh_strv_free(files);
    int rc = 0;
    bool memory;
    /* Records of nothing. */
    json_t *records = kh_storage_snapshot_list_err(s->st, id, &e);
    size_t i;
    json_t *r;
    json_array_foreach(records, i, r) {
        const char *name = json_string_value(json_object_get(r, "name"));
        if (!name || tables_count(tables, name, &memory) > 0)
            continue;
        kh_err de = KH_ERR_INIT;
        kh_storage_snapshot_remove(s->st, id, name, &de);
        kh_log(KH_LOG_WARN, "snapshot.reconcile", "vm=%s snapshot=%s in_images=none "
               "action=drop_record error=\"%s\"", vm_name, name, de.msg);
    }
    json_decref(records);
    /* Snapshots of the images without a record: the first image has every
     * whole one. */
    const char *name;
    json_t *size;
    json_object_foreach(json_array_get(tables, 0), name, size) {
        bool had = false;
        kh_err ge = KH_ERR_INIT;
        if (kh_storage_snapshot_get(s->st, id, name, &had, &ge) != 0)
            continue;
        size_t n = tables_count(tables, name, &memory);
        if (n == nfiles && kh_check_name(name, "snapshot name", NULL) == 0) {
            kh_err ae = KH_ERR_INIT;
            kh_storage_snapshot_add(s->st, id, name, memory, &ae);
            kh_log(KH_LOG_WARN, "snapshot.reconcile", "vm=%s snapshot=%s memory=%s "
                   "in_images=all action=record error=\"%s\"", vm_name, name,
                   memory ? "yes" : "no", ae.msg);
        }
    }
    /* Parts: in some images, not recorded, not whole. */
    json_t *t;
    json_array_foreach(tables, i, t) {
        json_object_foreach(t, name, size) {
            bool had = false;
            kh_err ge = KH_ERR_INIT;
            if (kh_storage_snapshot_get(s->st, id, name, &had, &ge) != 0 ||
                tables_count(tables, name, &memory) == nfiles)
                continue;
            if (want && strcmp(want, name) == 0 && rc == 0) {
                kh_err_set(err, KH_E_CONFLICT, "vm %s: %zu of its %zu disk images already hold "
                           "a snapshot named %s (left by an interrupted operation): choose "
                           "another name", vm_name, tables_count(tables, name, &memory),
                           nfiles, name);
                rc = -1;
            }
            if (!want)
                kh_log(KH_LOG_WARN, "snapshot.reconcile", "vm=%s snapshot=%s in_images=some "
                       "action=keep", vm_name, name);
        }
    }
    json_decref(tables);
    return rc;
}

/* ---- a running VM after a restart: its QEMU's jobs first ----
 *
 * A snapshot-save the killed daemon started goes on in QEMU and ends
 * "concluded", keeping its job id until dismissed. The VM is busy for
 * snapshots (409) until no kvmhost job runs in its QEMU; then the
 * concluded ones are dismissed and the tables reconciled. */

#define SETTLE_POLL_MS 200
#define SETTLE_TRIES 3000 /* 10 min */

static void settle_tick(uv_timer_t *t);

static void settle_done(settle *e)
{
    json_t *vm = kh_manager_vm_json(e->s->mgr, e->vm, NULL);
    if (vm)
        reconcile_vm(e->s, vm, NULL, NULL);
    json_decref(vm);
    settle_unlink(e);
    settle_free(e);
}

static void settle_jobs(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    settle *e = opaque;
    e->asking = false;
    if (!e->s) {
        settle_free(e);
        return;
    }
    bool running = false;
    size_t i;
    json_t *job;
    json_array_foreach(err ? NULL : ret, i, job) {
        const char *id = json_string_value(json_object_get(job, "id"));
        const char *status = json_string_value(json_object_get(job, "status"));
        if (!id || strncmp(id, "kh-", 3) != 0 || !status)
            continue;
        if (strcmp(status, "concluded") == 0) {
            kh_log(KH_LOG_INFO, "snapshot.settle", "vm=%s job=%s action=dismiss", e->vm, id);
            kh_manager_qmp(e->s->mgr, e->vm_id, "job-dismiss", json_pack("{s:s}", "id", id),
                           NULL, NULL, NULL);
        } else if (strcmp(status, "null") != 0) {
            running = true;
        }
    }
    if ((!err && !running) || ++e->tries >= SETTLE_TRIES)
        settle_done(e);
    else
        uv_timer_start(e->timer, settle_tick, SETTLE_POLL_MS, 0);
}

static void settle_tick(uv_timer_t *t)
{
    settle *e = t->data;
    if (kh_manager_qmp(e->s->mgr, e->vm_id, "query-jobs", NULL, settle_jobs, e, NULL) == 0) {
        e->asking = true;
        return;
    }
    /* Not connected yet (the reattach is under way), or no QEMU any more. */
    json_t *vm = kh_manager_vm_json(e->s->mgr, e->vm, NULL);
    const char *state = json_string_value(json_object_get(vm, "state"));
    bool gone = !vm || (state && strcmp(state, "stopped") == 0);
    json_decref(vm);
    if (gone || ++e->tries >= SETTLE_TRIES)
        settle_done(e);
    else
        uv_timer_start(e->timer, settle_tick, SETTLE_POLL_MS, 0);
}

void kh_snapshots_reconcile(kh_snapshots *s)
{
    if (!s || !s->st)
        return;
    json_t *vms = kh_manager_list_json(s->mgr);
    size_t i;
    json_t *vm;
    json_array_foreach(vms, i, vm) {
        const char *state = json_string_value(json_object_get(vm, "state"));
        const char *name = json_string_value(json_object_get(vm, "name"));
        const char *id = json_string_value(json_object_get(vm, "id"));
        if (!state || !name || !id || strcmp(state, "migrating") == 0)
            continue; /* its images are in flux: the next start sees them */
        if (json_is_null(json_object_get(vm, "pid")) || !json_object_get(vm, "pid")) {
            reconcile_vm(s, vm, NULL, NULL);
            continue;
        }
        settle *e = xcalloc(1, sizeof(*e));
        e->s = s;
        e->vm = xstrdup(name);
        e->vm_id = xstrdup(id);
        e->timer = xcalloc(1, sizeof(*e->timer));
        uv_timer_init(s->loop, e->timer);
        e->timer->data = e;
        e->link = s->settles;
        s->settles = e;
        uv_timer_start(e->timer, settle_tick, 0, 0);
    }
    json_decref(vms);
}

static kh_task *start(kh_snapshots *s, snap_kind kind, const char *vm_name, const char *name,
                      bool no_memory, kh_err *err)
{
    if (!s || !s->st) {
        kh_err_set(err, KH_E_UNAVAILABLE, "storage is not available");
        return NULL;
    }
    if (kh_check_name(name, "snapshot name", err) < 0)
        return NULL;
    json_t *vm = kh_manager_vm_json(s->mgr, vm_name, err);
    if (!vm)
        return NULL;
    snap_op *o = xcalloc(1, sizeof(*o));
    o->s = s;
    o->kind = kind;
    o->vm = xstrdup(vm_name);
    o->vm_id = xstrdup(json_string_value(json_object_get(vm, "id")));
    o->name = xstrdup(name);
    const char *state = json_string_value(json_object_get(vm, "state"));
    bool running = state && (strcmp(state, "running") == 0 || strcmp(state, "paused") == 0);
    bool stopped = state && strcmp(state, "stopped") == 0 && json_is_null(json_object_get(vm, "pid"));
    bool memory = false;
    int have = kh_storage_snapshot_get(s->st, o->vm_id, name, &memory, err);
    if (have < 0)
        goto fail;
    if (busy(s, vm_name)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: another snapshot operation is under way "
                   "(or one the previous daemon started is still ending)", vm_name);
        goto fail;
    }
    if (!running && !stopped) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: wait until it runs or is stopped", vm_name,
                   state ? state : "busy");
        goto fail;
    }
    if (kind == SNAP_CREATE) {
        /* The images may hold what the records lack (a daemon killed
         * after QEMU or qemu-img made it): look first. */
        if (!have && (reconcile_vm(s, vm, name, err) < 0 ||
                      (have = kh_storage_snapshot_get(s->st, o->vm_id, name, &memory, err)) < 0))
            goto fail;
        if (have) {
            kh_err_set(err, KH_E_CONFLICT, "vm %s already has a snapshot named %s", vm_name, name);
            goto fail;
        }
        if (json_is_true(json_object_get(vm, "template"))) {
            kh_err_set(err, KH_E_CONFLICT, "vm %s is a template: its volumes are read-only",
                       vm_name);
            goto fail;
        }
        o->memory = running && !no_memory;
    } else {
        if (!have) {
            kh_err_set(err, KH_E_NOTFOUND, "vm %s has no snapshot named %s", vm_name, name);
            goto fail;
        }
        o->memory = memory;
        if (kind == SNAP_REVERT && memory && !running) {
            kh_err_set(err, KH_E_CONFLICT, "snapshot %s holds the memory of a running vm: start "
                                           "vm %s to revert to it", name, vm_name);
            goto fail;
        }
        if (kind == SNAP_REVERT && !memory && !stopped) {
            kh_err_set(err, KH_E_CONFLICT, "snapshot %s is disk-only: stop vm %s to revert to it",
                       name, vm_name);
            goto fail;
        }
    }
    o->live = running;
    o->memory_mib = (unsigned long long)json_integer_value(json_object_get(vm, "memory_mib"));
    if (collect_disks(o, vm, err) < 0)
        goto fail;

    /* Unique across daemon restarts too: a job a killed daemon left in
     * QEMU keeps its id until dismissed. */
    snprintf(o->job_id, sizeof(o->job_id), "kh-snap-%ld-%u", (long)getpid(), ++s->seq);
    o->timer = xcalloc(1, sizeof(*o->timer));
    uv_timer_init(s->loop, o->timer);
    o->timer->data = o;
    int started = !o->live                 ? qimg_step(o, err)
                  : o->memory || kind != SNAP_CREATE ? start_live(o, err)
                                                     : start_live_disks(o, err);
    if (started < 0)
        goto fail;
    o->task = kh_task_new(s->tasks, kind_names[kind], vm_name);
    kh_task_progress(o->task, 5, !o->live ? "qemu-img snapshot"
                                 : o->memory || kind != SNAP_CREATE ? "QEMU is working"
                                                                    : "freezing the guest's filesystems");
    o->link = s->ops;
    s->ops = o;
    json_decref(vm);
    return o->task;
fail:
    json_decref(vm);
    op_free(o);
    return NULL;
}

kh_task *kh_snapshot_create(kh_snapshots *s, const char *vm, const json_t *body, kh_err *err)
{
    if (kh_schema_check("SnapshotSpec", body, "", err) < 0)
        return NULL;
    return start(s, SNAP_CREATE, vm, json_string_value(json_object_get(body, "name")),
                 json_is_false(json_object_get(body, "memory")), err);
}

kh_task *kh_snapshot_revert(kh_snapshots *s, const char *vm, const char *snap, kh_err *err)
{
    return start(s, SNAP_REVERT, vm, snap, false, err);
}

kh_task *kh_snapshot_delete(kh_snapshots *s, const char *vm, const char *snap, kh_err *err)
{
    return start(s, SNAP_DELETE, vm, snap, false, err);
}

json_t *kh_snapshot_list(kh_snapshots *s, const char *vm_name, kh_err *err)
{
    json_t *vm = kh_manager_vm_json(s->mgr, vm_name, err);
    if (!vm)
        return NULL;
    const char *id = json_string_value(json_object_get(vm, "id"));
    char *cur = NULL;
    json_t *list = NULL;
    if (s->st && (kh_storage_snapshot_current_get(s->st, id, &cur, err) < 0 ||
                  !(list = kh_storage_snapshot_list_err(s->st, id, err)))) {
        free(cur);
        json_decref(vm);
        return NULL;
    }
    json_t *out = json_pack("{s:o, s:o}", "snapshots", list ? list : json_array(), "current",
                            cur ? json_string(cur) : json_null());
    free(cur);
    json_decref(vm);
    return out;
}

json_t *kh_snapshot_show(kh_snapshots *s, const char *vm_name, const char *snap, kh_err *err)
{
    json_t *all = kh_snapshot_list(s, vm_name, err);
    if (!all)
        return NULL;
    json_t *found = NULL, *children = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(all, "snapshots"), i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *parent = json_string_value(json_object_get(e, "parent"));
        if (name && strcmp(name, snap) == 0)
            found = json_incref(e);
        else if (parent && strcmp(parent, snap) == 0)
            json_array_append_new(children, json_string(name));
    }
    json_decref(all);
    if (!found) {
        json_decref(children);
        kh_err_set(err, KH_E_NOTFOUND, "vm %s has no snapshot named %s", vm_name, snap);
        return NULL;
    }
    json_object_set_new(found, "children", children);
    return found;
}
