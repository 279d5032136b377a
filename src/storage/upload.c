/* upload.c - volumes streamed in (upload) and opened for download. */
#include "storage/storage_int.h"

#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- upload and download ---- */

struct kh_volume_upload {
    op *o;
};

kh_volume_upload *kh_storage_upload_begin(kh_storage *st, const char *pool_name,
                                          const char *name, const char *format,
                                          uint64_t expected, kh_err *err)
{
    if (kh_check_name(name, "volume name", err) < 0)
        return NULL;
    if (!format || (strcmp(format, "qcow2") != 0 && strcmp(format, "raw") != 0)) {
        kh_err_set(err, KH_E_INVALID, "format: say what the image is, \"qcow2\" or \"raw\" "
                                      "(?format=); it is checked, never guessed");
        return NULL;
    }
    pool p = { 0 };
    if (pool_find(st, pool_name, &p, err) < 0)
        return NULL;
    volume existing = { 0 };
    int have = volume_get(st, p.id, name, NULL, &existing, err);
    volume_clear(&existing);
    if (have != 0 || storage_busy_find(st, p.id, name)) {
        if (have >= 0)
            kh_err_set(err, KH_E_CONFLICT, "a volume named %s already exists in pool %s", name,
                       p.name);
        pool_clear(&p);
        return NULL;
    }
    uint64_t cap = pool_free_space(&p);
    if (cap > KH_VOLUME_SIZE_MAX)
        cap = KH_VOLUME_SIZE_MAX;
    if (expected != UINT64_MAX && expected > cap) {
        kh_err_set(err, KH_E_TOOLARGE, "upload: %" PRIu64 " bytes is more than the %" PRIu64
                                       " bytes pool %s can take", expected, cap, p.name);
        pool_clear(&p);
        return NULL;
    }
    op *o = xcalloc(1, sizeof(*o));
    o->st = st;
    o->kind = OP_UPLOAD;
    o->p = p;
    kh_uuid_generate(o->v.id);
    snprintf(o->v.pool_id, sizeof(o->v.pool_id), "%s", o->p.id);
    o->v.name = xstrdup(name);
    o->v.format = xstrdup(format);
    o->v.created_at = kh_wall_time();
    o->part = volume_path(&o->p, o->v.id, ".part");
    o->final = volume_path(&o->p, o->v.id, NULL);
    o->upload_cap = cap;
    o->upload_fd = open(o->part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (o->upload_fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "upload: cannot create %s", o->part);
        o->upload_fd = 0;
        volume_op_free(o);
        return NULL;
    }
    storage_busy_take(st, o->p.id, name, NULL);
    kh_volume_upload *u = xcalloc(1, sizeof(*u));
    u->o = o;
    return u;
}

void kh_storage_upload_abort(kh_volume_upload *u)
{
    if (!u)
        return;
    op *o = u->o;
    unlink(o->part);
    kh_log(KH_LOG_INFO, "volume.upload", "pool=%s volume=%s bytes=%" PRIu64 " result=abandoned",
           o->p.name, o->v.name, o->upload_len);
    storage_busy_release(o->st, o->p.id, o->v.name);
    volume_op_free(o);
    free(u);
}

void kh_storage_upload_limit(kh_volume_upload *u, uint64_t max, const char *words)
{
    op *o = u->o;
    free(o->quota_words);
    o->quota_words = xstrdup(words);
    o->quota_max = max;
}

/* Over the quota: err set, true. */
static bool over_quota(const op *o, uint64_t size, const char *what, kh_err *err)
{
    if (!o->quota_words || size <= o->quota_max)
        return false;
    kh_err_set(err, KH_E_FORBIDDEN, "%s, %s of %" PRIu64 " bytes asked)", o->quota_words, what,
               size);
    return true;
}

int kh_storage_upload_write(kh_volume_upload *u, const void *data, size_t len, kh_err *err)
{
    op *o = u->o;
    if (over_quota(o, o->upload_len + len, "an upload", err))
        return -1;
    if (o->upload_len + len > o->upload_cap) {
        kh_err_set(err, KH_E_TOOLARGE, "upload: more than the %" PRIu64 " bytes pool %s can "
                                       "take", o->upload_cap, o->p.name);
        return -1;
    }
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(o->upload_fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            kh_err_errno(err, errno == ENOSPC || errno == EDQUOT ? KH_E_TOOLARGE : KH_E_INTERNAL,
                         errno, "upload: writing pool %s", o->p.name);
            return -1;
        }
        p += n;
        len -= (size_t)n;
        o->upload_len += (uint64_t)n;
    }
    return 0;
}

/* The uploaded bytes are an image of the declared format that names no
 * other file (security case 5) and is not larger than allowed (case 6). */
static void upload_checked(const kh_qimg_result *r, void *opaque)
{
    op *o = opaque;
    kh_err err = KH_ERR_INIT;
    if (r->status != 0) {
        /* qemu-img names the .part file: keep its own words only */
        const char *why = r->errtext && *r->errtext ? r->errtext : "qemu-img failed";
        const char *tail = strstr(why, "': ");
        kh_err_set(&err, KH_E_INVALID, "upload: not a %s image (%s)", o->v.format,
                   tail ? tail + 3 : why);
    } else {
        int64_t actual;
        if (kh_imginfo_check(r->out, o->v.format, "upload: the image", &o->v.capacity,
                             &actual, &err) == 0)
            over_quota(o, o->v.capacity, "an image", &err);
    }
    if (kh_err_isset(&err)) {
        unlink(o->part);
        kh_log(KH_LOG_WARN, "volume.upload", "pool=%s volume=%s error=\"%s\"", o->p.name,
               o->v.name, err.msg);
        volume_op_end(o, NULL, &err);
        return;
    }
    kh_qimg_result ok = { 0 };
    volume_create_done(&ok, o); /* rename into place and record */
}

int kh_storage_upload_finish(kh_volume_upload *u, kh_storage_cb cb, void *opaque, kh_err *err)
{
    op *o = u->o;
    free(u);
    o->cb = cb;
    o->opaque = opaque;
    int rc = fsync(o->upload_fd);
    close(o->upload_fd);
    o->upload_fd = 0;
    if (rc < 0) {
        kh_err_errno(err, errno == ENOSPC ? KH_E_TOOLARGE : KH_E_INTERNAL, errno,
                     "upload: writing pool %s", o->p.name);
    } else if (o->upload_len == 0) {
        kh_err_set(err, KH_E_INVALID, "upload: the body is empty");
    } else {
        /* -f: the declared format is the one probed; never guessed */
        char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(o->st->qimg),
                         (char *)(uintptr_t) "info", (char *)(uintptr_t) "--output=json",
                         (char *)(uintptr_t) "-f", o->v.format, o->part, NULL };
        if (kh_qimg_run(o->st->qimg, argv, QIMG_TIMEOUT_MS, NULL, upload_checked, o, err) >= 0)
            return 0;
    }
    unlink(o->part);
    storage_busy_release(o->st, o->p.id, o->v.name);
    volume_op_free(o);
    return -1;
}

int kh_storage_volume_open(kh_storage *st, const char *pool_name, const char *name,
                           uint64_t *size, kh_err *err)
{
    op *o = volume_op_for(st, pool_name, name, OP_SHOW, NULL, NULL, err);
    if (!o)
        return -1;
    int fd = -1;
    json_t *u = storage_users_of(st, o->p.name, o->v.name);
    size_t i;
    json_t *e;
    json_array_foreach(u, i, e) {
        if (json_is_true(json_object_get(e, "running")) &&
            !json_is_true(json_object_get(e, "readonly"))) {
            kh_err_set(err, KH_E_CONFLICT, "volume %s is written by the running vm %s; stop it "
                                           "(or snapshot it) to download a consistent image",
                       name, json_string_value(json_object_get(e, "vm")));
            goto out;
        }
    }
    if (storage_busy_find(st, o->p.id, o->v.name)) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s: another operation on it is under way", name);
        goto out;
    }
    fd = open(o->final, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "volume %s: cannot open its file", name);
        if (fd >= 0)
            close(fd);
        fd = -1;
        goto out;
    }
    *size = (uint64_t)sb.st_size;
out:
    json_decref(u);
    volume_op_free(o);
    return fd;
}
