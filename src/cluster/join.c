/* join.c - forming and changing the cluster: create, one-time join tokens,
 * the join protocol (both sides), leave and remove.
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
#include <string.h>
#include <unistd.h>

#include "cluster/etcd_int.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

#define JOIN_TIMEOUT_MS 30000
#define JOIN_RETRY_S 30
#define RETRY_HINT "try again"

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

static int need_advertise(const kh_cluster *c, kh_err *err)
{
    if (c->advertise)
        return 0;
    kh_err_set(err, KH_E_INVALID, "kvmhostd needs the address other hosts reach it at: start "
               "it with --listen ADDR:PORT on a specific address, or --advertise ADDR");
    return -1;
}

/* Start what the configuration in c->conf says and wait for etcd; on
 * failure everything is stopped and the configuration dropped. */
static int bring_up(kh_cluster *c, unsigned wait_ms, kh_err *err)
{
    if (kh_cluster_start(c, err) < 0 || kh_cluster_wait_etcd(c, wait_ms, err) < 0 ||
        kh_cluster_register(c, err) < 0) {
        kh_cluster_stop(c, true);
        kh_cluster_conf_fini(&c->conf);
        return -1;
    }
    return 0;
}

/* A previous cluster's etcd data must not be reused by a new member. */
static void drop_etcd_data(kh_cluster *c)
{
    char *data = xasprintf("%s/etcd", c->state_dir);
    kh_fs_rm_rf(data, NULL);
    free(data);
}

static int refuse_member(const kh_cluster *c, kh_err *err)
{
    if (!c->enabled)
        return 0;
    kh_err_set(err, KH_E_CONFLICT, "this host is already a member of cluster %s (kvmhost "
               "cluster leave first)", c->conf.name);
    return -1;
}

/* The cluster CA (its key stays on this host: it alone signs joins) and
 * this host's certificate, in STATE_DIR/cluster-tls (put_ca: to etcd). */
static int make_ca(kh_cluster *c, kh_err *err)
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

/* The CA certificate to /kvmhost/ca. */
static int put_ca(kh_cluster *c, kh_err *err)
{
    char *path = kh_cluster_tls_path(c, "ca.pem");
    char *ca = kh_fs_read(path, 1 << 20, NULL, err);
    free(path);
    int rc = ca ? kh_etcd_put(c->etcd, KH_CLUSTER_PREFIX "ca", ca, (size_t)-1, 0, NULL, err) : -1;
    free(ca);
    return rc;
}

int kh_cluster_create(kh_cluster *c, const char *name, kh_err *err)
{
    if (refuse_member(c, err) < 0 || (is_local(c) && need_advertise(c, err) < 0))
        return -1;
    kh_cluster_conf *f = &c->conf;
    snprintf(f->name, sizeof(f->name), "%s", name && *name ? name : "kvmhost");
    kh_uuid_generate(f->cluster_id);
    kh_uuid_generate(f->host_id);
    f->created_at = kh_wall_time();
    c->etcd_tls = is_local(c);
    if (is_local(c)) {
        snprintf(f->mode, sizeof(f->mode), "local");
        /* the certificates first: the local etcd member speaks mutual TLS */
        if (make_ca(c, err) < 0) {
            kh_cluster_tls_drop(c);
            kh_cluster_conf_fini(f);
            return -1;
        }
        char *peer = kh_cluster_peer_url(c);
        f->initial_cluster = xasprintf("%s=%s", f->host_id, peer);
        free(peer);
        f->endpoints = kh_cluster_client_url(c);
        drop_etcd_data(c);
    } else {
        snprintf(f->mode, sizeof(f->mode), "external");
        f->endpoints = xstrdup(c->ext_endpoints);
    }
    if (bring_up(c, 20000, err) < 0) {
        kh_cluster_tls_drop(c);
        return -1;
    }
    /* The cluster's identity: ours, or (external etcd) the one already there. */
    json_t *info = json_pack("{s:s, s:s, s:f}", "name", f->name, "id", f->cluster_id,
                             "created_at", f->created_at);
    char *text = json_dumps(info, JSON_COMPACT);
    json_decref(info);
    kh_etcd_kv cur = { 0 };
    int won = kh_etcd_cas(c->etcd, KH_CLUSTER_INFO, 0, text, 0, NULL, &cur, err);
    free(text);
    if (won == 0) {
        json_t *have = json_loadb(cur.value, cur.value_len, 0, NULL);
        snprintf(f->name, sizeof(f->name), "%s", json_string_value(json_object_get(have, "name"))
                 ? json_string_value(json_object_get(have, "name")) : "?");
        snprintf(f->cluster_id, sizeof(f->cluster_id), "%s",
                 json_string_value(json_object_get(have, "id"))
                 ? json_string_value(json_object_get(have, "id")) : "");
        json_decref(have);
    }
    kh_etcd_kv_clear(&cur);
    if (won < 0 || (won == 1 && !is_local(c) && make_ca(c, err) < 0) ||
        (won == 1 && put_ca(c, err) < 0) ||
        kh_cluster_conf_save(c->store, f, err) < 0) {
        kh_cluster_stop(c, true);
        kh_cluster_conf_fini(f);
        kh_cluster_tls_drop(c);
        return -1;
    }
    kh_cluster_tls_load(c);
    kh_log(KH_LOG_INFO, "cluster.create", "cluster=%s id=%s host_id=%s mode=%s", f->name,
           f->cluster_id, f->host_id, f->mode);
    return 0;
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

/* The etcd members: [{ID, name, peerURLs, clientURLs}] (a new reference). */
static json_t *etcd_members(kh_cluster *c, kh_err *err)
{
    json_t *r = kh_etcd_request(c->etcd, "/v3/cluster/member/list", json_object(), true, err);
    if (!r)
        return NULL;
    json_t *m = json_incref(json_object_get(r, "members"));
    json_decref(r);
    return m ? m : json_array();
}

static json_t *admit_token(kh_cluster *c, const char *token, const char *host_id,
                           const char *peer, const json_t *body, kh_err *err);

json_t *kh_cluster_admit(kh_cluster *c, const char *token, const json_t *body, kh_err *err)
{
    if (kh_cluster_writable(c, err) < 0)
        return NULL;
    const char *host_id = json_string_value(json_object_get(body, "host_id"));
    const char *peer = json_string_value(json_object_get(body, "peer_url"));
    if (!host_id || !kh_check_uuid(host_id)) {
        kh_err_set(err, KH_E_INVALID, "host_id: must be a uuid");
        return NULL;
    }
    const char *scheme = c->etcd_tls ? "https://" : "http://";
    if (is_local(c) && (!peer || strncmp(peer, scheme, strlen(scheme)) != 0)) {
        kh_err_set(err, KH_E_INVALID, "peer_url: must be an %s URL (this cluster runs its own "
                   "etcd members%s)", scheme, c->etcd_tls ? ", over mutual TLS" : "");
        return NULL;
    }
    const char *csr = json_string_value(json_object_get(body, "csr"));
    const char *address = json_string_value(json_object_get(body, "address"));
    char *ca_key_path = kh_cluster_tls_path(c, "ca.key"), *ca_path = kh_cluster_tls_path(c, "ca.pem");
    char *ca_key = kh_fs_read(ca_key_path, 1 << 20, NULL, NULL);
    char *ca = kh_fs_read(ca_path, 1 << 20, NULL, NULL);
    free(ca_key_path);
    free(ca_path);
    char *cert = NULL;
    /* A token that is not (or no longer) valid is told so first; it is
     * consumed only once the certificate is signed (admit_token). */
    char *tkey = kh_cluster_token_key(token);
    kh_etcd_kv tkv = { 0 };
    int have = kh_etcd_get(c->etcd, tkey, &tkv, NULL, err);
    kh_etcd_kv_clear(&tkv);
    free(tkey);
    if (have <= 0) {
        if (have == 0)
            kh_err_set(err, KH_E_UNAUTHORIZED, "the join token is not valid (unknown, used or "
                       "expired): make one with 'kvmhost cluster token' on a member");
    } else if (!ca_key || !ca)
        kh_err_set(err, KH_E_CONFLICT, "this host does not hold the cluster CA key: join "
                   "through the host that created the cluster");
    else if (!csr || !address)
        kh_err_set(err, KH_E_INVALID, "csr and address are required (a host certificate is "
                   "issued at join)");
    else
        cert = kh_pki_sign(ca, ca_key, csr, address, err);
    if (ca_key)
        OPENSSL_cleanse(ca_key, strlen(ca_key));
    free(ca_key);
    if (!cert) {
        free(ca);
        return NULL;
    }
    json_t *out = admit_token(c, token, host_id, peer, body, err);
    if (out) {
        json_object_set_new(out, "certificate", json_string(cert));
        json_object_set_new(out, "ca", json_string(ca));
    }
    free(cert);
    free(ca);
    return out;
}

static json_t *admit_token(kh_cluster *c, const char *token, const char *host_id,
                           const char *peer, const json_t *body, kh_err *err)
{
    /* Consume the token: exactly one joiner can. */
    char *key = kh_cluster_token_key(token);
    kh_etcd_cmp cmp = { .key = key, .target = KH_ETCD_VERSION, .result = KH_ETCD_GREATER,
                        .number = 0 };
    kh_etcd_op del = { .type = KH_ETCD_OP_DELETE, .key = key };
    kh_etcd_txn_result res = { 0 };
    int rc = kh_etcd_txn(c->etcd, &cmp, 1, &del, 1, NULL, 0, &res, err);
    free(key);
    bool ok = rc == 0 && res.succeeded;
    if (rc == 0)
        kh_etcd_txn_result_clear(&res);
    if (rc < 0)
        return NULL;
    if (!ok) {
        kh_err_set(err, KH_E_UNAUTHORIZED, "the join token is not valid (unknown, used or "
                   "expired): make one with 'kvmhost cluster token' on a member");
        return NULL;
    }
    json_t *out = json_pack("{s:s, s:s, s:s}", "cluster", c->conf.name, "cluster_id",
                            c->conf.cluster_id, "mode", c->conf.mode);
    json_t *eps = json_array();
    if (!is_local(c)) {
        json_array_append_new(eps, json_string(c->conf.endpoints));
        json_object_set_new(out, "endpoints", eps);
        return out;
    }
    json_t *add = kh_etcd_request(c->etcd, "/v3/cluster/member/add",
                                  json_pack("{s:[s]}", "peerURLs", peer), false, err);
    if (!add && strstr(err->msg, "unhealthy cluster")) {
        /* etcd counts a member that joined moments ago only after 5 s: give
         * the token back (on a short lease) and let the joiner retry */
        int64_t lease = 0;
        char *k = kh_cluster_token_key(token);
        if (kh_etcd_lease_grant(c->etcd, 120, &lease, NULL, NULL) == 0)
            kh_etcd_put(c->etcd, k, "{}", (size_t)-1, lease, NULL, NULL);
        free(k);
        kh_err_clear(err);
        kh_err_set(err, KH_E_UNAVAILABLE, "etcd cannot add a member yet (a member that "
                   "joined moments ago counts after 5 s): " RETRY_HINT);
    }
    if (!add) {
        json_decref(eps);
        json_decref(out);
        return NULL;
    }
    const char *new_id = json_string_value(json_object_get(json_object_get(add, "member"), "ID"));
    kh_strv *initial = kh_strv_new();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(add, "members"), i, m) {
        const char *id = json_string_value(json_object_get(m, "ID"));
        const char *name = json_string_value(json_object_get(m, "name"));
        bool is_new = id && new_id && strcmp(id, new_id) == 0;
        json_t *purls = json_object_get(m, "peerURLs");
        for (size_t j = 0; j < json_array_size(purls); j++)
            kh_strv_addf(initial, "%s=%s", is_new ? host_id : name ? name : "",
                         json_string_value(json_array_get(purls, j)));
        json_t *curls = json_object_get(m, "clientURLs");
        for (size_t j = 0; j < json_array_size(curls); j++)
            json_array_append(eps, json_array_get(curls, j));
    }
    json_decref(add);
    char *ic = kh_strv_join(initial, ",");
    kh_strv_free(initial);
    json_object_set_new(out, "initial_cluster", json_string(ic));
    json_object_set_new(out, "endpoints", eps);
    kh_log(KH_LOG_INFO, "cluster.admit", "host_id=%s name=%s peer=%s", host_id,
           json_string_value(json_object_get(body, "name")), peer);
    free(ic);
    return out;
}

/* ---- the joining side ---- */

/* POST body (NULL: GET) to the member at url; its JSON answer or NULL with
 * err. cafile: verify its TLS certificate with this CA only; pin (a
 * libcurl "sha256//BASE64" public key pin): trust exactly that key (the
 * member's self-signed API certificate), whoever signed it. */
static json_t *ask_member(const char *url, const char *address, const char *token,
                          const json_t *body, const char *cafile, const char *pin,
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
    if (cafile)
        curl_easy_setopt(h, CURLOPT_CAINFO, cafile);
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
 * has no certificate from that CA. Writes ca.pem; the member's host-to-host
 * URL (a new string) or NULL with err. */
static char *pinned_ca(kh_cluster *c, const char *address, const char *token, kh_err *err)
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
    json_t *j = ask_member(url, address, NULL, NULL, NULL, curl_pin, err);
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
    else if (kh_cluster_tls_write(c, "ca.pem", ca, err) == 0)
        out = xstrdup(curl_);
    free(fp);
    json_decref(j);
    return out;
}

int kh_cluster_join(kh_cluster *c, const char *address, const char *token, kh_err *err)
{
    if (refuse_member(c, err) < 0 || (is_local(c) && need_advertise(c, err) < 0))
        return -1;
    kh_cluster_conf *f = &c->conf;
    kh_uuid_generate(f->host_id);
    c->etcd_tls = is_local(c); /* (a member of a cluster made before TLS cannot join one) */
    char *peer = c->advertise ? kh_cluster_peer_url(c) : NULL;
    char *key = NULL, *csr = NULL;
    char *member = pinned_ca(c, address, token, err);
    if (!member || kh_pki_make_csr(c->host_name, &key, &csr, err) < 0) {
        free(peer);
        free(member);
        kh_cluster_tls_drop(c);
        kh_cluster_conf_fini(f);
        return -1;
    }
    json_t *body = json_pack("{s:s, s:s, s:s*, s:s, s:s}", "host_id", f->host_id, "name",
                             c->host_name, "peer_url", peer, "csr", csr, "address",
                             c->advertise);
    free(peer);
    free(csr);
    char *url = xasprintf("%s/api/v1/cluster/members", member);
    char *cafile = kh_cluster_tls_path(c, "ca.pem");
    free(member);
    json_t *ans = NULL;
    for (unsigned tries = 0; !ans; tries++) {
        kh_err_clear(err);
        ans = ask_member(url, address, token, body, cafile, NULL, err);
        if (ans || err->code != KH_E_UNAVAILABLE || !strstr(err->msg, RETRY_HINT) ||
            tries >= JOIN_RETRY_S)
            break;
        sleep(1);
    }
    json_decref(body);
    free(url);
    free(cafile);
    const char *cert = json_string_value(json_object_get(ans, "certificate"));
    if (ans && (!cert || kh_cluster_tls_write(c, "host.pem", cert, err) < 0 ||
                kh_cluster_tls_write(c, "host.key", key, err) < 0)) {
        if (!cert)
            kh_err_set(err, KH_E_INTERNAL, "the member issued no host certificate");
        json_decref(ans);
        ans = NULL;
    }
    OPENSSL_cleanse(key, strlen(key));
    free(key);
    if (!ans) {
        kh_cluster_tls_drop(c);
        kh_cluster_conf_fini(f);
        return -1;
    }
    const char *mode = json_string_value(json_object_get(ans, "mode"));
    const char *ic = json_string_value(json_object_get(ans, "initial_cluster"));
    if (!mode || (strcmp(mode, "local") == 0) != is_local(c) || (is_local(c) && !ic)) {
        kh_err_set(err, KH_E_INVALID, "the cluster at %s %s an etcd of its own; start this "
                   "daemon %s", address, mode && strcmp(mode, "external") == 0 ? "does not run"
                   : "runs", is_local(c) ? "with its --etcd-endpoints" : "without --etcd-endpoints");
        json_decref(ans);
        kh_cluster_conf_fini(f);
        return -1;
    }
    snprintf(f->name, sizeof(f->name), "%s", json_string_value(json_object_get(ans, "cluster")));
    snprintf(f->cluster_id, sizeof(f->cluster_id), "%s",
             json_string_value(json_object_get(ans, "cluster_id")));
    snprintf(f->mode, sizeof(f->mode), "%s", mode);
    f->created_at = kh_wall_time();
    kh_strv *eps = kh_strv_new();
    if (is_local(c)) {
        f->initial_cluster = xstrdup(ic);
        kh_strv_add_steal(eps, kh_cluster_client_url(c));
        drop_etcd_data(c);
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ans, "endpoints"), i, e)
        if (json_string_value(e))
            kh_strv_add(eps, json_string_value(e));
    f->endpoints = kh_strv_join(eps, ",");
    kh_strv_free(eps);
    json_decref(ans);
    if (bring_up(c, 30000, err) < 0)
        return -1;
    if (kh_cluster_conf_save(c->store, f, err) < 0) {
        kh_cluster_stop(c, true);
        kh_cluster_conf_fini(f);
        return -1;
    }
    kh_cluster_tls_load(c);
    kh_log(KH_LOG_INFO, "cluster.join", "cluster=%s host_id=%s via=%s", f->name, f->host_id,
           address);
    return 0;
}

/* ---- leave and remove ---- */

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Remove the etcd member named host_id (local mode; absent is fine). */
static int etcd_member_remove(kh_cluster *c, const char *host_id, kh_err *err)
{
    json_t *ms = etcd_members(c, err);
    if (!ms)
        return -1;
    const char *id = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m)
        if (strcmp(str(m, "name"), host_id) == 0)
            id = json_string_value(json_object_get(m, "ID"));
    int rc = 0;
    if (id && json_array_size(ms) > 1) {
        json_t *r = kh_etcd_request(c->etcd, "/v3/cluster/member/remove",
                                    json_pack("{s:s}", "ID", id), false, err);
        rc = r ? 0 : -1;
        json_decref(r);
        if (!r && strstr(err->msg, "unhealthy cluster"))
            kh_err_prefix(err, "etcd does not change its members while one is catching up "
                          "(a member counts 5 s after it is back): try again; ");
    }
    json_decref(ms);
    return rc;
}

/* The host's records go, and removed/<id> keeps what its certificate was
 * (its fingerprint): the host can neither write its record again nor be
 * let in by a peer's mutual TLS (pki.c). One txn. */
static int retire_records(kh_cluster *c, const char *host_id, kh_err *err)
{
    json_t *body = kh_cluster_retire_txn(c, host_id);
    json_t *r = kh_etcd_request(c->etcd, "/v3/kv/txn", body, false, err);
    int rc = r ? 0 : -1;
    json_decref(r);
    return rc;
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
        drop_etcd_data(c);
    kh_cluster_tls_drop(c);
    kh_cluster_conf_fini(&c->conf);
}

int kh_cluster_leave(kh_cluster *c, kh_err *err)
{
    if (kh_cluster_writable(c, err) < 0)
        return -1;
    char host_id[37];
    snprintf(host_id, sizeof(host_id), "%s", c->conf.host_id);
    if (is_local(c) && etcd_member_remove(c, host_id, err) < 0)
        return -1;
    if (retire_records(c, host_id, err) < 0)
        return -1;
    kh_cluster_stop(c, true);
    kh_cluster_mirror_clear(c);
    if (kh_cluster_conf_clear(c->store, err) < 0)
        return -1;
    if (is_local(c))
        drop_etcd_data(c);
    kh_cluster_tls_drop(c);
    kh_log(KH_LOG_INFO, "cluster.leave", "cluster=%s host_id=%s", c->conf.name, host_id);
    kh_cluster_conf_fini(&c->conf);
    return 0;
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

int kh_cluster_remove(kh_cluster *c, const char *host, kh_err *err)
{
    char *hid = kh_cluster_remove_target(c, host, err);
    if (!hid)
        return -1;
    int rc = (is_local(c) ? etcd_member_remove(c, hid, err) : 0) == 0 ?
             retire_records(c, hid, err) : -1;
    if (rc == 0)
        kh_log(KH_LOG_INFO, "cluster.remove", "host_id=%s", hid);
    free(hid);
    return rc;
}
