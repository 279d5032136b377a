/* test_kernel.c - kh_kernel_resolve on synthetic bzImages (built here:
 * a fake setup header around a gzip/xz/lzma/zstd-compressed tiny ELF) and,
 * when tests/guest/build.sh has run, on the real Debian kernel. */
#define ZLIB_CONST
#include <elf.h>
#include <errno.h>
#include <lzma.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "../kh_test.h"
#include "qemu/kernel.h"
#include "util/fs.h"
#include "util/mem.h"

#define XEN_ELFNOTE_PHYS32_ENTRY_TEST 18

static char tmpdir[] = "/tmp/kh-kernel-test.XXXXXX";
static char *cache;

typedef struct buf {
    unsigned char *p;
    size_t len;
} buf;

/* A tiny ELF64 x86-64 image: header, one PT_NOTE, a Xen note of the given
 * type (18 is the PVH entry), then pad bytes of padding. */
static buf make_elf(uint32_t note_type, size_t pad)
{
    Elf64_Ehdr eh;
    Elf64_Phdr ph;
    Elf64_Nhdr nh = { 4, 4, note_type };
    size_t note_off = sizeof(eh) + sizeof(ph);
    size_t note_len = sizeof(nh) + 4 + 4;
    buf b = { xcalloc(1, note_off + note_len + pad), note_off + note_len + pad };
    memset(&eh, 0, sizeof(eh));
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_phoff = sizeof(eh);
    eh.e_ehsize = sizeof(eh);
    eh.e_phentsize = sizeof(ph);
    eh.e_phnum = 1;
    memset(&ph, 0, sizeof(ph));
    ph.p_type = PT_NOTE;
    ph.p_offset = note_off;
    ph.p_filesz = note_len;
    memcpy(b.p, &eh, sizeof(eh));
    memcpy(b.p + sizeof(eh), &ph, sizeof(ph));
    memcpy(b.p + note_off, &nh, sizeof(nh));
    memcpy(b.p + note_off + sizeof(nh), "Xen", 4);
    memcpy(b.p + note_off + sizeof(nh) + 4, "\x00\x00\x00\x01", 4);
    return b;
}

static buf gz(buf in)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    buf out = { xmalloc(deflateBound(&zs, in.len) + 64), 0 };
    zs.next_in = in.p;
    zs.avail_in = (uInt)in.len;
    zs.next_out = out.p;
    zs.avail_out = (uInt)(deflateBound(&zs, in.len) + 64);
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
        abort();
    out.len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

static buf xz(buf in, bool alone)
{
    lzma_stream ls = LZMA_STREAM_INIT;
    lzma_options_lzma opt;
    lzma_lzma_preset(&opt, 6);
    if (alone ? lzma_alone_encoder(&ls, &opt) != LZMA_OK
              : lzma_easy_encoder(&ls, 6, LZMA_CHECK_CRC32) != LZMA_OK)
        abort();
    size_t cap = in.len + in.len / 2 + 4096;
    buf out = { xmalloc(cap), 0 };
    ls.next_in = in.p;
    ls.avail_in = in.len;
    ls.next_out = out.p;
    ls.avail_out = cap;
    if (lzma_code(&ls, LZMA_FINISH) != LZMA_STREAM_END)
        abort();
    out.len = cap - ls.avail_out;
    lzma_end(&ls);
    return out;
}

static buf zst(buf in)
{
    size_t cap = ZSTD_compressBound(in.len);
    buf out = { xmalloc(cap), 0 };
    out.len = ZSTD_compress(out.p, cap, in.p, in.len, 19);
    if (ZSTD_isError(out.len))
        abort();
    return out;
}

/* A bzImage: boot sector + setup_sects sectors of setup, then the
 * protected-mode part with the payload at payload_off, followed by the
 * 4-byte uncompressed size as the kernel build appends it. */
static buf make_bzimage(buf payload, unsigned setup_sects, unsigned version,
                        uint32_t payload_off, uint32_t extra_len)
{
    unsigned sects = setup_sects ? setup_sects : 4;
    size_t base = ((size_t)sects + 1) * 512;
    uint32_t plen = (uint32_t)payload.len + 4 + extra_len;
    buf b = { xcalloc(1, base + payload_off + payload.len + 4), 0 };
    b.len = base + payload_off + payload.len + 4;
    b.p[0x1f1] = (unsigned char)setup_sects;
    memcpy(b.p + 0x202, "HdrS", 4);
    b.p[0x206] = (unsigned char)(version & 0xff);
    b.p[0x207] = (unsigned char)(version >> 8);
    memcpy(b.p + 0x248, &payload_off, 4);
    memcpy(b.p + 0x24c, &plen, 4);
    memcpy(b.p + base + payload_off, payload.p, payload.len);
    memset(b.p + base + payload_off + payload.len, 0x42, 4);
    return b;
}

static char *write_tmp(const char *name, buf b)
{
    char *path = xasprintf("%s/%s", tmpdir, name);
    kh_err err = KH_ERR_INIT;
    if (kh_fs_write_atomic(path, b.p, b.len, 0644, &err) < 0) {
        printf("# %s\n", err.msg);
        abort();
    }
    return path;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Number of entries in the cache folder (temp files included). */
static int cache_entries(void)
{
    char *cmd = xasprintf("test $(ls -A %s 2>/dev/null | wc -l) -eq 0", cache);
    int empty = system(cmd) == 0;
    free(cmd);
    return empty ? 0 : 1;
}

/* Pseudo-random bytes after the ELF header and note (which stay valid). */
static void scramble(buf b)
{
    uint32_t x = 2463534242u;
    for (size_t i = 200; i < b.len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b.p[i] = (unsigned char)x;
    }
}

static void free_buf(buf b)
{
    free(b.p);
}

/* Resolve path; expect a PVH result whose contents equal elf. */
static void expect_pvh(const char *path, buf elf, const char *what)
{
    kh_err err = KH_ERR_INIT;
    char reason[256];
    char *r = kh_kernel_resolve_ex(path, cache, 0, reason, sizeof(reason), &err);
    CHECK(r != NULL);
    if (!r) {
        printf("# %s: %s\n", what, err.msg);
        return;
    }
    CHECK(strcmp(r, path) != 0);
    CHECK(ends_with(r, ".vmlinux"));
    CHECK(strncmp(r, cache, strlen(cache)) == 0);
    CHECK(strstr(reason, what) != NULL);
    if (!strstr(reason, what))
        printf("# reason: %s\n", reason);
    size_t len = 0;
    char *data = kh_fs_read(r, (size_t)64 << 20, &len, &err);
    CHECK(data && len == elf.len && memcmp(data, elf.p, len) == 0);
    struct stat st;
    CHECK(stat(r, &st) == 0 && (st.st_mode & 07777) == 0644);
    free(data);
    /* Second time: from the cache, same path. */
    char *again = kh_kernel_resolve_ex(path, cache, 0, reason, sizeof(reason), &err);
    CHECK_STR(again, r);
    CHECK(strstr(reason, "cache") != NULL);
    free(again);
    free(r);
}

/* Resolve path; expect the path back with reason containing `want`. */
static void expect_as_is(const char *path, size_t max, const char *want)
{
    kh_err err = KH_ERR_INIT;
    char reason[256];
    char *r = kh_kernel_resolve_ex(path, cache, max, reason, sizeof(reason), &err);
    CHECK_STR(r, path);
    CHECK(!kh_err_isset(&err));
    CHECK(strstr(reason, want) != NULL);
    if (!strstr(reason, want))
        printf("# reason \"%s\" lacks \"%s\"\n", reason, want);
    free(r);
}

static void test_compressions(void)
{
    buf elf = make_elf(XEN_ELFNOTE_PHYS32_ENTRY_TEST, 5000);
    struct {
        const char *name;
        buf payload;
    } cases[] = {
        { "gzip", gz(elf) },
        { "xz", xz(elf, false) },
        { "lzma", xz(elf, true) },
        { "zstd", zst(elf) },
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(cases); i++) {
        buf bz = make_bzimage(cases[i].payload, (unsigned)i * 7, 0x020f, 0x3c0, 0);
        char *name = xasprintf("bz-%s", cases[i].name);
        char *path = write_tmp(name, bz);
        expect_pvh(path, elf, cases[i].name);
        free(path);
        free(name);
        free_buf(bz);
        free_buf(cases[i].payload);
    }
    free_buf(elf);
}

static void test_no_note(void)
{
    buf elf = make_elf(5, 100); /* a Xen note, but not the PVH entry */
    buf p = gz(elf);
    buf bz = make_bzimage(p, 30, 0x020f, 0, 0);
    char *path = write_tmp("bz-nonote", bz);
    expect_as_is(path, 0, "no PVH entry note");
    free(path);
    free_buf(bz);
    free_buf(p);
    free_buf(elf);

    /* Not an ELF at all. */
    buf junk = { (unsigned char *)xstrdup("hello, not an elf at all"), 24 };
    p = zst(junk);
    bz = make_bzimage(p, 30, 0x020f, 0, 0);
    path = write_tmp("bz-notelf", bz);
    expect_as_is(path, 0, "not an ELF");
    free(path);
    free_buf(bz);
    free_buf(p);
    free_buf(junk);
}

static void test_bad_headers(void)
{
    buf elf = make_elf(XEN_ELFNOTE_PHYS32_ENTRY_TEST, 10);
    buf p = gz(elf);

    buf bz = make_bzimage(p, 30, 0x020f, 0, 0);
    bz.len = 0x240; /* truncated inside the setup header */
    char *path = write_tmp("bz-short", bz);
    expect_as_is(path, 0, "not a bzImage");
    free(path);

    bz.len = 0x1000;
    memcpy(bz.p + 0x202, "HdrX", 4);
    path = write_tmp("bz-nomagic", bz);
    expect_as_is(path, 0, "not a bzImage");
    free(path);
    free_buf(bz);

    bz = make_bzimage(p, 30, 0x0206, 0, 0);
    path = write_tmp("bz-oldproto", bz);
    expect_as_is(path, 0, "older than 2.08");
    free(path);
    free_buf(bz);

    bz = make_bzimage(p, 30, 0x020f, 0, 0);
    uint32_t off = 0xfffffff0u;
    memcpy(bz.p + 0x248, &off, 4);
    path = write_tmp("bz-offset", bz);
    expect_as_is(path, 0, "outside");
    free(path);
    free_buf(bz);

    bz = make_bzimage(p, 30, 0x020f, 0, 100); /* length past the end */
    path = write_tmp("bz-length", bz);
    expect_as_is(path, 0, "outside");
    free(path);
    free_buf(bz);

    /* Truncated compressed streams (the header says so, consistently). */
    buf half = { p.p, p.len / 2 };
    bz = make_bzimage(half, 30, 0x020f, 0, 0);
    bz.len -= 4; /* no size trailer either */
    uint32_t plen = (uint32_t)half.len;
    memcpy(bz.p + 0x24c, &plen, 4);
    path = write_tmp("bz-trunc-gz", bz);
    expect_as_is(path, 0, "truncated");
    free(path);
    free_buf(bz);
    free_buf(p);

    buf big = make_elf(XEN_ELFNOTE_PHYS32_ENTRY_TEST, 200000);
    scramble(big); /* incompressible, so half a stream is really half */
    const char *names[] = { "xz", "zstd" };
    for (int k = 0; k < 2; k++) {
        p = k == 0 ? xz(big, false) : zst(big);
        half = (buf){ p.p, p.len / 2 };
        bz = make_bzimage(half, 30, 0x020f, 0, 0);
        char *name = xasprintf("bz-trunc-%s", names[k]);
        path = write_tmp(name, bz);
        expect_as_is(path, 0, "truncated");
        free(name);
        free(path);
        free_buf(bz);
        free_buf(p);
    }
    free_buf(big);

    /* A gzip stream whose CRC does not match. */
    p = gz(elf);
    p.p[p.len - 8] ^= 0x5a;
    bz = make_bzimage(p, 30, 0x020f, 0, 0);
    path = write_tmp("bz-corrupt", bz);
    expect_as_is(path, 0, "gzip payload is corrupt");
    free(path);
    free_buf(bz);
    free_buf(p);

    /* Compressions we do not decompress. */
    const struct {
        const char *magic;
        size_t len;
        const char *name;
    } other[] = { { "\x02\x21\x4c\x18", 4, "lz4" }, { "BZh9", 4, "bzip2" },
                  { "\x89LZO", 4, "lzo" }, { "\x00\x00\x00\x00", 4, "unknown" } };
    for (size_t i = 0; i < KH_ARRAY_LEN(other); i++) {
        buf m = { xcalloc(1, 64), 64 };
        memcpy(m.p, other[i].magic, other[i].len);
        bz = make_bzimage(m, 30, 0x020f, 0, 0);
        path = write_tmp("bz-other", bz);
        expect_as_is(path, 0, other[i].name);
        free(path);
        free_buf(bz);
        free_buf(m);
    }
    free_buf(elf);
}

static void test_bomb(void)
{
    CHECK(KH_KERNEL_MAX_VMLINUX == (size_t)512 << 20);
    /* A valid ELF start followed by 3 MiB of zeros: compresses to almost
     * nothing; bounded to 1 MiB it must be refused, leaving no temp file. */
    buf elf = make_elf(XEN_ELFNOTE_PHYS32_ENTRY_TEST, 3 << 20);
    buf payloads[] = { gz(elf), xz(elf, false), zst(elf) };
    char *sub = xasprintf("%s/bomb-cache", tmpdir);
    char *saved = cache;
    cache = sub;
    for (size_t i = 0; i < KH_ARRAY_LEN(payloads); i++) {
        CHECK(payloads[i].len < 64 * 1024);
        buf bz = make_bzimage(payloads[i], 30, 0x020f, 0, 0);
        char *path = write_tmp("bz-bomb", bz);
        expect_as_is(path, 1 << 20, "more than 1 MiB");
        CHECK(cache_entries() == 0);
        /* Under the default bound the same image is fine. */
        expect_pvh(path, elf, i == 0 ? "gzip" : i == 1 ? "xz" : "zstd");
        kh_fs_rm_rf(sub, NULL);
        free(path);
        free_buf(bz);
        free_buf(payloads[i]);
    }
    cache = saved;
    free(sub);
    free_buf(elf);
}

static void test_elf_and_errors(void)
{
    buf elf = make_elf(XEN_ELFNOTE_PHYS32_ENTRY_TEST, 10);
    char *path = write_tmp("vmlinux-pvh", elf);
    expect_as_is(path, 0, "already an ELF vmlinux with a PVH entry");
    free(path);
    free_buf(elf);

    elf = make_elf(7, 10);
    path = write_tmp("vmlinux-nopvh", elf);
    expect_as_is(path, 0, "without PVH entry");
    free(path);
    /* Program headers pointing past the end. */
    Elf64_Ehdr eh;
    memcpy(&eh, elf.p, sizeof(eh));
    eh.e_phnum = 1000;
    memcpy(elf.p, &eh, sizeof(eh));
    path = write_tmp("vmlinux-badph", elf);
    expect_as_is(path, 0, "out of bounds");
    free(path);
    free_buf(elf);

    buf empty = { NULL, 0 };
    path = write_tmp("empty", empty);
    expect_as_is(path, 0, "empty");
    free(path);

    kh_err err = KH_ERR_INIT;
    char *missing = xasprintf("%s/does-not-exist", tmpdir);
    CHECK(kh_kernel_resolve(missing, cache, &err) == NULL);
    CHECK(err.code == KH_E_NOTFOUND);
    CHECK(strstr(err.msg, "does-not-exist") != NULL);
    free(missing);

    kh_err_clear(&err);
    CHECK(kh_kernel_resolve(tmpdir, cache, &err) == NULL);
    CHECK(err.code == KH_E_INVALID);

    /* A cache folder that cannot be created (below a regular file). */
    elf = make_elf(XEN_ELFNOTE_PHYS32_ENTRY_TEST, 33);
    buf p = gz(elf);
    buf bz = make_bzimage(p, 30, 0x020f, 0, 0);
    path = write_tmp("bz-nocache", bz);
    char *badcache = xasprintf("%s/bz-nocache/cache", tmpdir);
    kh_err_clear(&err);
    CHECK(kh_kernel_resolve(path, badcache, &err) == NULL);
    CHECK(kh_err_isset(&err));
    free(badcache);
    free(path);
    free_buf(bz);
    free_buf(p);
    free_buf(elf);
}

/* Several processes resolve the same kernel at once: all succeed with the
 * same path and the file is whole. */
static void test_concurrent(void)
{
    buf elf = make_elf(XEN_ELFNOTE_PHYS32_ENTRY_TEST, 2 << 20);
    scramble(elf);
    buf p = xz(elf, false);
    buf bz = make_bzimage(p, 30, 0x020f, 0, 0);
    char *path = write_tmp("bz-concurrent", bz);
    char *sub = xasprintf("%s/concurrent-cache", tmpdir);
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            kh_err err = KH_ERR_INIT;
            char reason[256];
            char *r = kh_kernel_resolve_ex(path, sub, 0, reason, sizeof(reason), &err);
            _exit(r && strcmp(r, path) != 0 ? 0 : 1);
        }
    }
    for (int i = 0; i < 4; i++) {
        int st = 0;
        CHECK(waitpid(pids[i], &st, 0) == pids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    char *saved = cache;
    cache = sub;
    expect_pvh(path, elf, "cache");
    cache = saved;
    char *cmd = xasprintf("test $(ls -A %s | wc -l) -eq 1", sub);
    CHECK(system(cmd) == 0); /* no temp files left */
    free(cmd);
    free(sub);
    free(path);
    free_buf(bz);
    free_buf(p);
    free_buf(elf);
}

/* The real Debian kernel from tests/guest/build.sh, when it was built. */
static void test_real_kernel(void)
{
    const char *dir = getenv("KH_GUEST_OUT");
    char *vmlinuz = dir ? xasprintf("%s/vmlinuz", dir) : NULL;
    if (!vmlinuz || access(vmlinuz, R_OK) != 0) {
        printf("# skip real kernel: run tests/guest/build.sh first\n");
        free(vmlinuz);
        return;
    }
    char *sub = xasprintf("%s/real-cache", tmpdir);
    kh_err err = KH_ERR_INIT;
    char reason[256];
    char *r = kh_kernel_resolve_ex(vmlinuz, sub, 0, reason, sizeof(reason), &err);
    CHECK(r != NULL && strcmp(r, vmlinuz) != 0);
    printf("# real kernel: %s (%s)\n", r ? r : err.msg, reason);
    struct stat st;
    CHECK(r && stat(r, &st) == 0 && st.st_size > (10 << 20));
    /* The cached vmlinux resolves to itself. */
    char *again = r ? kh_kernel_resolve_ex(r, sub, 0, reason, sizeof(reason), &err) : NULL;
    CHECK_STR(again, r);
    free(again);
    free(r);
    free(sub);
    free(vmlinuz);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    cache = xasprintf("%s/cache", tmpdir);
    RUN(test_compressions);
    RUN(test_no_note);
    RUN(test_bad_headers);
    RUN(test_bomb);
    RUN(test_elf_and_errors);
    RUN(test_concurrent);
    RUN(test_real_kernel);
    kh_fs_rm_rf(tmpdir, NULL);
    free(cache);
    TEST_DONE();
}
