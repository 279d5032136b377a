/* nbd.c - owns the data path of backups and restores: NBD export <-> chunk
 * store with libnbd, and the disk index (backup/nbd.h). */
#include "backup/nbd.h"

#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/mem.h"
#include "util/misc.h"

void kh_index_init(kh_index *ix, uint64_t size)
{
    ix->size = size;
    ix->n = (size_t)((size + KH_CHUNK_SIZE - 1) / KH_CHUNK_SIZE);
    ix->digest = xcalloc(ix->n ? ix->n : 1, sizeof(*ix->digest));
}

void kh_index_clear(kh_index *ix)
{
    free(ix->digest);
    ix->digest = NULL;
    ix->n = 0;
    ix->size = 0;
}

json_t *kh_index_to_json(const kh_index *ix)
{
    json_t *a = json_array();
    for (size_t i = 0; i < ix->n; i++)
        json_array_append_new(a, ix->digest[i][0] ? json_string(ix->digest[i]) : json_null());
    return json_pack("{s:I, s:i, s:o}", "size", (json_int_t)ix->size, "chunk_size",
                     (json_int_t)KH_CHUNK_SIZE, "chunks", a);
}

int kh_index_from_json(const json_t *j, kh_index *ix, kh_err *err)
{
    json_t *a = json_object_get(j, "chunks");
    json_int_t size = json_integer_value(json_object_get(j, "size"));
    if (!json_is_array(a) || size < 0 ||
        json_integer_value(json_object_get(j, "chunk_size")) != KH_CHUNK_SIZE) {
        kh_err_set(err, KH_E_CONFLICT, "a disk index of the backup is damaged");
        return -1;
    }
    kh_index_init(ix, (uint64_t)size);
    if (json_array_size(a) != ix->n) {
        kh_index_clear(ix);
        kh_err_set(err, KH_E_CONFLICT, "a disk index of the backup is damaged");
        return -1;
    }
    for (size_t i = 0; i < ix->n; i++) {
        const char *h = json_string_value(json_array_get(a, i));
        if (h && strlen(h) == 64)
            memcpy(ix->digest[i], h, KH_DIGEST_HEX);
        else if (h || !json_is_null(json_array_get(a, i))) {
            kh_index_clear(ix);
            kh_err_set(err, KH_E_CONFLICT, "a disk index of the backup is damaged");
            return -1;
        }
    }
    return 0;
}

static void nap_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void nbd_fail(kh_err *err, kh_code code, const char *what)
{
    const char *m = nbd_get_error();
    kh_err_set(err, code, "%s: %s", what, m ? m : "failed");
}

/* Connect to socket, retrying while the server starts. */
static struct nbd_handle *connect_retry(const char *socket, const char *export_name,
                                        const char *bitmap_ctx, unsigned connect_ms,
                                        kh_err *err)
{
    uint64_t deadline = kh_now_ms() + (connect_ms ? connect_ms : 15000);
    for (;;) {
        struct nbd_handle *h = nbd_create();
        if (!h) {
            nbd_fail(err, KH_E_INTERNAL, "nbd_create");
            return NULL;
        }
        if (nbd_set_export_name(h, export_name ? export_name : "") < 0 ||
            nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
            (bitmap_ctx && nbd_add_meta_context(h, bitmap_ctx) < 0)) {
            nbd_fail(err, KH_E_INTERNAL, "nbd");
            nbd_close(h);
            return NULL;
        }
        if (nbd_connect_unix(h, socket) == 0)
            return h;
        if (kh_now_ms() >= deadline) {
            nbd_fail(err, KH_E_QEMU, "connecting to the NBD export");
            nbd_close(h);
            return NULL;
        }
        nbd_close(h);
        nap_ms(50);
    }
}

typedef struct piece_status {
    const char *bitmap_ctx;
    uint64_t len;
    uint64_t zero_len;   /* leading bytes known zero (base:allocation) */
    bool zero_broken;    /* a non-zero extent was seen */
    uint64_t dirty_seen; /* bytes of the bitmap context reported */
    bool dirty;
} piece_status;

static int on_extent(void *opaque, const char *ctx, uint64_t offset, uint32_t *e, size_t n,
                     int *error)
{
    (void)offset;
    (void)error;
    piece_status *ps = opaque;
    bool is_alloc = strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0;
    bool is_bitmap = ps->bitmap_ctx && strcmp(ctx, ps->bitmap_ctx) == 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        uint64_t len = e[i];
        uint32_t flags = e[i + 1];
        if (is_alloc) {
            if (!ps->zero_broken && (flags & LIBNBD_STATE_ZERO))
                ps->zero_len += len;
            else
                ps->zero_broken = true;
        } else if (is_bitmap) {
            ps->dirty_seen += len;
            if (flags & 1)
                ps->dirty = true;
        }
    }
    return 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    static const unsigned char zeros[4096];
    for (size_t off = 0; off < n; off += sizeof(zeros)) {
        size_t k = n - off < sizeof(zeros) ? n - off : sizeof(zeros);
        if (memcmp(p + off, zeros, k) != 0)
            return false;
    }
    return true;
}

struct nbd_handle *kh_nbd_connect(const char *socket, const char *export_name,
                                  const char *bitmap, unsigned connect_ms, kh_err *err)
{
    char *ctx = bitmap ? xasprintf("qemu:dirty-bitmap:%s", bitmap) : NULL;
    struct nbd_handle *h = connect_retry(socket, export_name, ctx, connect_ms, err);
    free(ctx);
    return h;
}

int kh_nbd_fd(struct nbd_handle *h)
{
    return (int)nbd_aio_get_fd(h);
}

void kh_nbd_close(struct nbd_handle *h)
{
    nbd_close(h);
}

int kh_nbd_pull(const kh_nbd_pull_spec *spec, kh_nbd_stats *st, kh_index *out, kh_err *err)
{
    char *bitmap_ctx = spec->bitmap ? xasprintf("qemu:dirty-bitmap:%s", spec->bitmap) : NULL;
    struct nbd_handle *h = spec->handle ? spec->handle
                                        : connect_retry(spec->socket, spec->export_name,
                                                        bitmap_ctx, spec->connect_ms, err);
    unsigned char *buf = NULL;
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (!h)
        goto done;
    int64_t size = nbd_get_size(h);
    if (size < 0) {
        nbd_fail(err, KH_E_QEMU, "NBD export size");
        goto done;
    }
    if (bitmap_ctx && nbd_can_meta_context(h, bitmap_ctx) != 1) {
        kh_err_set(err, KH_E_QEMU, "the NBD export has no dirty bitmap %s", spec->bitmap);
        goto done;
    }
    bool incremental = bitmap_ctx && spec->base && spec->base->size == (uint64_t)size;
    kh_index_init(out, (uint64_t)size);
    buf = xmalloc(KH_CHUNK_SIZE);
    for (size_t i = 0; i < out->n; i++) {
        if (atomic_load(&st->cancel)) {
            kh_err_set(err, KH_E_CONFLICT, "cancelled");
            goto done;
        }
        uint64_t off = (uint64_t)i * KH_CHUNK_SIZE;
        uint64_t len = (uint64_t)size - off < KH_CHUNK_SIZE ? (uint64_t)size - off : KH_CHUNK_SIZE;
        piece_status ps = { .bitmap_ctx = incremental ? bitmap_ctx : NULL, .len = len };
        nbd_extent_callback cb = { .callback = on_extent, .user_data = &ps };
        if (nbd_block_status(h, len, off, cb, 0) < 0) {
            nbd_fail(err, KH_E_QEMU, "NBD block status");
            goto done;
        }
        if (incremental && ps.dirty_seen >= len && !ps.dirty) {
            memcpy(out->digest[i], spec->base->digest[i], KH_DIGEST_HEX);
            if (out->digest[i][0])
                atomic_fetch_add(&st->chunks_reused, 1);
            atomic_fetch_add(&st->done, len);
            continue;
        }
        if (ps.zero_len >= len) {
            out->digest[i][0] = '\0';
            atomic_fetch_add(&st->done, len);
            continue;
        }
        if (nbd_pread(h, buf, len, off, 0) < 0) {
            nbd_fail(err, KH_E_QEMU, "NBD read");
            goto done;
        }
        atomic_fetch_add(&st->read, len);
        if (all_zero(buf, len)) {
            out->digest[i][0] = '\0';
        } else {
            uint64_t stored = 0;
            int put = kh_chunks_put(spec->chunks, buf, len, out->digest[i], &stored, err);
            if (put < 0)
                goto done;
            if (put) {
                atomic_fetch_add(&st->written, stored);
                atomic_fetch_add(&st->chunks_new, 1);
            } else {
                atomic_fetch_add(&st->dedup, len);
                atomic_fetch_add(&st->chunks_reused, 1);
            }
        }
        atomic_fetch_add(&st->done, len);
    }
    rc = 0;
done:
    if (h && !spec->handle) {
        nbd_shutdown(h, 0);
        nbd_close(h);
    }
    if (rc < 0)
        kh_index_clear(out);
    free(buf);
    free(bitmap_ctx);
    return rc;
}

int kh_nbd_push(const kh_chunks *chunks, const char *socket, const kh_index *ix, bool blank,
                unsigned connect_ms, kh_nbd_stats *st, kh_err *err)
{
    struct nbd_handle *h = connect_retry(socket, "", NULL, connect_ms, err);
    if (!h)
        return -1;
    int rc = -1;
    unsigned char *buf = xmalloc(KH_CHUNK_SIZE);
    int64_t size = nbd_get_size(h);
    if (size < 0 || (uint64_t)size < ix->size) {
        kh_err_set(err, KH_E_CONFLICT, "the target disk is smaller than the backup's");
        goto done;
    }
    for (size_t i = 0; i < ix->n; i++) {
        if (atomic_load(&st->cancel)) {
            kh_err_set(err, KH_E_CONFLICT, "cancelled");
            goto done;
        }
        uint64_t off = (uint64_t)i * KH_CHUNK_SIZE;
        uint64_t len = ix->size - off < KH_CHUNK_SIZE ? ix->size - off : KH_CHUNK_SIZE;
        if (!ix->digest[i][0]) {
            if (!blank && nbd_zero(h, len, off, 0) < 0) {
                nbd_fail(err, KH_E_QEMU, "NBD write zeroes");
                goto done;
            }
        } else {
            long n = kh_chunks_get(chunks, ix->digest[i], buf, err);
            if (n < 0)
                goto done;
            if ((uint64_t)n != len) {
                kh_err_set(err, KH_E_CONFLICT, "chunk %s has the wrong length", ix->digest[i]);
                goto done;
            }
            if (nbd_pwrite(h, buf, len, off, 0) < 0) {
                nbd_fail(err, KH_E_QEMU, "NBD write");
                goto done;
            }
            atomic_fetch_add(&st->written, len);
        }
        atomic_fetch_add(&st->done, len);
    }
    if (nbd_flush(h, 0) < 0) {
        nbd_fail(err, KH_E_QEMU, "NBD flush");
        goto done;
    }
    rc = 0;
done:
    nbd_shutdown(h, 0);
    nbd_close(h);
    free(buf);
    return rc;
}

int kh_nbd_check(const kh_chunks *chunks, const kh_index *ix, json_t *damaged, json_t *seen,
                 kh_nbd_stats *st, kh_err *err)
{
    unsigned char *buf = xmalloc(KH_CHUNK_SIZE);
    for (size_t i = 0; i < ix->n; i++) {
        if (atomic_load(&st->cancel)) {
            free(buf);
            kh_err_set(err, KH_E_CONFLICT, "cancelled");
            return -1;
        }
        uint64_t off = (uint64_t)i * KH_CHUNK_SIZE;
        uint64_t len = ix->size - off < KH_CHUNK_SIZE ? ix->size - off : KH_CHUNK_SIZE;
        const char *d = ix->digest[i];
        if (d[0] && !json_object_get(seen, d)) {
            json_object_set_new(seen, d, json_true());
            kh_err e = KH_ERR_INIT;
            long n = kh_chunks_get(chunks, d, buf, &e);
            if (n < 0 || (uint64_t)n != len)
                json_array_append_new(damaged, json_string(d));
            else
                atomic_fetch_add(&st->read, len);
        }
        atomic_fetch_add(&st->done, len);
    }
    free(buf);
    return 0;
}
