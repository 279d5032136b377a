/* job.c - owns backup jobs: the point in time, the dirty bitmaps of each
 * disk, the NBD export (qemu-nbd for a stopped VM), the pull into the
 * chunk store on the thread pool, and the commit (indexes renamed into
 * place, then the row; old bitmaps removed only after it) (backup/backup.h). */
#include "backup/backup_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemu/tpm.h"
#include "schema/schema.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define BITMAP_PREFIX KH_BACKUP_BITMAP_PREFIX
#define QIMG_TIMEOUT_MS (5u * 60 * 1000)
#define NBD_TIMEOUT_MS (24u * 3600 * 1000)
/* the pull reads a stopped VM's disk over this many connections at once */
#define PULL_CONNECTIONS 3
#define PULL_CONNECTIONS_TEXT "3"

static const char *const spec_keys[] = { "name", "description", "vcpus", "max_vcpus",
                                         "memory_mib", "machine", "boot", "disks", "nics",
                                         "serial", "graphics", "hugepages", "limits",
                                         "firmware", "secure_boot", "tpm", "cloud_init" };

static void disk_step(kh_job *j);
static unsigned job_seq;
static void finish(kh_job *j);
static void cleanup_step(kh_job *j);

static void job_free_parts(kh_job *j)
{
    for (size_t i = 0; i < j->ndisks; i++) {
        free(j->disks[i].ref);
        free(j->disks[i].file);
        free(j->disks[i].base_bitmap);
        json_decref(j->disks[i].stale);
        kh_index_clear(&j->disks[i].ix);
        if (j->disks[i].have_base)
            kh_index_clear(&j->disks[i].base);
    }
    free(j->disks);
    if (j->have_base_ix)
        kh_index_clear(&j->base_ix);
    free(j->vm);
    free(j->vm_id);
    free(j->store);
    free(j->nbd_errtext);
    kh_chunks_free(j->chunks);
    json_decref(j->spec);
    json_decref(j->tpm);
    json_decref(j->base);
    json_decref(j->nodes);
}

/* A debug line per step of a job, with the milliseconds since it began. */
static void step_log(const kh_job *j, const char *step)
{
    kh_log(KH_LOG_DEBUG, "backup.step", "vm=%s id=%.8s step=%s ms=%llu", j->vm, j->id, step,
           (unsigned long long)(kh_now_ms() - j->op.t0_ms));
}

static void job_end(kh_job *j, json_t *result)
{
    step_log(j, "end");
    /* a daemon stopping leaves the mark: the next one's janitor cleans up */
    if (j->live && j->nodes && !j->op.b->closing)
        kh_live_unmark(j);
    job_free_parts(j);
    kh_backup_op_end(&j->op, result, j->failed ? &j->failure : NULL);
}

static void fail(kh_job *j, const kh_err *err)
{
    if (!j->failed) {
        kh_err_copy(&j->failure, err);
        j->failed = true;
    }
    if (j->op.b->closing) {
        /* no QMP or qemu-img any more: the new bitmap stays, unnamed by any
         * row, and the next backup removes it as stale (as after a kill) */
        job_end(j, NULL);
        return;
    }
    j->cleanup_disk = 0;
    j->cleanup_item = 0;
    cleanup_step(j);
}

static char *qimg_bin(kh_job *j)
{
    return (char *)(uintptr_t)kh_qimg_binary(kh_storage_qimg(j->op.b->st));
}

/* qemu-img or qemu-nbd on disk d: pre (argv[0] and options), the image,
 * then post. An encrypted volume is described as JSON with its layers'
 * secrets on inherited fds (kh_backup_image_json): it opens with its key,
 * which never reaches an argv or a file. */
static pid_t run_on_image(kh_job *j, const jdisk *d, const char *const *pre,
                          const char *const *post, unsigned timeout_ms, kh_qimg_done_cb done,
                          kh_err *err)
{
    kh_strv *a = kh_strv_new();
    for (size_t i = 0; pre[i]; i++)
        kh_strv_add(a, pre[i]);
    int fds[KH_QIMG_FDS_MAX];
    size_t nfds = 0;
    pid_t pid = -1;
    if (d->encrypted) {
        char *img = kh_backup_image_json(j->op.b, d->ref, a, fds, &nfds, KH_QIMG_FDS_MAX, err);
        if (!img)
            goto out;
        kh_strv_add_steal(a, img);
    } else {
        kh_strv_add(a, d->file);
    }
    for (size_t i = 0; post[i]; i++)
        kh_strv_add(a, post[i]);
    pid = kh_qimg_run_fds(kh_storage_qimg(j->op.b->st), a->v, fds, nfds, timeout_ms, NULL, done,
                          j, err);
out:
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    kh_strv_free(a);
    return pid;
}

/* ---- bitmaps: cleanup after the end ----
 * After a commit: the base bitmap and stale ones go (the new one stays).
 * After a failure: the new one goes (the base stays, so the next backup is
 * incremental from the last committed one). */

static void cleanup_done(const kh_qimg_result *r, void *opaque)
{
    kh_job *j = opaque;
    if (r->status != 0)
        kh_log(KH_LOG_WARN, "backup.bitmap", "vm=%s file=%s error=\"%s\"", j->vm,
               j->disks[j->cleanup_disk].file, r->errtext ? r->errtext : "");
    j->cleanup_item++;
    cleanup_step(j);
}

static void cleanup_live_done(kh_job *j, const kh_err *err)
{
    if (err)
        kh_log(KH_LOG_WARN, "backup.bitmap", "vm=%s disk=%zu error=\"%s\"", j->vm,
               j->disks[j->cleanup_disk].index, err->msg);
    j->cleanup_item++;
    cleanup_step(j);
}

static void cleanup_step(kh_job *j)
{
    while (j->cleanup_disk < j->ndisks) {
        jdisk *d = &j->disks[j->cleanup_disk];
        const char *name = NULL;
        if (d->qcow2 && d->added) {
            if (j->failed) {
                if (j->cleanup_item == 0)
                    name = j->bitmap;
            } else if (j->cleanup_item < json_array_size(d->stale)) {
                name = json_string_value(json_array_get(d->stale, j->cleanup_item));
            }
        }
        if (!name) {
            j->cleanup_disk++;
            j->cleanup_item = 0;
            continue;
        }
        if (j->live) {
            kh_live_bitmap_remove(j, j->cleanup_disk, name, cleanup_live_done);
            return;
        }
        const char *pre[] = { qimg_bin(j), "bitmap", "--remove", NULL };
        const char *post[] = { name, NULL };
        kh_err e = KH_ERR_INIT;
        if (run_on_image(j, d, pre, post, QIMG_TIMEOUT_MS, cleanup_done, &e) >= 0)
            return;
        kh_log(KH_LOG_WARN, "backup.bitmap", "vm=%s file=%s error=\"%s\"", j->vm, d->file, e.msg);
        j->cleanup_item++;
    }
    if (j->failed) {
        job_end(j, NULL);
        return;
    }
    finish(j);
}

/* ---- the commit ---- */

static int write_json(const char *path, json_t *j, kh_err *err)
{
    char *text = json_dumps(j, JSON_COMPACT);
    int rc = kh_fs_write_atomic(path, text, strlen(text), 0600, err);
    free(text);
    return rc;
}

static json_t *record_json(kh_job *j)
{
    json_t *disks = json_array();
    uint64_t size = 0;
    size_t chunks = 0;
    for (size_t i = 0; i < j->ndisks; i++) {
        jdisk *d = &j->disks[i];
        json_array_append_new(disks, json_pack("{s:I, s:s, s:s, s:I, s:s?, s:b, s:b}", "index",
                                               (json_int_t)d->index, "volume", d->ref,
                                               "volume_id", d->volume_id, "size",
                                               (json_int_t)d->ix.size, "bitmap",
                                               d->qcow2 ? j->bitmap : NULL, "incremental",
                                               d->base_bitmap != NULL, "encrypted",
                                               d->encrypted));
        size += d->ix.size;
        for (size_t k = 0; k < d->ix.n; k++)
            chunks += d->ix.digest[k][0] != 0;
    }
    kh_nbd_stats *st = &j->op.stats;
    char t[32];
    kh_time_format(j->time, t);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:f, s:o, s:O, s:I, s:I, s:I, s:I, "
                     "s:I, s:I, s:I, s:I, s:b}",
                     "id", j->id, "store", j->store, "vm", j->vm, "vm_id", j->vm_id, "kind",
                     j->base && j->disks[0].base_bitmap ? "incremental" : "full", "base",
                     j->base ? json_string(json_string_value(json_object_get(j->base, "id")))
                             : json_null(),
                     "created_at", t, "time", j->time, "disks", disks, "spec", j->spec,
                     "size", (json_int_t)size, "chunks", (json_int_t)chunks, "bytes_read",
                     (json_int_t)atomic_load(&st->read), "bytes_written",
                     (json_int_t)atomic_load(&st->written), "bytes_dedup",
                     (json_int_t)atomic_load(&st->dedup), "chunks_new",
                     (json_int_t)atomic_load(&st->chunks_new), "chunks_reused",
                     (json_int_t)atomic_load(&st->chunks_reused), "duration_ms",
                     (json_int_t)(kh_now_ms() - j->op.t0_ms), "frozen", j->frozen);
}

/* Indexes and manifest into backups/.tmp-ID, fsync'd, renamed to
 * backups/ID; then the row. Anything before the row is invisible. */
static int commit(kh_job *j, json_t *rec, kh_err *err)
{
    char *dir = kh_backup_dir(j->chunks, j->id);
    char *tmp = xasprintf("%s/backups/.tmp-%s", kh_chunks_path(j->chunks), j->id);
    int rc = -1;
    if (kh_fs_mkdir_p(tmp, 0700, err) < 0)
        goto out;
    for (size_t i = 0; i < j->ndisks; i++) {
        char *p = xasprintf("%s/disk%zu.idx", tmp, i);
        json_t *ij = kh_index_to_json(&j->disks[i].ix);
        int w = write_json(p, ij, err);
        json_decref(ij);
        free(p);
        if (w < 0)
            goto out;
    }
    /* the spec as a chunk: encrypted like the data in an encrypted store */
    char *spec_text = json_dumps(j->spec, JSON_COMPACT);
    char spec_digest[KH_DIGEST_HEX];
    uint64_t stored = 0;
    int prc = kh_chunks_put(j->chunks, spec_text, strlen(spec_text), spec_digest, &stored, err);
    free(spec_text);
    if (prc < 0)
        goto out;
    json_t *man = json_pack("{s:i, s:s, s:s, s:s, s:O, s:s}", "format", 1, "id", j->id, "vm_id",
                            j->vm_id, "kind", json_string_value(json_object_get(rec, "kind")),
                            "disks", json_object_get(rec, "disks"), "spec_chunk", spec_digest);
    if (j->tpm) { /* swtpm's files, a chunk like the spec */
        char *tpm_text = json_dumps(j->tpm, JSON_COMPACT);
        char tpm_digest[KH_DIGEST_HEX];
        prc = kh_chunks_put(j->chunks, tpm_text, strlen(tpm_text), tpm_digest, &stored, err);
        free(tpm_text);
        if (prc < 0) {
            json_decref(man);
            goto out;
        }
        json_object_set_new(man, "tpm_chunk", json_string(tpm_digest));
        json_object_set_new(rec, "tpm_chunk", json_string(tpm_digest));
    }
    char *mp = xasprintf("%s/manifest.json", tmp);
    int w = write_json(mp, man, err);
    free(mp);
    json_decref(man);
    if (w < 0)
        goto out;
    /* every chunk file was fsync'd before its rename (chunks.c), the
     * indexes and the manifest by kh_fs_write_atomic: no syncfs here (on a
     * busy filesystem it waits for everybody's dirty pages) */
    if (rename(tmp, dir) < 0) {
        kh_err_errno(err, errno == ENOSPC ? KH_E_UNAVAILABLE : KH_E_INTERNAL, errno,
                     "committing backup %s", j->id);
        goto out;
    }
    char *parent = xasprintf("%s/backups", kh_chunks_path(j->chunks));
    int dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(parent);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    if (kh_backup_insert(j->op.b, rec, err) < 0) {
        kh_err e = KH_ERR_INIT;
        kh_fs_rm_rf(dir, &e);
        goto out;
    }
    rc = 0;
out:
    if (rc < 0) {
        kh_err e = KH_ERR_INIT;
        kh_fs_rm_rf(tmp, &e);
    }
    free(tmp);
    free(dir);
    return rc;
}

static void all_pulled(kh_job *j)
{
    kh_err err = KH_ERR_INIT;
    step_log(j, "pulled");
    json_t *rec = record_json(j);
    if (commit(j, rec, &err) < 0) {
        json_decref(rec);
        fail(j, &err);
        return;
    }
    step_log(j, "committed");
    kh_log(KH_LOG_INFO, "backup.create", "vm=%s id=%s kind=%s read=%lld written=%lld",
           j->vm, j->id, json_string_value(json_object_get(rec, "kind")),
           (long long)json_integer_value(json_object_get(rec, "bytes_read")),
           (long long)json_integer_value(json_object_get(rec, "bytes_written")));
    kh_bkmetrics_record(j->op.b, rec);
    json_decref(rec);
    /* the bitmaps the new one replaces: the base's and stale ones */
    for (size_t i = 0; i < j->ndisks; i++)
        if (j->disks[i].base_bitmap)
            json_array_append_new(j->disks[i].stale, json_string(j->disks[i].base_bitmap));
    j->cleanup_disk = 0;
    j->cleanup_item = 0;
    kh_task_progress(j->op.task, 98, "removing the previous dirty bitmaps");
    cleanup_step(j);
}

static void finish(kh_job *j)
{
    kh_err err = KH_ERR_INIT;
    json_t *row = kh_backup_row(j->op.b, j->id, &err);
    if (row)
        json_object_del(row, "spec");
    if (!row) {
        j->failed = true;
        kh_err_copy(&j->failure, &err);
    }
    kh_backups *b = j->op.b;
    char *vm_id = j->scheduled && !j->failed ? xstrdup(j->vm_id) : NULL;
    job_end(j, row);
    if (vm_id)
        kh_schedule_backup_done(b, vm_id); /* after the job: the prune takes the store */
    free(vm_id);
}

/* ---- one disk: export and pull ---- */

static void pull_work(void *opaque)
{
    kh_job *j = opaque;
    jdisk *d = &j->disks[j->cur];
    kh_nbd_pull_spec spec = { .chunks = j->chunks, .socket = j->sock, .export_name = "",
                              .bitmap = d->base_bitmap,
                              .base = j->have_base_ix ? &j->base_ix : NULL,
                              .connect_ms = 20000, .connections = PULL_CONNECTIONS };
    j->pull_rc = kh_nbd_pull(&spec, &j->op.stats, &d->ix, &j->pull_err);
}

static void disk_pulled(kh_job *j)
{
    if (j->nbd_running || j->pulling)
        return;
    unlink(j->sock);
    if (j->have_base_ix) {
        kh_index_clear(&j->base_ix);
        j->have_base_ix = false;
    }
    if (j->pull_rc == 0 && j->op.b->closing) {
        j->pull_rc = -1;
        kh_err_set(&j->pull_err, KH_E_UNAVAILABLE, "the daemon is stopping");
    }
    if (j->pull_rc < 0) {
        if (j->nbd_errtext && *j->nbd_errtext)
            kh_err_prefix(&j->pull_err, "qemu-nbd: %s", j->nbd_errtext);
        fail(j, &j->pull_err);
        return;
    }
    j->cur++;
    disk_step(j);
}

static void pull_done(void *opaque)
{
    kh_job *j = opaque;
    j->pulling = false;
    if (j->pull_rc < 0 && j->nbd_running)
        kill(j->nbd_pid, SIGTERM);
    disk_pulled(j);
}

static void nbd_exited(const kh_qimg_result *r, void *opaque)
{
    kh_job *j = opaque;
    j->nbd_running = false;
    free(j->nbd_errtext);
    j->nbd_errtext = xstrdup(r->errtext ? r->errtext : "");
    if (r->status != 0 && j->pulling)
        atomic_store(&j->op.stats.cancel, true);
    disk_pulled(j);
}

static void start_export(kh_job *j)
{
    jdisk *d = &j->disks[j->cur];
    kh_err err = KH_ERR_INIT;
    if (kh_fmt(j->sock, sizeof(j->sock), "%s/%.8s-%zu.sock", j->op.b->tmp_dir, j->id, j->cur) < 0) {
        kh_err_set(&err, KH_E_INTERNAL, "the state directory's path is too long");
        fail(j, &err);
        return;
    }
    unlink(j->sock);
    /* the base index, for the pieces the bitmap says are clean */
    if (d->base_bitmap) {
        if (kh_backup_index_read(j->chunks, json_string_value(json_object_get(j->base, "id")),
                                 j->cur, &j->base_ix, &err) < 0) {
            kh_log(KH_LOG_WARN, "backup.create", "vm=%s disk=%zu base index: %s: full read",
                   j->vm, d->index, err.msg);
            kh_err_clear(&err);
            free(d->base_bitmap);
            d->base_bitmap = NULL;
        } else {
            j->have_base_ix = true;
        }
    }
    const char *pre[12];
    size_t n = 0;
    pre[n++] = "/usr/bin/qemu-nbd";
    pre[n++] = "--read-only";
    if (!d->encrypted) /* an encrypted one is described as JSON, its format in it */
        pre[n++] = d->qcow2 ? "--format=qcow2" : "--format=raw";
    pre[n++] = "--shared=" PULL_CONNECTIONS_TEXT;
    pre[n++] = "--socket";
    pre[n++] = j->sock;
    if (d->base_bitmap) {
        pre[n++] = "--bitmap";
        pre[n++] = d->base_bitmap;
    }
    pre[n] = NULL;
    const char *post[] = { NULL };
    j->nbd_pid = run_on_image(j, d, pre, post, NBD_TIMEOUT_MS, nbd_exited, &err);
    if (j->nbd_pid < 0) {
        fail(j, &err);
        return;
    }
    j->nbd_running = true;
    j->pulling = true;
    kh_backup_work(j->op.b, pull_work, pull_done, j);
}

static void bitmap_added(const kh_qimg_result *r, void *opaque)
{
    kh_job *j = opaque;
    if (r->status != 0) {
        kh_err err = KH_ERR_INIT;
        kh_err_set(&err, KH_E_QEMU, "qemu-img bitmap --add: %s",
                   r->errtext && *r->errtext ? r->errtext : "failed");
        fail(j, &err);
        return;
    }
    j->disks[j->cur].added = true;
    step_log(j, "bitmap added");
    start_export(j);
}

/* qemu-img info: which bitmaps the image has; decide full or incremental. */
static void info_done(const kh_qimg_result *r, void *opaque)
{
    kh_job *j = opaque;
    jdisk *d = &j->disks[j->cur];
    kh_err err = KH_ERR_INIT;
    step_log(j, "info");
    json_error_t je;
    json_t *info = r->status == 0 ? json_loads(r->out, 0, &je) : NULL;
    if (!info) {
        kh_err_set(&err, KH_E_QEMU, "qemu-img info %s: %s", d->ref,
                   r->errtext && *r->errtext ? r->errtext : "no answer");
        fail(j, &err);
        return;
    }
    json_t *bms = json_object_get(json_object_get(json_object_get(info, "format-specific"),
                                                  "data"), "bitmaps");
    const char *want = NULL;
    json_t *bd = j->base ? json_array_get(json_object_get(j->base, "disks"), j->cur) : NULL;
    if (bd && strcmp(json_string_value(json_object_get(bd, "volume_id")), d->volume_id) == 0 &&
        (uint64_t)json_integer_value(json_object_get(bd, "size")) ==
            (uint64_t)json_integer_value(json_object_get(info, "virtual-size")))
        want = json_string_value(json_object_get(bd, "bitmap"));
    size_t i;
    json_t *bm;
    json_array_foreach(bms, i, bm) {
        const char *name = json_string_value(json_object_get(bm, "name"));
        if (!name || strncmp(name, BITMAP_PREFIX, strlen(BITMAP_PREFIX)) != 0)
            continue;
        bool in_use = false;
        size_t k;
        json_t *f;
        json_array_foreach(json_object_get(bm, "flags"), k, f) {
            const char *fs = json_string_value(f);
            if (fs && strcmp(fs, "in-use") == 0)
                in_use = true;
        }
        if (want && strcmp(name, want) == 0 && !in_use)
            d->base_bitmap = xstrdup(name);
        else
            json_array_append_new(d->stale, json_string(name));
    }
    j->op.total += (uint64_t)json_integer_value(json_object_get(info, "virtual-size"));
    json_decref(info);
    if (want && !d->base_bitmap)
        kh_log(KH_LOG_INFO, "backup.create", "vm=%s disk=%zu bitmap %s is gone or "
               "inconsistent: a full read", j->vm, d->index, want);
    const char *pre[] = { qimg_bin(j), "bitmap", "--add", NULL };
    const char *post[] = { j->bitmap, NULL };
    if (run_on_image(j, d, pre, post, QIMG_TIMEOUT_MS, bitmap_added, &err) < 0)
        fail(j, &err);
}

static void live_started(kh_job *j, const kh_err *err);

static void disk_step(kh_job *j)
{
    if (j->live) {
        if (j->cur == 0) {
            kh_task_progress(j->op.task, 2, "the point in time");
            kh_live_start(j, live_started);
        } else {
            all_pulled(j);
        }
        return;
    }
    if (j->cur == j->ndisks) {
        all_pulled(j);
        return;
    }
    jdisk *d = &j->disks[j->cur];
    char msg[96];
    snprintf(msg, sizeof(msg), "disk %zu of %zu", j->cur + 1, j->ndisks);
    kh_task_progress(j->op.task, (int)(90 * j->cur / j->ndisks), msg);
    if (!d->qcow2) {
        struct stat sb;
        if (stat(d->file, &sb) == 0)
            j->op.total += (uint64_t)sb.st_size;
        start_export(j);
        return;
    }
    kh_err err = KH_ERR_INIT;
    char *argv[] = { qimg_bin(j), (char *)(uintptr_t)"info", (char *)(uintptr_t)"--output=json",
                     (char *)(uintptr_t)"-f", (char *)(uintptr_t)"qcow2", d->file, NULL };
    if (kh_qimg_run(kh_storage_qimg(j->op.b->st), argv, QIMG_TIMEOUT_MS, NULL, info_done, j,
                    &err) < 0)
        fail(j, &err);
}

/* ---- a running VM: every disk through QEMU's own NBD export ---- */

static void live_pull_work(void *opaque)
{
    kh_job *j = opaque;
    j->pull_rc = 0;
    for (size_t i = 0; i < j->ndisks && j->pull_rc == 0; i++) {
        jdisk *d = &j->disks[i];
        kh_nbd_pull_spec spec = {
            .chunks = j->chunks,
            .bitmap = d->have_base ? json_string_value(json_object_get(
                                         json_array_get(j->nodes, i), "snap"))
                                   : NULL,
            .base = d->have_base ? &d->base : NULL,
            .handle = d->nbd };
        j->pull_rc = kh_nbd_pull(&spec, &j->op.stats, &d->ix, &j->pull_err);
    }
}

static void live_stopped(kh_job *j, const kh_err *err)
{
    (void)err;
    kh_live_release(j);
    unlink(j->sock);
    j->cur = j->ndisks;
    if (j->pull_rc < 0) {
        fail(j, &j->pull_err);
        return;
    }
    all_pulled(j);
}

static void live_pull_done(void *opaque)
{
    kh_job *j = opaque;
    j->pulling = false;
    if (j->op.b->closing) {
        /* the export stays (QEMU 7.2 aborts when a client of it goes
         * first): the keeper keeps the connections, the next daemon's
         * janitor takes them down */
        j->keeper = 0;
        kh_live_release(j);
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_UNAVAILABLE, "the daemon is stopping");
        fail(j, &e);
        return;
    }
    kh_task_progress(j->op.task, 96, "taking the export down");
    kh_live_stop(j, live_stopped);
}

static void live_started(kh_job *j, const kh_err *err)
{
    if (err) {
        unlink(j->sock);
        fail(j, err);
        return;
    }
    kh_err e = KH_ERR_INIT;
    for (size_t i = 0; i < j->ndisks; i++) {
        jdisk *d = &j->disks[i];
        if (d->base_bitmap &&
            kh_backup_index_read(j->chunks, json_string_value(json_object_get(j->base, "id")),
                                 i, &d->base, &e) == 0) {
            d->have_base = true;
        } else if (d->base_bitmap) {
            kh_log(KH_LOG_WARN, "backup.create", "vm=%s disk=%zu base index: %s: full read",
                   j->vm, d->index, e.msg);
            kh_err_clear(&e);
            free(d->base_bitmap);
            d->base_bitmap = NULL;
        }
    }
    if (kh_live_connect(j, &e) < 0) {
        j->pull_rc = -1;
        kh_err_copy(&j->pull_err, &e);
        kh_live_stop(j, live_stopped);
        return;
    }
    kh_task_progress(j->op.task, 5, "reading the disks");
    j->pulling = true;
    kh_backup_work(j->op.b, live_pull_work, live_pull_done, j);
}

/* ---- the request ---- */

static int collect(kh_backups *b, kh_job *j, const json_t *vm, kh_err *err)
{
    json_t *all = json_object_get(vm, "disks");
    j->disks = xcalloc(json_array_size(all) + 1, sizeof(*j->disks));
    size_t i;
    json_t *dj;
    json_array_foreach(all, i, dj) {
        const char *ref = json_string_value(json_object_get(dj, "volume"));
        if (!ref) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu] is a host file: backups need every disk "
                                          "to be a volume", i);
            return -1;
        }
        kh_volume_chain c;
        if (kh_storage_resolve(b->st, ref, &c, err) < 0)
            return -1;
        jdisk *d = &j->disks[j->ndisks++];
        d->index = i;
        d->ref = xstrdup(ref);
        memcpy(d->volume_id, c.layer[0].id, sizeof(d->volume_id));
        d->file = xstrdup(c.layer[0].path);
        d->qcow2 = c.layer[0].format == KH_DISK_QCOW2 && !c.readonly;
        d->stale = json_array();
        for (size_t k = 0; k < c.n; k++)
            d->encrypted |= c.layer[k].encrypted;
        kh_volume_chain_clear(&c);
    }
    if (j->ndisks == 0) {
        kh_err_set(err, KH_E_INVALID, "vm %s has no disk to back up", j->vm);
        return -1;
    }
    /* an encrypted volume's data goes only into an encrypted store: an
     * unencrypted one would hold it in plaintext (no silent downgrade) */
    for (i = 0; i < j->ndisks; i++)
        if (j->disks[i].encrypted && !kh_chunks_encrypted(j->chunks)) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: volume %s is encrypted: back it up "
                       "into an encrypted store (backup-store add --encrypt); store %s is "
                       "not encrypted and would hold its data in plaintext",
                       j->disks[i].index, j->disks[i].ref, j->store);
            return -1;
        }
    return 0;
}

static const char *default_store(kh_backups *b, kh_err *err)
{
    static char name[80];
    json_t *l = kh_backup_store_list(b, err);
    if (!l)
        return NULL;
    json_t *a = json_object_get(l, "stores");
    if (json_array_size(a) != 1) {
        kh_err_set(err, KH_E_INVALID, json_array_size(a) ? "store: there are several backup "
                                                           "stores: name one"
                                                         : "there is no backup store: add one "
                                                           "(kvmhost backup-store add)");
        json_decref(l);
        return NULL;
    }
    snprintf(name, sizeof(name), "%s",
             json_string_value(json_object_get(json_array_get(a, 0), "name")));
    json_decref(l);
    return name;
}

kh_task *kh_backup_create(kh_backups *b, const char *vm_name, const json_t *body, kh_err *err)
{
    return kh_backup_create_job(b, vm_name, body, false, err);
}

kh_task *kh_backup_create_job(kh_backups *b, const char *vm_name, const json_t *body,
                              bool scheduled, kh_err *err)
{
    if (kh_schema_check("BackupSpec", body, "", err) < 0)
        return NULL;
    const char *store = json_string_value(json_object_get(body, "store"));
    if (!store && !(store = default_store(b, err)))
        return NULL;
    json_t *vm = kh_manager_vm_json(b->mgr, vm_name, err);
    if (!vm)
        return NULL;
    kh_chunks *chunks = kh_backup_store_open(b, store, err);
    if (!chunks) {
        json_decref(vm);
        return NULL;
    }
    const char *state = json_string_value(json_object_get(vm, "state"));
    bool stopped = state && strcmp(state, "stopped") == 0 &&
                   json_is_null(json_object_get(vm, "pid"));
    bool running = state && (strcmp(state, "running") == 0 || strcmp(state, "paused") == 0);
    if (!stopped && !running) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: wait until it runs or is stopped",
                   vm_name, state ? state : "busy");
        json_decref(vm);
        kh_chunks_free(chunks);
        return NULL;
    }
    const char *vm_id = json_string_value(json_object_get(vm, "id"));
    kh_job tmp = { 0 };
    tmp.vm = xstrdup(vm_name);
    tmp.chunks = chunks;
    tmp.store = xstrdup(store);
    if (collect(b, &tmp, vm, err) < 0) {
        job_free_parts(&tmp);
        json_decref(vm);
        return NULL;
    }
    kh_bop *op = kh_backup_op_begin(b, sizeof(kh_job), "backup.create", vm_name, vm_id, store,
                                    false, err);
    if (!op) {
        job_free_parts(&tmp);
        json_decref(vm);
        return NULL;
    }
    kh_job *j = (kh_job *)op;
    kh_bop keep = j->op;
    *j = tmp;
    j->op = keep;
    j->vm_id = xstrdup(vm_id);
    j->time = kh_wall_time();
    kh_uuid_generate(j->id);
    j->live = running;
    j->scheduled = scheduled;
    j->seq = ++job_seq;
    snprintf(j->tag, sizeof(j->tag), "%u", j->seq);
    snprintf(j->bitmap, sizeof(j->bitmap), BITMAP_PREFIX "%s", j->id);
    j->spec = json_object();
    for (size_t i = 0; i < sizeof(spec_keys) / sizeof(spec_keys[0]); i++) {
        json_t *v = json_object_get(vm, spec_keys[i]);
        if (v && !json_is_null(v))
            json_object_set_new(j->spec, spec_keys[i], json_deep_copy(v));
    }
    json_decref(vm);
    kh_err e = KH_ERR_INIT;
    if (json_is_true(json_object_get(j->spec, "tpm"))) {
        /* the TPM state as it is now: swtpm writes its files whole */
        char *vstate = xasprintf("%s/vms/%s", b->state_dir, j->vm_id);
        j->tpm = kh_tpm_state_get(vstate, &e);
        free(vstate);
        if (json_object_size(j->tpm) == 0) {
            if (!j->tpm)
                kh_log(KH_LOG_WARN, "backup.tpm", "vm=%s error=\"%s\"", j->vm, e.msg);
            json_decref(j->tpm);
            j->tpm = NULL;
        }
    }
    /* runtime facts of a VM reply are not spec */
    static const char *const runtime[] = { "hotplugged", "addresses" };
    json_object_del(j->spec, "guest");
    static const char *const lists[] = { "disks", "nics" };
    for (size_t l = 0; l < 2; l++) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(j->spec, lists[l]), i, x) {
            for (size_t k = 0; k < 2; k++)
                json_object_del(x, runtime[k]);
        }
    }
    j->base = kh_backup_last(b, j->store, j->vm_id, &e);
    kh_task *task = j->op.task;
    disk_step(j);
    return task;
}
