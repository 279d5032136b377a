/* crl.c - the certificate revocation list of the cluster's etcd: the
 * serials of removed hosts' certificates (/kvmhost/removed/<id>
 * cert_serial), written to STATE_DIR/cluster-tls/crl.pem whenever that
 * view changes, and given to the local etcd member as --client-crl-file.
 * etcd 3.4 reads the file again at every client TLS handshake, so a
 * rewrite takes effect at once, without restarting the member. Signed by
 * the cluster CA on a host that holds its key. A host without it writes
 * one signed by its own key at once (etcd 3.4 checks only the serials a
 * CRL lists, not who signed it: the revocation applies without waiting),
 * then asks an online host that holds the CA key (its record says
 * "ca_signer") to sign the same list, over the host-to-host mutual TLS
 * (POST /api/v1/cluster/crl, kh_cluster_crl_sign there); the answer is
 * checked (signed by the cluster CA, exactly the serials asked for) and
 * replaces the file. A file etcd cannot parse would refuse every client,
 * so an empty CRL is written before etcd starts.
 */
#include "cluster/cluster_int.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The serials the CRL lists now: every removed host's, sorted. */
static kh_strv *serials_now(kh_cluster *c)
{
    kh_strv *serials = kh_strv_new();
    const char *id;
    json_t *rec;
    json_object_foreach(c->revoked.map, id, rec) {
        const char *s = json_string_value(json_object_get(rec, "cert_serial"));
        if (s && *s)
            kh_strv_add(serials, s);
    }
    if (serials->n > 1)
        qsort(serials->v, serials->n, sizeof(*serials->v), cmp_str);
    return serials;
}

bool kh_crl_can_sign(const kh_cluster *c)
{
    char *ca_key = kh_cluster_tls_path(c, "ca.key");
    bool yes = access(ca_key, R_OK) == 0;
    free(ca_key);
    return yes;
}

/* ---- a host without the CA key asks one that has it ---- */

struct kh_crl_ask {
    kh_cluster *c;            /* NULL once the cluster is gone (kh_crl_abort) */
    kh_strv *serials;         /* what was asked for */
    char via[128];            /* the signer's name */
};

void kh_crl_abort(kh_cluster *c)
{
    if (c->crl_ask)
        c->crl_ask->c = NULL; /* its answer is dropped */
    c->crl_ask = NULL;
}

static void ask_free(struct kh_crl_ask *a)
{
    kh_strv_free(a->serials);
    free(a);
}

/* crl_pem signed by the CA of ca_pem, listing exactly want: 0, or -1 with err. */
static int crl_check(const char *crl_pem, const char *ca_pem, const kh_strv *want, kh_err *err)
{
    BIO *b = BIO_new_mem_buf(crl_pem, -1);
    X509_CRL *crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
    BIO_free(b);
    X509 *ca = ca_pem ? read_cert(ca_pem) : NULL;
    EVP_PKEY *pk = ca ? X509_get0_pubkey(ca) : NULL;
    int rc = -1;
    if (!crl || !pk) {
        kh_err_set(err, KH_E_INVALID, "crl: the answer is not a CRL (or no CA certificate here)");
    } else if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) != 0 ||
               X509_CRL_verify(crl, pk) != 1) {
        kh_err_set(err, KH_E_INVALID, "crl: the answer is not signed by the cluster CA");
    } else {
        STACK_OF(X509_REVOKED) *rv = X509_CRL_get_REVOKED(crl);
        int n = rv ? sk_X509_REVOKED_num(rv) : 0;
        rc = (size_t)n == want->n ? 0 : -1;
        for (int i = 0; rc == 0 && i < n; i++) {
            const ASN1_INTEGER *ai = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(rv, i));
            BIGNUM *bn = ASN1_INTEGER_to_BN(ai, NULL);
            char *hex = bn ? BN_bn2hex(bn) : NULL;
            bool found = false;
            for (size_t k = 0; hex && k < want->n; k++)
                found = found || strcasecmp(want->v[k], hex) == 0;
            rc = found ? 0 : -1;
            OPENSSL_free(hex);
            BN_free(bn);
        }
        if (rc < 0)
            kh_err_set(err, KH_E_INVALID, "crl: the answer does not list the serials asked for");
    }
    ERR_clear_error();
    X509_free(ca);
    X509_CRL_free(crl);
    return rc;
}

static void on_signed(void *opaque, int status, const char *content_type, const char *body,
                      size_t len, const kh_err *ferr)
{
    (void)content_type;
    struct kh_crl_ask *a = opaque;
    kh_cluster *c = a->c;
    if (!c) {
        ask_free(a);
        return;
    }
    c->crl_ask = NULL;
    kh_err err = KH_ERR_INIT;
    json_t *j = status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
    const char *crl = json_string_value(json_object_get(j, "crl"));
    kh_strv *now = serials_now(c);
    bool same = now->n == a->serials->n;
    for (size_t i = 0; same && i < now->n; i++)
        same = strcmp(now->v[i], a->serials->v[i]) == 0;
    char *ca_path = kh_cluster_tls_path(c, "ca.pem");
    char *ca = kh_fs_read(ca_path, 1 << 20, NULL, NULL);
    free(ca_path);
    if (ferr)
        err = *ferr;
    else if (!crl)
        kh_err_set(&err, KH_E_UNAVAILABLE, "crl: %s answered %d", a->via, status);
    if (!kh_err_isset(&err) && same && crl_check(crl, ca, a->serials, &err) == 0 &&
        kh_cluster_tls_write(c, "crl.pem", crl, &err) == 0)
        kh_log(KH_LOG_INFO, "cluster.crl", "revoked=%zu signer=ca via=%s", a->serials->n,
               a->via);
    else if (kh_err_isset(&err))
        kh_log(KH_LOG_WARN, "cluster.crl", "via=%s error=\"%s\" note=\"the CRL signed by "
               "this host's key stays\"", a->via, err.msg);
    free(ca);
    json_decref(j);
    bool again = c->crl_again || !same;
    c->crl_again = false;
    kh_strv_free(now);
    ask_free(a);
    if (again)
        kh_crl_update(c);
}

/* An online member that holds the CA key (not this host): its record, and
 * its name in via; NULL when none. */
static const json_t *find_signer(kh_cluster *c, char *via, size_t size)
{
    const char *id;
    json_t *rec;
    json_object_foreach(c->hosts.map, id, rec) {
        const char *url = json_string_value(json_object_get(rec, "cluster_url"));
        if (strcmp(id, c->conf.host_id) == 0 || !url ||
            !json_is_true(json_object_get(rec, "ca_signer")) || !json_object_get(c->live.map, id))
            continue;
        const char *name = json_string_value(json_object_get(rec, "name"));
        snprintf(via, size, "%s", name ? name : id);
        return rec;
    }
    return NULL;
}

static bool name_ok(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!(((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return *s != '\0';
}

static void ask_signer(kh_cluster *c, kh_strv *serials)
{
    if (c->crl_ask) { /* one at a time: the answer asks again */
        c->crl_again = true;
        kh_strv_free(serials);
        return;
    }
    struct kh_crl_ask *a = xcalloc(1, sizeof(*a));
    a->c = c;
    a->serials = serials;
    const json_t *rec = find_signer(c, a->via, sizeof(a->via));
    if (!rec) {
        if (serials->n)
            kh_log(KH_LOG_INFO, "cluster.crl", "revoked=%zu signer=host note=\"no online host "
                   "holds the CA key\"", serials->n);
        ask_free(a);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < serials->n; i++)
        json_array_append_new(arr, json_string(serials->v[i]));
    json_t *body = json_pack("{s:o}", "serials", arr);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char *fwd = xasprintf("KH-Forwarded: host=%s", name_ok(c->host_name) ? c->host_name : "?");
    kh_err err = KH_ERR_INIT;
    int rc = kh_cluster_forward(c, json_string_value(json_object_get(rec, "cluster_url")),
                                "POST", "/api/v1/cluster/crl", "application/json", fwd, text,
                                strlen(text), on_signed, a, &err);
    free(fwd);
    free(text);
    if (rc < 0) {
        kh_log(KH_LOG_WARN, "cluster.crl", "via=%s error=\"%s\"", a->via, err.msg);
        ask_free(a);
        return;
    }
    c->crl_ask = a;
}

json_t *kh_cluster_crl_sign(kh_cluster *c, const json_t *serials, kh_err *err)
{
    if (!c->enabled) {
        kh_err_set(err, KH_E_INVALID, "this host is not a member of a cluster");
        return NULL;
    }
    char *ca_key_path = kh_cluster_tls_path(c, "ca.key"), *ca_path = kh_cluster_tls_path(c, "ca.pem");
    char *ca_key = kh_fs_read(ca_key_path, 1 << 20, NULL, NULL);
    char *ca = kh_fs_read(ca_path, 1 << 20, NULL, NULL);
    free(ca_key_path);
    free(ca_path);
    json_t *out = NULL;
    if (!ca_key || !ca) {
        kh_err_set(err, KH_E_CONFLICT, "this host does not hold the cluster CA key");
    } else {
        kh_strv *v = kh_strv_new();
        size_t i;
        json_t *s;
        json_array_foreach(serials, i, s)
            kh_strv_add(v, json_string_value(s));
        char *crl = kh_crl_make(ca, ca_key, (const char *const *)v->v, v->n, err);
        if (crl) {
            out = json_pack("{s:s}", "crl", crl);
            kh_log(KH_LOG_INFO, "cluster.crl.sign", "revoked=%zu", v->n);
        }
        free(crl);
        kh_strv_free(v);
    }
    if (ca_key)
        OPENSSL_cleanse(ca_key, strlen(ca_key));
    free(ca_key);
    free(ca);
    return out;
}

int kh_crl_update(kh_cluster *c)
{
    if (!c->etcd_tls)
        return 0;
    kh_strv *serials = serials_now(c);
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
    if (rc == 0 && !by_ca && c->enabled && c->fingerprint)
        ask_signer(c, serials); /* the CA-signed one replaces it when it comes */
    else
        kh_strv_free(serials);
    return rc;
}
