/* key.c - volume keys: the host master key, wrapping, secrets in memfds (key.h). */
#include "storage/key.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/mem.h"
#include "util/misc.h"

#define KEY_LEN 32
#define IV_LEN 12
#define TAG_LEN 16
#define WRAPPED_LEN (IV_LEN + KEY_LEN + TAG_LEN) /* KH_KEY_WRAPPED_HEX is its hex */

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_decode(const char *in, unsigned char *out, size_t n)
{
    if (!in || strlen(in) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(in + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* AES-256-GCM with the master key; the volume id is the associated data, so
 * a wrapped key moved to another volume does not unwrap. */
static int key_crypt(const kh_key_master *m, bool wrap, const char *vol_id,
                     const unsigned char *in, unsigned char *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = 0, len = 0;
    if (!c)
        return -1;
    if (wrap) {
        unsigned char *iv = out, *ct = out + IV_LEN, *tag = out + IV_LEN + KEY_LEN;
        kh_random_bytes(iv, IV_LEN);
        ok = EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, m->key, iv) == 1 &&
             EVP_EncryptUpdate(c, NULL, &len, (const unsigned char *)vol_id,
                               (int)strlen(vol_id)) == 1 &&
             EVP_EncryptUpdate(c, ct, &len, in, KEY_LEN) == 1 &&
             EVP_EncryptFinal_ex(c, ct + len, &len) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
    } else {
        const unsigned char *iv = in, *ct = in + IV_LEN, *tag = in + IV_LEN + KEY_LEN;
        ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, m->key, iv) == 1 &&
             EVP_DecryptUpdate(c, NULL, &len, (const unsigned char *)vol_id,
                               (int)strlen(vol_id)) == 1 &&
             EVP_DecryptUpdate(c, out, &len, ct, KEY_LEN) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                                 (void *)(uintptr_t)tag) == 1 &&
             EVP_DecryptFinal_ex(c, out + len, &len) == 1;
    }
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

/* A sealed in-memory file holding the secret, to hand to a child as an fd. */
static int secret_memfd(const char *secret, kh_err *err)
{
    int fd = memfd_create("kh-secret", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "memfd_create");
        return -1;
    }
    size_t n = strlen(secret);
    if (write(fd, secret, n) != (ssize_t)n || lseek(fd, 0, SEEK_SET) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "writing a secret");
        close(fd);
        return -1;
    }
    return fd;
}

int kh_key_new(const kh_key_master *m, const char *vol_id, char wrapped_hex[KH_KEY_WRAPPED_HEX],
               kh_err *err)
{
    unsigned char key[KEY_LEN], wrapped[WRAPPED_LEN];
    char secret[2 * KEY_LEN + 1];
    kh_random_bytes(key, sizeof(key));
    int krc = key_crypt(m, true, vol_id, key, wrapped);
    hex_encode(key, KEY_LEN, secret);
    OPENSSL_cleanse(key, sizeof(key));
    hex_encode(wrapped, WRAPPED_LEN, wrapped_hex);
    int fd = krc == 0 ? secret_memfd(secret, err) : -1;
    OPENSSL_cleanse(secret, sizeof(secret));
    if (krc < 0)
        kh_err_set(err, KH_E_INTERNAL, "wrapping the volume key failed");
    return fd;
}

int kh_key_ephemeral_fd(kh_err *err)
{
    unsigned char key[KEY_LEN];
    char secret[2 * KEY_LEN + 1];
    kh_random_bytes(key, sizeof(key));
    hex_encode(key, KEY_LEN, secret);
    OPENSSL_cleanse(key, sizeof(key));
    int fd = secret_memfd(secret, err);
    OPENSSL_cleanse(secret, sizeof(secret));
    return fd;
}

int kh_key_secret_fd(const kh_key_master *m, const char *vol_id, const char *wrapped_hex,
                     const char *what, kh_err *err)
{
    unsigned char wrapped[WRAPPED_LEN], key[KEY_LEN];
    char secret[2 * KEY_LEN + 1];
    if (hex_decode(wrapped_hex, wrapped, sizeof(wrapped)) < 0 ||
        key_crypt(m, false, vol_id, wrapped, key) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "volume %s: its key does not unwrap with this host's "
                                       "master key", what);
        return -1;
    }
    hex_encode(key, KEY_LEN, secret);
    OPENSSL_cleanse(key, sizeof(key));
    int fd = secret_memfd(secret, err);
    OPENSSL_cleanse(secret, sizeof(secret));
    return fd;
}

int kh_key_wrap(const kh_key_master *m, const char *aad, const unsigned char key[32],
                char wrapped_hex[KH_KEY_WRAPPED_HEX], kh_err *err)
{
    unsigned char wrapped[WRAPPED_LEN];
    if (key_crypt(m, true, aad, key, wrapped) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "wrapping a key failed");
        return -1;
    }
    hex_encode(wrapped, WRAPPED_LEN, wrapped_hex);
    return 0;
}

int kh_key_unwrap(const kh_key_master *m, const char *aad, const char *wrapped_hex,
                  unsigned char key[32], kh_err *err)
{
    unsigned char wrapped[WRAPPED_LEN];
    if (hex_decode(wrapped_hex, wrapped, sizeof(wrapped)) < 0 ||
        key_crypt(m, false, aad, wrapped, key) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "a backup store key does not unwrap with this host's "
                                       "master key");
        return -1;
    }
    return 0;
}

int kh_key_derived_fd(const kh_key_master *m, const char *label, kh_err *err)
{
    unsigned char key[KEY_LEN];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), m->key, KH_KEY_MASTER_LEN, (const unsigned char *)label,
              strlen(label), key, &len) || len != KEY_LEN) {
        kh_err_set(err, KH_E_INTERNAL, "deriving a key failed");
        return -1;
    }
    char secret[2 * KEY_LEN + 1];
    hex_encode(key, KEY_LEN, secret);
    OPENSSL_cleanse(key, sizeof(key));
    int fd = secret_memfd(secret, err);
    OPENSSL_cleanse(secret, sizeof(secret));
    return fd;
}

int kh_key_master_load(kh_key_master *m, const char *state_dir, kh_err *err)
{
    char *path = xasprintf("%s/master.key", state_dir);
    int rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        unsigned char k[KH_KEY_MASTER_LEN];
        kh_random_bytes(k, sizeof(k));
        rc = kh_fs_write_atomic(path, k, sizeof(k), 0600, err);
        OPENSSL_cleanse(k, sizeof(k));
        if (rc == 0)
            fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        rc = -1;
    }
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "master key %s", path);
    } else if ((sb.st_mode & 077) != 0 || sb.st_size != KH_KEY_MASTER_LEN) {
        kh_err_set(err, KH_E_INTERNAL, "master key %s: must be 32 bytes with mode 0600", path);
    } else if (read(fd, m->key, KH_KEY_MASTER_LEN) != KH_KEY_MASTER_LEN) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "reading %s", path);
    } else {
        rc = 0;
    }
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

void kh_key_master_clear(kh_key_master *m)
{
    OPENSSL_cleanse(m->key, sizeof(m->key));
}
