/* nbdserve.c - owns the read-only NBD server of live-restore: one disk of
 * a backup served to one client (the new VM's QEMU) over one connected
 * socket, on its own thread (blocking I/O, no loop).
 *
 * Only what QEMU's NBD client uses: the fixed newstyle handshake without
 * zeroes, NBD_OPT_GO / NBD_OPT_INFO / NBD_OPT_EXPORT_NAME (any export
 * name), every other option answered "unsupported" (so replies stay
 * simple, no structured replies, no meta contexts), then NBD_CMD_READ and
 * NBD_CMD_DISC; writes and the rest fail with EPERM/EINVAL. A read takes
 * the pieces from the chunk store (kh_chunks_get: decrypted and the digest
 * checked, so a damaged chunk is EIO for the reader); sparse pieces read as
 * zeros. Two pieces stay decompressed (a guest's reads and the stream's
 * interleave). libnbd is a client only and nbdkit would need the store key
 * in another process and a plugin built apart from the sanitized build,
 * hence this small server (docs/architecture.md, "Libraries").
 */
#include "backup/nbdserve.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mem.h"

#define NBD_MAGIC 0x4e42444d41474943ull     /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ull  /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ull
#define NBD_REQ_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_FLAG_FIXED_NEWSTYLE 1u
#define NBD_FLAG_NO_ZEROES 2u
#define NBD_FLAG_HAS_FLAGS 1u
#define NBD_FLAG_READ_ONLY 2u
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT 2u
#define NBD_OPT_INFO 6u
#define NBD_OPT_GO 7u
#define NBD_REP_ACK 1u
#define NBD_REP_INFO 3u
#define NBD_REP_ERR_UNSUP 0x80000001u
#define NBD_INFO_EXPORT 0u
#define NBD_CMD_READ 0u
#define NBD_CMD_DISC 2u
#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_EINVAL 22u
#define MAX_READ (32u << 20)
#define MAX_OPTION (64u << 10)
#define CACHE 2

struct kh_nbdserve {
    const kh_chunks *chunks;
    const kh_index *ix; /* &own */
    kh_index own;
    int fd;
    pthread_t thread;
    _Atomic bool done;
    _Atomic uint64_t bytes;
    struct {
        size_t piece; /* SIZE_MAX: empty */
        unsigned char *buf;
        uint64_t use;
    } cache[CACHE];
    uint64_t clock;
};

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static int read_all(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int opt_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    unsigned char h[20];
    put64(h, NBD_REP_MAGIC);
    put32(h + 8, opt);
    put32(h + 12, type);
    put32(h + 16, len);
    if (write_all(fd, h, sizeof(h)) < 0)
        return -1;
    return len ? write_all(fd, data, len) : 0;
}

static uint16_t tx_flags(void)
{
    return NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_CAN_MULTI_CONN;
}

/* The handshake: 0 when transmission begins, -1 when the client left. */
static int handshake(kh_nbdserve *s)
{
    unsigned char h[18];
    put64(h, NBD_MAGIC);
    put64(h + 8, NBD_IHAVEOPT);
    put16(h + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    unsigned char cflags[4];
    if (write_all(s->fd, h, sizeof(h)) < 0 || read_all(s->fd, cflags, 4) < 0)
        return -1;
    bool no_zeroes = get32(cflags) & NBD_FLAG_NO_ZEROES;
    for (;;) {
        unsigned char oh[16];
        if (read_all(s->fd, oh, sizeof(oh)) < 0 || get64(oh) != NBD_IHAVEOPT)
            return -1;
        uint32_t opt = get32(oh + 8), len = get32(oh + 12);
        if (len > MAX_OPTION)
            return -1;
        unsigned char *data = xmalloc(len + 1);
        int rc = read_all(s->fd, data, len);
        free(data); /* the export name and info requests: one export, fixed answers */
        if (rc < 0)
            return -1;
        unsigned char info[12];
        put16(info, NBD_INFO_EXPORT);
        put64(info + 2, s->ix->size);
        put16(info + 10, tx_flags());
        switch (opt) {
        case NBD_OPT_EXPORT_NAME: {
            unsigned char r[10 + 124] = { 0 };
            put64(r, s->ix->size);
            put16(r + 8, tx_flags());
            return write_all(s->fd, r, no_zeroes ? 10 : sizeof(r));
        }
        case NBD_OPT_ABORT:
            (void)opt_reply(s->fd, opt, NBD_REP_ACK, NULL, 0);
            return -1;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            if (opt_reply(s->fd, opt, NBD_REP_INFO, info, sizeof(info)) < 0 ||
                opt_reply(s->fd, opt, NBD_REP_ACK, NULL, 0) < 0)
                return -1;
            if (opt == NBD_OPT_GO)
                return 0;
            break;
        default:
            if (opt_reply(s->fd, opt, NBD_REP_ERR_UNSUP, NULL, 0) < 0)
                return -1;
        }
    }
}

/* Piece p, decompressed (a cache slot's buffer), or NULL for a sparse one;
 * -1 in *bad when the chunk cannot be read. */
static const unsigned char *piece(kh_nbdserve *s, size_t p, bool *bad)
{
    if (!s->ix->digest[p][0])
        return NULL;
    size_t victim = 0;
    for (size_t i = 0; i < CACHE; i++) {
        if (s->cache[i].piece == p) {
            s->cache[i].use = ++s->clock;
            return s->cache[i].buf;
        }
        if (s->cache[i].use < s->cache[victim].use)
            victim = i;
    }
    if (!s->cache[victim].buf)
        s->cache[victim].buf = xmalloc(KH_CHUNK_SIZE);
    kh_err e = KH_ERR_INIT;
    s->cache[victim].piece = SIZE_MAX;
    long n = kh_chunks_get(s->chunks, s->ix->digest[p], s->cache[victim].buf, &e);
    uint64_t want = kh_index_len(s->ix, p);
    if (n < 0 || (uint64_t)n != want) {
        kh_log(KH_LOG_WARN, "backup.live_restore", "chunk=%s error=\"%s\"", s->ix->digest[p],
               n < 0 ? e.msg : "wrong length");
        *bad = true;
        return NULL;
    }
    s->cache[victim].piece = p;
    s->cache[victim].use = ++s->clock;
    return s->cache[victim].buf;
}

static uint32_t do_read(kh_nbdserve *s, uint64_t off, uint32_t len, unsigned char *out)
{
    while (len) {
        uint32_t cs = s->ix->chunk;
        size_t p = (size_t)(off / cs);
        uint64_t in = off % cs;
        uint32_t n = (uint32_t)(cs - in < len ? cs - in : len);
        bool bad = false;
        const unsigned char *src = piece(s, p, &bad);
        if (bad)
            return NBD_EIO;
        if (src)
            memcpy(out, src + in, n);
        else
            memset(out, 0, n);
        out += n;
        off += n;
        len -= n;
    }
    return 0;
}

static void serve(kh_nbdserve *s)
{
    unsigned char *buf = xmalloc(16 + MAX_READ);
    for (;;) {
        unsigned char rq[28];
        if (read_all(s->fd, rq, sizeof(rq)) < 0 || get32(rq) != NBD_REQ_MAGIC)
            break;
        uint16_t type = (uint16_t)(rq[6] << 8 | rq[7]);
        uint64_t off = get64(rq + 16);
        uint32_t len = get32(rq + 24);
        if (type == NBD_CMD_DISC)
            break;
        uint32_t error = 0;
        if (type != NBD_CMD_READ) {
            error = NBD_EPERM;
            if (type == 1 /* WRITE */ && len <= MAX_READ && read_all(s->fd, buf + 16, len) < 0)
                break; /* its payload is skipped */
        } else if (len > MAX_READ || off > s->ix->size || len > s->ix->size - off) {
            error = NBD_EINVAL;
        } else {
            error = do_read(s, off, len, buf + 16);
        }
        put32(buf, NBD_SIMPLE_REPLY_MAGIC);
        put32(buf + 4, error);
        memcpy(buf + 8, rq + 8, 8); /* the handle */
        if (write_all(s->fd, buf, 16 + (error || type != NBD_CMD_READ ? 0 : len)) < 0)
            break;
        if (!error && type == NBD_CMD_READ)
            atomic_fetch_add(&s->bytes, len);
    }
    free(buf);
}

static void *run(void *opaque)
{
    kh_nbdserve *s = opaque;
    if (handshake(s) == 0)
        serve(s);
    shutdown(s->fd, SHUT_RDWR);
    atomic_store(&s->done, true);
    return NULL;
}

kh_nbdserve *kh_nbdserve_start(const kh_chunks *chunks, const kh_index *ix, int fd, kh_err *err)
{
    kh_nbdserve *s = xcalloc(1, sizeof(*s));
    s->chunks = chunks;
    s->own = *ix;
    s->own.digest = xmalloc((ix->n ? ix->n : 1) * sizeof(*ix->digest));
    memcpy(s->own.digest, ix->digest, ix->n * sizeof(*ix->digest));
    s->ix = &s->own;
    s->fd = fd;
    for (size_t i = 0; i < CACHE; i++)
        s->cache[i].piece = SIZE_MAX;
    int rc = pthread_create(&s->thread, NULL, run, s);
    if (rc != 0) {
        kh_err_errno(err, KH_E_INTERNAL, rc, "cannot start the NBD server's thread");
        close(fd);
        free(s->own.digest);
        free(s);
        return NULL;
    }
    return s;
}

bool kh_nbdserve_done(const kh_nbdserve *s)
{
    return atomic_load(&s->done);
}

uint64_t kh_nbdserve_bytes(const kh_nbdserve *s)
{
    return atomic_load(&s->bytes);
}

void kh_nbdserve_free(kh_nbdserve *s)
{
    if (!s)
        return;
    shutdown(s->fd, SHUT_RDWR); /* a blocked read returns */
    pthread_join(s->thread, NULL);
    close(s->fd);
    for (size_t i = 0; i < CACHE; i++)
        free(s->cache[i].buf);
    free(s->own.digest);
    free(s);
}
