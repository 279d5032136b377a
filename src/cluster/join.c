/* join.c - the pieces of forming and changing the cluster that are not
 * jobs: the checks before create and join, the cluster CA, one-time join
 * tokens, the joining side's calls to the member's API (blocking: form.c
 * makes them on a worker thread), the retire txn of leave and remove, and
 * the end of a host removed by another. The jobs themselves (create, join,
 * leave: form.c; admit, token, remove: async.c) never block the loop.
 *
 * Join protocol (local etcd mode):
 *  1. On a member, `cluster token` stores sha256(token) under
 *     /kvmhost/join-tokens/<hex> on a lease of its own (the token's life);
 *     only the member that made it knows the token.
 *  2. The joining daemon generates its host id and POSTs {host_id, name,
 *     peer_url} to the member's TCP API, POST /api/v1/cluster/members, with
 *     "Authorization: KH-Join <token>" (the only route that accepts it).
 *  3. The member consumes the token in one txn (it exists -> delete it; a
 *     used or expired token loses), then adds the etcd member (gateway
 *     /v3/cluster/member/add with the peer URL) and answers the cluster's
 *     name and id, the initial-cluster string and the client URLs.
 *  4. The joining daemon starts its etcd member with --initial-cluster-state
 *     existing, waits for it, saves the configuration (SQLite) and
 *     registers (member.c).
 * With --etcd-endpoints (an existing etcd cluster) steps 3-4 add no etcd
 * member: the answer says mode "external" and the host only registers.
 */
#include "cluster/cluster_int.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "cluster/etcd_int.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define JOIN_TIMEOUT_MS 30000

char *kh_cluster_token_key(const char *token)
{
    unsigned char h[32];
    unsigned int n = 0;
    EVP_Digest(token, strlen(token), h, &n, EVP_sha256(), NULL);
    char hex[65];
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    return xasprintf(KH_CLUSTER_TOKENS "%s", hex);
}

static bool is_local(const kh_cluster *c)
{
    return !c->ext_endpoints;
}

bool kh_cluster_is_local(const kh_cluster *c)
{
    return is_local(c);
}

int kh_cluster_need_advertise(const kh_cluster *c, kh_err *err)
{
    if (c->advertise)
        return 0;
    kh_err_set(err, KH_E_INVALID, "kvmhostd needs the address other hosts reach it at: start "
               "it with --listen ADDR:PORT on a specific address, or --advertise ADDR");
    return -1;
}

/* A previous cluster's etcd data must not be reused by a new member. */
void kh_cluster_drop_etcd_data(kh_cluster *c)
{
    char *data = xasprintf("%s/etcd", c->state_dir);
    kh_fs_rm_rf(data, NULL);
    free(data);
}

int kh_cluster_refuse_member(const kh_cluster *c, kh_err *err)
{
    if (c->forming) {
        kh_err_set(err, KH_E_CONFLICT, "a cluster create, join or leave is under way on "
                   "this host");
        return -1;
    }
    if (!c->enabled)
        return 0;
    kh_err_set(err, KH_E_CONFLICT, "this host is already a member of cluster %s (kvmhost "
               "cluster leave first)", c->conf.name);
    return -1;
}

/* The cluster CA (its key stays on this host: it alone signs joins) and
 * this host's certificate, in STATE_DIR/cluster-tls (form.c puts the
 * certificate in etcd). */
int kh_cluster_make_ca(kh_cluster *c, kh_err *err)
{
    char *ca_key = NULL, *ca = NULL, *key = NULL, *csr = NULL, *cert = NULL;
    char *cn = xasprintf("kvmhost cluster %s CA", c->conf.name);
    int rc = kh_pki_make_ca(cn, &ca_key, &ca, err);
    free(cn);
    if (rc == 0)
        rc = kh_pki_make_csr(c->host_name, &key, &csr, err);
    if (rc == 0 && !(cert = kh_pki_sign(ca, ca_key, csr, c->advertise, err)))
        rc = -1;
    if (rc == 0)
        rc = kh_cluster_tls_write(c, "ca.key", ca_key, err);
    if (rc == 0)
        rc = kh_cluster_tls_write(c, "ca.pem", ca, err);
    if (rc == 0)
        rc = kh_cluster_tls_write(c, "host.key", key, err);
    if (rc == 0)
        rc = kh_cluster_tls_write(c, "host.pem", cert, err);
    if (ca_key)
        OPENSSL_cleanse(ca_key, strlen(ca_key));
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(ca_key);
    free(ca);
    free(key);
    free(csr);
    free(cert);
    return rc;
}

char *kh_cluster_token_new(kh_cluster *c, kh_err *err)
{
    unsigned char raw[24];
    kh_random_bytes(raw, sizeof(raw));
    char tok[2 * sizeof(raw) + 1];
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(tok + 2 * i, 3, "%02x", raw[i]);
    /* The token pins the cluster CA: RANDOM.SHA256(CA certificate) */
    char *ca_path = kh_cluster_tls_path(c, "ca.pem");
    char *ca = kh_fs_read(ca_path, 1 << 20, NULL, NULL);
    free(ca_path);
    char *pin = kh_pki_fingerprint(ca);
    free(ca);
    if (!pin) {
        kh_err_set(err, KH_E_CONFLICT, "this host has no cluster CA certificate "
                   "(STATE_DIR/cluster-tls/ca.pem): make the token on another member");
        return NULL;
    }
    /* ... and, when the API speaks TLS, its certificate's public key:
     * RANDOM.SHA256(CA).SHA256(API key), so the joiner can trust this
     * host's self-signed API certificate for its first call */
    char *api = c->api_cert ? kh_fs_read(c->api_cert, 1 << 20, NULL, NULL) : NULL;
    char *api_pin = kh_pki_pubkey_pin(api);
    free(api);
    char *full = api_pin ? xasprintf("%s.%s.%s", tok, pin, api_pin) : xasprintf("%s.%s", tok, pin);
    free(api_pin);
    free(pin);
    return full;
}

char *kh_cluster_token_value(const kh_cluster *c)
{
    json_t *v = json_pack("{s:s, s:f}", "made_by", c->conf.host_id, "made_at", kh_wall_time());
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return text;
}

char *kh_cluster_token(kh_cluster *c, int64_t ttl_s, kh_err *err)
{
    if (kh_cluster_writable(c, err) < 0)
        return NULL;
    char *full = kh_cluster_token_new(c, err);
    if (!full)
        return NULL;
    int64_t lease = 0;
    if (kh_etcd_lease_grant(c->etcd, ttl_s, &lease, NULL, err) < 0) {
        free(full);
        return NULL;
    }
    char *key = kh_cluster_token_key(full);
    char *text = kh_cluster_token_value(c);
    int rc = kh_etcd_put(c->etcd, key, text, (size_t)-1, lease, NULL, err);
    free(text);
    free(key);
    if (rc < 0) {
        free(full);
        return NULL;
    }
    kh_log(KH_LOG_INFO, "cluster.token", "ttl=%lld", (long long)ttl_s);
    return full;
}

/* ---- the joining side ---- */

/* POST body (NULL: GET) to the member at url; its JSON answer or NULL with
 * err. ca_pem: verify its TLS certificate with this CA only; pin (a
 * libcurl "sha256//BASE64" public key pin): trust exactly that key (the
 * member's self-signed API certificate), whoever signed it. */
json_t *kh_cluster_ask_member(const char *url, const char *address, const char *token,
                              const json_t *body, const char *ca_pem, const char *pin,
                              kh_err *err)
{
    char *auth = token ? xasprintf("Authorization: KH-Join %s", token) : NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (auth)
        hdr = curl_slist_append(hdr, auth);
    kh_buf reply = { 0 };
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    if (text)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
    if (ca_pem) {
        struct curl_blob blob = { (void *)(uintptr_t)ca_pem, strlen(ca_pem), CURL_BLOB_COPY };
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (pin) { /* libcurl checks the pin whether or not it verifies the chain */
        curl_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, pin);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)JOIN_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kh_buf_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdr);
    free(text);
    free(auth);
    json_t *j = NULL;
    if (rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH) {
        kh_err_set(err, KH_E_UNAUTHORIZED, "the TLS certificate of the member at %s is not "
                   "the one pinned in the join token: not joining (a man in the middle, or "
                   "its certificate changed: make a new token)", address);
    } else if (rc != CURLE_OK) {
        kh_err_set(err, KH_E_UNAVAILABLE, "cannot reach the member at %s: %s", url,
                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
    } else {
        j = json_loadb(reply.p ? reply.p : "", reply.len, 0, NULL);
        if (status != 200 || !json_is_object(j)) {
            const json_t *e = json_object_get(j, "error");
            const char *msg = json_string_value(json_object_get(e, "message"));
            kh_code code = status == 401 ? KH_E_UNAUTHORIZED : status == 409 ? KH_E_CONFLICT
                           : status == 400 ? KH_E_INVALID : KH_E_UNAVAILABLE;
            kh_err_set(err, code, "the member at %s refused: %s", address,
                       msg ? msg : "HTTP error");
            json_decref(j);
            j = NULL;
        }
    }
    kh_buf_release(&reply);
    return j;
}

/* The member's cluster CA, checked against the pin in the token
 * (RANDOM.SHA256): a man in the middle cannot pose as the cluster, as it
 * has no certificate from that CA. The member's host-to-host URL (a new
 * string) with *ca_pem (the CA, a new string), or NULL with err. Touches
 * nothing of the daemon's: it runs on a worker thread (form.c). */
char *kh_cluster_pinned_ca(const char *address, const char *token, char **ca_pem,
                           kh_err *err)
{
    const char *pin = strchr(token, '.');
    const char *api_pin = pin ? strchr(pin + 1, '.') : NULL;
    size_t pin_len = api_pin ? (size_t)(api_pin - pin - 1) : pin ? strlen(pin + 1) : 0;
    if (!pin || pin_len != 64 || (api_pin && strlen(api_pin + 1) != 64)) {
        kh_err_set(err, KH_E_INVALID, "the join token has no cluster CA pin (RANDOM.SHA256): "
                   "make a new one with 'kvmhost cluster token'");
        return NULL;
    }
    /* a member whose API speaks TLS puts its key's pin in the token: HOST:PORT
     * then means https, and exactly that key is trusted */
    char *curl_pin = api_pin ? kh_cluster_pin_curl(api_pin + 1) : NULL;
    if (api_pin && !curl_pin) {
        kh_err_set(err, KH_E_INVALID, "the join token's API certificate pin is not hex");
        return NULL;
    }
    char *url = xasprintf("%s%s/api/v1/cluster/ca", strstr(address, "://") ? ""
                          : api_pin ? "https://" : "http://", address);
    json_t *j = kh_cluster_ask_member(url, address, NULL, NULL, NULL, curl_pin, err);
    free(url);
    free(curl_pin);
    if (!j)
        return NULL;
    const char *ca = json_string_value(json_object_get(j, "ca"));
    const char *curl_ = json_string_value(json_object_get(j, "cluster_url"));
    char *fp = kh_pki_fingerprint(ca);
    char *out = NULL;
    if (!fp || strncasecmp(fp, pin + 1, 64) != 0 || !curl_)
        kh_err_set(err, KH_E_UNAUTHORIZED, "the cluster CA of the member at %s does not match "
                   "the CA pinned in the join token: not joining (a man in the middle, or a "
                   "token of another cluster)", address);
    else {
        out = xstrdup(curl_);
        *ca_pem = xstrdup(ca);
    }
    free(fp);
    json_decref(j);
    return out;
}

/* ---- leave and remove ---- */

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

json_t *kh_cluster_retire_txn(kh_cluster *c, const char *host_id)
{
    char *k1 = xasprintf(KH_CLUSTER_HOSTS "%s", host_id);
    char *k2 = xasprintf(KH_CLUSTER_MEMBERS "%s", host_id);
    char *k3 = xasprintf(KH_CLUSTER_REMOVED "%s", host_id);
    const json_t *rec = json_object_get(c->hosts.map, host_id);
    const char *fp = json_string_value(json_object_get(rec, "cert_fingerprint"));
    const char *serial = json_string_value(json_object_get(rec, "cert_serial"));
    if (strcmp(host_id, c->conf.host_id) == 0) {
        fp = c->fingerprint;
        serial = c->serial;
    }
    json_t *r = json_pack("{s:s, s:s*, s:s*, s:f}", "name", str(rec, "name")[0]
                          ? str(rec, "name") : host_id, "cert_fingerprint", fp,
                          "cert_serial", serial, "removed_at", kh_wall_time());
    char *text = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(r);
    kh_etcd_op ops[3] = { { .type = KH_ETCD_OP_PUT, .key = k3, .value = text },
                          { .type = KH_ETCD_OP_DELETE, .key = k1 },
                          { .type = KH_ETCD_OP_DELETE, .key = k2 } };
    json_t *body = kh_etcd_txn_json(NULL, 0, ops, 3, NULL, 0);
    free(text);
    free(k1);
    free(k2);
    free(k3);
    return body;
}

void kh_cluster_forget(kh_cluster *c)
{
    char host_id[37];
    snprintf(host_id, sizeof(host_id), "%s", c->conf.host_id);
    bool local = is_local(c);
    kh_log(KH_LOG_WARN, "cluster.removed", "cluster=%s host_id=%s note=\"removed by another "
           "host: this host is a single host again\"", c->conf.name, host_id);
    kh_cluster_stop(c, false);
    kh_cluster_mirror_clear(c);
    kh_err err = KH_ERR_INIT;
    if (kh_cluster_conf_clear(c->store, &err) < 0)
        kh_log(KH_LOG_ERROR, "cluster.removed", "error=\"%s\"", err.msg);
    if (local)
        kh_cluster_drop_etcd_data(c);
    kh_cluster_tls_drop(c);
    kh_cluster_conf_fini(&c->conf);
}

char *kh_cluster_remove_target(kh_cluster *c, const char *host, kh_err *err)
{
    if (kh_cluster_writable(c, err) < 0)
        return NULL;
    const char *id = NULL, *k;
    json_t *rec;
    json_object_foreach(c->hosts.map, k, rec)
        if (strcmp(k, host) == 0 ||
            strcmp(str(rec, "name"), host) == 0)
            id = k;
    if (!id) {
        kh_err_set(err, KH_E_NOTFOUND, "no host %s in cluster %s", host, c->conf.name);
        return NULL;
    }
    if (strcmp(id, c->conf.host_id) == 0) {
        kh_err_set(err, KH_E_INVALID, "%s is this host: use 'kvmhost cluster leave'", host);
        return NULL;
    }
    return xstrdup(id);
}
