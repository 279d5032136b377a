/* kernel.c - turn a bzImage into a PVH-bootable vmlinux, cached by hash.
 *
 * The bzImage setup header (Documentation/x86/boot.rst) says where the
 * compressed kernel (the payload) lies: payload_offset/payload_length,
 * relative to the protected-mode code at (setup_sects + 1) * 512. The
 * payload is decompressed into a temp file in the cache folder (bounded,
 * streamed), checked to be an ELF64 with a XEN_ELFNOTE_PHYS32_ENTRY note,
 * then renamed into place, so concurrent resolvers of the same kernel at
 * worst both write the same file.
 */
#define ZLIB_CONST
#include "qemu/kernel.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <lzma.h>
/* The low-level SHA-256 (deprecated in OpenSSL 3 for the EVP interface):
 * EVP's first use loads the provider machinery and the configuration,
 * about 2 MiB of libcrypto pages a daemon then keeps for good, to hash
 * one file. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define CHUNK ((size_t)1 << 20)
#define XZ_MEMLIMIT ((uint64_t)256 << 20)

/* Setup header offsets (boot protocol 2.08+). */
#define HDR_SETUP_SECTS 0x1f1
#define HDR_MAGIC 0x202
#define HDR_VERSION 0x206
#define HDR_PAYLOAD_OFFSET 0x248
#define HDR_PAYLOAD_LENGTH 0x24c
#define HDR_END 0x250

typedef enum comp {
    COMP_GZIP,
    COMP_XZ,
    COMP_LZMA,
    COMP_ZSTD,
    COMP_UNSUPPORTED,
} comp;

/* Where the decompressed bytes go: the temp file, with the size bound. */
typedef struct sink {
    int fd;
    const char *tmp;
    size_t total;
    size_t max;
    char *reason;
    size_t reason_size;
    kh_err *err;
} sink;

static void reasonf(char *reason, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reasonf(char *reason, size_t size, const char *fmt, ...)
{
    if (!reason || size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, size, fmt, ap);
    va_end(ap);
}

static uint16_t get16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static bool is_elf(const unsigned char *p, size_t len)
{
    return len >= SELFMAG && memcmp(p, ELFMAG, SELFMAG) == 0;
}

/* Is p an ELF64 x86-64 image with a Xen PHYS32_ENTRY note in a PT_NOTE
 * segment? When not, *why says what is missing. Every offset is checked
 * against len: the input may be hostile. */
static bool elf_has_pvh_note(const unsigned char *p, size_t len, const char **why)
{
    Elf64_Ehdr eh;
    if (!is_elf(p, len)) {
        *why = "not an ELF file";
        return false;
    }
    if (len < sizeof(eh)) {
        *why = "truncated ELF header";
        return false;
    }
    memcpy(&eh, p, sizeof(eh));
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
        eh.e_machine != EM_X86_64) {
        *why = "not a little-endian x86-64 ELF64";
        return false;
    }
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > len ||
        (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff) {
        *why = "ELF program headers out of bounds";
        return false;
    }
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, p + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_NOTE)
            continue;
        if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset) {
            *why = "ELF note segment out of bounds";
            return false;
        }
        uint64_t off = ph.p_offset, end = ph.p_offset + ph.p_filesz;
        while (end - off >= sizeof(Elf64_Nhdr)) {
            Elf64_Nhdr nh;
            memcpy(&nh, p + off, sizeof(nh));
            off += sizeof(nh);
            uint64_t namesz = ((uint64_t)nh.n_namesz + 3) & ~(uint64_t)3;
            uint64_t descsz = ((uint64_t)nh.n_descsz + 3) & ~(uint64_t)3;
            if (namesz > end - off)
                break;
            const unsigned char *name = p + off;
            off += namesz;
            if (nh.n_descsz > end - off)
                break;
            if (nh.n_namesz == 4 && memcmp(name, "Xen", 4) == 0 &&
                nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY)
                return true;
            off += descsz > end - off ? end - off : descsz;
        }
    }
    *why = "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)";
    return false;
}

static comp detect(const unsigned char *p, size_t len, const char **name)
{
    static const struct {
        const char *magic;
        size_t len;
        comp c;
        const char *name;
    } magics[] = {
        { "\x1f\x8b", 2, COMP_GZIP, "gzip" },
        { "\xfd" "7zXZ\0", 6, COMP_XZ, "xz" },
        { "\x5d\0\0", 3, COMP_LZMA, "lzma" },
        { "\x28\xb5\x2f\xfd", 4, COMP_ZSTD, "zstd" },
        { "\x02\x21\x4c\x18", 4, COMP_UNSUPPORTED, "lz4" },
        { "BZh", 3, COMP_UNSUPPORTED, "bzip2" },
        { "\x89LZO", 4, COMP_UNSUPPORTED, "lzo" },
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(magics); i++) {
        if (len >= magics[i].len && memcmp(p, magics[i].magic, magics[i].len) == 0) {
            *name = magics[i].name;
            return magics[i].c;
        }
    }
    *name = "an unknown format";
    return COMP_UNSUPPORTED;
}

/* Append n bytes to the temp file. 0: ok; 1: over the bound or not an
 * ELF (reason set); -1: write error (err set). */
static int sink_write(sink *s, const unsigned char *buf, size_t n)
{
    if (n == 0)
        return 0;
    if (n > s->max - s->total) {
        reasonf(s->reason, s->reason_size, "payload decompresses to more than %zu MiB",
                s->max >> 20);
        return 1;
    }
    if (s->total == 0 && !is_elf(buf, n)) {
        reasonf(s->reason, s->reason_size, "decompressed payload is not an ELF file");
        return 1;
    }
    s->total += n;
    while (n) {
        ssize_t w = write(s->fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            kh_err_errno(s->err, KH_E_INTERNAL, errno, "cannot write %s", s->tmp);
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int gunzip(const unsigned char *in, size_t len, sink *s)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        reasonf(s->reason, s->reason_size, "zlib cannot start");
        return 1;
    }
    unsigned char *out = xmalloc(CHUNK);
    zs.next_in = in;
    zs.avail_in = (uInt)len;
    int rc;
    for (;;) {
        zs.next_out = out;
        zs.avail_out = (uInt)CHUNK;
        int r = inflate(&zs, Z_NO_FLUSH);
        if ((rc = sink_write(s, out, CHUNK - zs.avail_out)) != 0)
            break;
        if (r == Z_STREAM_END)
            break;
        if (r == Z_OK)
            continue;
        if (r == Z_BUF_ERROR)
            reasonf(s->reason, s->reason_size, "gzip payload is truncated");
        else
            reasonf(s->reason, s->reason_size, "gzip payload is corrupt (%s)",
                    zs.msg ? zs.msg : "inflate failed");
        rc = 1;
        break;
    }
    inflateEnd(&zs);
    free(out);
    return rc;
}

static int unxz(const unsigned char *in, size_t len, bool alone, sink *s)
{
    const char *what = alone ? "lzma" : "xz";
    lzma_stream ls = LZMA_STREAM_INIT;
    lzma_ret r = alone ? lzma_alone_decoder(&ls, XZ_MEMLIMIT)
                       : lzma_stream_decoder(&ls, XZ_MEMLIMIT, 0);
    if (r != LZMA_OK) {
        reasonf(s->reason, s->reason_size, "liblzma cannot start (error %d)", (int)r);
        return 1;
    }
    unsigned char *out = xmalloc(CHUNK);
    ls.next_in = in;
    ls.avail_in = len;
    int rc;
    for (;;) {
        ls.next_out = out;
        ls.avail_out = CHUNK;
        r = lzma_code(&ls, LZMA_FINISH);
        if ((rc = sink_write(s, out, CHUNK - ls.avail_out)) != 0)
            break;
        if (r == LZMA_STREAM_END)
            break;
        if (r == LZMA_OK)
            continue;
        rc = 1;
        if (r == LZMA_BUF_ERROR)
            reasonf(s->reason, s->reason_size, "%s payload is truncated", what);
        else if (r == LZMA_MEMLIMIT_ERROR)
            reasonf(s->reason, s->reason_size, "%s payload needs more than %u MiB to decompress",
                    what, (unsigned)(XZ_MEMLIMIT >> 20));
        else
            reasonf(s->reason, s->reason_size, "%s payload is corrupt (liblzma error %d)",
                    what, (int)r);
        break;
    }
    lzma_end(&ls);
    free(out);
    return rc;
}

static int unzstd(const unsigned char *in, size_t len, sink *s)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d) {
        reasonf(s->reason, s->reason_size, "libzstd cannot start");
        return 1;
    }
    unsigned char *out = xmalloc(CHUNK);
    ZSTD_inBuffer ib = { in, len, 0 };
    int rc;
    for (;;) {
        ZSTD_outBuffer ob = { out, CHUNK, 0 };
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) {
            reasonf(s->reason, s->reason_size, "zstd payload is corrupt (%s)",
                    ZSTD_getErrorName(r));
            rc = 1;
            break;
        }
        if ((rc = sink_write(s, out, ob.pos)) != 0)
            break;
        if (r == 0)
            break; /* end of the frame; the 4-byte size after it is ignored */
        if (ib.pos == ib.size && ob.pos < ob.size) {
            reasonf(s->reason, s->reason_size, "zstd payload is truncated");
            rc = 1;
            break;
        }
    }
    ZSTD_freeDCtx(d);
    free(out);
    return rc;
}

/* Locate the payload. 0 with off and len set, or 1 with reason set. */
static int find_payload(const unsigned char *p, size_t size, size_t *off, size_t *len,
                        char *reason, size_t reason_size)
{
    if (size < HDR_END || memcmp(p + HDR_MAGIC, "HdrS", 4) != 0) {
        reasonf(reason, reason_size, "not a bzImage (no HdrS setup header)");
        return 1;
    }
    unsigned version = get16(p + HDR_VERSION);
    if (version < 0x0208) {
        reasonf(reason, reason_size, "boot protocol %u.%02u is older than 2.08 (no payload fields)",
                version >> 8, version & 0xff);
        return 1;
    }
    unsigned setup_sects = p[HDR_SETUP_SECTS] ? p[HDR_SETUP_SECTS] : 4;
    uint64_t base = ((uint64_t)setup_sects + 1) * 512;
    uint64_t poff = get32(p + HDR_PAYLOAD_OFFSET), plen = get32(p + HDR_PAYLOAD_LENGTH);
    if (plen == 0 || base + poff > size || plen > size - (base + poff)) {
        reasonf(reason, reason_size,
                "payload (offset %llu, length %llu) lies outside the %zu-byte file",
                (unsigned long long)base + poff, (unsigned long long)plen, size);
        return 1;
    }
    *off = (size_t)(base + poff);
    *len = (size_t)plen;
    return 0;
}

static void sha256_hex(const unsigned char *p, size_t len, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_CTX c;
    if (!SHA256_Init(&c) || !SHA256_Update(&c, p, len) || !SHA256_Final(md, &c))
        abort(); /* libcrypto without SHA-256: nothing sensible to do */
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Decompress the payload into cache_dir and verify it. Returns the cached
 * path, NULL with *as_is set (reason given), or NULL with err set. */
static char *extract(const unsigned char *payload, size_t len, comp c, const char *hex,
                     const char *cache_dir, size_t max, char *reason, size_t reason_size,
                     bool *as_is, kh_err *err)
{
    if (kh_fs_mkdir_p(cache_dir, 0755, err) < 0)
        return NULL;
    char *final = xasprintf("%s/%s.vmlinux", cache_dir, hex);
    char *tmp = xasprintf("%s/.%s.vmlinux.XXXXXX", cache_dir, hex);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot create a temp file in %s", cache_dir);
        goto fail;
    }
    sink s = { fd, tmp, 0, max, reason, reason_size, err };
    int rc;
    switch (c) {
    case COMP_GZIP: rc = gunzip(payload, len, &s); break;
    case COMP_XZ: rc = unxz(payload, len, false, &s); break;
    case COMP_LZMA: rc = unxz(payload, len, true, &s); break;
    case COMP_ZSTD: rc = unzstd(payload, len, &s); break;
    default: rc = 1; break;
    }
    if (rc != 0) {
        *as_is = rc > 0;
        goto fail;
    }
    void *map = s.total ? mmap(NULL, s.total, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (map == MAP_FAILED) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot map %s", tmp);
        goto fail;
    }
    const char *why = NULL;
    bool pvh = elf_has_pvh_note(map, s.total, &why);
    munmap(map, s.total);
    if (!pvh) {
        reasonf(reason, reason_size, "decompressed kernel: %s", why);
        *as_is = true;
        goto fail;
    }
    if (fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot sync %s", tmp);
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, final) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot rename %s", tmp);
        goto fail;
    }
    free(tmp);
    return final;
fail:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(tmp);
    free(final);
    return NULL;
}

char *kh_kernel_resolve_ex(const char *path, const char *cache_dir, size_t max_size,
                           char *reason, size_t reason_size, kh_err *err)
{
    if (reason && reason_size)
        reason[0] = '\0';
    if (max_size == 0)
        max_size = KH_KERNEL_MAX_VMLINUX;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        kh_err_errno(err, errno == ENOENT ? KH_E_NOTFOUND : KH_E_INTERNAL, errno,
                     "cannot open kernel %s", path);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot stat kernel %s", path);
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        kh_err_set(err, KH_E_INVALID, "kernel %s is not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) {
        close(fd);
        reasonf(reason, reason_size, "empty file");
        return xstrdup(path);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        kh_err_errno(err, KH_E_INTERNAL, map_errno, "cannot read kernel %s", path);
        return NULL;
    }
    const unsigned char *p = map;
    char *result = NULL;
    const char *why = NULL;
    size_t off = 0, len = 0;

    if (is_elf(p, size)) {
        if (elf_has_pvh_note(p, size, &why))
            reasonf(reason, reason_size, "already an ELF vmlinux with a PVH entry");
        else
            reasonf(reason, reason_size, "ELF kernel without PVH entry: %s", why);
        result = xstrdup(path);
        goto out;
    }
    if (find_payload(p, size, &off, &len, reason, reason_size) != 0) {
        result = xstrdup(path);
        goto out;
    }
    const char *cname = NULL;
    comp c = detect(p + off, len, &cname);
    if (c == COMP_UNSUPPORTED) {
        reasonf(reason, reason_size, "payload is %s-compressed; no decompressor here", cname);
        result = xstrdup(path);
        goto out;
    }
    char hex[65];
    sha256_hex(p, size, hex);
    char *cached = xasprintf("%s/%s.vmlinux", cache_dir, hex);
    struct stat cst;
    if (stat(cached, &cst) == 0 && S_ISREG(cst.st_mode) && cst.st_size > 0) {
        reasonf(reason, reason_size, "PVH vmlinux from the cache (%s payload)", cname);
        result = cached;
        goto out;
    }
    free(cached);
    bool as_is = false;
    result = extract(p + off, len, c, hex, cache_dir, max_size, reason, reason_size, &as_is,
                     err);
    if (result)
        reasonf(reason, reason_size, "PVH vmlinux extracted from the %s payload", cname);
    else if (as_is)
        result = xstrdup(path);
out:
    munmap(map, size);
    return result;
}

char *kh_kernel_resolve(const char *path, const char *cache_dir, kh_err *err)
{
    char reason[256], q1[300], q2[600];
    char *r = kh_kernel_resolve_ex(path, cache_dir, 0, reason, sizeof(reason), err);
    if (r)
        kh_log(KH_LOG_INFO, "kernel.resolve", "kernel=%s boot=%s reason=%s",
               kh_log_quote(q1, sizeof(q1), path), strcmp(r, path) == 0 ? "as-is" : "pvh",
               kh_log_quote(q2, sizeof(q2), reason));
    return r;
}
