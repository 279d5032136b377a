/* tpm.c - owns the swtpm process of a VM with a TPM (see tpm.h). */
#include "qemu/tpm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "util/check.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/strv.h"

/* Fixed fd numbers inside swtpm. */
enum { TPM_FD_CTRL = 3, TPM_FD_KEY = 4 };

/* The state files to the swtpm user too: a state put back by a snapshot
 * revert or a restore was written by the daemon. */
static int own_files(const char *dir, const kh_tpm_opts *o, kh_err *err)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: open %s", dir);
        return -1;
    }
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: open %s", dir);
        return -1;
    }
    int rc = 0;
    const struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_type == DT_REG &&
            fchownat(dfd, e->d_name, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: chown %s/%s", dir, e->d_name);
            rc = -1;
            break;
        }
    }
    closedir(d);
    return rc;
}

int kh_tpm_start(const kh_tpm_opts *o, int *qemu_fd, pid_t *pid, kh_err *err)
{
    const char *bin = o->binary ? o->binary : "/usr/bin/swtpm";
    char *dir = xasprintf("%s/tpm", o->state_dir);
    char *log = xasprintf("%s/swtpm.log", o->state_dir);
    kh_strv *argv = kh_strv_new();
    int sv[2] = { -1, -1 }, log_fd = -1, rc = -1;

    if (access(bin, X_OK) < 0) {
        kh_err_set(err, KH_E_UNSUPPORTED, "tpm: %s is not installed (package swtpm)", bin);
        goto out;
    }
    if (kh_fs_mkdir_p(dir, 0700, err) < 0)
        goto out;
    if (o->drop_privileges && (chown(dir, o->uid, o->gid) < 0 || own_files(dir, o, err) < 0)) {
        if (!kh_err_isset(err))
            kh_err_errno(err, KH_E_INTERNAL, errno, "chown %s", dir);
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: socketpair");
        goto out;
    }
    log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    kh_strv_add(argv, bin);
    kh_strv_add(argv, "socket");
    kh_strv_add(argv, "--tpm2");
    kh_strv_add(argv, "-t");
    kh_strv_add(argv, "--tpmstate");
    kh_strv_addf(argv, "dir=%s,mode=0600", dir);
    kh_strv_add(argv, "--ctrl");
    kh_strv_addf(argv, "type=unixio,clientfd=%d", TPM_FD_CTRL);
    kh_strv_add(argv, "--log");
    kh_strv_add(argv, "fd=1,level=1");
    if (o->key_fd >= 0) {
        kh_strv_add(argv, "--key");
        kh_strv_addf(argv, "fd=%d,mode=aes-256-cbc,format=hex", TPM_FD_KEY);
    }
    kh_spawn_fd fds[2] = { { sv[1], TPM_FD_CTRL }, { o->key_fd, TPM_FD_KEY } };
    kh_spawn_spec spec = {
        .argv = argv->v,
        .stdin_fd = -1,
        .stdout_fd = log_fd,
        .stderr_fd = log_fd,
        .fds = fds,
        .nfds = o->key_fd >= 0 ? 2 : 1,
        .new_session = true, /* outlives the daemon, like its QEMU */
        .no_new_privs = true,
        .drop_privileges = o->drop_privileges,
        .uid = o->uid,
        .gid = o->gid,
        .cgroups = o->cgroups,
        .vm_id = o->vm_id,
    };
    kh_spawn_child child;
    if (kh_spawn(&spec, &child, err) < 0)
        goto out;
    *pid = child.pid;
    if (child.pidfd >= 0)
        close(child.pidfd);
    *qemu_fd = sv[0];
    sv[0] = -1;
    rc = 0;
out:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (log_fd >= 0)
        close(log_fd);
    kh_strv_free(argv);
    free(dir);
    free(log);
    return rc;
}

/* ---- the state as data: snapshots and backups ---- */

#define STATE_FILE_MAX (4u * 1024 * 1024) /* swtpm's files are a few tens of KiB */

static char *tpm_dir_of(const char *state_dir)
{
    return xasprintf("%s/tpm", state_dir);
}

/* swtpm's own names only: nothing that could leave the directory. */
static bool state_name_ok(const char *n)
{
    if (!*n || n[0] == '.' || strlen(n) > 64)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
              *p == '_'))
            return false;
    return true;
}

json_t *kh_tpm_state_get(const char *state_dir, kh_err *err)
{
    char *dir = tpm_dir_of(state_dir);
    json_t *files = json_object();
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: open %s", dir);
            json_decref(files);
            files = NULL;
        }
        free(dir);
        return files;
    }
    const struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_type != DT_REG || !state_name_ok(e->d_name))
            continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        size_t len = 0;
        char *data = kh_fs_read(p, STATE_FILE_MAX, &len, err);
        free(p);
        if (!data) {
            json_decref(files);
            files = NULL;
            break;
        }
        char *hex = xmalloc(2 * len + 1);
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < len; i++) {
            hex[2 * i] = digits[(unsigned char)data[i] >> 4];
            hex[2 * i + 1] = digits[(unsigned char)data[i] & 15];
        }
        hex[2 * len] = '\0';
        json_object_set_new(files, e->d_name, json_string(hex));
        free(hex);
        free(data);
    }
    closedir(d);
    free(dir);
    return files;
}

int kh_tpm_state_put(const char *state_dir, const json_t *files, kh_err *err)
{
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)(uintptr_t)files, name, v) {
        const char *hex = json_string_value(v);
        if (!state_name_ok(name) || !hex || strlen(hex) % 2 || strlen(hex) > 2 * STATE_FILE_MAX) {
            kh_err_set(err, KH_E_INVALID, "tpm: a bad state file %.64s", name);
            return -1;
        }
        for (const char *p = hex; *p; p++)
            if (kh_hex_digit(*p) < 0) {
                kh_err_set(err, KH_E_INVALID, "tpm: state file %.64s is not hex", name);
                return -1;
            }
    }
    char *dir = tpm_dir_of(state_dir);
    char *tmp = xasprintf("%s.new", dir);
    int rc = -1;
    if (kh_fs_rm_rf(tmp, err) < 0 || kh_fs_mkdir_p(tmp, 0700, err) < 0)
        goto out;
    json_object_foreach((json_t *)(uintptr_t)files, name, v) {
        const char *hex = json_string_value(v);
        size_t len = strlen(hex) / 2;
        unsigned char *data = xmalloc(len + 1);
        for (size_t i = 0; i < len; i++)
            data[i] = (unsigned char)(kh_hex_digit(hex[2 * i]) << 4 | kh_hex_digit(hex[2 * i + 1]));
        char *p = xasprintf("%s/%s", tmp, name);
        int w = kh_fs_write_atomic(p, data, len, 0600, err);
        free(p);
        free(data);
        if (w < 0)
            goto out;
    }
    /* the old state goes only once the new one is whole */
    if (kh_fs_rm_rf(dir, err) < 0)
        goto out;
    if (rename(tmp, dir) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "tpm: rename %s", tmp);
        goto out;
    }
    rc = 0;
out:
    if (rc < 0) {
        kh_err e = KH_ERR_INIT;
        kh_fs_rm_rf(tmp, &e);
    }
    free(tmp);
    free(dir);
    return rc;
}

/* ---- a state brought from elsewhere: swtpm's file format ----
 *
 * swtpm's state files (swtpm_nvstore.c, stable since swtpm 0.2): a 10-byte
 * header {version, min_version, hdrsize (BE16), flags (BE16), totlen (BE32)}
 * then, in version 2, tag-length-value records (tag BE16, length BE32):
 * plain, the data under TAG_DATA; encrypted with a 256-bit key (flags
 * ENCRYPTED | 256BIT_KEY), AES-256-CBC of the data padded to a multiple of
 * the key's length (each pad byte the pad's length) under
 * TAG_ENCRYPTED_DATA, an IV as long as the key under TAG_IVEC (CBC uses its
 * first 16 bytes) and HMAC-SHA256 with the same key over the ciphertext and
 * the IV under TAG_HMAC. The test (tests/blackbox/test_import.py) has
 * swtpm read what is written here. */

enum { HDR_LEN = 10, FLAG_ENCRYPTED = 0x01, FLAG_256BIT_KEY = 0x08 };
enum { TAG_DATA = 1, TAG_ENCRYPTED_DATA = 2, TAG_HMAC = 3, TAG_IVEC_ENCRYPTED_DATA = 6 };
#define PERMALL "tpm2-00.permall"

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_tlv(unsigned char **p, unsigned tag, const unsigned char *v, size_t len)
{
    unsigned char *o = *p;
    o[0] = (unsigned char)(tag >> 8);
    o[1] = (unsigned char)tag;
    for (int i = 0; i < 4; i++)
        o[2 + i] = (unsigned char)(len >> (24 - 8 * i));
    memcpy(o + 6, v, len);
    *p = o + 6 + len;
}

int kh_tpm_permall_plain(const unsigned char *file, size_t len, const unsigned char **data,
                         size_t *data_len, kh_err *err)
{
    if (len < HDR_LEN || be32(file + 6) != len || file[2] != 0 || file[3] != HDR_LEN ||
        file[1] > 2 || file[0] < 1) {
        kh_err_set(err, KH_E_INVALID, "tpm: not a swtpm state file (its header)");
        return -1;
    }
    unsigned flags = (unsigned)file[4] << 8 | file[5];
    if (flags & FLAG_ENCRYPTED) {
        kh_err_set(err, KH_E_INVALID, "tpm: the swtpm state is encrypted (libvirt's "
                   "<encryption secret=...>): it cannot be read here");
        return -1;
    }
    if (file[0] == 1) { /* the data follows the header */
        *data = file + HDR_LEN;
        *data_len = len - HDR_LEN;
        return 0;
    }
    for (size_t off = HDR_LEN; off + 6 <= len;) {
        unsigned tag = (unsigned)file[off] << 8 | file[off + 1];
        uint32_t l = be32(file + off + 2);
        off += 6;
        if (l > len - off)
            break;
        if (tag == TAG_DATA) {
            *data = file + off;
            *data_len = l;
            return 0;
        }
        off += l;
    }
    kh_err_set(err, KH_E_INVALID, "tpm: the swtpm state file holds no plain data");
    return -1;
}

/* The AES-256 key of key_fd (64 hex digits, as swtpm's --key format=hex). */
static int read_key(int key_fd, unsigned char key[32], kh_err *err)
{
    char hex[65] = "";
    ssize_t n = pread(key_fd, hex, 64, 0);
    for (int i = 0; n == 64 && i < 32; i++) {
        int hi = kh_hex_digit(hex[2 * i]), lo = kh_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            n = -1;
        else
            key[i] = (unsigned char)(hi << 4 | lo);
    }
    OPENSSL_cleanse(hex, sizeof(hex));
    if (n != 64) {
        kh_err_set(err, KH_E_INTERNAL, "tpm: the VM's key cannot be read");
        return -1;
    }
    return 0;
}

/* data encrypted with key as swtpm does: the TLVs after the header. */
static unsigned char *seal(const unsigned char key[32], const unsigned char *data, size_t len,
                           size_t *out_len, kh_err *err)
{
    size_t pad = 32 - len % 32, clen = len + pad;
    unsigned char iv[32], mac[32];
    /* the ciphertext and the IV after it: what the HMAC covers */
    unsigned char *plain = xmalloc(clen), *cipher = xmalloc(clen + sizeof(iv)), *out = NULL;
    unsigned int mac_len = 0;
    int l1 = 0, l2 = 0;
    memcpy(plain, data, len);
    memset(plain + len, (int)pad, pad);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok = RAND_bytes(iv, sizeof(iv)) == 1 && ctx &&
              EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv) == 1 &&
              EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
              EVP_EncryptUpdate(ctx, cipher, &l1, plain, (int)clen) == 1 &&
              EVP_EncryptFinal_ex(ctx, cipher + l1, &l2) == 1 && (size_t)l1 + (size_t)l2 == clen;
    if (ok) {
        memcpy(cipher + clen, iv, sizeof(iv));
        ok = HMAC(EVP_sha256(), key, 32, cipher, clen + sizeof(iv), mac, &mac_len) &&
             mac_len == sizeof(mac);
    }
    if (ok) {
        *out_len = 3 * 6 + clen + sizeof(mac) + sizeof(iv);
        out = xmalloc(*out_len);
        unsigned char *p = out;
        put_tlv(&p, TAG_ENCRYPTED_DATA, cipher, clen);
        put_tlv(&p, TAG_HMAC, mac, sizeof(mac));
        put_tlv(&p, TAG_IVEC_ENCRYPTED_DATA, iv, sizeof(iv));
    } else {
        kh_err_set(err, KH_E_INTERNAL, "tpm: encrypting the state failed");
    }
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(plain, clen);
    free(plain);
    free(cipher);
    return out;
}

int kh_tpm_state_import(const char *state_dir, const unsigned char *data, size_t len,
                        int key_fd, kh_err *err)
{
    if (len > STATE_FILE_MAX) {
        kh_err_set(err, KH_E_INVALID, "tpm: a state of %zu bytes is too large", len);
        return -1;
    }
    size_t body_len = 0;
    unsigned char *body = NULL;
    unsigned flags = 0;
    if (key_fd >= 0) {
        unsigned char key[32];
        if (read_key(key_fd, key, err) < 0)
            return -1;
        body = seal(key, data, len, &body_len, err);
        OPENSSL_cleanse(key, sizeof(key));
        if (!body)
            return -1;
        flags = FLAG_ENCRYPTED | FLAG_256BIT_KEY;
    } else {
        body_len = 6 + len;
        body = xmalloc(body_len);
        unsigned char *p = body;
        put_tlv(&p, TAG_DATA, data, len);
    }
    size_t total = HDR_LEN + body_len;
    unsigned char *file = xmalloc(total);
    file[0] = 2; /* version */
    file[1] = 1; /* readable by swtpm's of version 1 and up */
    file[2] = 0;
    file[3] = HDR_LEN;
    file[4] = (unsigned char)(flags >> 8);
    file[5] = (unsigned char)flags;
    for (int i = 0; i < 4; i++)
        file[6 + i] = (unsigned char)(total >> (24 - 8 * i));
    memcpy(file + HDR_LEN, body, body_len);
    free(body);
    /* as one state file of the VM's: the whole tpm/ dir replaced */
    char *hex = xmalloc(2 * total + 1);
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < total; i++) {
        hex[2 * i] = digits[file[i] >> 4];
        hex[2 * i + 1] = digits[file[i] & 15];
    }
    hex[2 * total] = '\0';
    free(file);
    json_t *files = json_pack("{s:s}", PERMALL, hex);
    free(hex);
    int rc = kh_tpm_state_put(state_dir, files, err);
    json_decref(files);
    return rc;
}
