/* tidy.c - owns verify (every chunk of a backup re-read and re-hashed),
 * prune (retention: keep-last/daily/weekly/monthly) and garbage collection
 * of the chunks no recorded backup uses (backup/backup.h). */
#include "backup/backup_int.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "schema/schema.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

/* ---- verify ---- */

typedef struct vjob {
    kh_bop op; /* first */
    char *id;
    kh_chunks *chunks;
    size_t ndisks;
    json_t *damaged;
    json_t *seen;
    kh_err err;
    int rc;
} vjob;

static void verify_work(void *opaque)
{
    vjob *v = opaque;
    for (size_t i = 0; i < v->ndisks && v->rc == 0; i++) {
        kh_index ix;
        kh_err e = KH_ERR_INIT;
        if (kh_backup_index_read(v->chunks, v->id, i, &ix, &e) < 0) {
            char *what = xasprintf("index of disk %zu", i);
            json_array_append_new(v->damaged, json_string(what));
            free(what);
            continue;
        }
        v->rc = kh_nbd_check(v->chunks, &ix, v->damaged, v->seen, &v->op.stats, &v->err);
        kh_index_clear(&ix);
    }
}

static void verify_done(void *opaque)
{
    vjob *v = opaque;
    json_t *res = NULL;
    if (v->rc == 0) {
        res = json_pack("{s:s, s:b, s:I, s:O}", "backup", v->id, "ok",
                        json_array_size(v->damaged) == 0, "chunks",
                        (json_int_t)json_object_size(v->seen), "damaged", v->damaged);
        kh_log(json_array_size(v->damaged) ? KH_LOG_WARN : KH_LOG_INFO, "backup.verify",
               "id=%s chunks=%zu damaged=%zu", v->id, json_object_size(v->seen),
               json_array_size(v->damaged));
    }
    free(v->id);
    kh_chunks_free(v->chunks);
    json_decref(v->damaged);
    json_decref(v->seen);
    kh_err err = v->err;
    kh_backup_op_end(&v->op, res, v->rc < 0 ? &err : NULL);
}

kh_task *kh_backup_verify(kh_backups *b, const char *id, kh_err *err)
{
    json_t *row = kh_backup_row(b, id, err);
    if (!row)
        return NULL;
    const char *store = json_string_value(json_object_get(row, "store"));
    kh_chunks *c = kh_backup_store_open(b, store, err);
    kh_bop *op = c ? kh_backup_op_begin(b, sizeof(vjob), "backup.verify",
                                        json_string_value(json_object_get(row, "vm")), NULL,
                                        store, false, err)
                   : NULL;
    if (!op) {
        kh_chunks_free(c);
        json_decref(row);
        return NULL;
    }
    vjob *v = (vjob *)op;
    v->id = xstrdup(id);
    v->chunks = c;
    v->ndisks = json_array_size(json_object_get(row, "disks"));
    v->damaged = json_array();
    v->seen = json_object();
    v->op.total = (uint64_t)json_integer_value(json_object_get(row, "size"));
    json_decref(row);
    kh_task *task = v->op.task;
    kh_backup_work(b, verify_work, verify_done, v);
    return task;
}

/* ---- prune and GC ---- */

typedef struct pjob {
    kh_bop op; /* first */
    char *store;
    kh_chunks *chunks;
    json_t *keep_ids;  /* the backups left in the store */
    json_t *removed;   /* ids pruned */
    uint64_t chunks_removed, bytes_freed;
    kh_err err;
    int rc;
} pjob;

/* The period key of t for a rule: day, ISO week or month. */
static void period(double t, char kind, char out[16])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 16, kind == 'd' ? "%Y-%m-%d" : kind == 'w' ? "%G-W%V" : "%Y-%m", &tm);
}

static void mark_index(kh_chunks *c, const char *id, json_t *refs)
{
    for (size_t i = 0;; i++) {
        kh_index ix;
        kh_err e = KH_ERR_INIT;
        char *p = xasprintf("%s/backups/%s/disk%zu.idx", kh_chunks_path(c), id, i);
        bool exists = access(p, F_OK) == 0;
        free(p);
        if (!exists || kh_backup_index_read(c, id, i, &ix, &e) < 0)
            break;
        for (size_t k = 0; k < ix.n; k++)
            if (ix.digest[k][0])
                json_object_set_new(refs, ix.digest[k], json_true());
        kh_index_clear(&ix);
    }
    char *mp = xasprintf("%s/backups/%s/manifest.json", kh_chunks_path(c), id);
    kh_err e = KH_ERR_INIT;
    json_t *m = kh_fs_read_json(mp, 1 << 20, &e);
    free(mp);
    const char *sc = json_string_value(json_object_get(m, "spec_chunk"));
    if (sc)
        json_object_set_new(refs, sc, json_true());
    const char *tc = json_string_value(json_object_get(m, "tpm_chunk"));
    if (tc)
        json_object_set_new(refs, tc, json_true());
    json_decref(m);
}

static void gc_work(void *opaque)
{
    pjob *p = opaque;
    json_t *refs = json_object();
    size_t i;
    json_t *idj;
    json_array_foreach(p->keep_ids, i, idj) mark_index(p->chunks, json_string_value(idj), refs);
    /* backup folders no row names (a commit cut short) */
    char *bdir = xasprintf("%s/backups", kh_chunks_path(p->chunks));
    DIR *d = opendir(bdir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || strcmp(de->d_name, "..") == 0))
            continue;
        bool keep = false;
        json_array_foreach(p->keep_ids, i, idj) keep |= strcmp(json_string_value(idj),
                                                               de->d_name) == 0;
        if (!keep) {
            char *x = xasprintf("%s/%s", bdir, de->d_name);
            kh_err e = KH_ERR_INIT;
            kh_fs_rm_rf(x, &e);
            free(x);
        }
    }
    if (d)
        closedir(d);
    free(bdir);
    /* chunks */
    char *cdir = xasprintf("%s/chunks", kh_chunks_path(p->chunks));
    DIR *top = opendir(cdir);
    while (top && (de = readdir(top))) {
        if (strlen(de->d_name) != 2 || !kh_check_hex(de->d_name, 2))
            continue; /* never "..": only the XX folders */
        char *sub = xasprintf("%s/%s", cdir, de->d_name);
        DIR *sd = opendir(sub);
        struct dirent *ce;
        while (sd && (ce = readdir(sd))) {
            if (ce->d_name[0] == '.' && strncmp(ce->d_name, ".tmp-", 5) != 0)
                continue;
            if (strlen(ce->d_name) == 64 && json_object_get(refs, ce->d_name))
                continue;
            char *f = xasprintf("%s/%s", sub, ce->d_name);
            struct stat sb;
            if (stat(f, &sb) == 0 && unlink(f) == 0) {
                p->chunks_removed++;
                p->bytes_freed += (uint64_t)sb.st_size;
            }
            free(f);
        }
        if (sd)
            closedir(sd);
        free(sub);
    }
    if (top)
        closedir(top);
    free(cdir);
    json_decref(refs);
}

static void gc_done(void *opaque)
{
    pjob *p = opaque;
    json_t *res = json_pack("{s:s, s:O, s:I, s:I, s:I}", "store", p->store, "removed",
                            p->removed, "kept", (json_int_t)json_array_size(p->keep_ids),
                            "chunks_removed", (json_int_t)p->chunks_removed, "bytes_freed",
                            (json_int_t)p->bytes_freed);
    kh_log(KH_LOG_INFO, "backup.prune", "store=%s removed=%zu chunks_removed=%llu", p->store,
           json_array_size(p->removed), (unsigned long long)p->chunks_removed);
    free(p->store);
    kh_chunks_free(p->chunks);
    json_decref(p->keep_ids);
    json_decref(p->removed);
    kh_backup_op_end(&p->op, res, NULL);
}

/* The id of the VM named vm now (NULL: none of that name). */
static char *vm_id_of(kh_backups *b, const char *vm)
{
    kh_err e = KH_ERR_INIT;
    json_t *v = vm ? kh_manager_vm_json(b->mgr, vm, &e) : NULL;
    const char *id = json_string_value(json_object_get(v, "id"));
    char *out = id ? xstrdup(id) : NULL;
    json_decref(v);
    return out;
}

kh_task *kh_backup_prune(kh_backups *b, const json_t *body, kh_err *err)
{
    if (kh_schema_check("BackupPrune", body, "", err) < 0)
        return NULL;
    /* a VM that exists: its backups by its id, also those made under an
     * earlier name; else (a VM deleted) the backups recorded with the name */
    char *vm_id = vm_id_of(b, json_string_value(json_object_get(body, "vm")));
    kh_task *t = kh_backup_prune_vm(b, body, vm_id, err);
    free(vm_id);
    return t;
}

kh_task *kh_backup_prune_vm(kh_backups *b, const json_t *body, const char *vm_id, kh_err *err)
{
    const char *store = json_string_value(json_object_get(body, "store"));
    const char *vm = json_string_value(json_object_get(body, "vm"));
    bool dry = json_is_true(json_object_get(body, "dry_run"));
    static const char *const rules[] = { "keep_daily", "keep_weekly", "keep_monthly" };
    static const char kinds[] = { 'd', 'w', 'm' };
    json_int_t keep_last = json_integer_value(json_object_get(body, "keep_last"));
    bool any_rule = json_object_get(body, "keep_last") != NULL;
    for (size_t r = 0; r < 3; r++)
        any_rule |= json_object_get(body, rules[r]) != NULL;
    kh_chunks *c = kh_backup_store_open(b, store, err);
    if (!c)
        return NULL;
    json_t *all = kh_backup_list(b, NULL, store, err);
    if (!all) {
        kh_chunks_free(c);
        return NULL;
    }
    json_t *list = json_object_get(all, "backups"); /* newest first */
    json_t *keep = json_array(), *removed = json_array();
    /* retention per VM: a backup is kept when a rule keeps it */
    json_t *vms = json_object();
    size_t i;
    json_t *bk;
    json_array_foreach(list, i, bk) {
        const char *vid = json_string_value(json_object_get(bk, "vm_id"));
        if (!json_object_get(vms, vid))
            json_object_set_new(vms, vid, json_pack("{s:i, s:{}, s:{}, s:{}}", "n", 0, "d",
                                                    "w", "m"));
        json_t *st = json_object_get(vms, vid);
        /* no rule: keep all; with vm, the other VMs' backups are kept */
        bool k = !any_rule || (vm_id && strcmp(vm_id, vid) != 0) ||
                 (!vm_id && vm && strcmp(vm, json_string_value(json_object_get(bk, "vm"))) != 0);
        json_int_t n = json_integer_value(json_object_get(st, "n"));
        if (!k && n < keep_last)
            k = true;
        json_object_set_new(st, "n", json_integer(n + 1));
        for (size_t r = 0; r < 3; r++) {
            json_int_t lim = json_integer_value(json_object_get(body, rules[r]));
            char key[16] = { kinds[r], 0 };
            json_t *seen = json_object_get(st, key);
            char per[16];
            period(json_real_value(json_object_get(bk, "time")), kinds[r], per);
            if (!json_object_get(seen, per) && (json_int_t)json_object_size(seen) < lim) {
                json_object_set_new(seen, per, json_true());
                k = true;
            }
        }
        json_array_append_new(k ? keep : removed, json_string(json_string_value(
                                                      json_object_get(bk, "id"))));
    }
    json_decref(vms);
    json_decref(all);
    if (dry) {
        kh_chunks_free(c);
        kh_bop *op = kh_backup_op_begin(b, sizeof(kh_bop), "backup.prune", vm, NULL, NULL,
                                        false, err);
        json_t *res = json_pack("{s:s, s:o, s:I, s:b}", "store", store, "removed", removed,
                                "kept", (json_int_t)json_array_size(keep), "dry_run", true);
        json_decref(keep);
        if (!op) {
            json_decref(res);
            return NULL;
        }
        kh_task *t = op->task;
        kh_backup_op_end(op, res, NULL);
        return t;
    }
    kh_bop *op = kh_backup_op_begin(b, sizeof(pjob), "backup.prune", vm, NULL, store, true, err);
    if (!op) {
        json_decref(keep);
        json_decref(removed);
        kh_chunks_free(c);
        return NULL;
    }
    kh_chunks_free(c);
    json_array_foreach(removed, i, bk) {
        kh_err e = KH_ERR_INIT;
        /* the op is exclusive on the store: delete's own check would refuse */
        kh_bop *self = b->ops;
        b->ops = self->link;
        if (kh_backup_delete(b, json_string_value(bk), &e) < 0)
            kh_log(KH_LOG_WARN, "backup.prune", "id=%s error=\"%s\"", json_string_value(bk),
                   e.msg);
        self->link = b->ops;
        b->ops = self;
    }
    pjob *p = (pjob *)op;
    p->store = xstrdup(store);
    p->chunks = kh_backup_store_open(b, store, err);
    p->keep_ids = keep;
    p->removed = removed;
    kh_task *task = p->op.task;
    if (!p->chunks) {
        kh_err e = KH_ERR_INIT;
        kh_err_copy(&e, err);
        free(p->store);
        json_decref(keep);
        json_decref(removed);
        kh_backup_op_end(op, NULL, &e);
        return task;
    }
    kh_task_progress(task, 10, "removing unreferenced chunks");
    kh_backup_work(b, gc_work, gc_done, p);
    return task;
}
