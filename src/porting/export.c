/* export.c - a stopped VM as an OVA: each disk converted by qemu-img to a
 * streamOptimized VMDK ("<uuid>.part" files in the default pool, removed
 * at restart if left), then on a worker thread the VMDKs hashed (SHA-256),
 * the OVF written (ovf.c) and the tar (the .ovf, the .mf, the disks, in
 * the order OVF 1.0 asks) assembled with libarchive into one more
 * unlinked file whose descriptor the caller streams. */
#include "porting/porting.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "porting/ovf.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define EXPORT_CONVERT_TIMEOUT_MS (3600u * 1000u)
#define EXPORT_BLOCK (1u << 20)

typedef struct xjob {
    kh_porting pt;
    kh_ova_export_cb cb;
    void *opaque;
    char *dir;
    kh_ovf ovf;
    char *src[KH_OVF_DISKS_MAX], *src_fmt[KH_OVF_DISKS_MAX];
    char *vmdk[KH_OVF_DISKS_MAX];
    char sha[KH_OVF_DISKS_MAX][65];
    size_t cur;
    char *tar;
    int fd;
    uint64_t size;
    kh_err err;
    uv_work_t work;
} xjob;

static void xjob_end(xjob *j)
{
    if (kh_err_isset(&j->err)) {
        kh_log(KH_LOG_WARN, "vm.export", "vm=%s error=\"%s\"", j->ovf.name, j->err.msg);
        j->cb(-1, 0, &j->err, j->opaque);
    } else {
        kh_log(KH_LOG_INFO, "vm.export", "vm=%s disks=%zu bytes=%" PRIu64, j->ovf.name,
               j->ovf.ndisks, j->size);
        j->cb(j->fd, j->size, NULL, j->opaque);
        j->fd = -1;
    }
    for (size_t i = 0; i < KH_OVF_DISKS_MAX; i++) {
        if (j->vmdk[i])
            unlink(j->vmdk[i]);
        free(j->vmdk[i]);
        free(j->src[i]);
        free(j->src_fmt[i]);
    }
    if (j->tar)
        unlink(j->tar);
    if (j->fd >= 0)
        close(j->fd);
    free(j->tar);
    free(j->dir);
    kh_ovf_clear(&j->ovf);
    free(j);
}

static int hash_file(const char *path, char out[65], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    char *buf = xmalloc(EXPORT_BLOCK);
    ssize_t n;
    *size = 0;
    while ((n = read(fd, buf, EXPORT_BLOCK)) > 0) {
        EVP_DigestUpdate(c, buf, (size_t)n);
        *size += (uint64_t)n;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    EVP_DigestFinal_ex(c, d, &dl);
    for (unsigned i = 0; i < dl; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    EVP_MD_CTX_free(c);
    free(buf);
    close(fd);
    return n < 0 ? -1 : 0;
}

static int add_data(struct archive *a, const char *name, const void *data, size_t len)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    int rc = archive_write_header(a, e) == ARCHIVE_OK &&
                     (len == 0 || archive_write_data(a, data, len) == (la_ssize_t)len)
                 ? 0
                 : -1;
    archive_entry_free(e);
    return rc;
}

static int add_file(struct archive *a, const char *name, const char *path, uint64_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    int rc = archive_write_header(a, e) == ARCHIVE_OK ? 0 : -1;
    archive_entry_free(e);
    char *buf = xmalloc(EXPORT_BLOCK);
    ssize_t n;
    while (rc == 0 && (n = read(fd, buf, EXPORT_BLOCK)) > 0)
        if (archive_write_data(a, buf, (size_t)n) != n)
            rc = -1;
    free(buf);
    close(fd);
    return rc;
}

/* The worker thread: hash, describe, assemble. */
static void assemble(uv_work_t *w)
{
    xjob *j = w->data;
    for (size_t i = 0; i < j->ovf.ndisks; i++) {
        if (hash_file(j->vmdk[i], j->sha[i], &j->ovf.files[i].size) < 0) {
            kh_err_errno(&j->err, KH_E_INTERNAL, errno, "export: reading a converted disk");
            return;
        }
    }
    char *ovf = kh_ovf_write(&j->ovf);
    char *ovf_name = xasprintf("%s.ovf", j->ovf.name);
    char *mf_name = xasprintf("%s.mf", j->ovf.name);
    char *mf = NULL;
    {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned dl = 0;
        char hex[65];
        EVP_DigestInit_ex(c, EVP_sha256(), NULL);
        EVP_DigestUpdate(c, ovf, strlen(ovf));
        EVP_DigestFinal_ex(c, d, &dl);
        EVP_MD_CTX_free(c);
        for (unsigned i = 0; i < dl; i++)
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
        mf = xasprintf("SHA256(%s)= %s\n", ovf_name, hex);
        for (size_t i = 0; i < j->ovf.ndisks; i++) {
            char *more = xasprintf("%sSHA256(%s)= %s\n", mf, j->ovf.files[i].href, j->sha[i]);
            free(mf);
            mf = more;
        }
    }
    struct archive *a = archive_write_new();
    archive_write_set_format_ustar(a);
    int rc = archive_write_open_fd(a, j->fd) == ARCHIVE_OK ? 0 : -1;
    if (rc == 0)
        rc = add_data(a, ovf_name, ovf, strlen(ovf));
    if (rc == 0)
        rc = add_data(a, mf_name, mf, strlen(mf));
    for (size_t i = 0; rc == 0 && i < j->ovf.ndisks; i++)
        rc = add_file(a, j->ovf.files[i].href, j->vmdk[i], j->ovf.files[i].size);
    if (archive_write_close(a) != ARCHIVE_OK)
        rc = -1;
    if (rc < 0)
        kh_err_set(&j->err, KH_E_INTERNAL, "export: writing the archive: %s",
                   archive_error_string(a) ? archive_error_string(a) : "?");
    archive_write_free(a);
    struct stat sb;
    if (rc == 0 && (fstat(j->fd, &sb) < 0 || lseek(j->fd, 0, SEEK_SET) < 0))
        kh_err_errno(&j->err, KH_E_INTERNAL, errno, "export: the archive");
    else if (rc == 0)
        j->size = (uint64_t)sb.st_size;
    free(ovf);
    free(mf);
    free(ovf_name);
    free(mf_name);
}

static void assembled(uv_work_t *w, int status)
{
    (void)status;
    xjob_end(w->data);
}

static void convert_next(xjob *j);

static void converted(const kh_qimg_result *r, void *opaque)
{
    xjob *j = opaque;
    if (r->status != 0) {
        kh_err_set(&j->err, KH_E_INTERNAL, "export: converting disk %zu: %s", j->cur,
                   r->errtext && *r->errtext ? r->errtext : "qemu-img failed");
        xjob_end(j);
        return;
    }
    j->cur++;
    convert_next(j);
}

static void convert_next(xjob *j)
{
    if (j->cur == j->ovf.ndisks) {
        char id[37];
        kh_uuid_generate(id);
        j->tar = xasprintf("%s/%s.part", j->dir, id);
        j->fd = open(j->tar, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        j->work.data = j;
        int rc = j->fd < 0 ? -errno : uv_queue_work(j->pt.loop, &j->work, assemble, assembled);
        if (rc < 0) {
            kh_err_set(&j->err, KH_E_INTERNAL, "export: %s", uv_strerror(rc));
            xjob_end(j);
        }
        return;
    }
    size_t i = j->cur;
    char id[37];
    kh_uuid_generate(id);
    j->vmdk[i] = xasprintf("%s/%s.part", j->dir, id);
    char *argv[] = { (char *)(uintptr_t)kh_qimg_binary(kh_storage_qimg(j->pt.storage)),
                     (char *)(uintptr_t) "convert", (char *)(uintptr_t) "-q",
                     (char *)(uintptr_t) "-f", j->src_fmt[i], (char *)(uintptr_t) "-O",
                     (char *)(uintptr_t) "vmdk", (char *)(uintptr_t) "-o",
                     (char *)(uintptr_t) "subformat=streamOptimized", j->src[i], j->vmdk[i],
                     NULL };
    if (kh_qimg_run(kh_storage_qimg(j->pt.storage), argv, EXPORT_CONVERT_TIMEOUT_MS, NULL,
                    converted, j, &j->err) < 0)
        xjob_end(j);
}

/* The virtual size of a host file: a raw file's length, a qcow2's header
 * (big-endian size at byte 24). */
static uint64_t file_capacity(const char *path, const char *fmt)
{
    struct stat sb;
    if (strcmp(fmt, "qcow2") != 0)
        return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    unsigned char h[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread(fd, h, sizeof(h), 0) : -1;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof(h) || memcmp(h, "QFI\xfb", 4) != 0)
        return 0;
    uint64_t v = 0;
    for (int k = 24; k < 32; k++)
        v = (v << 8) | h[k];
    return v;
}

/* The files of disk d of a VM's JSON: 0, or -1 with err. */
static int disk_source(xjob *j, size_t i, const json_t *d, kh_err *err)
{
    const char *vol = json_string_value(json_object_get(d, "volume"));
    const char *path = json_string_value(json_object_get(d, "path"));
    if (vol) {
        kh_volume_chain c;
        if (kh_storage_resolve(j->pt.storage, vol, &c, err) < 0)
            return -1;
        kh_volume_placement pl;
        int rc = kh_storage_volume_placement(j->pt.storage, vol, &pl, err);
        j->ovf.disks[i].capacity = pl.capacity;
        if (rc < 0) {
            /* err says why */
        } else if (c.encrypted || (c.n > 0 && c.layer[c.n - 1].encrypted)) {
            kh_err_set(err, KH_E_CONFLICT, "export: volume %s is encrypted: not exported",
                       vol);
            rc = -1;
        } else {
            j->src[i] = xstrdup(c.layer[0].path);
            j->src_fmt[i] = xstrdup(kh_disk_format_name(c.layer[0].format));
        }
        kh_volume_chain_clear(&c);
        return rc;
    }
    const char *fmt = json_string_value(json_object_get(d, "format"));
    if (!path || !fmt) {
        kh_err_set(err, KH_E_INVALID, "export: disk %zu has no file", i);
        return -1;
    }
    j->src[i] = xstrdup(path);
    j->src_fmt[i] = xstrdup(fmt);
    j->ovf.disks[i].capacity = file_capacity(path, fmt);
    return 0;
}

int kh_ova_export(kh_porting *pt, const char *name, kh_ova_export_cb cb, void *opaque,
                  kh_err *err)
{
    json_t *vm = kh_manager_vm_json(pt->mgr, name, err);
    if (!vm)
        return -1;
    const char *state = json_string_value(json_object_get(vm, "state"));
    json_t *disks = json_object_get(vm, "disks");
    json_t *pool = kh_storage_pool_json(pt->storage, "default", err);
    int rc = -1;
    xjob *j = xcalloc(1, sizeof(*j));
    j->fd = -1;
    j->pt = *pt;
    j->cb = cb;
    j->opaque = opaque;
    j->ovf.warnings = json_array();
    if (!pool)
        goto out;
    j->dir = xstrdup(json_string_value(json_object_get(pool, "path")));
    if (!state || strcmp(state, "stopped") != 0) {
        kh_err_set(err, KH_E_CONFLICT, "export: vm %s is %s; stop it first", name,
                   state ? state : "busy");
        goto out;
    }
    if (json_array_size(disks) > KH_OVF_DISKS_MAX) {
        kh_err_set(err, KH_E_INVALID, "export: too many disks");
        goto out;
    }
    snprintf(j->ovf.name, sizeof(j->ovf.name), "%s", name);
    j->ovf.vcpus = (unsigned)json_integer_value(json_object_get(vm, "vcpus"));
    j->ovf.memory_mib = (uint64_t)json_integer_value(json_object_get(vm, "memory_mib"));
    const char *fw = json_string_value(json_object_get(vm, "firmware"));
    j->ovf.uefi = fw && strcmp(fw, "uefi") == 0;
    j->ovf.secure_boot = j->ovf.uefi && json_is_true(json_object_get(vm, "secure_boot"));
    j->ovf.tpm = json_is_true(json_object_get(vm, "tpm"));
    size_t i;
    json_t *d;
    json_array_foreach(disks, i, d) {
        if (disk_source(j, i, d, err) < 0)
            goto out;
        kh_ovf_file *f = &j->ovf.files[i];
        snprintf(f->id, sizeof(f->id), "file%zu", i);
        snprintf(f->href, sizeof(f->href), "%s-disk%zu.vmdk", name, i);
        f->disk = (int)i;
        kh_ovf_disk *dk = &j->ovf.disks[i];
        snprintf(dk->id, sizeof(dk->id), "vmdisk%zu", i);
        dk->file = (int)i;
        j->ovf.nfiles = j->ovf.ndisks = i + 1;
    }
    json_t *n;
    json_array_foreach(json_object_get(vm, "nics"), i, n) {
        if (j->ovf.nnics == KH_OVF_NICS_MAX)
            break;
        const char *mac = json_string_value(json_object_get(n, "mac"));
        snprintf(j->ovf.macs[j->ovf.nnics++], 18, "%s", mac ? mac : "");
    }
    rc = 0;
out:
    json_decref(vm);
    json_decref(pool);
    if (rc < 0) {
        for (size_t k = 0; k < KH_OVF_DISKS_MAX; k++) {
            free(j->src[k]);
            free(j->src_fmt[k]);
        }
        free(j->dir);
        kh_ovf_clear(&j->ovf);
        free(j);
        return -1;
    }
    convert_next(j);
    return 0;
}
