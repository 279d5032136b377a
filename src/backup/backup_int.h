/* backup_int.h - what the files of backup/ share: the manager's state, the
 * catalog (backup.c) and the worker helper. */
#ifndef KH_BACKUP_INT_H
#define KH_BACKUP_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "backup/backup.h"
#include "backup/chunks.h"
#include "backup/nbd.h"
#include "storage/key.h"
#include "util/strv.h"

typedef struct kh_bop kh_bop;

struct kh_backups {
    uv_loop_t *loop;
    kh_store *store;
    kh_manager *mgr;
    kh_storage *st;
    kh_tasks *tasks;
    kh_events *events;
    char *state_dir;
    char *tmp_dir; /* STATE_DIR/backup-tmp: NBD sockets */
    kh_key_master master;
    kh_bop *ops;   /* operations under way */
    uv_timer_t *sched_timer; /* schedule.c */
    json_t *figures;         /* bkmetrics.c: per VM id */
    struct kh_linger *lingering; /* restore.c: NBD servers of failed live-restores */
    uv_timer_t *linger_timer;
    kh_backup_record_fn on_record; /* kh_backup_set_record_hook */
    void *on_record_opaque;
    /* kh_backup_free ran while operations were still under way: the
     * manager, tasks and events are gone (or about to go). Their callbacks
     * (a QMP reply failed by the closed monitor, a timer) end them without
     * touching any of those; the last one frees this struct. */
    bool closing;
};

/* schedule.c: the tick (started by kh_backup_new, stopped by _free). */
void kh_schedule_start(kh_backups *b);
void kh_schedule_stop(kh_backups *b);
/* A scheduled backup of vm_id committed: its schedule's retention is due. */
void kh_schedule_backup_done(kh_backups *b, const char *vm_id);
/* kh_backup_create; scheduled: the schedule's retention runs after it. */
kh_task *kh_backup_create_job(kh_backups *b, const char *vm, const json_t *body, bool scheduled,
                              kh_err *err);

/* kh_backup_prune of the backups of the VM whose id is vm_id (whatever its
 * name was when each was made; NULL: by body's "vm" name, or all); body
 * already checked against BackupPrune ("vm" names the task). */
kh_task *kh_backup_prune_vm(kh_backups *b, const json_t *body, const char *vm_id, kh_err *err);

/* One operation under way (a backup, restore, verify or prune): what makes
 * another one on the same VM or store wait (409). */
struct kh_bop {
    kh_backups *b;
    const char *kind; /* "backup.create", ... */
    char *vm_id;      /* the VM it reads or writes, or NULL */
    char *store;      /* the store it writes or prunes, or NULL */
    bool exclusive;   /* nothing else may run on the store (prune) */
    kh_task *task;
    kh_nbd_stats stats;
    uint64_t total;   /* bytes to handle, for progress */
    uint64_t t0_ms;
    uv_timer_t *timer;
    kh_bop *link;
};

/* Register an operation; 409 when it conflicts with one under way. The
 * task is created here; progress is published every 500 ms from stats. */
kh_bop *kh_backup_op_begin(kh_backups *b, size_t size, const char *kind, const char *vm_name,
                           const char *vm_id, const char *store, bool exclusive, kh_err *err);
/* Ends the task (err NULL: succeeded with result, stolen) and frees op
 * (op is the head of a bigger struct: free_fn frees it). When b->closing,
 * the task is left alone (the daemon's end fails it; the store marks it
 * failed at the next start) and the last op frees b. */
void kh_backup_op_end(kh_bop *op, json_t *result, const kh_err *err);

/* Run fn(opaque) on the thread pool, then done(opaque) on the loop. */
typedef void (*kh_backup_work_fn)(void *opaque);
void kh_backup_work(kh_backups *b, kh_backup_work_fn fn, kh_backup_work_fn done, void *opaque);

/* Live-restore servers left serving a VM after a failed stream end (and
 * are freed) once their client is gone; at the daemon's end, all of them. */
void kh_restore_linger_stop(kh_backups *b);
/* The daemon stops: live-restores under way end (failed). */
void kh_restore_stop_live(kh_backups *b);

/* A committed backup's record adds to the figures of /metrics (bkmetrics.c). */
void kh_bkmetrics_record(kh_backups *b, const json_t *rec);

/* The catalog. A store opened (key unwrapped); caller frees. */
kh_chunks *kh_backup_store_open(kh_backups *b, const char *name, kh_err *err);
/* A backup row as JSON {"id", "store", "vm", "vm_id", "kind", "base", "created_at",
 * ... record}. */
json_t *kh_backup_row(kh_backups *b, const char *id, kh_err *err);
/* The newest backup of vm_id in store, or NULL (err unset when none). */
json_t *kh_backup_last(kh_backups *b, const char *store, const char *vm_id, kh_err *err);
int kh_backup_insert(kh_backups *b, const json_t *row, kh_err *err);
/* The folder of backup id in its store (caller frees). */
char *kh_backup_dir(const kh_chunks *c, const char *id);
/* Read disk i's index of backup id. */
int kh_backup_index_read(const kh_chunks *c, const char *id, size_t i, kh_index *ix,
                         kh_err *err);
/* An encrypted volume (ref) for qemu-img/qemu-nbd: appends a "--object
 * secret,...,file=/proc/self/fd/N" to argv per encrypted layer of its chain
 * (its passphrase in a sealed memfd, into fds[*nfds...], the child's fd
 * 3 + k: never in an argv or a file) and returns the image as
 * "json:{...}" (caller frees), or NULL with err (fds made so far are the
 * caller's to close). */
char *kh_backup_image_json(kh_backups *b, const char *ref, kh_strv *argv, int *fds,
                           size_t *nfds, size_t max_fds, kh_err *err);

/* ---- a backup job (job.c; live.c for a running VM) ---- */

#define KH_BACKUP_BITMAP_PREFIX "kh-bk-"

typedef struct jdisk {
    size_t index;       /* in the VM's spec */
    char *ref;          /* pool/name */
    char volume_id[37];
    char *file;         /* the top image */
    bool qcow2;
    char *base_bitmap;  /* the last committed backup's bitmap, when usable */
    json_t *stale;      /* other kh-bk-* bitmaps in the image */
    bool added;         /* our new bitmap is in the image */
    bool encrypted;     /* LUKS: read through its key; only into an encrypted store */
    kh_index ix;
    uint64_t size;
    kh_index base;      /* live: the base index (with base_bitmap) */
    bool have_base;
    struct nbd_handle *nbd; /* live: the connection to its export */
} jdisk;

struct kh_job;
typedef void (*kh_live_done_fn)(struct kh_job *j, const kh_err *err);

typedef struct kh_job {
    kh_bop op; /* first */
    bool live;       /* the VM runs: QMP (live.c), else qemu-img + qemu-nbd */
    bool scheduled;  /* started by a schedule: its retention follows */
    unsigned seq;    /* unique in this daemon: QEMU object names */
    char tag[16];    /* "<seq>": in QEMU names */
    json_t *nodes;   /* live: [{"node", "fleece", "fdset", "job", "export"}] per disk */
    bool exported, server;
    bool thaw;       /* live.c: a freeze was asked: thaw after the transaction */
    bool frozen;     /* the guest's filesystems were frozen at the point in time */
    pid_t keeper;    /* live: holds copies of the NBD connections (see live.c) */
    int steps_left;  /* live: replies awaited */
    kh_live_done_fn live_done; /* live.c: the caller of a failed start */
    kh_live_done_fn held_done; /* live.c: the caller, while the guest freezes or thaws */
    kh_err live_err;
    kh_err held_err;           /* live.c: the transaction's error, while the guest thaws */
    void *live_janitor;        /* live.c: the janitor under way */
    char id[37];
    char bitmap[64]; /* BITMAP_PREFIX + id */
    char *vm, *vm_id, *store;
    kh_chunks *chunks;
    json_t *spec;
    json_t *tpm;  /* the VM's TPM state at the point in time (qemu/tpm.h), or NULL */
    json_t *base; /* the previous backup's row, or NULL */
    jdisk *disks;
    size_t ndisks, cur;
    /* the current disk's export and pull */
    char sock[256];
    pid_t nbd_pid;
    bool nbd_running, pulling;
    char *nbd_errtext;
    kh_index base_ix;
    bool have_base_ix;
    kh_err pull_err;
    int pull_rc;
    /* the end */
    kh_err failure;
    bool failed;
    bool held_failed; /* live.c: held_err is set */
    size_t cleanup_disk;
    size_t cleanup_item;
    double time;
} kh_job;

/* live.c: the point in time and the export in the VM's QEMU (fleecing,
 * new bitmap, frozen copy of the base bitmap, NBD export); done(j, err)
 * once the export is up (err NULL) or nothing is left in QEMU. */
typedef kh_live_done_fn kh_live_done;
void kh_live_start(kh_job *j, kh_live_done done);
/* Take the export, the fleecing node and the frozen bitmap down (errors
 * are logged); then done(j, NULL). */
void kh_live_stop(kh_job *j, kh_live_done done);
/* Remove bitmap name from disk d of the running VM; done(j, err). */
void kh_live_bitmap_remove(kh_job *j, size_t d, const char *name, kh_live_done done);
/* Connect to every disk's export and start the keeper; -1 with err. */
int kh_live_connect(kh_job *j, kh_err *err);
/* After kh_live_stop: the keeper killed, the connections closed. */
void kh_live_release(kh_job *j);
/* The job of a running VM ends: its mark in the VM's run dir goes. */
void kh_live_unmark(kh_job *j);
/* A running VM was adopted again after a daemon restart: clean up what a
 * backup cut short left in its QEMU (and thaw its guest), if anything. */
void kh_live_reattach(kh_backups *b, const char *vm_id, const char *vm_name);

#endif
