/* copy.c - full copies of volumes (their chain flattened). */
#include "storage/storage_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/check.h"
#include "util/mem.h"
#include "util/misc.h"

/* qemu-img convert -p prints "    (12.50/100%)" lines. */
void copy_progress(const char *line, void *opaque)
{
    op *o = opaque;
    double pct;
    const char *p = strchr(line, '(');
    if (!p || sscanf(p, "(%lf/100%%)", &pct) != 1)
        return;
    int ip = (int)pct;
    if (ip != o->last_percent && o->on_progress) {
        o->last_percent = ip;
        o->on_progress(ip, o->opaque);
    }
}

int kh_storage_volume_copy(kh_storage *st, const char *src_ref, const char *dst_name,
                           kh_storage_progress_cb on_progress, kh_storage_cb cb, void *opaque,
                           kh_err *err)
{
    char *pn = NULL, *vn = NULL;
    if (kh_volume_ref_parse(src_ref, &pn, &vn, err) < 0)
        return -1;
    if (kh_check_name(dst_name, "name", err) < 0) {
        free(pn);
        free(vn);
        return -1;
    }
    op *o = volume_op_for(st, pn, vn, OP_COPY, cb, opaque, err);
    free(pn);
    free(vn);
    if (!o)
        return -1;
    volume existing = { 0 };
    int have = volume_get(st, o->p.id, dst_name, NULL, &existing, err);
    volume_clear(&existing);
    if (have != 0 || storage_busy_find(st, o->p.id, dst_name)) {
        if (have >= 0)
            kh_err_set(err, KH_E_CONFLICT, "a volume named %s already exists in pool %s",
                       dst_name, o->p.name);
        volume_op_free(o);
        return -1;
    }
    struct stat sb;
    if (stat(o->final, &sb) == 0 && (uint64_t)sb.st_blocks * 512 > pool_free_space(&o->p)) {
        kh_err_set(err, KH_E_TOOLARGE, "not enough free space in pool %s for a full copy",
                   o->p.name);
        volume_op_free(o);
        return -1;
    }
    /* An encrypted chain is read through a json: description with a secret
     * per encrypted layer, and the copy is encrypted with a key of its own. */
    kh_volume_chain chain;
    bool encrypted = false;
    if (kh_storage_resolve(st, src_ref, &chain, err) < 0) {
        volume_op_free(o);
        return -1;
    }
    for (size_t j = 0; j < chain.n; j++)
        encrypted = encrypted || chain.layer[j].encrypted;
    json_t *src_json = NULL;
    kh_strv *objs = kh_strv_new();
    if (encrypted) {
        json_t *below = json_null();
        for (size_t j = chain.n; j-- > 0;) {
            json_t *node = json_pack("{s:s, s:{s:s, s:s}}", "driver",
                                     kh_disk_format_name(chain.layer[j].format), "file",
                                     "driver", "file", "filename", chain.layer[j].path);
            if (chain.layer[j].format == KH_DISK_QCOW2)
                json_object_set_new(node, "backing", below);
            else
                json_decref(below);
            if (chain.layer[j].encrypted) {
                int sfd = kh_storage_volume_secret_fd(st, chain.layer[j].id, err);
                if (sfd < 0 || o->nxfds + 1 >= KH_QIMG_FDS_MAX) {
                    if (sfd >= 0)
                        close(sfd);
                    kh_err_set(err, KH_E_INTERNAL, "volume %s: its layers' keys", o->v.name);
                    json_decref(node);
                    below = NULL; /* node owns what was below */
                    break;
                }
                char id[32];
                snprintf(id, sizeof(id), "s%zu", j);
                kh_strv_addf(objs, "secret,id=%s,file=/proc/self/fd/%zu,format=raw", id,
                             3 + o->nxfds);
                o->xfds[o->nxfds++] = sfd;
                json_object_set_new(node, "encrypt",
                                    json_pack("{s:s, s:s}", "format", "luks", "key-secret", id));
            }
            below = node;
        }
        src_json = below;
        if (!src_json) {
            kh_volume_chain_clear(&chain);
            kh_strv_free(objs);
            volume_op_free(o);
            return -1;
        }
    }
    kh_volume_chain_clear(&chain);
    char *src = o->final;
    char *src_fmt = xstrdup(o->v.format);
    uint64_t capacity = o->v.capacity;
    /* The op now describes the new volume. */
    volume_clear(&o->v);
    kh_uuid_generate(o->v.id);
    snprintf(o->v.pool_id, sizeof(o->v.pool_id), "%s", o->p.id);
    o->v.name = xstrdup(dst_name);
    o->v.format = src_fmt;
    o->v.capacity = capacity;
    o->v.created_at = kh_wall_time();
    o->final = volume_path(&o->p, o->v.id, NULL);
    o->part = volume_path(&o->p, o->v.id, ".part");
    o->on_progress = on_progress;
    o->last_percent = -1;
    kh_strv *a = kh_strv_new();
    kh_strv_add(a, kh_qimg_binary(st->qimg));
    kh_strv_add(a, "convert");
    kh_strv_add(a, "-p");
    kh_strv_add(a, "-U");
    if (encrypted) {
        int tfd = volume_new_key(st, &o->v, err);
        if (tfd < 0) {
            json_decref(src_json);
            kh_strv_free(objs);
            kh_strv_free(a);
            free(src);
            volume_op_free(o);
            return -1;
        }
        size_t tnum = 3 + o->nxfds;
        o->xfds[o->nxfds++] = tfd;
        for (size_t k = 0; k < objs->n; k++) {
            kh_strv_add(a, "--object");
            kh_strv_add(a, objs->v[k]);
        }
        kh_strv_add(a, "--object");
        kh_strv_addf(a, "secret,id=st,file=/proc/self/fd/%zu,format=raw", tnum);
        kh_strv_add(a, "-O");
        kh_strv_add(a, src_fmt);
        kh_strv_add(a, "-o");
        kh_strv_add(a, "encrypt.format=luks,encrypt.key-secret=st,"
                       "encrypt.iter-time=" LUKS_ITER_MS);
        char *js = json_dumps(src_json, JSON_COMPACT);
        kh_strv_addf(a, "json:%s", js);
        free(js);
        json_decref(src_json);
    } else {
        kh_strv_add(a, "-f");
        kh_strv_add(a, src_fmt);
        kh_strv_add(a, "-O");
        kh_strv_add(a, src_fmt);
        kh_strv_add(a, src);
    }
    kh_strv_free(objs);
    kh_strv_add(a, o->part);
    free(src);
    storage_busy_take(st, o->p.id, dst_name, NULL);
    pid_t pid = kh_qimg_run_fds(st->qimg, a->v, o->xfds, o->nxfds, QIMG_CONVERT_TIMEOUT_MS,
                                copy_progress, volume_create_done, o, err);
    if (pid >= 0 && encrypted)
        o->retry_argv = a; /* LUKS PBKDF timing: volume_create_done may run it again */
    else
        kh_strv_free(a);
    if (pid < 0) {
        storage_busy_release(st, o->p.id, dst_name);
        volume_op_free(o);
        return -1;
    }
    return 0;
}
