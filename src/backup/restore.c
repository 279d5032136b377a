/* restore.c - owns restores: a backup to a new VM (new qcow2 volumes and
 * the backed-up spec), over a stopped VM's disks, or one disk only. Every
 * chunk is checked before anything is written, so a damaged backup is
 * refused and changes nothing (backup/backup.h). */
#include "backup/backup_int.h"

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/nbdserve.h"
#include "instance/config.h"
#include "instance/lifecycle.h"
#include "qemu/tpm.h"
#include "schema/schema.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define NBD_TIMEOUT_MS (24u * 3600 * 1000)

typedef struct rdisk {
    size_t index;    /* in the backup's disk list */
    size_t vm_index; /* in the spec */
    char *ref;       /* the target volume (pool/name) */
    char *file;
    bool qcow2;
    bool encrypted;  /* the backed-up volume was (LUKS): so is a new one */
    bool target_enc; /* the target volume's chain has an encrypted layer */
    kh_index ix;
} rdisk;

typedef struct rjob {
    kh_bop op; /* first */
    char *id;
    char *as;      /* a new VM, or NULL */
    char *target;  /* the existing VM, or NULL */
    bool whole;    /* every disk (no "disk" chosen) */
    char *pool;
    json_t *row;
    kh_chunks *chunks;
    rdisk *disks;
    size_t ndisks, cur;
    size_t created; /* new volumes made so far */
    json_t *damaged;
    char sock[256];
    pid_t nbd_pid;
    bool nbd_running, pushing;
    char *nbd_errtext;
    int push_rc;
    kh_err push_err;
    kh_err failure;
    bool failed;
    /* live-restore */
    bool live;
    uint64_t speed;          /* the stream's limit, bytes/s (0: none) */
    uint64_t t0_ms;          /* the request */
    uint64_t started_ms;     /* the guest's vCPUs run, after t0_ms */
    char *vm_id;
    kh_nbdserve **servers;   /* per rdisk */
    uv_timer_t *timer;
    int phase;               /* LIVE_* */
    size_t detached;         /* NBD nodes deleted */
    bool qmp_pending;
    bool orphan;             /* the daemon stopped with a QMP reply pending */
    void (*made)(struct rjob *r); /* after new_vm (its cluster claim is async) */
} rjob;

enum { LIVE_STARTING, LIVE_STREAMING };

static void live_begin(rjob *r);

static void push_step(rjob *r);

static void rjob_end(rjob *r, json_t *result)
{
    for (size_t i = 0; i < r->ndisks; i++) {
        free(r->disks[i].ref);
        free(r->disks[i].file);
        kh_index_clear(&r->disks[i].ix);
    }
    free(r->disks);
    free(r->id);
    free(r->as);
    free(r->target);
    free(r->pool);
    free(r->nbd_errtext);
    free(r->vm_id);
    json_decref(r->row);
    json_decref(r->damaged);
    kh_chunks_free(r->chunks);
    kh_backup_op_end(&r->op, result, r->failed ? &r->failure : NULL);
}

/* A failed restore to a new VM takes back the volumes it made. */
static void rfail(rjob *r, const kh_err *err)
{
    kh_err_copy(&r->failure, err);
    r->failed = true;
    if (r->as) {
        for (size_t i = 0; i < r->created; i++) {
            char *pool = NULL, *name = NULL;
            kh_err e = KH_ERR_INIT;
            if (kh_volume_ref_parse(r->disks[i].ref, &pool, &name, &e) == 0 &&
                kh_storage_volume_delete(r->op.b->st, pool, name, &e) < 0)
                kh_log(KH_LOG_WARN, "backup.restore", "volume=%s error=\"%s\"",
                       r->disks[i].ref, e.msg);
            free(pool);
            free(name);
        }
    }
    rjob_end(r, NULL);
}

/* ---- the end: a new VM from the spec ---- */

static void vm_made(void *opaque, json_t *vm, const kh_err *cerr)
{
    rjob *r = opaque;
    kh_err err = KH_ERR_INIT;
    if (!vm) {
        rfail(r, cerr);
        return;
    }
    json_decref(vm);
    vm = kh_manager_vm_json(r->op.b->mgr, r->as, &err);
    const char *id = json_string_value(json_object_get(vm, "id"));
    r->vm_id = id ? xstrdup(id) : NULL;
    json_decref(vm);
    if (!r->vm_id) {
        rfail(r, &err);
        return;
    }
    r->made(r);
}

/* The new VM; then made(r) (later: its cluster claim, an etcd txn, is
 * answered off the loop), or rfail. -1 with err when it cannot start. */
static int new_vm(rjob *r, void (*made)(rjob *r), kh_err *err)
{
    json_t *spec = json_deep_copy(json_object_get(r->row, "spec"));
    json_object_set_new(spec, "name", json_string(r->as));
    json_t *disks = json_object_get(spec, "disks");
    for (size_t i = 0; i < r->ndisks; i++) {
        json_t *d = json_array_get(disks, r->disks[i].vm_index);
        if (d)
            json_object_set_new(d, "volume", json_string(r->disks[i].ref));
    }
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(spec, "nics"), i, n) {
        json_object_del(n, "mac"); /* a new VM gets its own */
        json_object_del(n, "ip");
    }
    r->made = made;
    int rc = kh_config_create_async(r->op.b->mgr, spec, vm_made, r, err);
    json_decref(spec);
    return rc;
}

static json_t *result_new(rjob *r)
{
    json_t *result = json_pack("{s:s, s:s}", "backup", r->id, "vm", r->as ? r->as : r->target);
    json_t *dl = json_array();
    for (size_t i = 0; i < r->ndisks; i++)
        json_array_append_new(dl, json_string(r->disks[i].ref));
    json_object_set_new(result, "volumes", dl);
    kh_log(KH_LOG_INFO, "backup.restore", "id=%s vm=%s", r->id, r->as ? r->as : r->target);
    return result;
}

/* A whole restore over the VM the backup is of: its TPM state too. swtpm's
 * files are encrypted with the VM's own key (derived from its id), so a
 * new VM ("as") starts with a TPM of its own, as a new machine would. */
static int put_tpm(rjob *r, kh_err *err)
{
    const char *tc = json_string_value(json_object_get(r->row, "tpm_chunk"));
    if (!tc || r->as || !r->whole)
        return 0;
    json_t *vm = kh_manager_vm_json(r->op.b->mgr, r->target, err);
    if (!vm)
        return -1;
    const char *id = json_string_value(json_object_get(vm, "id"));
    const char *bid = json_string_value(json_object_get(r->row, "vm_id"));
    int rc = 0;
    if (id && bid && strcmp(id, bid) == 0) {
        char *buf = xmalloc(KH_CHUNK_SIZE);
        long n = kh_chunks_get(r->chunks, tc, buf, err);
        json_t *files = n >= 0 ? json_loadb(buf, (size_t)n, 0, NULL) : NULL;
        char *vstate = xasprintf("%s/vms/%s", r->op.b->state_dir, id);
        if (n >= 0 && !files)
            kh_err_set(err, KH_E_CONFLICT, "backup %s: its TPM state is not readable", r->id);
        if (!files || kh_tpm_state_put(vstate, files, err) < 0)
            rc = -1;
        else
            kh_log(KH_LOG_INFO, "backup.restore", "id=%s vm=%s tpm=restored", r->id, r->target);
        free(vstate);
        json_decref(files);
        free(buf);
    }
    json_decref(vm);
    return rc;
}

static void vm_ready(rjob *r)
{
    kh_err err = KH_ERR_INIT;
    if (put_tpm(r, &err) < 0) {
        rfail(r, &err);
        return;
    }
    rjob_end(r, result_new(r));
}

static void make_vm(rjob *r)
{
    kh_err err = KH_ERR_INIT;
    if (!r->as)
        vm_ready(r);
    else if (new_vm(r, vm_ready, &err) < 0)
        rfail(r, &err);
}

/* ---- live-restore: the VM runs on the backup while block-stream fills
 * its disks ---- */

static void live_timer_closed(uv_handle_t *h)
{
    free(h);
}

/* The servers of a failed live-restore whose VM still reads from them:
 * they serve until the VM lets go (it stops), then go. The store stays
 * open for them. */
typedef struct kh_linger {
    struct kh_linger *next;
    kh_nbdserve **servers;
    size_t n;
    kh_chunks *chunks;
} kh_linger;

static void linger_free(kh_linger *l)
{
    for (size_t i = 0; i < l->n; i++)
        kh_nbdserve_free(l->servers[i]);
    free(l->servers);
    kh_chunks_free(l->chunks);
    free(l);
}

static void linger_tick(uv_timer_t *t)
{
    kh_backups *b = t->data;
    for (kh_linger **pp = &b->lingering; *pp;) {
        kh_linger *l = *pp;
        bool all = true;
        for (size_t i = 0; i < l->n; i++)
            all &= !l->servers[i] || kh_nbdserve_done(l->servers[i]);
        if (all) {
            *pp = l->next;
            linger_free(l);
        } else {
            pp = &l->next;
        }
    }
    if (!b->lingering)
        uv_timer_stop(t);
}

void kh_restore_linger_stop(kh_backups *b)
{
    while (b->lingering) {
        kh_linger *l = b->lingering;
        b->lingering = l->next;
        linger_free(l);
    }
    if (b->linger_timer) {
        uv_timer_stop(b->linger_timer);
        uv_close((uv_handle_t *)b->linger_timer, live_timer_closed);
        b->linger_timer = NULL;
    }
}

/* A failure while the VM may still run on the backup: its servers linger. */
static void linger(rjob *r)
{
    kh_backups *b = r->op.b;
    kh_linger *l = xcalloc(1, sizeof(*l));
    l->n = r->ndisks;
    l->servers = r->servers;
    r->servers = NULL;
    l->chunks = r->chunks;
    r->chunks = NULL;
    l->next = b->lingering;
    b->lingering = l;
    if (!b->linger_timer) {
        b->linger_timer = xcalloc(1, sizeof(*b->linger_timer));
        uv_timer_init(b->loop, b->linger_timer);
        b->linger_timer->data = b;
    }
    uv_timer_start(b->linger_timer, linger_tick, 1000, 1000);
}

/* The end of a live-restore: every server joined (the stream is over, or
 * the VM is gone), or, after a failure, left serving the running VM; then
 * the task ends. */
static void live_end(rjob *r, const kh_err *err)
{
    if (r->timer) {
        uv_timer_stop(r->timer);
        uv_close((uv_handle_t *)r->timer, live_timer_closed);
        r->timer = NULL;
    }
    uint64_t served = 0;
    for (size_t i = 0; r->servers && i < r->ndisks; i++)
        if (r->servers[i])
            served += kh_nbdserve_bytes(r->servers[i]);
    if (err && r->servers) {
        linger(r);
    } else {
        for (size_t i = 0; r->servers && i < r->ndisks; i++)
            kh_nbdserve_free(r->servers[i]);
        free(r->servers);
        r->servers = NULL;
    }
    if (err) {
        kh_err_copy(&r->failure, err);
        r->failed = true;
        rjob_end(r, NULL);
        return;
    }
    json_t *result = result_new(r);
    json_object_set_new(result, "live", json_true());
    json_object_set_new(result, "started_ms", json_integer((json_int_t)r->started_ms));
    json_object_set_new(result, "streamed_ms",
                        json_integer((json_int_t)(kh_now_ms() - r->t0_ms)));
    json_object_set_new(result, "bytes_read", json_integer((json_int_t)served));
    rjob_end(r, result);
}

static void live_fail(rjob *r, const char *what, const kh_err *err)
{
    kh_err e = KH_ERR_INIT;
    kh_err_set(&e, err->code == KH_E_QEMU ? KH_E_CONFLICT : err->code,
               "live-restore of backup %s into vm %s: %s: %s", r->id, r->as, what, err->msg);
    live_end(r, &e);
}

static void live_tick(uv_timer_t *t);

static void live_again(rjob *r, unsigned ms)
{
    uv_timer_start(r->timer, live_tick, ms, 0);
}

/* A QMP step of the live-restore answered: on to the next tick, or fail
 * naming the step. */
static void step_done(rjob *r, const char *what, const kh_err *err)
{
    if (r->orphan)
        return; /* the daemon is gone (kh_restore_stop_live) */
    r->qmp_pending = false;
    if (err)
        live_fail(r, what, err);
    else
        live_again(r, 0);
}

static void stream_started(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    step_done(opaque, "block-stream", err);
}

static void detached(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    step_done(opaque, "removing the NBD backing", err);
}

static int live_qmp(rjob *r, const char *cmd, json_t *args, kh_qmp_reply_cb cb)
{
    kh_err err = KH_ERR_INIT;
    r->qmp_pending = true;
    if (kh_manager_qmp(r->op.b->mgr, r->vm_id, cmd, args, cb, r, &err) < 0) {
        r->qmp_pending = false;
        live_fail(r, cmd, &err);
        return -1;
    }
    return 0;
}

/* query-jobs: progress; a concluded stream is dismissed, then its NBD
 * node deleted (QEMU disconnects, its server ends). */
static void jobs_polled(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    rjob *r = opaque;
    if (r->orphan)
        return; /* the daemon is gone (kh_restore_stop_live) */
    r->qmp_pending = false;
    if (err) {
        live_fail(r, "the VM stopped before the stream ended (its disks are incomplete: "
                     "delete it and restore again)", err);
        return;
    }
    uint64_t done = 0;
    size_t running = 0;
    size_t i;
    json_t *jb;
    json_array_foreach(ret, i, jb) {
        const char *id = json_string_value(json_object_get(jb, "id"));
        if (!id || strncmp(id, "kh-lr-", 6) != 0)
            continue;
        const char *status = json_string_value(json_object_get(jb, "status"));
        done += (uint64_t)json_integer_value(json_object_get(jb, "current-progress"));
        if (status && strcmp(status, "concluded") == 0) {
            const char *e = json_string_value(json_object_get(jb, "error"));
            if (e) {
                kh_err ee = KH_ERR_INIT;
                kh_err_set(&ee, KH_E_CONFLICT, "%s", e);
                live_fail(r, "block-stream failed; the VM runs on the backup until it stops, "
                             "its disks are incomplete", &ee);
                return;
            }
            live_qmp(r, "job-dismiss", json_pack("{s:s}", "id", id), detached);
            return;
        }
        running++;
    }
    if (done > r->op.total)
        done = r->op.total;
    atomic_store(&r->op.stats.done, done);
    char msg[160];
    snprintf(msg, sizeof(msg), "vm %s runs on the backup; streaming: %llu of %llu MiB", r->as,
             (unsigned long long)(done >> 20), (unsigned long long)(r->op.total >> 20));
    kh_task_progress(r->op.task, 20 + (r->op.total ? (int)(75.0 * (double)done /
                                                         (double)r->op.total) : 0), msg);
    if (running == 0) {
        /* every stream is over (the disks no longer name their backing):
         * the NBD nodes go, QEMU disconnects */
        if (r->detached < r->ndisks) {
            char node[32];
            snprintf(node, sizeof(node), "disk%zu-lr", r->disks[r->detached++].vm_index);
            live_qmp(r, "blockdev-del", json_pack("{s:s}", "node-name", node), detached);
            return;
        }
        live_end(r, NULL);
        return;
    }
    live_again(r, 500);
}

static void live_tick(uv_timer_t *t)
{
    rjob *r = t->data;
    if (r->qmp_pending)
        return;
    kh_err err = KH_ERR_INIT;
    if (r->phase == LIVE_STARTING) {
        json_t *vm = kh_manager_vm_json(r->op.b->mgr, r->as, &err);
        const char *state = json_string_value(json_object_get(vm, "state"));
        if (!state) {
            json_decref(vm);
            live_fail(r, "the VM", &err);
            return;
        }
        if (strcmp(state, "running") != 0) {
            bool stopped = strcmp(state, "stopped") == 0 || strcmp(state, "crashed") == 0;
            json_decref(vm);
            if (stopped && kh_now_ms() - r->t0_ms > 2000) {
                kh_err_set(&err, KH_E_CONFLICT, "it did not start (see its log)");
                kh_manager_nbd_backing(r->op.b->mgr, r->as, NULL, 0, NULL);
                live_fail(r, "starting the VM", &err);
                return;
            }
            live_again(r, 20);
            return;
        }
        json_decref(vm);
        r->started_ms = kh_now_ms() - r->t0_ms;
        kh_log(KH_LOG_INFO, "backup.live_restore", "id=%s vm=%s started_ms=%llu", r->id, r->as,
               (unsigned long long)r->started_ms);
        r->phase = LIVE_STREAMING;
        r->cur = 0;
    }
    if (r->phase == LIVE_STREAMING && r->cur < r->ndisks) {
        rdisk *d = &r->disks[r->cur++];
        char job[32], node[32];
        snprintf(job, sizeof(job), "kh-lr-%zu", d->vm_index);
        snprintf(node, sizeof(node), "disk%d",
                 kh_manager_disk_node(r->op.b->mgr, r->vm_id, d->vm_index));
        json_t *args = json_pack("{s:s, s:s, s:b}", "job-id", job, "device", node,
                                 "auto-dismiss", 0);
        if (r->speed)
            json_object_set_new(args, "speed", json_integer((json_int_t)r->speed));
        live_qmp(r, "block-stream", args, stream_started);
        return;
    }
    live_qmp(r, "query-jobs", NULL, jobs_polled);
}

/* The daemon stops: a live-restore under way fails (its VM runs on; the
 * NBD servers end with the daemon, see backup.md). With a QMP reply
 * pending, the job is left to that reply, which returns at once (the rjob
 * is not freed: the daemon is ending). */
void kh_restore_stop_live(kh_backups *b)
{
    kh_err err = KH_ERR_INIT;
    kh_err_set(&err, KH_E_UNAVAILABLE, "the daemon stopped");
    for (kh_bop *o = b->ops, *next; o; o = next) {
        next = o->link;
        rjob *r = (rjob *)o;
        if (strcmp(o->kind, "backup.restore") != 0 || !r->live || !r->timer)
            continue;
        if (!r->qmp_pending) {
            live_end(r, &err);
            continue;
        }
        r->orphan = true;
        uv_timer_stop(r->timer);
        uv_close((uv_handle_t *)r->timer, live_timer_closed);
        r->timer = NULL;
        for (size_t i = 0; i < r->ndisks; i++)
            kh_nbdserve_free(r->servers[i]);
        free(r->servers);
        r->servers = NULL;
        for (kh_bop **pp = &b->ops; *pp; pp = &(*pp)->link)
            if (*pp == o) {
                *pp = o->link;
                break;
            }
        uv_timer_stop(o->timer);
        uv_close((uv_handle_t *)o->timer, live_timer_closed);
        kh_task_fail(o->task, &err);
    }
}

/* The volumes are there (empty qcow2 images of the disks' sizes): the VM,
 * one NBD server per disk over a socket pair, the start. */
static void live_made(rjob *r);

static void live_begin(rjob *r)
{
    kh_err err = KH_ERR_INIT;
    if (new_vm(r, live_made, &err) < 0)
        rfail(r, &err);
}

static void live_made(rjob *r)
{
    kh_err err = KH_ERR_INIT;
    r->created = 0; /* the volumes are the VM's now */
    free(r->op.vm_id);
    r->op.vm_id = xstrdup(r->vm_id); /* no backup of it while it streams */
    uv_timer_stop(r->op.timer);      /* the progress is the stream's */
    r->servers = xcalloc(r->ndisks, sizeof(kh_nbdserve *));
    int fds[KH_VM_DISKS_MAX];
    for (size_t i = 0; i < KH_VM_DISKS_MAX; i++)
        fds[i] = -1;
    for (size_t i = 0; i < r->ndisks; i++) {
        int sv[2];
        if (r->disks[i].vm_index >= KH_VM_DISKS_MAX ||
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            kh_err_errno(&err, KH_E_INTERNAL, errno, "socketpair");
            goto fail;
        }
        fds[r->disks[i].vm_index] = sv[1];
        r->servers[i] = kh_nbdserve_start(r->chunks, &r->disks[i].ix, sv[0], &err);
        if (!r->servers[i])
            goto fail;
    }
    int rc = kh_manager_nbd_backing(r->op.b->mgr, r->as, fds, KH_VM_DISKS_MAX, &err);
    for (size_t i = 0; i < KH_VM_DISKS_MAX; i++)
        fds[i] = -1;
    if (rc < 0)
        goto fail;
    kh_task *t = kh_lifecycle_action(r->op.b->mgr, r->as, KH_ACTION_START, NULL, &err);
    if (!t) {
        kh_manager_nbd_backing(r->op.b->mgr, r->as, NULL, 0, NULL);
        goto fail;
    }
    kh_task_progress(r->op.task, 10, "starting the VM on the backup");
    r->timer = xcalloc(1, sizeof(*r->timer));
    uv_timer_init(r->op.b->loop, r->timer);
    r->timer->data = r;
    r->phase = LIVE_STARTING;
    live_again(r, 0);
    return;
fail:
    for (size_t i = 0; i < KH_VM_DISKS_MAX; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    live_fail(r, "starting", &err);
}

/* ---- writing each disk through qemu-nbd ---- */

static void push_work(void *opaque)
{
    rjob *r = opaque;
    rdisk *d = &r->disks[r->cur];
    r->push_rc = kh_nbd_push(r->chunks, r->sock, &d->ix, r->as != NULL, 20000, &r->op.stats,
                             &r->push_err);
}

static void disk_written(rjob *r)
{
    if (r->nbd_running || r->pushing)
        return;
    unlink(r->sock);
    if (r->push_rc < 0) {
        if (r->nbd_errtext && *r->nbd_errtext)
            kh_err_prefix(&r->push_err, "qemu-nbd: %s", r->nbd_errtext);
        rfail(r, &r->push_err);
        return;
    }
    r->cur++;
    push_step(r);
}

static void push_done(void *opaque)
{
    rjob *r = opaque;
    r->pushing = false;
    if (r->push_rc < 0 && r->nbd_running)
        kill(r->nbd_pid, SIGTERM);
    disk_written(r);
}

static void nbd_exited(const kh_qimg_result *res, void *opaque)
{
    rjob *r = opaque;
    r->nbd_running = false;
    free(r->nbd_errtext);
    r->nbd_errtext = xstrdup(res->errtext ? res->errtext : "");
    if (res->status != 0 && r->pushing)
        atomic_store(&r->op.stats.cancel, true);
    disk_written(r);
}

static void push_step(rjob *r)
{
    if (r->cur == r->ndisks) {
        make_vm(r);
        return;
    }
    rdisk *d = &r->disks[r->cur];
    kh_err err = KH_ERR_INIT;
    kh_volume_chain c;
    if (kh_storage_resolve(r->op.b->st, d->ref, &c, &err) < 0) {
        rfail(r, &err);
        return;
    }
    free(d->file);
    d->file = xstrdup(c.layer[0].path);
    d->qcow2 = c.layer[0].format == KH_DISK_QCOW2;
    d->target_enc = false;
    for (size_t k = 0; k < c.n; k++)
        d->target_enc |= c.layer[k].encrypted;
    kh_volume_chain_clear(&c);
    if (kh_fmt(r->sock, sizeof(r->sock), "%s/r%.8s-%zu.sock", r->op.b->tmp_dir, r->id, r->cur) < 0) {
        kh_err_set(&err, KH_E_INTERNAL, "the state directory's path is too long");
        rfail(r, &err);
        return;
    }
    unlink(r->sock);
    kh_strv *a = kh_strv_new();
    kh_strv_add(a, "/usr/bin/qemu-nbd");
    kh_strv_add(a, "--socket");
    kh_strv_add(a, r->sock);
    kh_strv_add(a, "--discard=unmap");
    kh_strv_add(a, "--detect-zeroes=unmap");
    int fds[KH_QIMG_FDS_MAX];
    size_t nfds = 0;
    r->nbd_pid = -1;
    if (d->target_enc) {
        /* an encrypted volume (a new one has a key of its own, an existing
         * one keeps its): written through its key, the data encrypted on
         * disk as it lands */
        char *img = kh_backup_image_json(r->op.b, d->ref, a, fds, &nfds, KH_QIMG_FDS_MAX, &err);
        if (img)
            kh_strv_add_steal(a, img);
    } else {
        kh_strv_add(a, d->qcow2 ? "--format=qcow2" : "--format=raw");
        kh_strv_add(a, d->file);
    }
    if (!kh_err_isset(&err))
        r->nbd_pid = kh_qimg_run_fds(kh_storage_qimg(r->op.b->st), a->v, fds, nfds,
                                     NBD_TIMEOUT_MS, NULL, nbd_exited, r, &err);
    for (size_t k = 0; k < nfds; k++)
        close(fds[k]);
    kh_strv_free(a);
    if (r->nbd_pid < 0) {
        rfail(r, &err);
        return;
    }
    r->nbd_running = true;
    r->pushing = true;
    kh_backup_work(r->op.b, push_work, push_done, r);
}

/* ---- new volumes (restore as a new VM) ---- */

static void create_step(rjob *r);

static void volume_made(json_t *result, const kh_err *err, void *opaque)
{
    rjob *r = opaque;
    if (!result) {
        rfail(r, err);
        return;
    }
    json_decref(result);
    r->created++;
    create_step(r);
}

static void create_step(rjob *r)
{
    if (r->created == r->ndisks) {
        if (r->live)
            live_begin(r);
        else
            push_step(r);
        return;
    }
    rdisk *d = &r->disks[r->created];
    char *pool = NULL, *name = NULL;
    kh_err err = KH_ERR_INIT;
    kh_volume_ref_parse(d->ref, &pool, &name, &err);
    json_t *body = json_pack("{s:s, s:s, s:I, s:b}", "name", name, "format", "qcow2", "size",
                             (json_int_t)d->ix.size, "encrypt", d->encrypted);
    int rc = kh_storage_volume_create(r->op.b->st, pool, body, volume_made, r, &err);
    json_decref(body);
    free(pool);
    free(name);
    if (rc < 0)
        rfail(r, &err);
}

/* 1 when volume ref has an encrypted layer, 0 when not, -1 with err. */
static int encrypted_target(kh_backups *b, const char *ref, kh_err *err)
{
    kh_volume_chain c;
    if (kh_storage_resolve(b->st, ref, &c, err) < 0)
        return -1;
    bool enc = false;
    for (size_t k = 0; k < c.n; k++)
        enc |= c.layer[k].encrypted;
    kh_volume_chain_clear(&c);
    return enc;
}

/* ---- first: every chunk checked ---- */

static void check_work(void *opaque)
{
    rjob *r = opaque;
    json_t *seen = json_object();
    kh_err e = KH_ERR_INIT;
    for (size_t i = 0; i < r->ndisks; i++)
        if (kh_nbd_check(r->chunks, &r->disks[i].ix, r->damaged, seen, &r->op.stats, &e) < 0)
            break;
    json_decref(seen);
}

static void check_done(void *opaque)
{
    rjob *r = opaque;
    if (json_array_size(r->damaged) > 0) {
        kh_err err = KH_ERR_INIT;
        kh_err_set(&err, KH_E_CONFLICT, "backup %s is damaged: chunk %s (and %zu more): "
                   "nothing was restored", r->id,
                   json_string_value(json_array_get(r->damaged, 0)),
                   json_array_size(r->damaged) - 1);
        rfail(r, &err);
        return;
    }
    atomic_store(&r->op.stats.done, 0);
    kh_task_progress(r->op.task, 40, "writing the disks");
    if (r->as)
        create_step(r);
    else
        push_step(r);
}

kh_task *kh_backup_restore(kh_backups *b, const char *id, const json_t *body, kh_err *err)
{
    if (kh_schema_check("BackupRestore", body, "", err) < 0)
        return NULL;
    const char *as = json_string_value(json_object_get(body, "as"));
    const char *target = json_string_value(json_object_get(body, "vm"));
    const char *pool = json_string_value(json_object_get(body, "pool"));
    json_t *dsel = json_object_get(body, "disk");
    if (!as == !target) {
        kh_err_set(err, KH_E_INVALID, "give either as (a new VM) or vm (an existing stopped VM)");
        return NULL;
    }
    bool live = json_is_true(json_object_get(body, "live"));
    json_t *speed = json_object_get(body, "speed");
    if ((live || speed) && !as) {
        kh_err_set(err, KH_E_INVALID, "live, speed: only with as (live-restore to a new VM)");
        return NULL;
    }
    if (speed && !live) {
        kh_err_set(err, KH_E_INVALID, "speed: only with live");
        return NULL;
    }
    if (dsel && as) {
        kh_err_set(err, KH_E_INVALID, "disk: only with vm (restore one disk of an existing VM)");
        return NULL;
    }
    if (as && kh_check_name(as, "vm name", err) < 0)
        return NULL;
    json_t *row = kh_backup_row(b, id, err);
    if (!row)
        return NULL;
    json_t *tvm = NULL;
    const char *tvm_id = NULL;
    if (as) {
        json_t *have = kh_manager_vm_json(b->mgr, as, NULL);
        if (have) {
            json_decref(have);
            kh_err_set(err, KH_E_CONFLICT, "a vm named %s exists", as);
            json_decref(row);
            return NULL;
        }
    } else {
        tvm = kh_manager_vm_json(b->mgr, target, err);
        if (!tvm) {
            json_decref(row);
            return NULL;
        }
        const char *state = json_string_value(json_object_get(tvm, "state"));
        if (!state || strcmp(state, "stopped") != 0 || !json_is_null(json_object_get(tvm, "pid"))) {
            kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: restore over a VM needs it stopped",
                       target, state ? state : "busy");
            goto fail0;
        }
        tvm_id = json_string_value(json_object_get(tvm, "id"));
    }
    const char *store = json_string_value(json_object_get(row, "store"));
    kh_chunks *chunks = kh_backup_store_open(b, store, err);
    if (!chunks)
        goto fail0;
    json_t *bdisks = json_object_get(row, "disks");
    size_t nb = json_array_size(bdisks);
    rdisk *disks = xcalloc(nb + 1, sizeof(*disks));
    size_t nd = 0;
    for (size_t i = 0; i < nb; i++) {
        json_t *bd = json_array_get(bdisks, i);
        size_t vi = (size_t)json_integer_value(json_object_get(bd, "index"));
        if (dsel && (json_int_t)vi != json_integer_value(dsel))
            continue;
        rdisk *d = &disks[nd];
        d->index = i;
        d->vm_index = vi;
        d->encrypted = json_is_true(json_object_get(bd, "encrypted"));
        if (as) {
            d->ref = xasprintf("%s/%s-disk%zu", pool ? pool : "default", as, vi);
        } else {
            const char *ref = json_string_value(json_object_get(
                json_array_get(json_object_get(tvm, "disks"), vi), "volume"));
            if (!ref) {
                kh_err_set(err, KH_E_CONFLICT, "vm %s has no volume at disk %zu", target, vi);
                nd++;
                goto fail1;
            }
            d->ref = xstrdup(ref);
        }
        nd++;
        if (!as && d->encrypted && encrypted_target(b, d->ref, err) != 1) {
            /* never the plaintext of an encrypted volume into one that is not */
            if (!kh_err_isset(err))
                kh_err_set(err, KH_E_CONFLICT, "disk %zu of backup %s is of an encrypted "
                           "volume; vm %s's volume %s is not encrypted: restore it as a new "
                           "VM (as), whose volume is encrypted", vi, id, target, d->ref);
            goto fail1;
        }
        if (kh_backup_index_read(chunks, id, i, &d->ix, err) < 0)
            goto fail1;
    }
    if (nd == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "backup %s has no disk %lld", id,
                   (long long)json_integer_value(dsel));
        goto fail1;
    }
    kh_bop *op = kh_backup_op_begin(b, sizeof(rjob), "backup.restore", as ? as : target, tvm_id,
                                    store, false, err);
    if (!op)
        goto fail1;
    rjob *r = (rjob *)op;
    r->id = xstrdup(id);
    r->as = as ? xstrdup(as) : NULL;
    r->target = target ? xstrdup(target) : NULL;
    r->whole = !dsel;
    r->pool = xstrdup(pool ? pool : "default");
    r->row = row;
    r->chunks = chunks;
    r->disks = disks;
    r->ndisks = nd;
    r->damaged = json_array();
    r->live = live;
    r->speed = (uint64_t)json_integer_value(speed);
    r->t0_ms = kh_now_ms();
    for (size_t i = 0; i < nd; i++)
        r->op.total += disks[i].ix.size;
    json_decref(tvm);
    if (live) {
        /* no check first: each chunk is checked when it is read (a damaged
         * one is an I/O error for the guest and fails the stream) */
        kh_task_progress(r->op.task, 1, "making the volumes");
        kh_task *task = r->op.task;
        create_step(r);
        return task;
    }
    kh_task_progress(r->op.task, 1, "checking every chunk");
    kh_task *task = r->op.task;
    kh_backup_work(b, check_work, check_done, r);
    return task;
fail1:
    for (size_t i = 0; i < nd; i++) {
        free(disks[i].ref);
        kh_index_clear(&disks[i].ix);
    }
    free(disks);
    kh_chunks_free(chunks);
fail0:
    json_decref(tvm);
    json_decref(row);
    return NULL;
}
