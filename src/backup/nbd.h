/* nbd.h - moving a disk's data between an NBD export and the chunk store,
 * with libnbd, on a worker thread (blocking calls; no loop, no globals).
 *
 * kh_nbd_pull reads an export (qemu-nbd for a stopped VM, QEMU's own NBD
 * server over a point-in-time fleecing view for a running VM) in pieces of
 * the store's chunk size into chunks and returns the disk's index. One
 * thread reads; a small pool of worker threads hashes, compresses, seals and
 * writes several chunks at once (bounded: a few chunk buffers per worker),
 * each filling its own index entry, so the order they end in is free. With a
 * base index and a dirty bitmap exported by the server
 * ("qemu:dirty-bitmap:NAME"), only dirty pieces are read; the others keep
 * the base's entries. Pieces the server reports as zero, or that read as
 * zeros, are sparse (no chunk). kh_nbd_push writes an index back into a
 * writable export (zeroing sparse pieces unless the target is known to be
 * blank).
 */
#ifndef KH_BACKUP_NBD_H
#define KH_BACKUP_NBD_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "backup/chunks.h"
#include "util/err.h"

struct nbd_handle;

/* One disk's index: n entries of chunk bytes (the last may be shorter);
 * an entry "" is sparse (zeros). */
typedef struct kh_index {
    uint64_t size;
    uint32_t chunk;
    size_t n;
    char (*digest)[KH_DIGEST_HEX];
} kh_index;

void kh_index_init(kh_index *ix, uint64_t size, uint32_t chunk);
/* Bytes of entry i. */
uint64_t kh_index_len(const kh_index *ix, size_t i);
void kh_index_clear(kh_index *ix);
/* {"size", "chunk_size", "chunks": [HEX | null]} (a new reference); an
 * index without chunk_size is one of KH_CHUNK_SIZE. */
json_t *kh_index_to_json(const kh_index *ix);
int kh_index_from_json(const json_t *j, kh_index *ix, kh_err *err);

/* Counters a worker updates and the loop thread reads for progress. */
typedef struct kh_nbd_stats {
    _Atomic uint64_t done;          /* bytes of the disk handled */
    _Atomic uint64_t read;          /* bytes read from the export */
    _Atomic uint64_t written;       /* bytes written to chunk files (compressed) */
    _Atomic uint64_t dedup;         /* bytes of chunks that already existed */
    _Atomic uint64_t chunks_new;
    _Atomic uint64_t chunks_reused; /* from the base or deduplicated */
    _Atomic uint64_t chunks_sparse; /* all zeros: no chunk */
    _Atomic bool cancel;            /* set by the loop: stop soon */
} kh_nbd_stats;

typedef struct kh_nbd_pull_spec {
    const kh_chunks *chunks;
    const char *socket;       /* the export's unix socket */
    const char *export_name;  /* "" for the default */
    const char *bitmap;       /* dirty bitmap to read, NULL: full */
    const kh_index *base;     /* the previous index (same size), with bitmap */
    unsigned connect_ms;      /* retry connecting this long (the server starts) */
    struct nbd_handle *handle; /* already connected (kh_nbd_connect): used, not closed */
    unsigned connections;      /* without handle: connect this many times (the server
                                * takes as many clients at once), each reading a band */
} kh_nbd_pull_spec;

/* Connect to an export (for kh_nbd_pull's handle): with the dirty bitmap's
 * meta context when bitmap is not NULL. NULL with err. */
struct nbd_handle *kh_nbd_connect(const char *socket, const char *export_name,
                                  const char *bitmap, unsigned connect_ms, kh_err *err);
/* The connection's socket (to hand a copy to a keeper process). */
int kh_nbd_fd(struct nbd_handle *h);
/* Close a handle from kh_nbd_connect (NULL is fine). */
void kh_nbd_close(struct nbd_handle *h);

/* 1 when the n bytes at data are all zero. */
bool kh_nbd_all_zero(const void *data, size_t n);

/* 0 with out filled (caller clears), or -1 with err (pull.c). */
int kh_nbd_pull(const kh_nbd_pull_spec *spec, kh_nbd_stats *st, kh_index *out, kh_err *err);

/* Write ix into the writable export at socket; blank: the target reads as
 * zeros already (a new image), so sparse pieces are skipped. */
int kh_nbd_push(const kh_chunks *chunks, const char *socket, const kh_index *ix, bool blank,
                unsigned connect_ms, kh_nbd_stats *st, kh_err *err);

/* Read and check every distinct chunk of ix (verify): damaged gets the
 * digests of missing or damaged chunks (a JSON array). 0, or -1 with err
 * on cancel. */
int kh_nbd_check(const kh_chunks *chunks, const kh_index *ix, json_t *damaged, json_t *seen,
                 kh_nbd_stats *st, kh_err *err);

#endif
