/* The backup pull (pipeline of worker threads) against a real qemu-nbd:
 * every chunk's digest is the digest of the disk's bytes there, whatever
 * order the workers end in; holes and chunks of zeros are sparse; a
 * second pull stores nothing new (deduplicated); small chunks (many in
 * flight, many block-status windows) over three connections (bands); an incremental pull with a dirty
 * bitmap reads only the dirty chunks and keeps the base's others; a pull
 * into a full store fails and leaves no index. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kh_test.h"
#include "backup/nbd.h"
#include "util/fs.h"
#include "util/mem.h"

#define MiB (1u << 20)
#define DISK (24u * MiB)

static char dir[] = "/tmp/kh-pull-XXXXXX";

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = xmalloc(n);
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 24); /* bits 16-23 repeat every 16 MiB */
    }
    return p;
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* qemu-nbd serving file (read-only, persistent) at sock; its pid. */
static pid_t serve(const char *file, const char *fmt, const char *bitmap, const char *sock)
{
    char pidf[256], cmd[1024];
    snprintf(pidf, sizeof(pidf), "%s/nbd.pid", dir);
    unlink(pidf);
    unlink(sock);
    snprintf(cmd, sizeof(cmd), "/usr/bin/qemu-nbd --fork --persistent --shared=4 --read-only -f %s "
             "--pid-file=%s --socket=%s %s%s %s", fmt, pidf, sock, bitmap ? "--bitmap=" : "",
             bitmap ? bitmap : "", file);
    if (run(cmd) != 0)
        return -1;
    kh_err e = KH_ERR_INIT;
    char *t = kh_fs_read(pidf, 64, NULL, &e);
    pid_t pid = t ? (pid_t)atoi(t) : -1;
    free(t);
    return pid;
}

static void stop(pid_t pid)
{
    if (pid > 0)
        kill(pid, SIGTERM);
    for (int i = 0; i < 100 && pid > 0 && kill(pid, 0) == 0; i++)
        usleep(20000);
}

/* The disk: chunks of data, a hole, written zeros, a short tail. */
static unsigned char *make_raw(const char *path)
{
    unsigned char *img = pattern(DISK, 7);
    memset(img + 4 * MiB, 0, 3 * MiB);       /* written zeros */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, img, DISK) == (ssize_t)DISK);
    close(fd);
    /* a hole: 8..12 MiB punched */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "fallocate -p -o %u -l %u %s", 8 * MiB, 4 * MiB, path);
    CHECK(run(cmd) == 0);
    memset(img + 8 * MiB, 0, 4 * MiB);
    return img;
}

static void check_index(const kh_chunks *c, const kh_index *ix, const unsigned char *img)
{
    CHECK(ix->size == DISK && ix->chunk == kh_chunks_chunk_size(c));
    for (size_t i = 0; i < ix->n; i++) {
        uint64_t len = kh_index_len(ix, i);
        const unsigned char *p = img + (uint64_t)i * ix->chunk;
        if (kh_nbd_all_zero(p, len)) {
            CHECK(ix->digest[i][0] == '\0');
        } else {
            char want[KH_DIGEST_HEX];
            kh_chunks_digest(c, p, len, want);
            CHECK(strcmp(ix->digest[i], want) == 0);
        }
    }
}

static void test_full_and_dedup(uint32_t chunk, const char *name, unsigned connections)
{
    char raw[256], sock[256], sp[256];
    snprintf(raw, sizeof(raw), "%s/disk.raw", dir);
    snprintf(sock, sizeof(sock), "%s/nbd.sock", dir);
    snprintf(sp, sizeof(sp), "%s/%s", dir, name);
    unsigned char *img = make_raw(raw);
    kh_err err = KH_ERR_INIT;
    kh_chunks *c = kh_chunks_open(sp, NULL, true, chunk, &err);
    CHECK(c != NULL && kh_chunks_chunk_size(c) == chunk);
    pid_t pid = serve(raw, "raw", NULL, sock);
    CHECK(pid > 0);
    kh_nbd_stats st = { 0 };
    kh_index ix;
    kh_nbd_pull_spec spec = { .chunks = c, .socket = sock, .export_name = "",
                              .connect_ms = 10000, .connections = connections };
    CHECK(kh_nbd_pull(&spec, &st, &ix, &err) == 0);
    if (kh_err_isset(&err))
        fprintf(stderr, "pull: %s\n", err.msg);
    check_index(c, &ix, img);
    /* the chunks that are not all zeros hold data (no two alike) */
    uint64_t data = 0, with_data = 0;
    for (size_t i = 0; i < ix.n; i++)
        if (!kh_nbd_all_zero(img + (uint64_t)i * chunk, kh_index_len(&ix, i))) {
            data += kh_index_len(&ix, i);
            with_data++;
        }
    CHECK(atomic_load(&st.done) == DISK);
    CHECK(atomic_load(&st.chunks_new) == with_data);
    CHECK(atomic_load(&st.chunks_sparse) == ix.n - with_data);
    /* the hole is known from block status: not read */
    CHECK(atomic_load(&st.read) <= DISK - 4u * MiB);
    /* again: every chunk exists */
    kh_nbd_stats st2 = { 0 };
    kh_index ix2;
    CHECK(kh_nbd_pull(&spec, &st2, &ix2, &err) == 0);
    CHECK(atomic_load(&st2.chunks_new) == 0 && atomic_load(&st2.written) == 0);
    CHECK(atomic_load(&st2.dedup) == data);
    CHECK(memcmp(ix.digest, ix2.digest, ix.n * sizeof(*ix.digest)) == 0);
    kh_index_clear(&ix2);
    kh_index_clear(&ix);
    stop(pid);
    kh_chunks_free(c);
    free(img);
}

/* qcow2 with a dirty bitmap: the incremental pull reads the dirty chunks. */
static void test_incremental(void)
{
    char q[256], sock[256], sp[256], cmd[1024];
    snprintf(q, sizeof(q), "%s/disk.qcow2", dir);
    snprintf(sock, sizeof(sock), "%s/nbdq.sock", dir);
    snprintf(sp, sizeof(sp), "%s/inc", dir);
    const uint32_t chunk = 256u << 10;
    unsigned char *img = pattern(DISK, 9);
    char raw[256];
    snprintf(raw, sizeof(raw), "%s/src.raw", dir);
    int fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, img, DISK) == (ssize_t)DISK);
    close(fd);
    snprintf(cmd, sizeof(cmd), "qemu-img convert -f raw -O qcow2 %s %s", raw, q);
    CHECK(run(cmd) == 0);
    kh_err err = KH_ERR_INIT;
    kh_chunks *c = kh_chunks_open(sp, NULL, true, chunk, &err);
    CHECK(c != NULL);
    pid_t pid = serve(q, "qcow2", NULL, sock);
    kh_nbd_stats st = { 0 };
    kh_index base;
    kh_nbd_pull_spec spec = { .chunks = c, .socket = sock, .export_name = "",
                              .connect_ms = 10000 };
    CHECK(kh_nbd_pull(&spec, &st, &base, &err) == 0);
    stop(pid);
    /* a bitmap, then 64 KiB written at 1 MiB + 8 KiB and 4 KiB at 20 MiB - 2 KiB
     * (across two chunks): three dirty chunks */
    snprintf(cmd, sizeof(cmd), "qemu-img bitmap --add %s b1 && qemu-io -f qcow2 -c "
             "'write -P 0x5a %u 65536' -c 'write -P 0x33 %u 4096' %s >/dev/null", q,
             MiB + 8192, 20 * MiB - 2048, q);
    CHECK(run(cmd) == 0);
    memset(img + MiB + 8192, 0x5a, 65536);
    memset(img + 20 * MiB - 2048, 0x33, 4096);
    pid = serve(q, "qcow2", "b1", sock);
    CHECK(pid > 0);
    kh_nbd_stats st2 = { 0 };
    kh_index ix;
    spec.bitmap = "b1";
    spec.base = &base;
    CHECK(kh_nbd_pull(&spec, &st2, &ix, &err) == 0);
    if (kh_err_isset(&err))
        fprintf(stderr, "pull: %s\n", err.msg);
    CHECK(atomic_load(&st2.read) == 3ull * chunk);
    CHECK(atomic_load(&st2.chunks_new) == 3);
    CHECK(atomic_load(&st2.done) == DISK);
    check_index(c, &ix, img);
    kh_index_clear(&ix);
    kh_index_clear(&base);
    stop(pid);
    kh_chunks_free(c);
    free(img);
}

/* A store that cannot take a chunk: the pull fails, no index. */
static void test_store_fails(void)
{
    char raw[256], sock[256], sp[256], cd[300];
    snprintf(raw, sizeof(raw), "%s/disk.raw", dir);
    snprintf(sock, sizeof(sock), "%s/nbdf.sock", dir);
    snprintf(sp, sizeof(sp), "%s/ro", dir);
    unsigned char *img = make_raw(raw);
    kh_err err = KH_ERR_INIT;
    kh_chunks *c = kh_chunks_open(sp, NULL, true, 0, &err);
    CHECK(c != NULL);
    /* chunks/ as a file: no chunk directory can be made under it */
    snprintf(cd, sizeof(cd), "%s/chunks", sp);
    CHECK(rmdir(cd) == 0);
    int fd = open(cd, O_WRONLY | O_CREAT, 0600);
    close(fd);
    pid_t pid = serve(raw, "raw", NULL, sock);
    kh_nbd_stats st = { 0 };
    kh_index ix;
    kh_nbd_pull_spec spec = { .chunks = c, .socket = sock, .export_name = "",
                              .connect_ms = 10000 };
    CHECK(kh_nbd_pull(&spec, &st, &ix, &err) == -1);
    CHECK(kh_err_isset(&err) && strstr(err.msg, "backup store") != NULL);
    CHECK(ix.digest == NULL && ix.n == 0);
    stop(pid);
    kh_chunks_free(c);
    free(img);
}

static void test_full_1m(void)
{
    test_full_and_dedup(1u << 20, "s1m", 1);
}

static void test_full_64k(void)
{
    test_full_and_dedup(64u << 10, "s64k", 3); /* three bands */
}

static void test_full_4m(void)
{
    test_full_and_dedup(4u << 20, "s4m", 3); /* 6 chunks: one band */
}

int main(void)
{
    if (access("/usr/bin/qemu-nbd", X_OK) != 0) {
        printf("skip: no qemu-nbd\n");
        return 77;
    }
    CHECK(mkdtemp(dir) != NULL);
    RUN(test_full_1m);
    RUN(test_full_64k);
    RUN(test_full_4m);
    RUN(test_incremental);
    RUN(test_store_fails);
    kh_err e = KH_ERR_INIT;
    kh_fs_rm_rf(dir, &e);
    TEST_DONE();
}
