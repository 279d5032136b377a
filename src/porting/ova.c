/* ova.c - OVA import: the archive is read once, in order, by libarchive on a
 * worker thread (the .ovf first, parsed by ovf.c; the .mf; the disks),
 * every entry checked before a byte of it is kept. A disk that lies in the
 * archive as plain ustar data (one header, whole sectors) is not read
 * there: qemu-img converts it in place (a raw window of the archive) while
 * a second worker hashes the same window, in parallel; any other disk is
 * copied to a "<uuid>.part" file in the target pool and hashed in the same
 * read. The manifest is checked once both are done and BEFORE the VM is
 * made; a failure at any step (a digest that differs included) removes
 * the volumes made.
 *
 * Refused with 400 (security case 7): links, directories, device nodes,
 * absolute paths, `..` or any path with a '/', names not in the OVF's
 * References, duplicates, sparse entries, entries larger than declared or
 * than the pool can take, more than KH_OVA_ENTRIES_MAX entries, a
 * manifest digest that differs, a file the manifest does not list, a
 * compressed or non-tar file.
 */
#include "porting/porting.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "instance/config.h"
#include "porting/ovf.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define KH_OVA_ENTRIES_MAX 64
#define KH_OVA_MF_MAX (64u << 10)
#define KH_OVA_BLOCK (1u << 20)

struct kh_ova_spool {
    kh_porting pt;
    char *pool;
    char *path;
    int fd;
    uint64_t len, cap;
};

/* A pool's directory and how much it can take, or -1 with err. */
static int pool_dir(kh_porting *pt, const char *pool, char **dir, uint64_t *cap, kh_err *err)
{
    json_t *p = kh_storage_pool_json(pt->storage, pool, err);
    if (!p)
        return -1;
    const char *path = json_string_value(json_object_get(p, "path"));
    json_t *avail = json_object_get(p, "available");
    *dir = xstrdup(path ? path : "");
    *cap = json_is_integer(avail) ? (uint64_t)json_integer_value(avail) : KH_VOLUME_SIZE_MAX;
    if (*cap > KH_VOLUME_SIZE_MAX)
        *cap = KH_VOLUME_SIZE_MAX;
    json_decref(p);
    return 0;
}

static char *part_path(const char *dir)
{
    char id[37];
    kh_uuid_generate(id);
    return xasprintf("%s/%s.part", dir, id);
}

kh_ova_spool *kh_ova_spool_begin(kh_porting *pt, const char *pool, uint64_t expected,
                                 kh_err *err)
{
    char *dir = NULL;
    uint64_t cap = 0;
    if (pool_dir(pt, pool ? pool : "default", &dir, &cap, err) < 0)
        return NULL;
    if (expected != UINT64_MAX && expected > cap) {
        kh_err_set(err, KH_E_TOOLARGE, "import: %" PRIu64 " bytes is more than the pool can "
                                       "take", expected);
        free(dir);
        return NULL;
    }
    kh_ova_spool *s = xcalloc(1, sizeof(*s));
    s->pt = *pt;
    s->pool = xstrdup(pool ? pool : "default");
    s->path = part_path(dir);
    s->cap = cap;
    free(dir);
    s->fd = open(s->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "import: cannot create a file in pool %s",
                     s->pool);
        s->fd = -1;
        kh_ova_spool_abort(s);
        return NULL;
    }
    return s;
}

int kh_ova_spool_write(kh_ova_spool *s, const void *data, size_t len, kh_err *err)
{
    if (s->len + len > s->cap) {
        kh_err_set(err, KH_E_TOOLARGE, "import: the archive is larger than pool %s can take",
                   s->pool);
        return -1;
    }
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(s->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            kh_err_errno(err, errno == ENOSPC ? KH_E_TOOLARGE : KH_E_INTERNAL, errno,
                         "import: writing pool %s", s->pool);
            return -1;
        }
        p += n;
        len -= (size_t)n;
        s->len += (uint64_t)n;
    }
    return 0;
}

void kh_ova_spool_abort(kh_ova_spool *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->path)
        unlink(s->path);
    free(s->path);
    free(s->pool);
    free(s);
}

/* ---- the job ---- */

typedef struct entry_sum {
    char name[KH_OVF_HREF_MAX];
    char sha1[41], sha256[65];
} entry_sum;

typedef struct job {
    kh_porting pt; /* a copy: the caller's may be on its stack */
    kh_task *task;
    char *pool, *dir, *name, *network;
    char *src;       /* the archive */
    bool src_spool;  /* src is ours: removed at the end */
    uint64_t cap;    /* bytes the pool can take */
    kh_ovf ovf;
    bool have_ovf;
    char *tmp[KH_OVF_DISKS_MAX]; /* extracted disks, by disk index */
    uint64_t off[KH_OVF_DISKS_MAX], len[KH_OVF_DISKS_MAX]; /* or: where they lie in src */
    bool in_src[KH_OVF_DISKS_MAX];
    size_t sumi[KH_OVF_DISKS_MAX]; /* an in-place disk's entry in sums */
    int src_fd; /* src, to check where an entry's data lies */
    /* the in-place disks' hashing (hash_windows), beside the conversion */
    uv_work_t hwork;
    bool hashing; /* queued and not yet back on the loop */
    bool failing; /* fail() waits for the hashing to come back */
    atomic_bool cancel;
    kh_err herr; /* the hashing's own error (its thread's) */
    char *vols[KH_OVF_DISKS_MAX];
    size_t nvols, cur;
    entry_sum sums[KH_OVA_ENTRIES_MAX];
    size_t nsums;
    char *mf;        /* the manifest text, or NULL (check_manifest cuts it up) */
    bool mf_checked; /* by extract, when no disk is read in place */
    kh_ova_owner owner;
    kh_err err;
    uv_work_t work;
} job;

static void owner_done(kh_ova_owner *ow)
{
    if (ow->done)
        ow->done(ow->opaque);
    memset(ow, 0, sizeof(*ow));
}

static void job_free(job *j)
{
    for (size_t i = 0; i < KH_OVF_DISKS_MAX; i++) {
        if (j->tmp[i])
            unlink(j->tmp[i]);
        free(j->tmp[i]);
        free(j->vols[i]);
    }
    if (j->src_fd >= 0)
        close(j->src_fd);
    if (j->src_spool)
        unlink(j->src);
    if (j->have_ovf)
        kh_ovf_clear(&j->ovf);
    free(j->src);
    free(j->pool);
    free(j->dir);
    free(j->name);
    free(j->network);
    free(j->mf);
    owner_done(&j->owner);
    free(j);
}

static void hex(const unsigned char *d, unsigned n, char *out)
{
    static const char h[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = h[d[i] >> 4];
        out[2 * i + 1] = h[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Where a disk entry's bytes go: a file of their own in the pool. */
typedef struct sink {
    int fd;   /* -1: none yet */
    int disk; /* the disk's index */
} sink;

/* A copy of the disk's bytes: a "<uuid>.part" in the pool. */
static int sink_open(job *j, sink *k)
{
    j->tmp[k->disk] = part_path(j->dir);
    k->fd = open(j->tmp[k->disk], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (k->fd < 0) {
        kh_err_errno(&j->err, KH_E_INTERNAL, errno, "import: cannot create a file in pool %s",
                     j->pool);
        free(j->tmp[k->disk]);
        j->tmp[k->disk] = NULL;
        return -1;
    }
    return 0;
}

/* A tar number field: octal digits (NUL/space ended) or GNU base-256. */
static bool tar_number(const unsigned char *f, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (f[0] & 0x80) {
        if (f[0] != 0x80)
            return false;
        for (size_t i = 1; i < n; i++) {
            if (v >> 55)
                return false;
            v = v << 8 | f[i];
        }
        *out = v;
        return true;
    }
    size_t i = 0;
    while (i < n && f[i] == ' ')
        i++;
    size_t digits = 0;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
        if (v >> 60)
            return false;
        v = v << 3 | (uint64_t)(f[i] - '0');
    }
    if (digits == 0 || (i < n && f[i] != ' ' && f[i] != '\0'))
        return false;
    *out = v;
    return true;
}

/* Is there, at `at` in src, the one plain ustar header of a regular file
 * called name of size bytes (checksum right, no prefix), its data wholly
 * inside src? Then its data is src[at + 512, at + 512 + size) by the
 * format itself: what qemu-img converts and what is hashed are that
 * window, whatever libarchive made of extensions. Else false: copied. */
static bool plain_ustar_at(job *j, uint64_t at, const char *name, uint64_t size)
{
    unsigned char h[512];
    struct stat st;
    if (fstat(j->src_fd, &st) < 0 || at > (uint64_t)st.st_size ||
        (uint64_t)st.st_size - at < 512 || (uint64_t)st.st_size - at - 512 < size ||
        pread(j->src_fd, h, sizeof(h), (off_t)at) != (ssize_t)sizeof(h))
        return false;
    uint64_t want = 0, got = 0, hsize = 0;
    for (size_t i = 0; i < sizeof(h); i++)
        got += (i >= 148 && i < 156) ? (unsigned)' ' : h[i];
    size_t nl = strlen(name);
    return tar_number(h + 148, 8, &want) && want == got && nl < 100 &&
           memcmp(h, name, nl) == 0 && h[nl] == '\0' && (h[156] == '0' || h[156] == '\0') &&
           memcmp(h + 257, "ustar", 5) == 0 && h[345] == '\0' &&
           tar_number(h + 124, 12, &hsize) && hsize == size;
}

/* Reads the current entry (size bytes declared): into the disk sink k (may
 * be NULL), or into *text (at most max bytes), or nowhere; hashed with
 * SHA-256, and SHA-1 unless a manifest without SHA1 lines came first. */
static int read_entry(job *j, struct archive *a, const char *name, sink *k, char **text,
                      size_t max, entry_sum *sum)
{
    bool sha1 = !j->mf || strstr(j->mf, "SHA1(");
    EVP_MD_CTX *c1 = sha1 ? EVP_MD_CTX_new() : NULL, *c256 = EVP_MD_CTX_new();
    if (c1)
        EVP_DigestInit_ex(c1, EVP_sha1(), NULL);
    EVP_DigestInit_ex(c256, EVP_sha256(), NULL);
    int fd = -1;
    char *buf = xmalloc(KH_OVA_BLOCK);
    size_t tlen = 0;
    int rc = -1;
    if (text)
        *text = xcalloc(1, max + 1);
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, KH_OVA_BLOCK);
        if (n == 0)
            break;
        if (n < 0) {
            kh_err_set(&j->err, KH_E_INVALID, "import: entry %s: %s", name,
                       archive_error_string(a) ? archive_error_string(a) : "unreadable");
            goto out;
        }
        if (c1)
            EVP_DigestUpdate(c1, buf, (size_t)n);
        EVP_DigestUpdate(c256, buf, (size_t)n);
        fd = k ? k->fd : -1;
        if (text) {
            if (tlen + (size_t)n > max) {
                kh_err_set(&j->err, KH_E_INVALID, "import: entry %s is too large", name);
                goto out;
            }
            memcpy(*text + tlen, buf, (size_t)n);
            tlen += (size_t)n;
        }
        for (const char *p = buf; fd >= 0 && n > 0;) {
            ssize_t w = write(fd, p, (size_t)n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                kh_err_errno(&j->err, errno == ENOSPC ? KH_E_TOOLARGE : KH_E_INTERNAL, errno,
                             "import: writing pool %s", j->pool);
                goto out;
            }
            p += w;
            n -= w;
        }
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (c1) {
        EVP_DigestFinal_ex(c1, d, &dl);
        hex(d, dl, sum->sha1);
    }
    EVP_DigestFinal_ex(c256, d, &dl);
    hex(d, dl, sum->sha256);
    snprintf(sum->name, sizeof(sum->name), "%s", name);
    rc = 0;
out:
    EVP_MD_CTX_free(c1);
    EVP_MD_CTX_free(c256);
    free(buf);
    return rc;
}

/* One plain file name: no '/', no leading '.', a short safe alphabet. */
static bool entry_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= KH_OVF_HREF_MAX || s[0] == '.')
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

/* "SHA256(name)= hex" lines: every one must name an entry of the archive
 * with that digest, and every entry but the manifest must be listed. */
static int check_manifest(job *j)
{
    size_t listed = 0;
    char *save = NULL;
    for (char *line = strtok_r(j->mf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t l = strlen(line);
        while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' '))
            line[--l] = '\0';
        if (l == 0)
            continue;
        char alg[8], name[KH_OVF_HREF_MAX], digest[129];
        if (sscanf(line, "%7[A-Z0-9](%127[^)])= %128s", alg, name, digest) != 3) {
            kh_err_set(&j->err, KH_E_INVALID, "import: manifest line not understood: %.80s",
                       line);
            return -1;
        }
        for (char *p = digest; *p; p++)
            if (*p >= 'A' && *p <= 'F')
                *p = (char)(*p - 'A' + 'a');
        const entry_sum *s = NULL;
        for (size_t i = 0; i < j->nsums; i++)
            if (strcmp(j->sums[i].name, name) == 0)
                s = &j->sums[i];
        const char *want = !s ? NULL
                           : strcmp(alg, "SHA256") == 0 ? s->sha256
                           : strcmp(alg, "SHA1") == 0   ? s->sha1
                                                        : NULL;
        if (!s) {
            kh_err_set(&j->err, KH_E_INVALID, "import: the manifest lists %s, which is not in "
                                              "the archive", name);
            return -1;
        }
        if (!want) {
            kh_err_set(&j->err, KH_E_INVALID, "import: manifest digest %s is not supported "
                                              "(SHA1, SHA256)", alg);
            return -1;
        }
        if (strcmp(want, digest) != 0) {
            kh_err_set(&j->err, KH_E_INVALID, "import: %s does not match its %s digest in the "
                                              "manifest", name, alg);
            return -1;
        }
        listed++;
    }
    if (listed != j->nsums) {
        kh_err_set(&j->err, KH_E_INVALID, "import: the manifest does not list every file of the "
                                          "archive");
        return -1;
    }
    return 0;
}

static int extract_entry(job *j, struct archive *a, struct archive_entry *e, size_t n)
{
    const char *name = archive_entry_pathname(e);
    if (archive_entry_hardlink(e) || archive_entry_symlink(e)) {
        kh_err_set(&j->err, KH_E_INVALID, "import: entry %.80s is a link; links are refused",
                   name ? name : "?");
        return -1;
    }
    if (archive_entry_filetype(e) != AE_IFREG) {
        kh_err_set(&j->err, KH_E_INVALID, "import: entry %.80s is not a regular file",
                   name ? name : "?");
        return -1;
    }
    if (!entry_name_ok(name)) {
        kh_err_set(&j->err, KH_E_INVALID, "import: entry %.80s: only plain file names are "
                                          "accepted (no absolute paths, no '..', no folders)",
                   name ? name : "?");
        return -1;
    }
    for (size_t i = 0; i < j->nsums; i++) {
        if (strcmp(j->sums[i].name, name) == 0) {
            kh_err_set(&j->err, KH_E_INVALID, "import: entry %s appears twice", name);
            return -1;
        }
    }
    uint64_t size = archive_entry_size_is_set(e) ? (uint64_t)archive_entry_size(e) : 0;
    entry_sum *sum = &j->sums[j->nsums];
    if (n == 0) {
        if (!ends_with(name, ".ovf")) {
            kh_err_set(&j->err, KH_E_INVALID, "import: the first entry must be the .ovf "
                                              "descriptor (found %s)", name);
            return -1;
        }
        char *text = NULL;
        int rc = read_entry(j, a, name, NULL, &text, KH_OVF_TEXT_MAX, sum);
        if (rc == 0)
            rc = kh_ovf_parse(text, strlen(text), &j->ovf, &j->err);
        free(text);
        if (rc < 0)
            return -1;
        j->have_ovf = true;
        j->nsums++;
        return 0;
    }
    if (ends_with(name, ".mf")) {
        if (j->mf) {
            kh_err_set(&j->err, KH_E_INVALID, "import: more than one manifest");
            return -1;
        }
        entry_sum ignored;
        return read_entry(j, a, name, NULL, &j->mf, KH_OVA_MF_MAX, &ignored);
    }
    if (ends_with(name, ".cert")) {
        json_array_append_new(j->ovf.warnings,
                              json_string("the certificate (.cert) is not checked"));
        char *text = NULL;
        int rc = read_entry(j, a, name, NULL, &text, KH_OVA_MF_MAX, sum);
        free(text);
        return rc; /* it signs the manifest: not listed in it */
    }
    int fi = kh_ovf_file_find(&j->ovf, name);
    if (fi < 0) {
        kh_err_set(&j->err, KH_E_INVALID, "import: entry %s is not in the OVF's References",
                   name);
        return -1;
    }
    const kh_ovf_file *f = &j->ovf.files[fi];
    if (archive_entry_sparse_count(e) > 0) {
        kh_err_set(&j->err, KH_E_INVALID, "import: entry %s is a sparse tar entry: refused",
                   name);
        return -1;
    }
    if (f->size && size != f->size) {
        kh_err_set(&j->err, KH_E_INVALID, "import: entry %s is %" PRIu64 " bytes, the OVF "
                                          "declares %" PRIu64, name, size, f->size);
        return -1;
    }
    if (size > j->cap) {
        kh_err_set(&j->err, KH_E_TOOLARGE, "import: entry %s is larger than pool %s can take",
                   name, j->pool);
        return -1;
    }
    if (f->disk < 0)
        json_array_append_new(j->ovf.warnings,
                              json_sprintf("file %s is not a disk: not imported", name));
    else
        j->len[f->disk] = size;
    if (j->cap >= size)
        j->cap -= size;
    /* a disk as plain ustar data in whole sectors (QEMU's raw window wants
     * them) is converted where it lies and hashed then: skipped here */
    la_int64_t at = archive_read_header_position(a);
    if (f->disk >= 0 && size > 0 && size % 512 == 0 && at >= 0 &&
        plain_ustar_at(j, (uint64_t)at, name, size)) {
        if (archive_read_data_skip(a) != ARCHIVE_OK) {
            kh_err_set(&j->err, KH_E_INVALID, "import: entry %s: %s", name,
                       archive_error_string(a) ? archive_error_string(a) : "unreadable");
            return -1;
        }
        j->in_src[f->disk] = true;
        j->off[f->disk] = (uint64_t)at + 512;
        j->sumi[f->disk] = j->nsums;
        snprintf(sum->name, sizeof(sum->name), "%s", name);
        j->nsums++;
        return 0;
    }
    sink k = { -1, f->disk };
    int rc = f->disk >= 0 ? sink_open(j, &k) : 0;
    if (rc == 0)
        rc = read_entry(j, a, name, f->disk >= 0 ? &k : NULL, NULL, 0, sum);
    if (k.fd >= 0 && close(k.fd) < 0 && rc == 0) {
        kh_err_errno(&j->err, KH_E_INTERNAL, errno, "import: writing pool %s", j->pool);
        rc = -1;
    }
    if (rc == 0)
        j->nsums++;
    return rc;
}

/* The in-place disks' windows of src, hashed (a worker thread, beside the
 * conversion: both read the same pages) with the digests the manifest
 * uses. Stops early when the import fails elsewhere (cancel). */
static void hash_windows(uv_work_t *w)
{
    job *j = w->data;
    bool want1 = strstr(j->mf, "SHA1(") != NULL, want256 = strstr(j->mf, "SHA256(") != NULL;
    char *buf = xmalloc(4 * KH_OVA_BLOCK);
    EVP_MD_CTX *c1 = EVP_MD_CTX_new(), *c256 = EVP_MD_CTX_new();
    for (size_t i = 0; i < j->ovf.ndisks && !kh_err_isset(&j->herr); i++) {
        if (!j->in_src[i])
            continue;
        EVP_DigestInit_ex(c1, EVP_sha1(), NULL);
        EVP_DigestInit_ex(c256, EVP_sha256(), NULL);
        (void)posix_fadvise(j->src_fd, (off_t)j->off[i], (off_t)j->len[i],
                            POSIX_FADV_SEQUENTIAL);
        for (uint64_t done = 0; done < j->len[i];) {
            if (atomic_load(&j->cancel)) {
                kh_err_set(&j->herr, KH_E_INTERNAL, "import: cancelled");
                break;
            }
            size_t want = j->len[i] - done < 4 * KH_OVA_BLOCK ? (size_t)(j->len[i] - done)
                                                               : 4 * KH_OVA_BLOCK;
            ssize_t n = pread(j->src_fd, buf, want, (off_t)(j->off[i] + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                kh_err_errno(&j->herr, KH_E_INTERNAL, n < 0 ? errno : EIO,
                             "import: reading the archive");
                break;
            }
            if (want1)
                EVP_DigestUpdate(c1, buf, (size_t)n);
            if (want256)
                EVP_DigestUpdate(c256, buf, (size_t)n);
            done += (uint64_t)n;
        }
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned dl = 0;
        entry_sum *sum = &j->sums[j->sumi[i]];
        EVP_DigestFinal_ex(c1, d, &dl);
        hex(d, dl, sum->sha1);
        EVP_DigestFinal_ex(c256, d, &dl);
        hex(d, dl, sum->sha256);
    }
    EVP_MD_CTX_free(c1);
    EVP_MD_CTX_free(c256);
    free(buf);
}

/* The worker thread: nothing here touches the loop. */
static void extract(uv_work_t *w)
{
    job *j = w->data;
    j->src_fd = open(j->src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (j->src_fd < 0) {
        kh_err_errno(&j->err, KH_E_INVALID, errno, "import: cannot open the archive");
        return;
    }
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    if (archive_read_open_fd(a, j->src_fd, KH_OVA_BLOCK) != ARCHIVE_OK) {
        kh_err_set(&j->err, KH_E_INVALID, "import: not an OVA (a tar archive): %s",
                   archive_error_string(a) ? archive_error_string(a) : "?");
        archive_read_free(a);
        return;
    }
    size_t n = 0;
    for (;; n++) {
        struct archive_entry *e = NULL;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            kh_err_set(&j->err, KH_E_INVALID, "import: not an OVA (a tar archive): %s",
                       archive_error_string(a) ? archive_error_string(a) : "?");
            break;
        }
        if (n >= KH_OVA_ENTRIES_MAX - 1) {
            kh_err_set(&j->err, KH_E_INVALID, "import: more than %d entries",
                       KH_OVA_ENTRIES_MAX);
            break;
        }
        if (extract_entry(j, a, e, n) < 0)
            break;
    }
    archive_read_free(a);
    if (kh_err_isset(&j->err))
        return;
    if (!j->have_ovf) {
        kh_err_set(&j->err, KH_E_INVALID, "import: the archive is empty");
        return;
    }
    for (size_t i = 0; i < j->ovf.ndisks; i++) {
        if (!j->tmp[i] && !j->in_src[i]) {
            kh_err_set(&j->err, KH_E_INVALID, "import: disk file %s is missing from the archive",
                       j->ovf.files[j->ovf.disks[i].file].href);
            return;
        }
    }
    bool in_place = false;
    for (size_t i = 0; i < j->ovf.ndisks; i++)
        in_place |= j->in_src[i];
    if (j->mf && !in_place) { /* all hashed already: checked before any conversion */
        j->mf_checked = true;
        check_manifest(j);
    } else if (!j->mf)
        json_array_append_new(j->ovf.warnings, json_string("no manifest (.mf): the files are "
                                                           "not verified"));
}

/* The import failed: the volumes made are removed, the task fails. When
 * the hashing is still out, its return (hashed) finishes this. */
static void fail(job *j, const kh_err *err)
{
    if (err != &j->err && !j->failing)
        j->err = *err;
    atomic_store(&j->cancel, true);
    if (j->hashing) {
        j->failing = true;
        return;
    }
    err = &j->err;
    for (size_t i = 0; i < j->nvols; i++) {
        kh_err ignored = KH_ERR_INIT;
        kh_storage_volume_delete(j->pt.storage, j->pool, j->vols[i], &ignored);
    }
    kh_log(KH_LOG_WARN, "vm.import", "pool=%s error=\"%s\"", j->pool, err->msg);
    kh_task_fail(j->task, err);
    job_free(j);
}

static void made_vm(void *opaque, json_t *vm, const kh_err *err);

static void make_vm(job *j)
{
    json_t *spec = json_pack("{s:s}", "name", j->name);
    if (j->ovf.vcpus)
        json_object_set_new(spec, "vcpus", json_integer(j->ovf.vcpus));
    if (j->ovf.memory_mib)
        json_object_set_new(spec, "memory_mib", json_integer((json_int_t)j->ovf.memory_mib));
    if (j->ovf.uefi)
        json_object_set_new(spec, "firmware", json_string("uefi"));
    if (j->ovf.secure_boot)
        json_object_set_new(spec, "secure_boot", json_true());
    if (j->ovf.tpm)
        json_object_set_new(spec, "tpm", json_true());
    json_t *disks = json_array();
    for (size_t i = 0; i < j->nvols; i++)
        json_array_append_new(disks, json_pack("{s:s++}", "volume", j->pool, "/", j->vols[i]));
    json_object_set_new(spec, "disks", disks);
    if (j->ovf.nnics && j->network) {
        json_t *nics = json_array();
        for (size_t i = 0; i < j->ovf.nnics; i++) {
            json_t *n = json_pack("{s:s}", "network", j->network);
            if (j->ovf.macs[i][0])
                json_object_set_new(n, "mac", json_string(j->ovf.macs[i]));
            json_array_append_new(nics, n);
        }
        json_object_set_new(spec, "nics", nics);
    } else if (j->ovf.nnics) {
        json_array_append_new(j->ovf.warnings,
                              json_string("the NICs are not imported: give a network "
                                          "(--network) to attach them"));
    }
    kh_err err = KH_ERR_INIT;
    /* the cluster claim (an etcd txn) is answered off the loop */
    if (kh_config_create_async(j->pt.mgr, spec, made_vm, j, &err) < 0)
        fail(j, &err);
    json_decref(spec);
}

static void made_vm(void *opaque, json_t *vm, const kh_err *err)
{
    job *j = opaque;
    if (!vm) {
        fail(j, err);
        return;
    }
    kh_log(KH_LOG_INFO, "vm.import", "vm=%s disks=%zu pool=%s", j->name, j->nvols, j->pool);
    if (j->owner.made)
        j->owner.made(j->owner.opaque, vm);
    kh_task_succeed(j->task, json_pack("{s:o, s:O}", "vm", vm, "warnings", j->ovf.warnings));
    job_free(j);
}

static void convert_next(job *j);

/* Every disk converted and hashed: the manifest decides, before the VM. */
static void finish(job *j)
{
    if (j->hashing)
        return; /* hashed() comes back here */
    if (kh_err_isset(&j->herr)) {
        fail(j, &j->herr);
        return;
    }
    if (j->mf && !j->mf_checked && check_manifest(j) < 0) {
        fail(j, &j->err);
        return;
    }
    kh_task_progress(j->task, 95, "making the VM");
    make_vm(j);
}

static void hashed(uv_work_t *w, int status)
{
    job *j = w->data;
    j->hashing = false;
    if (status < 0 && !kh_err_isset(&j->herr))
        kh_err_set(&j->herr, KH_E_INTERNAL, "import: %s", uv_strerror(status));
    if (j->failing) {
        j->failing = false;
        fail(j, &j->err);
    } else if (j->cur == j->ovf.ndisks) {
        finish(j);
    } /* else a conversion is under way: convert_next sees herr */
}

static void converted(json_t *result, const kh_err *err, void *opaque)
{
    job *j = opaque;
    if (j->tmp[j->cur])
        unlink(j->tmp[j->cur]);
    free(j->tmp[j->cur]);
    j->tmp[j->cur] = NULL;
    if (!result) {
        free(j->vols[j->cur]);
        j->vols[j->cur] = NULL;
        fail(j, err);
        return;
    }
    json_decref(result);
    j->nvols++;
    j->cur++;
    convert_next(j);
}

static void convert_next(job *j)
{
    if (!j->hashing && kh_err_isset(&j->herr)) {
        fail(j, &j->herr);
        return;
    }
    size_t n = j->ovf.ndisks;
    if (j->cur >= n || n == 0) {
        finish(j);
        return;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "converting disk %zu of %zu", j->cur + 1, n);
    kh_task_progress(j->task, 50 + (int)(40 * j->cur / n), msg);
    j->vols[j->cur] = j->ovf.ndisks == 1 ? xasprintf("%s-disk", j->name)
                                         : xasprintf("%s-disk%zu", j->name, j->cur);
    kh_err err = KH_ERR_INIT;
    size_t i = j->cur;
    kh_log(KH_LOG_INFO, "vm.import", "vm=%s disk=%zu source=%s", j->name, i,
           j->in_src[i] ? "archive" : "copy");
    int rc = j->in_src[i]
                 ? kh_storage_volume_convert_in(j->pt.storage, j->pool, j->vols[i], j->src,
                                                j->off[i], j->len[i], "vmdk", converted, j,
                                                &err)
                 : kh_storage_volume_convert_in(j->pt.storage, j->pool, j->vols[i],
                                                j->tmp[i], 0, 0, "vmdk", converted, j, &err);
    if (rc < 0) {
        free(j->vols[j->cur]);
        j->vols[j->cur] = NULL;
        fail(j, &err);
    }
}

static void extracted(uv_work_t *w, int status)
{
    job *j = w->data;
    (void)status;
    if (kh_err_isset(&j->err)) {
        kh_err err = j->err;
        fail(j, &err);
        return;
    }
    if (!j->name) {
        if (!j->ovf.name[0]) {
            kh_err err = KH_ERR_INIT;
            kh_err_set(&err, KH_E_INVALID, "import: the OVF names no VM; give a name");
            fail(j, &err);
            return;
        }
        j->name = xstrdup(j->ovf.name);
    }
    kh_err err = KH_ERR_INIT;
    json_t *exists = kh_manager_vm_json(j->pt.mgr, j->name, &err);
    if (exists) {
        json_decref(exists);
        kh_err_set(&err, KH_E_CONFLICT, "import: a VM named %s already exists", j->name);
        fail(j, &err);
        return;
    }
    if (j->owner.admit) {
        /* the caller's quotas, before anything is made */
        json_t *size = json_object();
        if (j->ovf.vcpus)
            json_object_set_new(size, "vcpus", json_integer(j->ovf.vcpus));
        if (j->ovf.memory_mib)
            json_object_set_new(size, "memory_mib", json_integer((json_int_t)j->ovf.memory_mib));
        uint64_t bytes = 0;
        for (size_t i = 0; i < j->ovf.ndisks; i++)
            bytes += j->ovf.disks[i].capacity;
        json_object_set_new(size, "disk_bytes", json_integer((json_int_t)bytes));
        kh_err qerr = KH_ERR_INIT;
        int rc = j->owner.admit(j->owner.opaque, size, &qerr);
        json_decref(size);
        if (rc < 0) {
            kh_err_prefix(&qerr, "import");
            fail(j, &qerr);
            return;
        }
    }
    bool in_place = false;
    for (size_t i = 0; i < j->ovf.ndisks; i++)
        in_place |= j->in_src[i];
    if (in_place && j->mf) { /* without a manifest nothing is checked */
        j->hwork.data = j;
        int rc = uv_queue_work(j->pt.loop, &j->hwork, hash_windows, hashed);
        if (rc < 0) {
            kh_err_set(&err, KH_E_INTERNAL, "import: %s", uv_strerror(rc));
            fail(j, &err);
            return;
        }
        j->hashing = true;
    }
    convert_next(j);
}

static kh_task *start(kh_porting *pt, char *src, bool spool, const kh_ova_opts *o, kh_err *err)
{
    job *j = xcalloc(1, sizeof(*j));
    j->pt = *pt;
    j->src_fd = -1;
    atomic_init(&j->cancel, false);
    j->src = src;
    j->src_spool = spool;
    j->pool = xstrdup(o->pool ? o->pool : "default");
    j->name = o->name ? xstrdup(o->name) : NULL;
    j->network = o->network ? xstrdup(o->network) : NULL;
    if (o->owner)
        j->owner = *o->owner; /* job_free ends it */
    if (pool_dir(pt, j->pool, &j->dir, &j->cap, err) < 0) {
        job_free(j);
        return NULL;
    }
    if (j->name) {
        kh_err ignored = KH_ERR_INIT;
        json_t *exists = kh_manager_vm_json(pt->mgr, j->name, &ignored);
        if (exists) {
            json_decref(exists);
            kh_err_set(err, KH_E_CONFLICT, "import: a VM named %s already exists", j->name);
            job_free(j);
            return NULL;
        }
    }
    j->task = kh_task_new(pt->tasks, "import", j->name ? j->name : "");
    kh_task_progress(j->task, 5, "reading the archive");
    j->work.data = j;
    int rc = uv_queue_work(pt->loop, &j->work, extract, extracted);
    if (rc < 0) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_INTERNAL, "import: %s", uv_strerror(rc));
        kh_task *t = j->task;
        fail(j, &e);
        return t;
    }
    return j->task;
}

kh_task *kh_ova_import_spool(kh_porting *pt, kh_ova_spool *s, const kh_ova_opts *o,
                             kh_err *err)
{
    /* no fsync: the spool is read back from the page cache and never
     * outlives the import (a crash leaves a ".part", removed at restart) */
    int rc = close(s->fd);
    s->fd = -1;
    if (rc < 0 || s->len == 0) {
        if (rc < 0)
            kh_err_errno(err, KH_E_INTERNAL, errno, "import: writing pool %s", s->pool);
        else
            kh_err_set(err, KH_E_INVALID, "import: the body is empty (send the .ova)");
        kh_ova_spool_abort(s);
        if (o->owner) {
            kh_ova_owner ow = *o->owner;
            owner_done(&ow);
        }
        return NULL;
    }
    kh_ova_opts oo = *o;
    if (!oo.pool)
        oo.pool = s->pool;
    char *path = s->path;
    s->path = NULL;
    kh_task *t = start(pt, path, true, &oo, err); /* takes path, also on error */
    kh_ova_spool_abort(s);
    return t;
}

kh_task *kh_ova_import_path(kh_porting *pt, const char *path, const kh_ova_opts *o,
                            kh_err *err)
{
    return start(pt, xstrdup(path), false, o, err);
}
