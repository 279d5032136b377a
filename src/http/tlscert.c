/* tlscert.c - the server's own TLS certificate when none is configured:
 * an EC P-256 key and a self-signed certificate (OpenSSL), made once in a
 * directory (cert.pem 0644, key.pem 0600) and reused after; and the
 * SHA-256 fingerprint clients pin it by.
 */
#include "http/server.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/mem.h"

#define CERT_DAYS 3650

static int ssl_fail(kh_err *err, const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    kh_err_set(err, KH_E_INTERNAL, "%s: %s", what, e ? buf : "failed");
    return -1;
}

static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *x, kh_err *err)
{
    char *tmp = xasprintf("%s.tmp", path);
    unlink(tmp);
    mode_t old = umask(0077);
    FILE *f = fopen(tmp, "wx");
    umask(old);
    int rc = -1;
    if (!f) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "creating %s", tmp);
        goto out;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, x);
    if (fchmod(fileno(f), mode) != 0)
        ok = 0;
    if (fclose(f) != 0 || !ok) {
        kh_err_set(err, KH_E_INTERNAL, "writing %s", tmp);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "renaming %s", tmp);
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    return rc;
}

static void add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (e) {
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
}

static int make_cert(const char *cert_path, const char *key_path, const char *san,
                     kh_err *err)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int rc = -1;
    if (!key || !x) {
        ssl_fail(err, "making the TLS key");
        goto out;
    }
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof(serial)) != 1) {
        ssl_fail(err, "random serial");
        goto out;
    }
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (bn)
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)CERT_DAYS * 86400);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"kvmhostd", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    add_ext(x, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x, NID_key_usage, "critical,digitalSignature");
    add_ext(x, NID_ext_key_usage, "serverAuth");
    add_ext(x, NID_subject_alt_name, san);
    if (!X509_sign(x, key, EVP_sha256())) {
        ssl_fail(err, "signing the TLS certificate");
        goto out;
    }
    if (write_pem(key_path, 0600, key, NULL, err) != 0 ||
        write_pem(cert_path, 0644, NULL, x, err) != 0)
        goto out;
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

char *kh_http_tls_fingerprint(const char *cert_path, kh_err *err)
{
    FILE *f = fopen(cert_path, "r");
    if (!f) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "opening %s", cert_path);
        return NULL;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!x || !X509_digest(x, EVP_sha256(), md, &len)) {
        X509_free(x);
        ssl_fail(err, cert_path);
        return NULL;
    }
    X509_free(x);
    char *out = xcalloc(len * 3 + 1, 1);
    for (unsigned i = 0; i < len; i++)
        snprintf(out + i * 3, 4, "%02X%s", md[i], i + 1 < len ? ":" : "");
    return out;
}

int kh_http_tls_self_signed(const char *dir, const char *san, char **cert_out, char **key_out,
                            bool *made, kh_err *err)
{
    *made = false;
    if (kh_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    char *cert = xasprintf("%s/cert.pem", dir);
    char *key = xasprintf("%s/key.pem", dir);
    struct stat st;
    if (stat(cert, &st) != 0 || stat(key, &st) != 0) {
        if (make_cert(cert, key, san, err) != 0) {
            free(cert);
            free(key);
            return -1;
        }
        *made = true;
    }
    *cert_out = cert;
    *key_out = key;
    return 0;
}
