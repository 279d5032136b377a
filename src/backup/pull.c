/* pull.c - owns kh_nbd_pull (backup/nbd.h): a disk read from an NBD export
 * into the chunk store by a pipeline. The calling thread asks the export
 * which chunks hold data and which are dirty (block status over windows of
 * many chunks, not one round trip per chunk) and reads the chunks that
 * must be read, several at once (libnbd's asynchronous reads: the server
 * reads ahead while the workers work); a small fixed pool of worker threads takes each buffer
 * through SHA-256, the dedup lookup, zstd, AES-GCM and the atomic write.
 * Buffers are a fixed set (PULL_SLOTS chunks): memory stays bounded and a
 * slow store slows the reader down. Each worker fills the index entry of
 * its chunk, so chunks may end in any order. Chunk files are written
 * without an fsync each: the workers hand them to a settler thread, which
 * makes every SETTLE_BYTES of them durable with one syncfs and only then
 * names them (kh_chunks_scratch_settle) while the workers go on; the pull
 * succeeds only once every chunk is settled. */
#include "backup/nbd.h"

#include <libnbd.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "util/mem.h"

#define PULL_WORKERS 4
#define PULL_SLOTS (4 * PULL_WORKERS) /* 16 MiB at 1 MiB chunks */
/* the settler settles the chunks (one syncfs, then the renames) every this
 * many bytes written, and at the end (a worker waiting in syncfs held its
 * buffer and left the others a quarter of the pool: 3-6 s of the 4 workers'
 * time in a 2 GiB backup) */
#define SETTLE_BYTES (64ull << 20)
/* reads in flight at once per connection (the export serves them in
 * parallel), and connections at most (each read by its own thread, over
 * its own band of the disk, when the server takes several clients) */
#define READS_IN_FLIGHT 6
#define PULL_READERS 4
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
    /* the settler: the workers hand it their written chunks (incoming);
     * it makes them durable and names them, a batch at a time, while the
     * workers go on */
    kh_chunks_scratch *incoming;
    uv_cond_t scv; /* incoming grew, or the settler stops */
    bool settler_stop, settler_started;
    uv_thread_t settler;
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
    kh_chunks_scratch_defer(sc);
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
        kh_chunks_scratch_move(p->incoming, sc);
        if (kh_chunks_scratch_pending(p->incoming) >= SETTLE_BYTES)
            uv_cond_signal(&p->scv);
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
    kh_chunks_scratch_free(sc); /* holds nothing: all went to incoming */
}

/* The settler: every SETTLE_BYTES the workers wrote (and at the end), one
 * syncfs, then the renames; what is left after a failure is dropped. */
static void settler(void *arg)
{
    pool *p = arg;
    kh_chunks_scratch *batch = kh_chunks_scratch_new();
    uv_mutex_lock(&p->mu);
    for (;;) {
        while (!p->settler_stop && kh_chunks_scratch_pending(p->incoming) < SETTLE_BYTES)
            uv_cond_wait(&p->scv, &p->mu);
        if (kh_chunks_scratch_pending(p->incoming) == 0)
            break; /* stopping, nothing left */
        kh_chunks_scratch_move(batch, p->incoming);
        bool failed = p->failed;
        uv_mutex_unlock(&p->mu);
        kh_err e = KH_ERR_INIT;
        int rc = 0;
        if (failed)
            kh_chunks_scratch_discard(batch);
        else
            rc = kh_chunks_scratch_settle(p->chunks, batch, &e);
        uv_mutex_lock(&p->mu);
        if (rc < 0 && !p->failed) {
            p->failed = true;
            kh_err_copy(&p->err, &e);
            uv_cond_broadcast(&p->cv); /* a reader waiting for a slot sees it */
        }
    }
    uv_mutex_unlock(&p->mu);
    kh_chunks_scratch_free(batch);
}

static void pool_start(pool *p, const kh_chunks *chunks, kh_nbd_stats *st, kh_index *out)
{
    memset(p, 0, sizeof(*p));
    p->chunks = chunks;
    p->st = st;
    p->out = out;
    if (uv_mutex_init(&p->mu) != 0 || uv_cond_init(&p->cv) != 0 || uv_cond_init(&p->scv) != 0)
        abort();
    p->incoming = kh_chunks_scratch_new();
    kh_chunks_scratch_defer(p->incoming);
    p->settler_started = uv_thread_create(&p->settler, settler, p) == 0;
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

/* A free slot now, or NULL (none free, or a worker failed: *failed). */
static pslot *pool_try_get(pool *p, bool *failed)
{
    uv_mutex_lock(&p->mu);
    *failed = p->failed;
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

/* Wait for the queued chunks, stop the workers; -1 with err when one
 * failed. keep_buffers: the slots' buffers are left allocated. */
static int pool_finish(pool *p, bool keep_buffers, kh_err *err)
{
    uv_mutex_lock(&p->mu);
    while (p->busy > 0)
        uv_cond_wait(&p->cv, &p->mu);
    p->stop = true;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        uv_thread_join(&p->tid[i]);
    /* the rest settled (or dropped after a failure) */
    uv_mutex_lock(&p->mu);
    p->settler_stop = true;
    uv_cond_signal(&p->scv);
    uv_mutex_unlock(&p->mu);
    if (p->settler_started)
        uv_thread_join(&p->settler);
    else
        settler(p); /* no thread: settled here */
    kh_chunks_scratch_free(p->incoming); /* empty */
    for (size_t i = 0; i < PULL_SLOTS && !keep_buffers; i++)
        free(p->slots[i].buf);
    uv_cond_destroy(&p->scv);
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

/* Block status of the chunks from first on, before chunk end (as many as
 * one request covers, at least one); -1 with err. */
static int window_status(struct nbd_handle *h, window *w, const kh_index *out, size_t first,
                         size_t end, kh_err *err)
{
    uint64_t start = (uint64_t)first * out->chunk;
    uint64_t stop = (uint64_t)end * out->chunk < out->size ? (uint64_t)end * out->chunk
                                                            : out->size;
    uint64_t span = stop - start;
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

/* ---- the reads in flight ---- */

typedef struct reader {
    struct nbd_handle *h;
    pool *p;
    kh_nbd_stats *st;
    unsigned inflight;
    bool orphaned; /* the pull ended with reads still in libnbd's hands */
    bool failed;   /* a read failed: err */
    kh_err err;
} reader;

typedef struct readop {
    reader *r;
    pslot *s;
} readop;

/* A read ended (in nbd_poll, on the reader's thread): to the workers. */
static int read_done(void *user_data, int *error)
{
    readop *o = user_data;
    reader *r = o->r;
    if (r->orphaned) {
        free(o);
        return 1;
    }
    r->inflight--;
    if (*error) {
        if (!r->failed)
            kh_err_set(&r->err, KH_E_QEMU, "NBD read: %s", strerror(*error));
        r->failed = true;
        pool_unget(r->p, o->s);
    } else {
        atomic_fetch_add(&r->st->read, o->s->len);
        pool_put(r->p, o->s);
    }
    free(o);
    return 1;
}

static int reader_poll(reader *r)
{
    if (nbd_poll(r->h, -1) < 0) {
        if (!r->failed)
            kh_err_set(&r->err, KH_E_QEMU, "NBD: %s",
                       nbd_get_error() ? nbd_get_error() : "poll failed");
        r->failed = true;
        return -1;
    }
    return 0;
}

/* A free slot, the reads in flight moving meanwhile; NULL when a read or a
 * worker failed. */
static pslot *reader_slot(reader *r)
{
    while (r->inflight >= READS_IN_FLIGHT && !r->failed)
        reader_poll(r);
    for (;;) {
        if (r->failed)
            return NULL;
        bool failed = false;
        pslot *s = pool_try_get(r->p, &failed);
        if (s || failed)
            return s;
        if (r->inflight == 0)
            return pool_get(r->p);
        reader_poll(r);
    }
}

static int reader_issue(reader *r, pslot *s)
{
    readop *o = xcalloc(1, sizeof(*o));
    o->r = r;
    o->s = s;
    nbd_completion_callback cb = { .callback = read_done, .user_data = o };
    if (nbd_aio_pread(r->h, s->buf, s->len, (uint64_t)s->idx * r->p->out->chunk, cb, 0) < 0) {
        free(o);
        pool_unget(r->p, s);
        kh_err_set(&r->err, KH_E_QEMU, "NBD read: %s",
                   nbd_get_error() ? nbd_get_error() : "failed");
        r->failed = true;
        return -1;
    }
    r->inflight++;
    return 0;
}

/* ---- the pull ---- */

/* One reader: the chunks [first, end) through its own connection. */
typedef struct band {
    const kh_nbd_pull_spec *spec;
    struct nbd_handle *h;
    pool *p;
    kh_nbd_stats *st;
    kh_index *out;
    const char *bitmap_ctx; /* with incremental */
    size_t first, end;
    kh_err err;
    int rc;
    bool incremental;
    bool orphans; /* reads left in libnbd's hands (a broken connection) */
} band;

static void band_run(void *arg)
{
    band *b = arg;
    const kh_index *base = b->spec->base;
    kh_index *out = b->out;
    kh_nbd_stats *st = b->st;
    uint32_t chunk = out->chunk;
    size_t wmax = (size_t)(WINDOW_MAX / chunk) + 1;
    window w = { .bitmap_ctx = b->incremental ? b->bitmap_ctx : NULL, .chunk = chunk,
                 .data = xmalloc(wmax), .dirty = xmalloc(wmax) };
    reader *rd = xcalloc(1, sizeof(*rd));
    rd->h = b->h;
    rd->p = b->p;
    rd->st = st;
    int rrc = 0;
    size_t i = b->first;
    while (i < b->end && rrc == 0) {
        if (window_status(b->h, &w, out, i, b->end, &b->err) < 0) {
            rrc = -1;
            break;
        }
        for (size_t k = 0; k < w.count && i < b->end && rrc == 0; k++, i++) {
            if (atomic_load(&st->cancel)) {
                kh_err_set(&b->err, KH_E_CONFLICT, "cancelled");
                rrc = -1;
                break;
            }
            uint64_t off = (uint64_t)i * chunk;
            uint64_t len = kh_index_len(out, i);
            bool known = off + len <= w.alloc_end;
            bool known_dirty = off + len <= w.bitmap_end;
            if (!known && k > 0)
                break; /* the next window starts here */
            if (b->incremental && known_dirty && !w.dirty[k]) {
                memcpy(out->digest[i], base->digest[i], KH_DIGEST_HEX);
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
            pslot *s = reader_slot(rd);
            if (!s || (s->idx = i, s->len = len, reader_issue(rd, s) < 0)) {
                rrc = -1; /* a worker's error comes from pool_finish */
                break;
            }
        }
    }
    while (rd->inflight > 0 && reader_poll(rd) == 0)
        ;
    if (rd->failed) {
        rrc = -1;
        kh_err_copy(&b->err, &rd->err);
    }
    b->orphans = rd->inflight > 0;
    if (b->orphans) {
        /* the connection broke and libnbd still holds reads (it retires
         * them with an error when a connection dies, so this is a guard):
         * the reader and the buffers stay allocated for them */
        rd->orphaned = true;
    } else {
        free(rd);
    }
    free(w.data);
    free(w.dirty);
    b->rc = rrc;
}

int kh_nbd_pull(const kh_nbd_pull_spec *spec, kh_nbd_stats *st, kh_index *out, kh_err *err)
{
    struct nbd_handle *hs[PULL_READERS] = { 0 };
    size_t nh = 0;
    hs[0] = spec->handle ? spec->handle
                         : kh_nbd_connect(spec->socket, spec->export_name, spec->bitmap,
                                          spec->connect_ms, err);
    char *bitmap_ctx = spec->bitmap ? xasprintf("qemu:dirty-bitmap:%s", spec->bitmap) : NULL;
    uint32_t chunk = kh_chunks_chunk_size(spec->chunks);
    int rc = -1;
    memset(out, 0, sizeof(*out));
    if (!hs[0])
        goto done;
    nh = 1;
    int64_t size = nbd_get_size(hs[0]);
    if (size < 0) {
        nbd_fail(err, "NBD export size");
        goto done;
    }
    if (bitmap_ctx && nbd_can_meta_context(hs[0], bitmap_ctx) != 1) {
        kh_err_set(err, KH_E_QEMU, "the NBD export has no dirty bitmap %s", spec->bitmap);
        goto done;
    }
    bool incremental = bitmap_ctx && spec->base && spec->base->size == (uint64_t)size &&
                       spec->base->chunk == chunk;
    kh_index_init(out, (uint64_t)size, chunk);
    /* more connections to a server that takes them (qemu-nbd --shared) */
    size_t want = spec->handle ? 1 : spec->connections;
    if (want > PULL_READERS)
        want = PULL_READERS;
    if (want > out->n / 4)
        want = out->n / 4 ? out->n / 4 : 1;
    while (nh < want) {
        kh_err e = KH_ERR_INIT;
        hs[nh] = kh_nbd_connect(spec->socket, spec->export_name, spec->bitmap,
                                spec->connect_ms, &e);
        if (!hs[nh])
            break; /* fewer readers then */
        nh++;
    }
    pool p;
    pool_start(&p, spec->chunks, st, out);
    band bands[PULL_READERS];
    memset(bands, 0, sizeof(bands));
    uv_thread_t tid[PULL_READERS];
    bool started[PULL_READERS] = { false };
    for (size_t r = 0; r < nh; r++) {
        nbd_set_pread_initialize(hs[r], false); /* our buffers: no memset before a read */
        bands[r] = (band){ .spec = spec, .h = hs[r], .p = &p, .st = st, .out = out,
                           .bitmap_ctx = bitmap_ctx, .incremental = incremental,
                           .first = out->n * r / nh, .end = out->n * (r + 1) / nh,
                           .err = KH_ERR_INIT };
        if (r > 0)
            started[r] = uv_thread_create(&tid[r], band_run, &bands[r]) == 0;
    }
    band_run(&bands[0]);
    for (size_t r = 1; r < nh; r++) {
        if (started[r])
            uv_thread_join(&tid[r]);
        else
            band_run(&bands[r]); /* no thread: this one reads it too */
    }
    int rrc = 0;
    bool orphans = false;
    for (size_t r = 0; r < nh; r++) {
        orphans |= bands[r].orphans;
        if (bands[r].rc < 0 && rrc == 0) {
            rrc = -1;
            kh_err_copy(err, &bands[r].err);
        }
    }
    kh_err perr = KH_ERR_INIT;
    int prc = pool_finish(&p, orphans, &perr);
    if (prc < 0 && !kh_err_isset(err))
        kh_err_copy(err, &perr);
    rc = rrc < 0 || prc < 0 ? -1 : 0;
done:
    for (size_t r = spec->handle ? 1 : 0; r < nh; r++) {
        nbd_shutdown(hs[r], 0);
        nbd_close(hs[r]);
    }
    if (rc < 0)
        kh_index_clear(out);
    free(bitmap_ctx);
    return rc;
}
