/* chunks.h - the content-addressed chunk store of a backup store directory.
 *
 * A store directory holds:
 *   kvmhost-store.json   {"format": 1, "id", "encrypted", "chunk_size", "key_check"}
 *   chunks/XX/DIGEST     one file per distinct chunk (XX: the digest's first two hex digits)
 *   backups/ID/          one folder per committed backup: manifest.json and disk<N>.idx
 *
 * A chunk is at most KH_CHUNK_SIZE bytes of a disk. Its name (digest) is the
 * SHA-256 of its plaintext, or in an encrypted store an HMAC-SHA-256 of the
 * plaintext keyed by a key derived from the store key, so names tell nothing
 * without the key. The file: "KHC1", a flags byte (1: encrypted), then the
 * zstd frame of the plaintext, encrypted with AES-256-GCM (12-byte random IV
 * first, 16-byte tag last, the digest as associated data so a chunk renamed
 * to another digest does not decrypt). Writes are atomic (temp file, fsync,
 * rename; or many temp files, one syncfs, the renames: deferred below); a
 * chunk that exists is not written again (deduplication across disks, VMs
 * and backups).
 *
 * Every function here is thread-safe: a kh_chunks is immutable once open,
 * and the worker threads of backups, restores and verifies share it.
 */
#ifndef KH_BACKUP_CHUNKS_H
#define KH_BACKUP_CHUNKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* The largest chunk (and the chunk size of stores made before chunk sizes
 * could be chosen); a store's own size is in its header (kh_chunks_chunk_size). */
#define KH_CHUNK_SIZE (4u << 20)
/* New stores: 512 KiB (an incremental backup stores whole chunks: smaller
 * chunks make it cost what changed, larger ones make a full backup cheaper
 * per byte; bench/backup.py: docs/backup.md "Figures"); any power of two
 * 64 KiB..4 MiB. */
#define KH_CHUNK_SIZE_DEFAULT (512u << 10)
#define KH_CHUNK_SIZE_MIN (64u << 10)
#define KH_CHUNK_KEY_LEN 32
#define KH_DIGEST_LEN 32
#define KH_DIGEST_HEX 65

typedef struct kh_chunks kh_chunks;
/* A worker's reusable compression state and buffers (one per thread). */
typedef struct kh_chunks_scratch kh_chunks_scratch;

/* Open the store at path. create: make the folders and kvmhost-store.json
 * when the directory holds no store yet (encrypted when key is not NULL,
 * chunks of chunk_size bytes, 0 for KH_CHUNK_SIZE_DEFAULT; an existing
 * store keeps its own size).
 * An existing store is checked: its "encrypted" must match key != NULL and
 * the key must match its key_check (KH_E_FORBIDDEN "wrong key"). */
kh_chunks *kh_chunks_open(const char *path, const unsigned char *key, bool create,
                          uint32_t chunk_size, kh_err *err);
/* 1 when n is a chunk size a store may have. */
bool kh_chunks_size_ok(uint64_t n);
/* The store's chunk size (from its header). */
uint32_t kh_chunks_chunk_size(const kh_chunks *c);
void kh_chunks_free(kh_chunks *c);
const char *kh_chunks_path(const kh_chunks *c);
bool kh_chunks_encrypted(const kh_chunks *c);
/* 1 when path already holds a store (kvmhost-store.json), with *encrypted. */
int kh_chunks_probe(const char *path, bool *encrypted, kh_err *err);

/* The digest (hex) of data. */
void kh_chunks_digest(const kh_chunks *c, const void *data, size_t len, char hex[KH_DIGEST_HEX]);
/* Store data as a chunk: hex gets its digest; 1 when it was written, 0 when
 * it existed (deduplicated), -1 with err (KH_E_UNAVAILABLE on a full disk;
 * nothing is left behind). *stored gets the bytes written to the file. */
int kh_chunks_put(const kh_chunks *c, const void *data, size_t len, char hex[KH_DIGEST_HEX],
                  uint64_t *stored, kh_err *err);
/* The same with a worker's scratch (kh_chunks_scratch_new: no allocation
 * per chunk); data's digest may be given (hex already filled: known). */
int kh_chunks_put_with(const kh_chunks *c, kh_chunks_scratch *s, const void *data, size_t len,
                       char hex[KH_DIGEST_HEX], bool known, uint64_t *stored, kh_err *err);
kh_chunks_scratch *kh_chunks_scratch_new(void);
/* Frees s; chunks it still holds unsettled are dropped (their temp files
 * removed). */
void kh_chunks_scratch_free(kh_chunks_scratch *s);
/* Deferred durability (a backup's pull): kh_chunks_put_with writes the
 * chunk's temp file without fsync and keeps it; kh_chunks_scratch_settle
 * then makes them all durable at once (one syncfs of the store's
 * filesystem) and only then gives them their names, so a chunk's name never
 * points at data a crash could lose. Within a batch a chunk stored twice is
 * written twice (the names are only visible once settled). */
void kh_chunks_scratch_defer(kh_chunks_scratch *s);
/* Bytes written and not settled yet. */
uint64_t kh_chunks_scratch_pending(const kh_chunks_scratch *s);
/* 0, or -1 with err (the unsettled chunks are dropped). */
int kh_chunks_scratch_settle(const kh_chunks *c, kh_chunks_scratch *s, kh_err *err);
/* Hand from's unsettled chunks over to to (from is left with none): the
 * workers of a pull give theirs to one settler. */
void kh_chunks_scratch_move(kh_chunks_scratch *to, kh_chunks_scratch *from);
/* Drop the unsettled chunks (a failed backup). */
void kh_chunks_scratch_discard(kh_chunks_scratch *s);
/* Read chunk hex into buf (KH_CHUNK_SIZE bytes), checked: decrypted, the
 * digest of the plaintext recomputed. Returns its length, or -1 with err
 * (KH_E_CONFLICT naming the chunk when it is missing or damaged). */
long kh_chunks_get(const kh_chunks *c, const char *hex, void *buf, kh_err *err);
/* The file of chunk hex (caller frees). */
char *kh_chunks_file(const kh_chunks *c, const char *hex);

#endif
