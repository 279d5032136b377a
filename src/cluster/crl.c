/* crl.c - the certificate revocation list of the cluster's etcd: the
 * serials of removed hosts' certificates (/kvmhost/removed/<id>
 * cert_serial), written to STATE_DIR/cluster-tls/crl.pem whenever that
 * view changes, and given to the local etcd member as --client-crl-file.
 * etcd 3.4 reads the file again at every client TLS handshake, so a
 * rewrite takes effect at once, without restarting the member. Signed by
 * the cluster CA on a host that holds its key; elsewhere by this host's
 * own key with this host as the issuer (etcd 3.4 checks only the serials a
 * CRL lists, not who signed it). A file etcd cannot parse would refuse
 * every client, so an empty CRL is written before etcd starts.
 */
#include "cluster/cluster_int.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/strv.h"

#define CRL_DAYS 3650

static X509 *read_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

static EVP_PKEY *read_key(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    return k;
}

char *kh_crl_serial(const char *cert_pem)
{
    X509 *x = cert_pem ? read_cert(cert_pem) : NULL;
    BIGNUM *bn = x ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    char *out = hex ? xstrdup(hex) : NULL;
    OPENSSL_free(hex);
    BN_free(bn);
    X509_free(x);
    return out;
}

char *kh_crl_make(const char *issuer_pem, const char *key_pem, const char *const *serials,
                  size_t n, kh_err *err)
{
    X509 *issuer = read_cert(issuer_pem);
    EVP_PKEY *key = read_key(key_pem);
    X509_CRL *crl = X509_CRL_new();
    char *out = NULL;
    if (!issuer || !key || !crl) {
        ERR_clear_error();
        kh_err_set(err, KH_E_INTERNAL, "crl: cannot read the signer's certificate or key");
        goto done;
    }
    X509_CRL_set_version(crl, 1); /* v2 */
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer));
    ASN1_TIME *now = X509_gmtime_adj(NULL, 0), *next = X509_gmtime_adj(NULL, (long)CRL_DAYS * 86400);
    X509_CRL_set1_lastUpdate(crl, now);
    X509_CRL_set1_nextUpdate(crl, next);
    for (size_t i = 0; i < n; i++) {
        BIGNUM *bn = NULL;
        if (!BN_hex2bn(&bn, serials[i]))
            continue;
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
        X509_REVOKED_set_serialNumber(r, ai);
        X509_REVOKED_set_revocationDate(r, now);
        X509_CRL_add0_revoked(crl, r);
        ASN1_INTEGER_free(ai);
        BN_free(bn);
    }
    ASN1_TIME_free(now);
    ASN1_TIME_free(next);
    X509_CRL_sort(crl);
    if (X509_CRL_sign(crl, key, EVP_sha256()) <= 0) {
        ERR_clear_error();
        kh_err_set(err, KH_E_INTERNAL, "crl: signing failed");
        goto done;
    }
    BIO *b = BIO_new(BIO_s_mem());
    if (PEM_write_bio_X509_CRL(b, crl)) {
        char *p = NULL;
        long len = BIO_get_mem_data(b, &p);
        out = xstrndup(p, (size_t)len);
    }
    BIO_free(b);
done:
    X509_CRL_free(crl);
    EVP_PKEY_free(key);
    X509_free(issuer);
    return out;
}

int kh_crl_update(kh_cluster *c)
{
    if (!c->etcd_tls)
        return 0;
    kh_strv *serials = kh_strv_new();
    const char *id;
    json_t *rec;
    json_object_foreach(c->revoked.map, id, rec) {
        const char *s = json_string_value(json_object_get(rec, "cert_serial"));
        if (s && *s)
            kh_strv_add(serials, s);
    }
    char *ca_key = kh_cluster_tls_path(c, "ca.key");
    bool by_ca = access(ca_key, R_OK) == 0;
    char *signer = kh_cluster_tls_path(c, by_ca ? "ca.pem" : "host.pem");
    char *key = by_ca ? ca_key : kh_cluster_tls_path(c, "host.key");
    char *signer_pem = kh_fs_read(signer, 1 << 20, NULL, NULL);
    char *key_pem = kh_fs_read(key, 1 << 20, NULL, NULL);
    kh_err err = KH_ERR_INIT;
    char *crl = signer_pem && key_pem
                ? kh_crl_make(signer_pem, key_pem, (const char *const *)serials->v, serials->n,
                              &err) : NULL;
    int rc = -1;
    if (crl && kh_cluster_tls_write(c, "crl.pem", crl, &err) == 0) {
        rc = 0;
        kh_log(KH_LOG_INFO, "cluster.crl", "revoked=%zu signer=%s", serials->n,
               by_ca ? "ca" : "host");
    } else {
        kh_log(KH_LOG_ERROR, "cluster.crl", "error=\"%s\"",
               err.code != KH_OK ? err.msg : "no host certificate");
    }
    if (key_pem)
        OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
    free(signer_pem);
    free(crl);
    if (key != ca_key)
        free(key);
    free(ca_key);
    free(signer);
    kh_strv_free(serials);
    return rc;
}
