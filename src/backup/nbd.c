/* nbd.c - owns the data path of restores and verifies (chunk store -> NBD
 * export, chunk checks), the NBD connections and the disk index
 * (backup/nbd.h; the pull of a backup is pull.c). */
#include "backup/nbd.h"

#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/mem.h"
#include "util/misc.h"

void kh_index_init(kh_index *ix, uint64_t size, uint32_t chunk)
{
    ix->size = size;
    ix->chunk = chunk;
    ix->n = (size_t)((size + chunk - 1) / chunk);
    ix->digest = xcalloc(ix->n ? ix->n : 1, sizeof(*ix->digest));
}

uint64_t kh_index_len(const kh_index *ix, size_t i)
{
    uint64_t off = (uint64_t)i * ix->chunk;
    return ix->size - off < ix->chunk ? ix->size - off : ix->chunk;
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
                     (json_int_t)ix->chunk, "chunks", a);
}

int kh_index_from_json(const json_t *j, kh_index *ix, kh_err *err)
{
    json_t *a = json_object_get(j, "chunks");
    json_int_t size = json_integer_value(json_object_get(j, "size"));
    json_t *cj = json_object_get(j, "chunk_size");
    json_int_t chunk = cj ? json_integer_value(cj) : (json_int_t)KH_CHUNK_SIZE;
    if (!json_is_array(a) || size < 0 || !kh_chunks_size_ok((uint64_t)chunk)) {
        kh_err_set(err, KH_E_CONFLICT, "a disk index of the backup is damaged");
        return -1;
    }
    kh_index_init(ix, (uint64_t)size, (uint32_t)chunk);
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
        nap_ms(10);
    }
}

bool kh_nbd_all_zero(const void *data, size_t n)
{
    /* the first byte zero, and every byte equal to the one before */
    const unsigned char *p = data;
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
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
        uint64_t off = (uint64_t)i * ix->chunk;
        uint64_t len = kh_index_len(ix, i);
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
        uint64_t len = kh_index_len(ix, i);
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
