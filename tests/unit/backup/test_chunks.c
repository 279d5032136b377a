/* The chunk store: round trip, deduplication, digests (plain and keyed),
 * damage and missing chunks named, wrong key refused, index JSON, raw
 * frames for data that does not compress. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kh_test.h"
#include "backup/chunks.h"
#include "backup/nbd.h"
#include "util/fs.h"
#include "util/mem.h"

static char dir[] = "/tmp/kh-chunks-XXXXXX";

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = xmalloc(n);
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
    return p;
}

static void run(const char *sub, const unsigned char *key)
{
    kh_err err = KH_ERR_INIT;
    char *path = xasprintf("%s/%s", dir, sub);
    kh_chunks *c = kh_chunks_open(path, key, true, 0, &err);
    CHECK(c != NULL);
    if (!c) {
        free(path);
        return;
    }
    unsigned char *a = pattern(KH_CHUNK_SIZE, 1), *buf = xmalloc(KH_CHUNK_SIZE);
    char h1[KH_DIGEST_HEX], h2[KH_DIGEST_HEX];
    uint64_t stored = 0;
    CHECK(kh_chunks_put(c, a, KH_CHUNK_SIZE, h1, &stored, &err) == 1 && stored > 0);
    CHECK(kh_chunks_put(c, a, KH_CHUNK_SIZE, h2, &stored, &err) == 0 && stored == 0);
    CHECK_STR(h1, h2);
    CHECK(kh_chunks_get(c, h1, buf, &err) == KH_CHUNK_SIZE);
    CHECK(memcmp(a, buf, KH_CHUNK_SIZE) == 0);
    /* a short last piece */
    CHECK(kh_chunks_put(c, a, 1000, h2, &stored, &err) == 1);
    CHECK(kh_chunks_get(c, h2, buf, &err) == 1000 && memcmp(a, buf, 1000) == 0);
    /* a flipped byte: damaged, named */
    char *file = kh_chunks_file(c, h1);
    FILE *f = fopen(file, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, 200, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, 200, SEEK_SET);
        fputc(ch ^ 0x40, f);
        fclose(f);
    }
    kh_err_clear(&err);
    CHECK(kh_chunks_get(c, h1, buf, &err) < 0 && err.code == KH_E_CONFLICT &&
          strstr(err.msg, h1) && strstr(err.msg, "damaged"));
    unlink(file);
    kh_err_clear(&err);
    CHECK(kh_chunks_get(c, h1, buf, &err) < 0 && strstr(err.msg, "missing"));
    free(file);
    kh_chunks_free(c);
    /* reopen: the same header; the wrong key (or none) is refused */
    kh_err_clear(&err);
    c = kh_chunks_open(path, key, false, 0, &err);
    CHECK(c != NULL);
    kh_chunks_free(c);
    if (key) {
        unsigned char other[KH_CHUNK_KEY_LEN];
        memcpy(other, key, sizeof(other));
        other[0] ^= 1;
        kh_err_clear(&err);
        CHECK(kh_chunks_open(path, other, false, 0, &err) == NULL && err.code == KH_E_FORBIDDEN);
        kh_err_clear(&err);
        CHECK(kh_chunks_open(path, NULL, false, 0, &err) == NULL && err.code == KH_E_INVALID);
    } else {
        unsigned char k[KH_CHUNK_KEY_LEN] = { 0 };
        kh_err_clear(&err);
        CHECK(kh_chunks_open(path, k, false, 0, &err) == NULL && err.code == KH_E_INVALID);
    }
    free(a);
    free(buf);
    free(path);
}

static void test_plain(void)
{
    run("plain", NULL);
}

static void test_encrypted(void)
{
    unsigned char key[KH_CHUNK_KEY_LEN];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (unsigned char)(i * 7 + 3);
    run("enc", key);
    /* names are keyed: not the plain SHA-256, and differ between keys */
    kh_err err = KH_ERR_INIT;
    char *p1 = xasprintf("%s/k1", dir), *p2 = xasprintf("%s/k2", dir);
    unsigned char key2[KH_CHUNK_KEY_LEN];
    memcpy(key2, key, sizeof(key2));
    key2[5] ^= 0x80;
    kh_chunks *a = kh_chunks_open(p1, key, true, 0, &err), *b = kh_chunks_open(p2, key2, true, 0, &err);
    kh_chunks *plain = kh_chunks_open(dir, NULL, true, 0, &err);
    CHECK(a && b && plain);
    if (a && b && plain) {
        char ha[KH_DIGEST_HEX], hb[KH_DIGEST_HEX], hp[KH_DIGEST_HEX];
        kh_chunks_digest(a, "hello", 5, ha);
        kh_chunks_digest(b, "hello", 5, hb);
        kh_chunks_digest(plain, "hello", 5, hp);
        CHECK_STR(hp, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        CHECK(strcmp(ha, hp) != 0 && strcmp(ha, hb) != 0);
    }
    kh_chunks_free(a);
    kh_chunks_free(b);
    kh_chunks_free(plain);
    free(p1);
    free(p2);
}

static void test_index_json(void)
{
    kh_err err = KH_ERR_INIT;
    kh_index ix, back;
    kh_index_init(&ix, 3 * (uint64_t)KH_CHUNK_SIZE + 5, KH_CHUNK_SIZE);
    CHECK(ix.n == 4);
    memset(ix.digest[1], 'a', 64);
    ix.digest[1][64] = '\0';
    json_t *j = kh_index_to_json(&ix);
    CHECK(kh_index_from_json(j, &back, &err) == 0 && back.n == 4 && back.size == ix.size);
    CHECK(back.digest[0][0] == '\0' && strcmp(back.digest[1], ix.digest[1]) == 0);
    kh_index_clear(&back);
    json_array_remove(json_object_get(j, "chunks"), 0); /* one entry short */
    CHECK(kh_index_from_json(j, &back, &err) < 0 && err.code == KH_E_CONFLICT);
    json_decref(j);
    kh_index_clear(&ix);
}

/* Data that does not compress is stored in a zstd frame of raw blocks
 * (a few bytes over its size, read back as any chunk); data of which a
 * sample compresses is compressed. */
static void test_raw(void)
{
    const unsigned char *keys[2] = { NULL,
                                     (const unsigned char *)"0123456789abcdef0123456789abcdef" };
    for (int k = 0; k < 2; k++) {
        kh_err err = KH_ERR_INIT;
        char *path = xasprintf("%s/raw%d", dir, k);
        kh_chunks *c = kh_chunks_open(path, keys[k], true, 0, &err);
        CHECK(c != NULL);
        free(path);
        if (!c)
            continue;
        size_t n = 1u << 20;
        unsigned char *a = xmalloc(n), *buf = xmalloc(KH_CHUNK_SIZE);
        FILE *r = fopen("/dev/urandom", "rb");
        CHECK(r && fread(a, 1, n, r) == n);
        if (r)
            fclose(r);
        char h[KH_DIGEST_HEX];
        uint64_t stored = 0;
        CHECK(kh_chunks_put(c, a, n, h, &stored, &err) == 1);
        /* header, frame header, 8 block headers (+ IV and tag) */
        CHECK(stored >= n + 5 + 9 + 8 * 3 && stored <= n + 5 + 9 + 8 * 3 + 28);
        CHECK(kh_chunks_get(c, h, buf, &err) == (long)n && memcmp(a, buf, n) == 0);
        /* an odd length: a short last block */
        CHECK(kh_chunks_put(c, a, n - 12345, h, &stored, &err) == 1);
        CHECK(kh_chunks_get(c, h, buf, &err) == (long)(n - 12345) &&
              memcmp(a, buf, n - 12345) == 0);
        /* random first half, zeros after: compressed */
        memset(a + n / 2, 0, n / 2);
        CHECK(kh_chunks_put(c, a, n, h, &stored, &err) == 1 && stored < n / 2 + n / 16);
        CHECK(kh_chunks_get(c, h, buf, &err) == (long)n && memcmp(a, buf, n) == 0);
        free(a);
        free(buf);
        kh_chunks_free(c);
    }
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_plain);
    RUN(test_encrypted);
    RUN(test_index_json);
    RUN(test_raw);
    kh_err err = KH_ERR_INIT;
    kh_fs_rm_rf(dir, &err);
    TEST_DONE();
}
