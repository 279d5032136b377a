/* chunks.c - owns the chunk files and the header of a backup store directory:
 * digests, zstd compression, AES-256-GCM, atomic writes (backup/chunks.h). */
#include "backup/chunks.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "util/fs.h"
#include "util/mem.h"
#include "util/misc.h"

#define MAGIC "KHC1"
#define HDR_LEN 5
#define IV_LEN 12
#define TAG_LEN 16
#define ZSTD_LEVEL 1
#define HEADER_FILE "kvmhost-store.json"

struct kh_chunks {
    char *path;
    bool encrypted;
    uint32_t chunk_size;
    unsigned char enc_key[KH_CHUNK_KEY_LEN]; /* AES-256-GCM */
    unsigned char id_key[KH_CHUNK_KEY_LEN];  /* HMAC of chunk names */
};

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* A sub-key: SHA-256(label | key). */
static void derive(const unsigned char *key, const char *label, unsigned char out[32])
{
    unsigned char buf[64 + KH_CHUNK_KEY_LEN];
    size_t n = strlen(label);
    if (n > 64)
        n = 64;
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)label[i];
    memcpy(buf + n, key, KH_CHUNK_KEY_LEN);
    SHA256(buf, n + KH_CHUNK_KEY_LEN, out);
    OPENSSL_cleanse(buf, sizeof(buf));
}

static void key_check_hex(const unsigned char *key, char out[KH_DIGEST_HEX])
{
    unsigned char k[32];
    derive(key, "kvmhost-backup-key-check", k);
    hex_encode(k, 32, out);
    OPENSSL_cleanse(k, sizeof(k));
}

int kh_chunks_probe(const char *path, bool *encrypted, kh_err *err)
{
    char *hp = xasprintf("%s/" HEADER_FILE, path);
    struct stat sb;
    int rc = 0;
    if (stat(hp, &sb) == 0) {
        json_t *h = kh_fs_read_json(hp, 65536, err);
        rc = h ? 1 : -1;
        if (h && encrypted)
            *encrypted = json_is_true(json_object_get(h, "encrypted"));
        json_decref(h);
    }
    free(hp);
    return rc;
}

bool kh_chunks_size_ok(uint64_t n)
{
    return n >= KH_CHUNK_SIZE_MIN && n <= KH_CHUNK_SIZE && (n & (n - 1)) == 0;
}

uint32_t kh_chunks_chunk_size(const kh_chunks *c)
{
    return c->chunk_size;
}

kh_chunks *kh_chunks_open(const char *path, const unsigned char *key, bool create,
                          uint32_t chunk_size, kh_err *err)
{
    kh_chunks *c = xcalloc(1, sizeof(*c));
    c->path = xstrdup(path);
    c->encrypted = key != NULL;
    c->chunk_size = chunk_size ? chunk_size : KH_CHUNK_SIZE_DEFAULT;
    if (!kh_chunks_size_ok(c->chunk_size)) {
        kh_err_set(err, KH_E_INVALID, "chunk size %u: a power of two from 64 KiB to 4 MiB",
                   c->chunk_size);
        goto fail_early;
    }
    if (key) {
        derive(key, "kvmhost-backup-encrypt", c->enc_key);
        derive(key, "kvmhost-backup-chunk-id", c->id_key);
    }
    char check[KH_DIGEST_HEX] = "";
    if (key)
        key_check_hex(key, check);
    char *hp = xasprintf("%s/" HEADER_FILE, path);
    bool enc = false;
    int have = kh_chunks_probe(path, &enc, err);
    if (have < 0)
        goto fail;
    if (have == 0) {
        if (!create) {
            kh_err_set(err, KH_E_NOTFOUND, "%s holds no backup store", path);
            goto fail;
        }
        char *sub = xasprintf("%s/chunks", path);
        char *bk = xasprintf("%s/backups", path);
        int mrc = kh_fs_mkdir_p(sub, 0700, err) < 0 || kh_fs_mkdir_p(bk, 0700, err) < 0 ? -1 : 0;
        free(sub);
        free(bk);
        if (mrc < 0)
            goto fail;
        char id[37];
        kh_uuid_generate(id);
        json_t *h = json_pack("{s:i, s:s, s:b, s:i}", "format", 1, "id", id, "encrypted",
                              c->encrypted, "chunk_size", (json_int_t)c->chunk_size);
        if (key)
            json_object_set_new(h, "key_check", json_string(check));
        char *text = json_dumps(h, JSON_INDENT(2));
        json_decref(h);
        int wrc = kh_fs_write_atomic(hp, text, strlen(text), 0600, err);
        free(text);
        if (wrc < 0)
            goto fail;
    } else {
        json_t *h = kh_fs_read_json(hp, 65536, err);
        if (!h)
            goto fail;
        const char *kc = json_string_value(json_object_get(h, "key_check"));
        json_int_t cs = json_integer_value(json_object_get(h, "chunk_size"));
        int bad = 0;
        if (!kh_chunks_size_ok((uint64_t)cs)) {
            kh_err_set(err, KH_E_INVALID, "%s: a store with chunk size %lld (this version "
                       "reads 64 KiB..4 MiB)", path, (long long)cs);
            bad = 1;
        } else if (enc != c->encrypted) {
            kh_err_set(err, KH_E_INVALID, enc ? "%s is an encrypted store: give its key"
                                              : "%s is not an encrypted store", path);
            bad = 1;
        } else if (key && (!kc || strlen(kc) != 64 ||
                           CRYPTO_memcmp(kc, check, 64) != 0)) {
            kh_err_set(err, KH_E_FORBIDDEN, "%s: wrong key for this encrypted store", path);
            bad = 1;
        }
        json_decref(h);
        if (bad)
            goto fail;
        c->chunk_size = (uint32_t)cs;
    }
    free(hp);
    return c;
fail:
    free(hp);
fail_early:
    kh_chunks_free(c);
    return NULL;
}

void kh_chunks_free(kh_chunks *c)
{
    if (!c)
        return;
    OPENSSL_cleanse(c->enc_key, sizeof(c->enc_key));
    OPENSSL_cleanse(c->id_key, sizeof(c->id_key));
    free(c->path);
    free(c);
}

const char *kh_chunks_path(const kh_chunks *c)
{
    return c->path;
}

bool kh_chunks_encrypted(const kh_chunks *c)
{
    return c->encrypted;
}

void kh_chunks_digest(const kh_chunks *c, const void *data, size_t len, char hex[KH_DIGEST_HEX])
{
    unsigned char md[KH_DIGEST_LEN];
    if (c->encrypted) {
        unsigned int mdlen = 0;
        HMAC(EVP_sha256(), c->id_key, KH_CHUNK_KEY_LEN, data, len, md, &mdlen);
    } else {
        SHA256(data, len, md);
    }
    hex_encode(md, KH_DIGEST_LEN, hex);
}

char *kh_chunks_file(const kh_chunks *c, const char *hex)
{
    return xasprintf("%s/chunks/%.2s/%s", c->path, hex, hex);
}

/* AES-256-GCM of in (n bytes) into out: iv | ciphertext | tag. */
static int seal(const kh_chunks *c, const char *hex, const unsigned char *in, size_t n,
                unsigned char *out)
{
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int len = 0, ok;
    unsigned char *iv = out, *ct = out + IV_LEN;
    kh_random_bytes(iv, IV_LEN);
    ok = x && EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, c->enc_key, iv) == 1 &&
         EVP_EncryptUpdate(x, NULL, &len, (const unsigned char *)hex, 64) == 1 &&
         EVP_EncryptUpdate(x, ct, &len, in, (int)n) == 1 &&
         EVP_EncryptFinal_ex(x, ct + len, &len) == 1 &&
         EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + n) == 1;
    EVP_CIPHER_CTX_free(x);
    return ok ? 0 : -1;
}

static int unseal(const kh_chunks *c, const char *hex, const unsigned char *in, size_t n,
                  unsigned char *out)
{
    if (n < IV_LEN + TAG_LEN)
        return -1;
    size_t ctlen = n - IV_LEN - TAG_LEN;
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int len = 0, ok;
    ok = x && EVP_DecryptInit_ex(x, EVP_aes_256_gcm(), NULL, c->enc_key, in) == 1 &&
         EVP_DecryptUpdate(x, NULL, &len, (const unsigned char *)hex, 64) == 1 &&
         EVP_DecryptUpdate(x, out, &len, in + IV_LEN, (int)ctlen) == 1 &&
         EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                             (void *)(uintptr_t)(in + IV_LEN + ctlen)) == 1 &&
         EVP_DecryptFinal_ex(x, out + len, &len) == 1;
    EVP_CIPHER_CTX_free(x);
    return ok ? (int)ctlen : -1;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct pending {
    char *tmp, *file;
} pending;

struct kh_chunks_scratch {
    ZSTD_CCtx *z;
    unsigned char *zbuf; /* the zstd frame (encrypted stores) */
    unsigned char *out;  /* the file's bytes */
    size_t cap;          /* of zbuf and out */
    bool defer;          /* written, not yet synced nor renamed: pend */
    pending *pend;
    size_t npend, cappend;
    uint64_t pend_bytes;
};

kh_chunks_scratch *kh_chunks_scratch_new(void)
{
    kh_chunks_scratch *s = xcalloc(1, sizeof(*s));
    s->z = ZSTD_createCCtx();
    if (!s->z)
        abort();
    ZSTD_CCtx_setParameter(s->z, ZSTD_c_compressionLevel, ZSTD_LEVEL);
    return s;
}

void kh_chunks_scratch_defer(kh_chunks_scratch *s)
{
    s->defer = true;
}

uint64_t kh_chunks_scratch_pending(const kh_chunks_scratch *s)
{
    return s->pend_bytes;
}

int kh_chunks_scratch_settle(const kh_chunks *c, kh_chunks_scratch *s, kh_err *err)
{
    if (s->npend == 0)
        return 0;
    int fd = open(c->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int e = 0;
    if (fd < 0 || syncfs(fd) < 0)
        e = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    for (size_t i = 0; i < s->npend; i++) {
        if (!e && rename(s->pend[i].tmp, s->pend[i].file) < 0)
            e = errno;
        if (e)
            unlink(s->pend[i].tmp);
        free(s->pend[i].tmp);
        free(s->pend[i].file);
    }
    s->npend = 0;
    s->pend_bytes = 0;
    if (e) {
        kh_err_errno(err, e == ENOSPC || e == EDQUOT ? KH_E_UNAVAILABLE : KH_E_INTERNAL, e,
                     "writing chunks to backup store %s", c->path);
        return -1;
    }
    return 0;
}

void kh_chunks_scratch_move(kh_chunks_scratch *to, kh_chunks_scratch *from)
{
    if (from->npend == 0)
        return;
    if (to->npend + from->npend > to->cappend) {
        to->cappend = 2 * (to->npend + from->npend);
        to->pend = xrealloc(to->pend, to->cappend * sizeof(*to->pend));
    }
    memcpy(to->pend + to->npend, from->pend, from->npend * sizeof(*from->pend));
    to->npend += from->npend;
    to->pend_bytes += from->pend_bytes;
    from->npend = 0;
    from->pend_bytes = 0;
}

void kh_chunks_scratch_discard(kh_chunks_scratch *s)
{
    for (size_t i = 0; i < s->npend; i++) {
        unlink(s->pend[i].tmp);
        free(s->pend[i].tmp);
        free(s->pend[i].file);
    }
    s->npend = 0;
    s->pend_bytes = 0;
}

void kh_chunks_scratch_free(kh_chunks_scratch *s)
{
    if (!s)
        return;
    kh_chunks_scratch_discard(s);
    free(s->pend);
    ZSTD_freeCCtx(s->z);
    free(s->zbuf);
    free(s->out);
    free(s);
}

int kh_chunks_put(const kh_chunks *c, const void *data, size_t len, char hex[KH_DIGEST_HEX],
                  uint64_t *stored, kh_err *err)
{
    kh_chunks_scratch *s = kh_chunks_scratch_new();
    int rc = kh_chunks_put_with(c, s, data, len, hex, false, stored, err);
    kh_chunks_scratch_free(s);
    return rc;
}

/* Data that does not compress (already compressed, encrypted, random) is
 * stored in a zstd frame of raw blocks: the same format for every reader
 * (ZSTD_decompress copies them out), without the work of compressing it.
 * Two samples of RAW_SAMPLE bytes tell: when neither shrinks below
 * RAW_KEEP/64 of its size, the chunk goes raw. */
#define RAW_SAMPLE (32u << 10)
#define RAW_KEEP 63u
#define ZSTD_RAW_BLOCK (128u << 10)

static bool incompressible(kh_chunks_scratch *s, const unsigned char *data, size_t len)
{
    if (len < 8 * RAW_SAMPLE)
        return false;
    const size_t at[2] = { 0, len / 2 };
    for (size_t i = 0; i < 2; i++) { /* into zbuf: cap > len, free until the seal */
        size_t z = ZSTD_compress2(s->z, s->zbuf, s->cap, data + at[i], RAW_SAMPLE);
        if (ZSTD_isError(z) || z * 64 < (size_t)RAW_SAMPLE * RAW_KEEP)
            return false;
    }
    return true;
}

/* A zstd frame of raw blocks (RFC 8878: single segment, 4-byte content
 * size, no checksum) holding data; its length. dst has room for
 * raw_frame_bound(len). */
static size_t raw_frame_bound(size_t len)
{
    return 9 + len + 3 * (len / ZSTD_RAW_BLOCK + 1);
}

static size_t raw_frame(unsigned char *dst, const unsigned char *data, size_t len)
{
    static const unsigned char head[5] = { 0x28, 0xb5, 0x2f, 0xfd, 0xa0 };
    memcpy(dst, head, sizeof(head));
    for (int i = 0; i < 4; i++)
        dst[5 + i] = (unsigned char)((uint64_t)len >> (8 * i));
    size_t n = 9, off = 0;
    do {
        size_t b = len - off < ZSTD_RAW_BLOCK ? len - off : ZSTD_RAW_BLOCK;
        uint32_t h = (uint32_t)(b << 3) | (off + b == len ? 1u : 0u); /* type 0: raw */
        dst[n++] = (unsigned char)h;
        dst[n++] = (unsigned char)(h >> 8);
        dst[n++] = (unsigned char)(h >> 16);
        memcpy(dst + n, data + off, b);
        n += b;
        off += b;
    } while (off < len);
    return n;
}

/* Compress (and seal) data into s->out: *outlen bytes. */
static int encode(const kh_chunks *c, kh_chunks_scratch *s, const char *hex, const void *data,
                  size_t len, size_t *outlen, kh_err *err)
{
    size_t zb = ZSTD_compressBound(len);
    size_t bound = (zb > raw_frame_bound(len) ? zb : raw_frame_bound(len)) + HDR_LEN + IV_LEN +
                   TAG_LEN;
    if (s->cap < bound) {
        free(s->zbuf);
        free(s->out);
        s->zbuf = xmalloc(bound);
        s->out = xmalloc(bound);
        s->cap = bound;
    }
    unsigned char *z = c->encrypted ? s->zbuf : s->out + HDR_LEN;
    size_t zlen = len <= UINT32_MAX && incompressible(s, data, len)
                      ? raw_frame(z, data, len)
                      : ZSTD_compress2(s->z, z, s->cap - HDR_LEN, data, len);
    if (ZSTD_isError(zlen)) {
        kh_err_set(err, KH_E_INTERNAL, "zstd: %s", ZSTD_getErrorName(zlen));
        return -1;
    }
    memcpy(s->out, MAGIC, 4);
    s->out[4] = c->encrypted ? 1 : 0;
    *outlen = HDR_LEN + zlen + (c->encrypted ? IV_LEN + TAG_LEN : 0);
    if (c->encrypted && seal(c, hex, z, zlen, s->out + HDR_LEN) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "encrypting a chunk failed");
        return -1;
    }
    return 0;
}

int kh_chunks_put_with(const kh_chunks *c, kh_chunks_scratch *s, const void *data, size_t len,
                       char hex[KH_DIGEST_HEX], bool known, uint64_t *stored, kh_err *err)
{
    *stored = 0;
    if (!known)
        kh_chunks_digest(c, data, len, hex);
    char *file = kh_chunks_file(c, hex);
    struct stat sb;
    if (stat(file, &sb) == 0 && sb.st_size > HDR_LEN) {
        free(file);
        return 0;
    }
    char dir[4096];
    if (kh_fmt(dir, sizeof(dir), "%s/chunks/%.2s", c->path, hex) < 0 ||
        (mkdir(dir, 0700) < 0 && errno != EEXIST)) {
        kh_err_errno(err, errno == ENOSPC ? KH_E_UNAVAILABLE : KH_E_INTERNAL, errno,
                     "backup store %s", c->path);
        free(file);
        return -1;
    }
    size_t outlen = 0;
    if (encode(c, s, hex, data, len, &outlen, err) < 0) {
        free(file);
        return -1;
    }
    /* the temp name is unique among threads and daemons: a random part */
    unsigned char rnd[8];
    kh_random_bytes(rnd, sizeof(rnd));
    char rhex[17];
    hex_encode(rnd, sizeof(rnd), rhex);
    char *tmp = xasprintf("%s/.tmp-%.16s-%s", dir, hex, rhex);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int e = 0;
    if (fd < 0 || write_all(fd, s->out, outlen) < 0 || (!s->defer && fsync(fd) < 0))
        e = errno ? errno : EIO;
    if (!e && s->defer)
        sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); /* the writeback starts now */
    if (fd >= 0 && close(fd) < 0 && !e)
        e = errno;
    if (!e && s->defer) {
        if (s->npend == s->cappend) {
            s->cappend = s->cappend ? 2 * s->cappend : 32;
            s->pend = xrealloc(s->pend, s->cappend * sizeof(*s->pend));
        }
        s->pend[s->npend].tmp = tmp;
        s->pend[s->npend].file = file;
        s->npend++;
        s->pend_bytes += outlen;
        *stored = outlen;
        return 1;
    }
    if (!e && rename(tmp, file) < 0)
        e = errno;
    if (e) {
        unlink(tmp);
        kh_err_errno(err, e == ENOSPC || e == EDQUOT ? KH_E_UNAVAILABLE : KH_E_INTERNAL, e,
                     "writing chunk %.16s to backup store %s", hex, c->path);
        free(tmp);
        free(file);
        return -1;
    }
    free(tmp);
    free(file);
    *stored = outlen;
    return 1;
}

long kh_chunks_get(const kh_chunks *c, const char *hex, void *buf, kh_err *err)
{
    char *file = kh_chunks_file(c, hex);
    size_t n = 0;
    kh_err e = KH_ERR_INIT;
    char *raw = kh_fs_read(file, KH_CHUNK_SIZE + KH_CHUNK_SIZE / 8 + 4096, &n, &e);
    free(file);
    if (!raw) {
        kh_err_set(err, KH_E_CONFLICT, "chunk %s is missing or unreadable: %s", hex, e.msg);
        return -1;
    }
    long res = -1;
    const unsigned char *p = (const unsigned char *)raw;
    unsigned char *plain = NULL;
    size_t zlen = 0;
    const unsigned char *z = NULL;
    if (n < HDR_LEN || memcmp(p, MAGIC, 4) != 0 || p[4] != (c->encrypted ? 1 : 0))
        goto bad;
    if (c->encrypted) {
        plain = xmalloc(n);
        int l = unseal(c, hex, p + HDR_LEN, n - HDR_LEN, plain);
        if (l < 0)
            goto bad;
        z = plain;
        zlen = (size_t)l;
    } else {
        z = p + HDR_LEN;
        zlen = n - HDR_LEN;
    }
    size_t dlen = ZSTD_decompress(buf, KH_CHUNK_SIZE, z, zlen);
    if (ZSTD_isError(dlen))
        goto bad;
    char check[KH_DIGEST_HEX];
    kh_chunks_digest(c, buf, dlen, check);
    if (strcmp(check, hex) != 0)
        goto bad;
    res = (long)dlen;
    goto out;
bad:
    kh_err_set(err, KH_E_CONFLICT, "chunk %s is damaged", hex);
out:
    free(plain);
    free(raw);
    return res;
}
