/* restore.c - owns restores: a backup to a new VM (new qcow2 volumes and
 * the backed-up spec), over a stopped VM's disks, or one disk only. Every
 * chunk is checked before anything is written, so a damaged backup is
 * refused and changes nothing (backup/backup.h). */
#include "backup/backup_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "instance/config.h"
#include "schema/schema.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#define NBD_TIMEOUT_MS (24u * 3600 * 1000)

typedef struct rdisk {
    size_t index;    /* in the backup's disk list */
    size_t vm_index; /* in the spec */
    char *ref;       /* the target volume (pool/name) */
    char *file;
    bool qcow2;
    kh_index ix;
} rdisk;

typedef struct rjob {
    kh_bop op; /* first */
    char *id;
    char *as;      /* a new VM, or NULL */
    char *target;  /* the existing VM, or NULL */
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
} rjob;

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

static void make_vm(rjob *r)
{
    kh_err err = KH_ERR_INIT;
    json_t *result = NULL;
    if (r->as) {
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
        json_t *vm = kh_config_create(r->op.b->mgr, spec, &err);
        json_decref(spec);
        if (!vm) {
            rfail(r, &err);
            return;
        }
        json_decref(vm);
    }
    result = json_pack("{s:s, s:s}", "backup", r->id, "vm", r->as ? r->as : r->target);
    json_t *dl = json_array();
    for (size_t i = 0; i < r->ndisks; i++)
        json_array_append_new(dl, json_string(r->disks[i].ref));
    json_object_set_new(result, "volumes", dl);
    kh_log(KH_LOG_INFO, "backup.restore", "id=%s vm=%s", r->id, r->as ? r->as : r->target);
    rjob_end(r, result);
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
    kh_volume_chain_clear(&c);
    if (kh_fmt(r->sock, sizeof(r->sock), "%s/r%.8s-%zu.sock", r->op.b->tmp_dir, r->id, r->cur) < 0) {
        kh_err_set(&err, KH_E_INTERNAL, "the state directory's path is too long");
        rfail(r, &err);
        return;
    }
    unlink(r->sock);
    char *argv[] = { (char *)(uintptr_t)"/usr/bin/qemu-nbd",
                     (char *)(uintptr_t)(d->qcow2 ? "--format=qcow2" : "--format=raw"),
                     (char *)(uintptr_t)"--socket", r->sock, (char *)(uintptr_t)"--discard=unmap",
                     (char *)(uintptr_t)"--detect-zeroes=unmap", d->file, NULL };
    r->nbd_pid = kh_qimg_run(kh_storage_qimg(r->op.b->st), argv, NBD_TIMEOUT_MS, NULL,
                             nbd_exited, r, &err);
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
        push_step(r);
        return;
    }
    rdisk *d = &r->disks[r->created];
    char *pool = NULL, *name = NULL;
    kh_err err = KH_ERR_INIT;
    kh_volume_ref_parse(d->ref, &pool, &name, &err);
    json_t *body = json_pack("{s:s, s:s, s:I}", "name", name, "format", "qcow2", "size",
                             (json_int_t)d->ix.size);
    int rc = kh_storage_volume_create(r->op.b->st, pool, body, volume_made, r, &err);
    json_decref(body);
    free(pool);
    free(name);
    if (rc < 0)
        rfail(r, &err);
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
    r->pool = xstrdup(pool ? pool : "default");
    r->row = row;
    r->chunks = chunks;
    r->disks = disks;
    r->ndisks = nd;
    r->damaged = json_array();
    for (size_t i = 0; i < nd; i++)
        r->op.total += disks[i].ix.size;
    json_decref(tvm);
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
