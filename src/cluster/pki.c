/* pki.c - the cluster's certificates (OpenSSL): the cluster CA (EC P-256,
 * self-signed, made at `cluster create`), a key and CSR per joining host,
 * the CA signing a host certificate (client and server use, the host's IP
 * as subjectAltName), fingerprints; and this host's files in
 * STATE_DIR/cluster-tls (ca.pem, host.pem, host.key; ca.key only on the host
 * that created the cluster, or one it was imported on: they alone sign
 * joins); the CA key's backup (export encrypted with a passphrase: PKCS#8,
 * AES-256-CBC, PBKDF2; import on another member).
 */
#include "cluster/cluster_int.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#define CA_DAYS 3650
#define HOST_DAYS 1825

static int ssl_fail(kh_err *err, const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    kh_err_set(err, KH_E_INTERNAL, "%s: %s", what, e ? buf : "failed");
    return -1;
}

static EVP_PKEY *new_key(void)
{
    return EVP_EC_gen("P-256");
}

static char *bio_string(BIO *b)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *s = n > 0 ? xstrndup(data, (size_t)n) : NULL;
    BIO_free(b);
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    return bio_string(b);
}

static char *cert_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    return bio_string(b);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
}

static void set_serial(X509 *x)
{
    BIGNUM *bn = BN_new();
    BN_rand(bn, 120, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
}

static void set_cn(X509_NAME *n, const char *cn)
{
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"kvmhost", -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
}

int kh_pki_make_ca(const char *cn, char **key_out, char **cert_out, kh_err *err)
{
    EVP_PKEY *k = new_key();
    X509 *x = X509_new();
    if (!k || !x) {
        EVP_PKEY_free(k);
        X509_free(x);
        return ssl_fail(err, "making the cluster CA key");
    }
    X509_set_version(x, 2);
    set_serial(x);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)CA_DAYS * 86400);
    set_cn(X509_get_subject_name(x), cn);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(x, x, NID_subject_key_identifier, "hash");
    int rc = X509_sign(x, k, EVP_sha256()) > 0 ? 0 : ssl_fail(err, "signing the cluster CA");
    if (rc == 0) {
        *key_out = key_pem(k);
        *cert_out = cert_pem(x);
    }
    EVP_PKEY_free(k);
    X509_free(x);
    return rc;
}

int kh_pki_make_csr(const char *cn, char **key_out, char **csr_out, kh_err *err)
{
    EVP_PKEY *k = new_key();
    X509_REQ *r = X509_REQ_new();
    if (!k || !r) {
        EVP_PKEY_free(k);
        X509_REQ_free(r);
        return ssl_fail(err, "making the host key");
    }
    set_cn(X509_REQ_get_subject_name(r), cn);
    X509_REQ_set_pubkey(r, k);
    int rc = X509_REQ_sign(r, k, EVP_sha256()) > 0 ? 0 : ssl_fail(err, "signing the CSR");
    if (rc == 0) {
        *key_out = key_pem(k);
        BIO *b = BIO_new(BIO_s_mem());
        PEM_write_bio_X509_REQ(b, r);
        *csr_out = bio_string(b);
    }
    EVP_PKEY_free(k);
    X509_REQ_free(r);
    return rc;
}

static void *pem_read(const char *pem, int kind)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    void *out = NULL;
    if (kind == 0)
        out = PEM_read_bio_X509(b, NULL, NULL, NULL);
    else if (kind == 1)
        out = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    else
        out = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
    BIO_free(b);
    return out;
}

char *kh_pki_sign(const char *ca_cert, const char *ca_key, const char *csr, const char *ip,
                  kh_err *err)
{
    X509 *ca = pem_read(ca_cert, 0);
    EVP_PKEY *key = pem_read(ca_key, 1);
    X509_REQ *req = pem_read(csr, 2);
    X509 *x = NULL;
    char *out = NULL;
    if (!ca || !key) {
        ssl_fail(err, "reading the cluster CA");
        goto done;
    }
    EVP_PKEY *pub = req ? X509_REQ_get0_pubkey(req) : NULL;
    if (!req || !pub || X509_REQ_verify(req, pub) != 1) {
        ERR_clear_error();
        kh_err_set(err, KH_E_INVALID, "csr: not a valid PEM certificate request");
        goto done;
    }
    x = X509_new();
    X509_set_version(x, 2);
    set_serial(x);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)HOST_DAYS * 86400);
    X509_set_subject_name(x, X509_REQ_get_subject_name(req));
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    X509_set_pubkey(x, pub);
    add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x, ca, NID_key_usage, "critical,digitalSignature,keyAgreement");
    add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth");
    char *san = xasprintf("IP:%s", ip);
    add_ext(x, ca, NID_subject_alt_name, san);
    free(san);
    if (X509_sign(x, key, EVP_sha256()) <= 0) {
        ssl_fail(err, "signing the host certificate");
        goto done;
    }
    out = cert_pem(x);
done:
    X509_free(ca);
    EVP_PKEY_free(key);
    X509_REQ_free(req);
    X509_free(x);
    return out;
}

char *kh_pki_fingerprint(const char *pem)
{
    X509 *x = pem ? pem_read(pem, 0) : NULL;
    if (!x)
        return NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    char *hex = NULL;
    if (X509_digest(x, EVP_sha256(), md, &n) == 1) {
        hex = xcalloc(1, 2 * n + 1);
        for (unsigned i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    X509_free(x);
    return hex;
}

char *kh_pki_pubkey_pin(const char *pem)
{
    X509 *x = pem ? pem_read(pem, 0) : NULL;
    EVP_PKEY *k = x ? X509_get0_pubkey(x) : NULL;
    unsigned char *der = NULL;
    int len = k ? i2d_PUBKEY(k, &der) : -1;
    char *hex = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (len > 0 && EVP_Digest(der, (size_t)len, md, &n, EVP_sha256(), NULL) == 1) {
        hex = xcalloc(1, 2 * n + 1);
        for (unsigned i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    OPENSSL_free(der);
    X509_free(x);
    return hex;
}

char *kh_cluster_pin_curl(const char *hex)
{
    unsigned char raw[32];
    if (!hex || strlen(hex) != 2 * sizeof(raw))
        return NULL;
    for (size_t i = 0; i < sizeof(raw); i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 || !isxdigit((unsigned char)hex[2 * i]) ||
            !isxdigit((unsigned char)hex[2 * i + 1]))
            return NULL;
        raw[i] = (unsigned char)v;
    }
    unsigned char b64[4 * ((sizeof(raw) + 2) / 3) + 1];
    EVP_EncodeBlock(b64, raw, (int)sizeof(raw));
    return xasprintf("sha256//%s", (const char *)b64);
}

/* ---- this host's files ---- */

char *kh_cluster_tls_path(const kh_cluster *c, const char *file)
{
    return xasprintf("%s/%s", c->tls_dir, file);
}

int kh_cluster_tls_write(kh_cluster *c, const char *file, const char *pem, kh_err *err)
{
    if (kh_fs_mkdir_p(c->tls_dir, 0700, err) < 0)
        return -1;
    char *p = kh_cluster_tls_path(c, file);
    int rc = kh_fs_write_atomic(p, pem, strlen(pem), 0600, err);
    free(p);
    return rc;
}

void kh_cluster_tls_drop(kh_cluster *c)
{
    kh_fs_rm_rf(c->tls_dir, NULL);
    free(c->fingerprint);
    c->fingerprint = NULL;
    free(c->serial);
    c->serial = NULL;
    if (c->tls_cb)
        c->tls_cb(c->tls_opaque, NULL, NULL, NULL, NULL);
}

int kh_cluster_tls_load(kh_cluster *c)
{
    char *cert = kh_cluster_tls_path(c, "host.pem");
    char *key = kh_cluster_tls_path(c, "host.key");
    char *ca = kh_cluster_tls_path(c, "ca.pem");
    char *pem = kh_fs_read(cert, 1 << 20, NULL, NULL);
    int rc = 0;
    if (pem && access(key, R_OK) == 0 && access(ca, R_OK) == 0) {
        free(c->fingerprint);
        c->fingerprint = kh_pki_fingerprint(pem);
        free(c->serial);
        c->serial = kh_crl_serial(pem);
        rc = c->fingerprint ? 1 : 0;
    }
    if (rc == 1 && c->tls_cb && c->cluster_url) {
        const char *hostport = strstr(c->cluster_url, "://") + 3;
        char *listen = xstrdup(hostport);
        c->tls_cb(c->tls_opaque, listen, ca, cert, key);
        free(listen);
    }
    free(pem);
    free(cert);
    free(key);
    free(ca);
    return rc;
}

/* ---- the CA key's backup ---- */

static char *key_encrypt(const char *key, const char *pass, kh_err *err)
{
    EVP_PKEY *k = pem_read(key, 1);
    if (!k) {
        ssl_fail(err, "reading the CA key");
        return NULL;
    }
    BIO *b = BIO_new(BIO_s_mem());
    int ok = PEM_write_bio_PKCS8PrivateKey(b, k, EVP_aes_256_cbc(), pass, (int)strlen(pass),
                                           NULL, NULL);
    EVP_PKEY_free(k);
    if (!ok) {
        BIO_free(b);
        ssl_fail(err, "encrypting the CA key");
        return NULL;
    }
    return bio_string(b);
}

/* The plain PEM of an encrypted one; KH_E_INVALID for a wrong passphrase. */
static char *key_decrypt(const char *enc, const char *pass, EVP_PKEY **out, kh_err *err)
{
    BIO *b = BIO_new_mem_buf(enc, -1);
    char *p = xstrdup(pass);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, p);
    OPENSSL_cleanse(p, strlen(p));
    free(p);
    BIO_free(b);
    if (!k) {
        ERR_clear_error();
        kh_err_set(err, KH_E_INVALID, "key: cannot decrypt it (a wrong passphrase, or not "
                   "an exported CA key)");
        return NULL;
    }
    *out = k;
    return key_pem(k);
}

json_t *kh_cluster_ca_export(kh_cluster *c, const char *pass, kh_err *err)
{
    if (!c->enabled) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster");
        return NULL;
    }
    char *kp = kh_cluster_tls_path(c, "ca.key"), *cp = kh_cluster_tls_path(c, "ca.pem");
    char *key = kh_fs_read(kp, 1 << 20, NULL, NULL), *ca = kh_fs_read(cp, 1 << 20, NULL, NULL);
    free(kp);
    free(cp);
    json_t *j = NULL;
    char *enc = NULL;
    if (!key || !ca)
        kh_err_set(err, KH_E_CONFLICT, "this host does not hold the cluster CA key: export it "
                   "on the host that created the cluster (or one it was imported on)");
    else if ((enc = key_encrypt(key, pass, err))) {
        char *fp = kh_pki_fingerprint(ca);
        j = json_pack("{s:s, s:s, s:s*, s:s}", "ca", ca, "key", enc, "fingerprint", fp,
                      "cluster", c->conf.name);
        free(fp);
        kh_log(KH_LOG_INFO, "cluster.ca.export", "cluster=%s", c->conf.name);
    }
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(key);
    free(ca);
    free(enc);
    return j;
}

int kh_cluster_ca_import(kh_cluster *c, const char *ca, const char *enc, const char *pass,
                         kh_err *err)
{
    if (!c->enabled) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster: join it first");
        return -1;
    }
    char *cp = kh_cluster_tls_path(c, "ca.pem");
    char *ours = kh_fs_read(cp, 1 << 20, NULL, NULL);
    free(cp);
    char *fa = ours ? kh_pki_fingerprint(ours) : NULL, *fb = kh_pki_fingerprint(ca);
    bool same = fa && fb && strcmp(fa, fb) == 0;
    free(ours);
    free(fa);
    free(fb);
    if (!same) {
        kh_err_set(err, KH_E_CONFLICT, "ca: not the CA of cluster %s", c->conf.name);
        return -1;
    }
    EVP_PKEY *k = NULL;
    char *key = key_decrypt(enc, pass, &k, err);
    if (!key)
        return -1;
    X509 *x = pem_read(ca, 0);
    int rc = x && X509_check_private_key(x, k) == 1 ? 0 : -1;
    X509_free(x);
    EVP_PKEY_free(k);
    if (rc < 0) {
        ERR_clear_error();
        kh_err_set(err, KH_E_INVALID, "key: it is not the key of the cluster CA");
    } else {
        rc = kh_cluster_tls_write(c, "ca.key", key, err);
    }
    OPENSSL_cleanse(key, strlen(key));
    free(key);
    if (rc == 0)
        kh_log(KH_LOG_INFO, "cluster.ca.import", "cluster=%s note=\"this host can admit new "
               "hosts\"", c->conf.name);
    return rc;
}

/* ---- QEMU's TLS files: live migration and NBD (tls-creds-x509) ---- */

/* Copy src into dir/name, mode 0640, group gid (QEMU's). */
static int qemu_tls_copy(const char *src, const char *dir, const char *name, gid_t gid,
                         kh_err *err)
{
    char *pem = kh_fs_read(src, 1 << 20, NULL, err);
    if (!pem)
        return -1;
    char *dst = xasprintf("%s/%s", dir, name);
    int rc = kh_fs_write_atomic(dst, pem, strlen(pem), 0640, err);
    if (rc == 0 && geteuid() == 0 && chown(dst, 0, gid) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "chown %s", dst);
        rc = -1;
    }
    free(dst);
    free(pem);
    return rc;
}

char *kh_cluster_qemu_tls_dir(kh_cluster *c, gid_t gid, kh_err *err)
{
    if (!c || !c->enabled || !c->fingerprint)
        return NULL; /* no host certificate: no TLS (err untouched) */
    char *dir = xasprintf("%s/qemu-tls", c->state_dir);
    char *ca = kh_cluster_tls_path(c, "ca.pem"), *cert = kh_cluster_tls_path(c, "host.pem");
    char *key = kh_cluster_tls_path(c, "host.key");
    int rc = kh_fs_mkdir_p(dir, 0750, err);
    if (rc == 0 && geteuid() == 0 && (chown(dir, 0, gid) < 0 || chmod(dir, 0750) < 0)) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "chown %s", dir);
        rc = -1;
    }
    /* the host certificate serves both ends (client and server use) */
    if (rc == 0)
        rc = qemu_tls_copy(ca, dir, "ca-cert.pem", gid, err);
    if (rc == 0)
        rc = qemu_tls_copy(cert, dir, "server-cert.pem", gid, err);
    if (rc == 0)
        rc = qemu_tls_copy(key, dir, "server-key.pem", gid, err);
    if (rc == 0)
        rc = qemu_tls_copy(cert, dir, "client-cert.pem", gid, err);
    if (rc == 0)
        rc = qemu_tls_copy(key, dir, "client-key.pem", gid, err);
    free(ca);
    free(cert);
    free(key);
    if (rc < 0) {
        free(dir);
        return NULL;
    }
    return dir;
}
