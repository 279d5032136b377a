/* pull.c - owns kh_nbd_pull (backup/nbd.h): a disk read from an NBD export
 * into the chunk store by a pipeline. The calling thread asks the export
 * which chunks hold data and which are dirty (block status over windows of
 * many chunks, not one round trip per chunk) and reads the chunks that
 * must be read; a small fixed pool of worker threads takes each buffer
 * through SHA-256, the dedup lookup, zstd, AES-GCM and the atomic write.
 * Buffers are a fixed set (PULL_SLOTS chunks): memory stays bounded and a
 * slow store slows the reader down. Each worker fills the index entry of
 * its chunk, so chunks may end in any order. */
#include "backup/nbd.h"

#include <libnbd.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "util/mem.h"

#define PULL_WORKERS 4
#define PULL_SLOTS (2 * PULL_WORKERS)
/* block status is asked for this many bytes at most at once */
#define WINDOW_MAX (1ull << 30)

/* ---- the worker pool ---- */

typedef struct pslot {
    unsigned char *buf;
    size_t idx;
    uint64_t len;
    struct pslot *next;
} pslot;

typedef struct pool {
    const kh_chunks *chunks;
    kh_nbd_stats *st;
    kh_index *out;
    uv_mutex_t mu;
    uv_cond_t cv; /* a slot was queued or freed, or the pool stops */
    pslot slots[PULL_SLOTS];
    pslot *todo, *todo_tail, *free_slots;
    unsigned busy; /* slots queued or in a worker */
    bool stop, failed;
    kh_err err;
    uv_thread_t tid[PULL_WORKERS];
    unsigned nthreads;
} pool;

/* One chunk through digest, dedup, compression and write. */
static int chunk_store(pool *p, kh_chunks_scratch *sc, const pslot *s, kh_err *err)
{
    char *hex = p->out->digest[s->idx];
    if (kh_nbd_all_zero(s->buf, s->len)) {
        hex[0] = '\0';
        atomic_fetch_add(&p->st->chunks_sparse, 1);
    } else {
        uint64_t stored = 0;
        int put = kh_chunks_put_with(p->chunks, sc, s->buf, s->len, hex, false, &stored, err);
        if (put < 0)
            return -1;
        if (put) {
            atomic_fetch_add(&p->st->written, stored);
            atomic_fetch_add(&p->st->chunks_new, 1);
        } else {
            atomic_fetch_add(&p->st->dedup, s->len);
            atomic_fetch_add(&p->st->chunks_reused, 1);
        }
    }
    atomic_fetch_add(&p->st->done, s->len);
    return 0;
}

static void worker(void *arg)
{
    pool *p = arg;
    kh_chunks_scratch *sc = kh_chunks_scratch_new();
    uv_mutex_lock(&p->mu);
    for (;;) {
        while (!p->todo && !p->stop)
            uv_cond_wait(&p->cv, &p->mu);
        pslot *s = p->todo;
        if (!s)
            break;
        p->todo = s->next;
        if (!p->todo)
            p->todo_tail = NULL;
        bool skip = p->failed;
        uv_mutex_unlock(&p->mu);
        kh_err e = KH_ERR_INIT;
        int rc = skip ? 0 : chunk_store(p, sc, s, &e);
        uv_mutex_lock(&p->mu);
        if (rc < 0 && !p->failed) {
            p->failed = true;
            kh_err_copy(&p->err, &e);
        }
        s->next = p->free_slots;
        p->free_slots = s;
        p->busy--;
        uv_cond_broadcast(&p->cv);
    }
    uv_mutex_unlock(&p->mu);
    kh_chunks_scratch_free(sc);
}

static void pool_start(pool *p, const kh_chunks *chunks, kh_nbd_stats *st, kh_index *out)
{
    memset(p, 0, sizeof(*p));
    p->chunks = chunks;
    p->st = st;
    p->out = out;
    if (uv_mutex_init(&p->mu) != 0 || uv_cond_init(&p->cv) != 0)
        abort();
    for (size_t i = 0; i < PULL_SLOTS; i++) {
        p->slots[i].buf = xmalloc(out->chunk);
        p->slots[i].next = p->free_slots;
        p->free_slots = &p->slots[i];
    }
    for (unsigned i = 0; i < PULL_WORKERS; i++)
        if (uv_thread_create(&p->tid[p->nthreads], worker, p) == 0)
            p->nthreads++;
    if (p->nthreads == 0)
        abort();
}

/* A free slot for the reader, or NULL once a worker failed. */
static pslot *pool_get(pool *p)
{
    uv_mutex_lock(&p->mu);
    while (!p->free_slots && !p->failed)
        uv_cond_wait(&p->cv, &p->mu);
    pslot *s = p->failed ? NULL : p->free_slots;
    if (s)
        p->free_slots = s->next;
    uv_mutex_unlock(&p->mu);
    return s;
}

/* Hand a slot back unused (the reader failed). */
static void pool_unget(pool *p, pslot *s)
{
    uv_mutex_lock(&p->mu);
    s->next = p->free_slots;
    p->free_slots = s;
    uv_mutex_unlock(&p->mu);
}

static void pool_put(pool *p, pslot *s)
{
    uv_mutex_lock(&p->mu);
    s->next = NULL;
    if (p->todo_tail)
        p->todo_tail->next = s;
    else
        p->todo = s;
    p->todo_tail = s;
    p->busy++;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
}

/* Wait for the queued chunks, stop the workers; -1 with err when one failed. */
static int pool_finish(pool *p, kh_err *err)
{
    uv_mutex_lock(&p->mu);
    while (p->busy > 0)
        uv_cond_wait(&p->cv, &p->mu);
    p->stop = true;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        uv_thread_join(&p->tid[i]);
    for (size_t i = 0; i < PULL_SLOTS; i++)
        free(p->slots[i].buf);
    uv_cond_destroy(&p->cv);
    uv_mutex_destroy(&p->mu);
    if (p->failed) {
        kh_err_copy(err, &p->err);
        return -1;
    }
    return 0;
}

/* ---- what the export says of a window of chunks ---- */

typedef struct window {
    const char *bitmap_ctx; /* NULL: not incremental */
    uint64_t start;         /* offset of chunk first */
    uint64_t end;           /* of the window */
    uint32_t chunk;
    size_t first, count;
    uint64_t alloc_end;     /* reported up to (base:allocation) */
    uint64_t bitmap_end;    /* reported up to (the bitmap) */
    unsigned char *data;    /* per chunk: some extent is not known zero */
    unsigned char *dirty;   /* per chunk: some extent is dirty */
} window;

static void mark(window *w, unsigned char *set, uint64_t from, uint64_t to)
{
    if (to > w->end)
        to = w->end;
    if (from >= to)
        return;
    size_t a = (size_t)((from - w->start) / w->chunk);
    size_t b = (size_t)((to - 1 - w->start) / w->chunk);
    for (size_t k = a; k <= b && k < w->count; k++)
        set[k] = 1;
}

static int on_extent(void *opaque, const char *ctx, uint64_t offset, uint32_t *e, size_t n,
                     int *error)
{
    (void)error;
    window *w = opaque;
    bool is_alloc = strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0;
    bool is_bitmap = w->bitmap_ctx && strcmp(ctx, w->bitmap_ctx) == 0;
    if (!is_alloc && !is_bitmap)
        return 0;
    uint64_t pos = offset;
    for (size_t i = 0; i + 1 < n; i += 2) {
        uint64_t len = e[i];
        uint32_t flags = e[i + 1];
        if (is_alloc && !(flags & LIBNBD_STATE_ZERO))
            mark(w, w->data, pos, pos + len);
        if (is_bitmap && (flags & 1))
            mark(w, w->dirty, pos, pos + len);
        pos += len;
    }
    if (is_alloc && pos > w->alloc_end)
        w->alloc_end = pos;
    if (is_bitmap && pos > w->bitmap_end)
        w->bitmap_end = pos;
    return 0;
}

static void nbd_fail(kh_err *err, const char *what)
{
    const char *m = nbd_get_error();
    kh_err_set(err, KH_E_QEMU, "%s: %s", what, m ? m : "failed");
}

/* Block status of the chunks from first on (as many as one request
 * covers, at least one); -1 with err. */
static int window_status(struct nbd_handle *h, window *w, const kh_index *out, size_t first,
                         kh_err *err)
{
    uint64_t start = (uint64_t)first * out->chunk;
    uint64_t span = out->size - start;
    uint64_t cap = WINDOW_MAX - WINDOW_MAX % out->chunk;
    if (span > cap)
        span = cap;
    w->start = start;
    w->end = start + span;
    w->first = first;
    w->count = (size_t)((span + out->chunk - 1) / out->chunk);
    w->alloc_end = w->bitmap_end = start;
    memset(w->data, 0, w->count);
    memset(w->dirty, 0, w->count);
    nbd_extent_callback cb = { .callback = on_extent, .user_data = w };
    if (nbd_block_status(h, span, start, cb, 0) < 0) {
        nbd_fail(err, "NBD block status");
        return -1;
    }
    return 0;
}

/* ---- the pull ---- */

int kh_nbd_pull(const kh_nbd_pull_spec *spec, kh_nbd_stats *st, kh_index *out, kh_err *err)
{
    struct nbd_handle *h = spec->handle ? spec->handle
                                        : kh_nbd_connect(spec->socket, spec->export_name,
                                                         spec->bitmap, spec->connect_ms, err);
    char *bitmap_ctx = spec->bitmap ? xasprintf("qemu:dirty-bitmap:%s", spec->bitmap) : NULL;
    uint32_t chunk = kh_chunks_chunk_size(spec->chunks);
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (!h)
        goto done;
    int64_t size = nbd_get_size(h);
    if (size < 0) {
        nbd_fail(err, "NBD export size");
        goto done;
    }
    if (bitmap_ctx && nbd_can_meta_context(h, bitmap_ctx) != 1) {
        kh_err_set(err, KH_E_QEMU, "the NBD export has no dirty bitmap %s", spec->bitmap);
        goto done;
    }
    bool incremental = bitmap_ctx && spec->base && spec->base->size == (uint64_t)size &&
                       spec->base->chunk == chunk;
    kh_index_init(out, (uint64_t)size, chunk);
    size_t wmax = (size_t)(WINDOW_MAX / chunk) + 1;
    window w = { .bitmap_ctx = incremental ? bitmap_ctx : NULL, .chunk = chunk,
                 .data = xmalloc(wmax), .dirty = xmalloc(wmax) };
    pool p;
    pool_start(&p, spec->chunks, st, out);
    int reader = 0;
    size_t i = 0;
    while (i < out->n && reader == 0) {
        if (window_status(h, &w, out, i, err) < 0) {
            reader = -1;
            break;
        }
        for (size_t k = 0; k < w.count && reader == 0; k++, i++) {
            if (atomic_load(&st->cancel)) {
                kh_err_set(err, KH_E_CONFLICT, "cancelled");
                reader = -1;
                break;
            }
            uint64_t off = (uint64_t)i * chunk;
            uint64_t len = kh_index_len(out, i);
            bool known = off + len <= w.alloc_end;
            bool known_dirty = off + len <= w.bitmap_end;
            if (!known && k > 0)
                break; /* the next window starts here */
            if (incremental && known_dirty && !w.dirty[k]) {
                memcpy(out->digest[i], spec->base->digest[i], KH_DIGEST_HEX);
                if (out->digest[i][0])
                    atomic_fetch_add(&st->chunks_reused, 1);
                atomic_fetch_add(&st->done, len);
                continue;
            }
            if (known && !w.data[k]) {
                out->digest[i][0] = '\0';
                atomic_fetch_add(&st->chunks_sparse, 1);
                atomic_fetch_add(&st->done, len);
                continue;
            }
            pslot *s = pool_get(&p);
            if (!s) {
                reader = -1; /* the worker's error comes from pool_finish */
                break;
            }
            if (nbd_pread(h, s->buf, len, off, 0) < 0) {
                nbd_fail(err, "NBD read");
                pool_unget(&p, s);
                reader = -1;
                break;
            }
            atomic_fetch_add(&st->read, len);
            s->idx = i;
            s->len = len;
            pool_put(&p, s);
        }
    }
    kh_err perr = KH_ERR_INIT;
    int prc = pool_finish(&p, &perr);
    free(w.data);
    free(w.dirty);
    if (prc < 0 && !kh_err_isset(err))
        kh_err_copy(err, &perr);
    rc = reader < 0 || prc < 0 ? -1 : 0;
done:
    if (h && !spec->handle) {
        nbd_shutdown(h, 0);
        nbd_close(h);
    }
    if (rc < 0)
        kh_index_clear(out);
    free(bitmap_ctx);
    return rc;
}
