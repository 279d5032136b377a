/* The live-restore NBD server against a real NBD client (libnbd) over a
 * socket pair: size and read-only flag, reads across pieces, sparse pieces
 * as zeros, the short last piece, reads past the end and writes refused,
 * a damaged chunk an I/O error, the thread ending when the client goes. */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../kh_test.h"
#include "backup/nbdserve.h"
#include "util/fs.h"
#include "util/mem.h"

static char dir[] = "/tmp/kh-nbdserve-XXXXXX";

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

static void test_serve(void)
{
    kh_err err = KH_ERR_INIT;
    kh_chunks *c = kh_chunks_open(dir, NULL, true, 0, &err);
    CHECK(c != NULL);
    if (!c)
        return;
    /* pieces: A, B, sparse, 1000 bytes of A */
    const uint64_t size = 3ull * KH_CHUNK_SIZE + 1000;
    unsigned char *a = pattern(KH_CHUNK_SIZE, 1), *b = pattern(KH_CHUNK_SIZE, 2);
    kh_index ix;
    kh_index_init(&ix, size, KH_CHUNK_SIZE);
    CHECK(ix.n == 4);
    uint64_t stored;
    CHECK(kh_chunks_put(c, a, KH_CHUNK_SIZE, ix.digest[0], &stored, &err) >= 0);
    CHECK(kh_chunks_put(c, b, KH_CHUNK_SIZE, ix.digest[1], &stored, &err) >= 0);
    ix.digest[2][0] = 0;
    CHECK(kh_chunks_put(c, a, 1000, ix.digest[3], &stored, &err) >= 0);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    kh_nbdserve *s = kh_nbdserve_start(c, &ix, sv[0], &err);
    CHECK(s != NULL);
    struct nbd_handle *h = nbd_create();
    CHECK(h != NULL && nbd_connect_socket(h, sv[1]) == 0);
    if (nbd_get_error())
        fprintf(stderr, "libnbd: %s\n", nbd_get_error());
    CHECK(nbd_get_size(h) == (int64_t)size);
    CHECK(nbd_is_read_only(h) == 1);
    /* across the first two pieces */
    size_t n = 2 * 65536;
    unsigned char *buf = xmalloc(KH_CHUNK_SIZE + n);
    CHECK(nbd_pread(h, buf, n, KH_CHUNK_SIZE - 65536, 0) == 0);
    CHECK(memcmp(buf, a + KH_CHUNK_SIZE - 65536, 65536) == 0);
    CHECK(memcmp(buf + 65536, b, 65536) == 0);
    /* the sparse piece and the tail */
    memset(buf, 0xff, KH_CHUNK_SIZE + 1000);
    CHECK(nbd_pread(h, buf, KH_CHUNK_SIZE + 1000, 2ull * KH_CHUNK_SIZE, 0) == 0);
    size_t zero = 0;
    for (size_t i = 0; i < KH_CHUNK_SIZE; i++)
        zero += buf[i] == 0;
    CHECK(zero == KH_CHUNK_SIZE);
    CHECK(memcmp(buf + KH_CHUNK_SIZE, a, 1000) == 0);
    /* refused: past the end (libnbd checks it itself, unless told not to) and writes */
    nbd_set_strict_mode(h, 0);
    CHECK(nbd_pread(h, buf, 4096, size - 1000, 0) == -1);
    CHECK(nbd_pwrite(h, buf, 4096, 0, 0) == -1);
    /* a damaged chunk: an I/O error for the reader, not a crash */
    char *file = kh_chunks_file(c, ix.digest[1]);
    FILE *f = fopen(file, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, 100, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, 100, SEEK_SET);
        fputc(ch ^ 0x40, f);
        fclose(f);
    }
    free(file);
    CHECK(nbd_pread(h, buf, 4096, KH_CHUNK_SIZE + 8192, 0) == 0); /* still cached */
    CHECK(nbd_pread(h, buf, 4096, 0, 0) == 0);
    CHECK(nbd_pread(h, buf, 512, 3ull * KH_CHUNK_SIZE, 0) == 0); /* B leaves the cache */
    CHECK(nbd_pread(h, buf, 4096, KH_CHUNK_SIZE, 0) == -1 && nbd_get_errno() == EIO);
    CHECK(kh_nbdserve_bytes(s) > KH_CHUNK_SIZE);
    /* the client leaves: the server's thread ends */
    nbd_shutdown(h, 0);
    nbd_close(h);
    for (int i = 0; i < 200 && !kh_nbdserve_done(s); i++)
        usleep(10000);
    CHECK(kh_nbdserve_done(s));
    kh_nbdserve_free(s);
    free(buf);
    free(a);
    free(b);
    kh_index_clear(&ix);
    kh_chunks_free(c);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_serve);
    kh_err e = KH_ERR_INIT;
    kh_fs_rm_rf(dir, &e);
    TEST_DONE();
}
