/* member.c - the cluster module's life cycle (cluster.h) and this host's
 * membership: the etcd client, the lease, the member record
 * /kvmhost/members/<host-id> attached to it (and the same record, without a
 * lease, in /kvmhost/hosts/<host-id>: every member, online or not), the
 * keeper that renews the lease, and watches of both prefixes that keep the
 * caches the hosts view reads (so reads work without etcd).
 *
 * Self-fence: the keeper's expiry deadline (last renewal sent + TTL, on the
 * monotonic clock) minus a margin (TTL/4, at least 1 s) is when this host
 * stops acting as an owner; until HA exists that state is only recorded
 * and shown (GET /api/v1/cluster "fenced"). A lost lease (expired while cut
 * off) is replaced by a new one and the record written again.
 */
#include "cluster/cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cluster/etcd_int.h"
#include "kh_config.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

#define TICK_MS 1000
#define STALLED_MS 500       /* a lease renewal waiting longer: etcd is stalled */

static void handle_free(uv_handle_t *h)
{
    free(h);
}

char *kh_cluster_peer_url(const kh_cluster *c)
{
    return xasprintf("%s://%s:%u", c->etcd_tls ? "https" : "http", c->advertise, c->peer_port);
}

char *kh_cluster_client_url(const kh_cluster *c)
{
    return xasprintf("%s://%s:%u", c->etcd_tls ? "https" : "http", c->advertise,
                     c->client_port);
}

bool kh_cluster_enabled(const kh_cluster *c)
{
    return c && c->enabled;
}

int64_t kh_cluster_fence_left_ms(const kh_cluster *c)
{
    uint64_t expiry = c->keeper ? kh_etcd_keeper_expiry_ms(c->keeper) : 0;
    if (!expiry && c->keeper) /* before the first renewal: the grant's deadline */
        expiry = c->renewed_ms + c->ttl_s * 1000;
    if (!expiry)
        return 0;
    uint64_t margin = c->ttl_s * 1000 / 4 < 1000 ? 1000 : c->ttl_s * 1000 / 4;
    return (int64_t)(expiry - margin) - (int64_t)kh_now_ms();
}

bool kh_cluster_etcd_stalled(const kh_cluster *c)
{
    return !c->keeper_ok || kh_etcd_keeper_waiting_ms(c->keeper) > STALLED_MS;
}

bool kh_cluster_quorum(const kh_cluster *c)
{
    /* one failed renewal is not a lost quorum: the keeper tries the next
     * member at once (one member down changes nothing); every member in a
     * row, or the deadline passed, is */
    size_t n = c->etcd ? c->etcd->n_endpoints : 1;
    return c->keeper && !kh_cluster_fenced(c) && (c->keeper_ok || c->keeper_fails < n);
}

bool kh_cluster_fenced(const kh_cluster *c)
{
    return !c->keeper || kh_cluster_fence_left_ms(c) <= 0;
}

int kh_cluster_writable(const kh_cluster *c, kh_err *err)
{
    if (!kh_cluster_enabled(c)) {
        kh_err_set(err, KH_E_INVALID, "this host is not in a cluster (kvmhost cluster create, "
                   "or kvmhost cluster join)");
        return -1;
    }
    if (!kh_cluster_quorum(c)) {
        kh_err_set(err, KH_E_UNAVAILABLE, "the cluster has no quorum from this host (etcd: %s): "
                   "cluster-wide changes are refused until it is back; reads still work",
                   c->last_error[0] ? c->last_error : "not reachable");
        return -1;
    }
    return 0;
}

/* ---- the member record ---- */

static char *record_json(kh_cluster *c)
{
    unsigned vms = 0;
    uint64_t free_mib = 0;
    if (c->usage)
        c->usage(c->usage_opaque, &vms, &free_mib);
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    json_t *r = json_pack("{s:s, s:s*, s:s*, s:s*, s:s*, s:s*, s:{s:i, s:I}, s:I, s:i, s:s, "
                          "s:f, s:b}",
                          "name", c->host_name, "address", c->advertise, "api_url", c->api_url,
                          "cluster_url", c->fingerprint ? c->cluster_url : NULL,
                          "cert_fingerprint", c->fingerprint, "cert_serial", c->serial,
                          "capacity", "cpus",
                          (int)sysconf(_SC_NPROCESSORS_ONLN), "memory_mib",
                          (json_int_t)((uint64_t)pages * (uint64_t)psize / (1024 * 1024)),
                          "memory_free_mib", (json_int_t)free_mib, "vms", (int)vms, "version",
                          KH_VERSION, "registered_at", kh_wall_time(),
                          /* it signs CRLs for the others (crl.c) */
                          "ca_signer", c->fingerprint && kh_crl_can_sign(c));
    char *s = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(r);
    return s;
}

/* The record without its time, to tell whether it changed. */
static bool record_same(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    const char *ta = strstr(a, "\"registered_at\""), *tb = strstr(b, "\"registered_at\"");
    return ta && tb && ta - a == tb - b && strncmp(a, b, (size_t)(ta - a)) == 0 &&
           strcmp(strchr(ta, ',') ? strchr(ta, ',') : "", strchr(tb, ',') ? strchr(tb, ',') : "")
               == 0;
}

char *kh_cluster_record(kh_cluster *c)
{
    return record_json(c);
}

/* The record goes to hosts/<id> (stays while the host is a member) and to
 * members/<id> on the lease (gone when the host is), in one txn that does
 * nothing once the host was removed (removed/<id> exists): a removed host
 * still running cannot bring itself back. The txn's body, a new object. */
static json_t *record_txn(kh_cluster *c, const char *rec)
{
    char *key = xasprintf(KH_CLUSTER_MEMBERS "%s", c->conf.host_id);
    char *hkey = xasprintf(KH_CLUSTER_HOSTS "%s", c->conf.host_id);
    char *rkey = xasprintf(KH_CLUSTER_REMOVED "%s", c->conf.host_id);
    kh_etcd_cmp cmp = { .key = rkey, .target = KH_ETCD_CREATE, .result = KH_ETCD_EQUAL,
                        .number = 0 };
    kh_etcd_op ops[2] = { { .type = KH_ETCD_OP_PUT, .key = hkey, .value = rec },
                          { .type = KH_ETCD_OP_PUT, .key = key, .value = rec,
                            .lease = c->lease } };
    json_t *body = kh_etcd_txn_json(&cmp, 1, ops, 2, NULL, 0);
    free(key);
    free(hkey);
    free(rkey);
    return body;
}

static int record_reply(kh_cluster *c, const json_t *reply, kh_err *err)
{
    if (json_is_true(json_object_get(reply, "succeeded")))
        return 0;
    c->removed = true;
    kh_err_set(err, KH_E_FORBIDDEN, "this host was removed from cluster %s", c->conf.name);
    return -1;
}

static int put_record(kh_cluster *c, kh_err *err)
{
    char *rec = record_json(c);
    json_t *reply = kh_etcd_request(c->etcd, "/v3/kv/txn", record_txn(c, rec), true, err);
    int rc = reply ? record_reply(c, reply, err) : -1;
    json_decref(reply);
    if (rc < 0) {
        free(rec);
        return -1;
    }
    free(c->record);
    c->record = rec;
    return 0;
}

static void set_error(kh_cluster *c, const kh_err *err)
{
    snprintf(c->last_error, sizeof(c->last_error), "%s", err ? err->msg : "");
}

typedef struct record_req {
    kh_cluster *c;
    char *rec;
} record_req;

static void on_record_put(json_t *reply, const kh_err *err, void *opaque)
{
    record_req *r = opaque;
    kh_cluster *c = r->c;
    kh_err e = KH_ERR_INIT;
    c->record_busy = false;
    if (reply && record_reply(c, reply, &e) == 0) {
        free(c->record);
        c->record = r->rec;
        r->rec = NULL;
    } else {
        kh_log(KH_LOG_WARN, "cluster.record", "error=\"%s\"", reply ? e.msg : err ? err->msg : "?");
    }
    free(r->rec);
    free(r);
}

/* The record refresh of the tick, without blocking the loop (the txn is
 * harmless to send twice). */
static void put_record_async(kh_cluster *c, char *rec)
{
    json_t *body = record_txn(c, rec);
    record_req *r = xcalloc(1, sizeof(*r));
    r->c = c;
    r->rec = rec;
    kh_err err = KH_ERR_INIT;
    if (kh_etcd_request_async(c->etcd, "/v3/kv/txn", body, on_record_put, r, &err) < 0) {
        set_error(c, &err);
        free(r->rec);
        free(r);
        return;
    }
    c->record_busy = true;
}

static void on_members(json_t *reply, const kh_err *err, void *opaque)
{
    kh_cluster *c = opaque;
    c->members_busy = false;
    if (!reply)
        return;
    json_t *ms = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(reply, "members"), i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        json_t *purls = json_object_get(m, "peerURLs");
        json_array_append_new(ms, json_pack("{s:s, s:O}", "name", name ? name : "",
                                            "peer_urls", purls ? purls : json_array()));
    }
    json_decref(c->etcd_members);
    c->etcd_members = ms;
}

void kh_cluster_members_refresh(kh_cluster *c)
{
    if (!c->etcd || c->members_busy)
        return;
    if (kh_etcd_request_async(c->etcd, "/v3/cluster/member/list", json_object(), on_members, c,
                              NULL) == 0)
        c->members_busy = true;
}

/* ---- the caches of hosts/ and members/ ---- */

/* removed/<this host> seen (listed, watched or in the mirror): this host was
 * removed, maybe while it could not write its record; once the CRL names
 * its certificate etcd refuses it, so the record's txn may never tell it.
 * The next tick makes it a single host again. */
static void check_self_removed(kh_cluster *c, const char *id)
{
    if (c->removed || c->leaving || strcmp(id, c->conf.host_id) != 0)
        return;
    c->removed = true;
    kh_log(KH_LOG_WARN, "cluster.removed", "host_id=%s note=\"this host was removed from "
           "cluster %s\"", id, c->conf.name);
}

static void on_watch(kh_etcd_watch *w, const kh_etcd_event *ev, const kh_err *err, void *opaque)
{
    kh_cluster_cache *k = opaque;
    if (!ev) {
        kh_log(KH_LOG_WARN, "cluster.watch", "prefix=%s error=\"%s\" note=\"listing again\"",
               k->prefix, err ? err->msg : "ended");
        kh_etcd_watch_cancel(w);
        k->watch = NULL; /* the tick lists and watches again */
        return;
    }
    const char *id = ev->kv->key + strlen(k->prefix);
    bool live = k == &k->c->live;
    if (!live)
        kh_cluster_mirror_event(k->c, k->prefix, ev->kv, ev->type == KH_ETCD_EV_PUT);
    if (ev->type == KH_ETCD_EV_DELETE) {
        json_object_del(k->map, id);
        if (live)
            kh_log(KH_LOG_INFO, "cluster.member.offline", "host_id=%s", id);
    } else {
        json_t *rec = json_loadb(ev->kv->value, ev->kv->value_len, 0, NULL);
        if (json_is_object(rec)) {
            if (live && !json_object_get(k->map, id))
                kh_log(KH_LOG_INFO, "cluster.member.online", "host_id=%s name=%s", id,
                       json_string_value(json_object_get(rec, "name")));
            json_object_set_new(k->map, id, rec);
        } else {
            json_decref(rec);
        }
    }
    if (k == &k->c->revoked) { /* a host removed: etcd refuses its certificate */
        if (ev->type != KH_ETCD_EV_DELETE)
            check_self_removed(k->c, id);
        kh_crl_update(k->c);
    }
    kh_cluster_vms_view_stale(k->c); /* host names in the view */
}

static void load_into(kh_cluster_cache *k, const kh_etcd_kv *kv)
{
    json_t *rec = json_loadb(kv->value, kv->value_len, 0, NULL);
    if (json_is_object(rec))
        json_object_set_new(k->map, kv->key + strlen(k->prefix), rec);
    else
        json_decref(rec);
    kh_cluster_vms_view_stale(k->c);
}

static void load_host(kh_cluster *c, const kh_etcd_kv *kv)
{
    load_into(&c->hosts, kv);
}

static void load_revoked(kh_cluster *c, const kh_etcd_kv *kv)
{
    load_into(&c->revoked, kv);
    check_self_removed(c, kv->key + strlen(KH_CLUSTER_REMOVED));
}

bool kh_cluster_cert_revoked(kh_cluster *c, const char *fingerprint)
{
    if (!c || !fingerprint)
        return false;
    const char *id;
    json_t *rec;
    json_object_foreach(c->revoked.map, id, rec) {
        const char *fp = json_string_value(json_object_get(rec, "cert_fingerprint"));
        if (fp && strcasecmp(fp, fingerprint) == 0)
            return true;
    }
    return false;
}

static int list_and_watch(kh_cluster_cache *k, kh_etcd *etcd, kh_err *err)
{
    if (k->resume_rev) {
        /* the mirror's revision: what changed since comes as events (a
         * compacted revision ends the watch: the next tick lists) */
        int64_t from = k->resume_rev + 1;
        k->resume_rev = 0;
        kh_log(KH_LOG_INFO, "cluster.watch", "prefix=%s from_revision=%lld note=\"resumed from "
               "the mirror\"", k->prefix, (long long)from);
        k->watch = kh_etcd_watch_start(etcd, k->prefix, true, from, on_watch, k, err);
        return k->watch ? 0 : -1;
    }
    kh_etcd_kvs kvs = { 0 };
    if (kh_etcd_range(etcd, k->prefix, NULL, 0, &kvs, err) < 0)
        return -1;
    json_object_clear(k->map);
    for (size_t i = 0; i < kvs.n; i++) {
        json_t *rec = json_loadb(kvs.kv[i].value, kvs.kv[i].value_len, 0, NULL);
        if (json_is_object(rec))
            json_object_set_new(k->map, kvs.kv[i].key + strlen(k->prefix), rec);
        else
            json_decref(rec);
        if (k == &k->c->revoked)
            check_self_removed(k->c, kvs.kv[i].key + strlen(k->prefix));
    }
    int64_t rev = kvs.revision;
    kh_cluster_vms_view_stale(k->c);
    if (k != &k->c->live)
        kh_cluster_mirror_replace(k->c, k->prefix, &kvs);
    if (k == &k->c->revoked)
        kh_crl_update(k->c);
    kh_etcd_kvs_clear(&kvs);
    k->watch = kh_etcd_watch_start(etcd, k->prefix, true, rev + 1, on_watch, k, err);
    return k->watch ? 0 : -1;
}

/* ---- lease and keeper ---- */

static void on_keeper(kh_etcd_keeper *k, int64_t ttl, const kh_err *err, void *opaque)
{
    kh_cluster *c = opaque;
    if (ttl > 0) {
        if (!c->keeper_ok)
            kh_log(KH_LOG_INFO, "cluster.lease", "lease=%lld state=renewed",
                   (long long)c->lease);
        c->keeper_ok = true;
        c->keeper_fails = 0;
        c->renewed_ms = kh_now_ms();
        c->last_error[0] = '\0';
        return;
    }
    if (c->keeper_ok)
        kh_log(KH_LOG_WARN, "cluster.lease", "lease=%lld error=\"%s\"", (long long)c->lease,
               err ? err->msg : "?");
    c->keeper_ok = false;
    c->keeper_fails++;
    set_error(c, err);
    if (err && err->code == KH_E_NOTFOUND) {
        /* expired while we were cut off: the tick registers again */
        kh_etcd_keeper_stop(k);
        c->keeper = NULL;
        c->lease = 0;
    }
}

static void on_tick(uv_timer_t *t);

/* Write the record on lease (granted when sent) and start its keeper. */
int kh_cluster_register_on(kh_cluster *c, int64_t lease, uint64_t sent, kh_err *err)
{
    c->lease = lease;
    if (put_record(c, err) < 0) {
        kh_etcd_lease_revoke(c->etcd, c->lease, NULL);
        c->lease = 0;
        return -1;
    }
    c->keeper = kh_etcd_keeper_start(c->etcd, c->lease, c->ttl_s * 1000 / 3, on_keeper, c, err);
    if (!c->keeper)
        return -1;
    c->keeper_ok = true; /* granted and written: etcd has quorum */
    c->keeper_fails = 0;
    c->renewed_ms = sent;
    c->last_error[0] = '\0';
    kh_log(KH_LOG_INFO, "cluster.register", "host_id=%s name=%s lease=%lld ttl=%u",
           c->conf.host_id, c->host_name, (long long)c->lease, c->ttl_s);
    return 0;
}


/* The tick's registration: the lease is asked for without blocking the
 * loop (etcd may have no quorum for a long time); once granted, the next
 * tick (at once) writes the record on it. */
static void on_grant(json_t *reply, const kh_err *err, void *opaque)
{
    kh_cluster *c = opaque;
    c->granting = false;
    int64_t id = reply ? kh_etcd_jint(reply, "ID") : 0;
    if (!id) {
        if (err)
            set_error(c, err);
        return;
    }
    c->granted_lease = id;
    if (c->timer)
        uv_timer_start(c->timer, on_tick, 0, TICK_MS);
}

static void grant_async(kh_cluster *c)
{
    json_t *req = json_pack("{s:o}", "TTL", kh_etcd_jint_new(c->ttl_s));
    c->grant_sent_ms = kh_now_ms();
    kh_err err = KH_ERR_INIT;
    if (kh_etcd_request_async(c->etcd, "/v3/lease/grant", req, on_grant, c, &err) == 0)
        c->granting = true;
    else
        set_error(c, &err);
}

/* Every second: register when not registered, list and watch when not
 * watching, and write the record again when what it says changed. */
static void on_tick(uv_timer_t *t)
{
    kh_cluster *c = t->data;
    kh_err err = KH_ERR_INIT;
    if (c->removed) {
        kh_cluster_forget(c); /* closes this timer: nothing of c after it */
        return;
    }
    if (!c->keeper) {
        if (!c->granted_lease) {
            if (!c->granting)
                grant_async(c);
            return;
        }
        int64_t lease = c->granted_lease;
        c->granted_lease = 0;
        if (kh_cluster_register_on(c, lease, c->grant_sent_ms, &err) < 0) {
            set_error(c, &err);
            return;
        }
    }
    kh_cluster_members_refresh(c);
    if (kh_cluster_etcd_stalled(c))
        return; /* no quorum: do not block the loop on calls that time out */
    kh_err_clear(&err);
    if (!c->hosts.watch && list_and_watch(&c->hosts, c->etcd, &err) < 0)
        set_error(c, &err);
    kh_err_clear(&err);
    if (!c->revoked.watch && list_and_watch(&c->revoked, c->etcd, &err) < 0)
        set_error(c, &err);
    kh_err_clear(&err);
    if (!c->live.watch && list_and_watch(&c->live, c->etcd, &err) < 0)
        set_error(c, &err);
    kh_err_clear(&err);
    if (!c->vms_watch && kh_cluster_vms_watch(c, &err) < 0)
        set_error(c, &err);
    if (!c->vms_claimed) {
        c->vms_claimed = true;
        kh_cluster_vms_claim_local(c);
    }
    kh_cluster_vms_flush(c);
    char *rec = record_json(c);
    if (!c->record_busy && !record_same(rec, c->record))
        put_record_async(c, rec);
    else
        free(rec);
}

/* ---- start and stop ---- */

static kh_strv *split(const char *list)
{
    kh_strv *v = kh_strv_new();
    const char *p = list ? list : "";
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n)
            kh_strv_add_steal(v, xstrndup(p, n));
        p += n + (p[n] == ',');
    }
    return v;
}

void kh_cluster_tick_start(kh_cluster *c)
{
    if (c->timer)
        uv_timer_start(c->timer, on_tick, 0, TICK_MS);
}

int kh_cluster_start(kh_cluster *c, kh_err *err)
{
    bool local = strcmp(c->conf.mode, "local") == 0;
    if (local && !c->advertise) {
        kh_err_set(err, KH_E_INVALID, "this host's etcd member needs the address other hosts "
                   "reach it at: start kvmhostd with --listen ADDR:PORT or --advertise ADDR");
        return -1;
    }
    if (local && !c->proc) {
        char *data = xasprintf("%s/etcd", c->state_dir);
        char *log = xasprintf("%s/etcd.log", c->state_dir);
        char *peer = kh_cluster_peer_url(c), *client = kh_cluster_client_url(c);
        bool existing = access(data, F_OK) == 0 || strchr(c->conf.initial_cluster, ',');
        char *ca = kh_cluster_tls_path(c, "ca.pem"), *cert = kh_cluster_tls_path(c, "host.pem");
        char *key = kh_cluster_tls_path(c, "host.key");
        char *crl = kh_cluster_tls_path(c, "crl.pem");
        /* etcd refuses every client while its CRL file is missing or bad */
        bool have_crl = c->etcd_tls && kh_crl_update(c) == 0;
        kh_etcdproc_spec s = { .binary = c->etcd_binary, .name = c->conf.host_id,
                               .data_dir = data, .log_file = log, .peer_url = peer,
                               .client_url = client, .initial_cluster = c->conf.initial_cluster,
                               .existing = existing, .cluster_token = c->conf.cluster_id,
                               .ca = c->etcd_tls ? ca : NULL, .cert = cert, .key = key,
                               .crl = have_crl ? crl : NULL };
        c->proc = kh_etcdproc_new(c->loop, &s, err);
        free(crl);
        free(ca);
        free(cert);
        free(key);
        free(data);
        free(log);
        free(peer);
        free(client);
        if (!c->proc)
            return -1;
    }
    if (!c->etcd) {
        kh_strv *eps = split(c->conf.endpoints);
        /* the local members' TLS: this host's certificate from the cluster CA */
        char *ca = local && c->etcd_tls ? kh_cluster_tls_path(c, "ca.pem") : NULL;
        char *cert = ca ? kh_cluster_tls_path(c, "host.pem") : NULL;
        char *key = ca ? kh_cluster_tls_path(c, "host.key") : NULL;
        kh_etcd_opts o = { .endpoints = (const char *const *)eps->v, .n_endpoints = eps->n,
                           .timeout_ms = KH_CLUSTER_ETCD_TIMEOUT_MS, .connect_timeout_ms = 1000,
                           .ca_file = ca ? ca : c->etcd_ca, .cert_file = ca ? cert : c->etcd_cert,
                           .key_file = ca ? key : c->etcd_key };
        c->etcd = eps->n ? kh_etcd_new(&o, c->loop, err) : NULL;
        free(ca);
        free(cert);
        free(key);
        if (!eps->n)
            kh_err_set(err, KH_E_INVALID, "no etcd endpoints");
        kh_strv_free(eps);
        if (!c->etcd)
            return -1;
    }
    c->enabled = true;
    c->timer = xcalloc(1, sizeof(*c->timer));
    uv_timer_init(c->loop, c->timer);
    c->timer->data = c;
    c->vms_timer = xcalloc(1, sizeof(*c->vms_timer));
    uv_timer_init(c->loop, c->vms_timer);
    c->vms_timer->data = c;
    c->vms_claimed = false;
    if (!c->forming) /* a create or join starts it once etcd answers (form.c) */
        kh_cluster_tick_start(c);
    return 0;
}

void kh_cluster_stop(kh_cluster *c, bool revoke)
{
    if (c->stopping) /* from a callback that kh_etcd_free below runs */
        return;
    c->stopping = true;
    kh_crl_abort(c); /* a CA-signed CRL on its way is dropped */
    if (c->timer) {
        uv_timer_stop(c->timer);
        uv_close((uv_handle_t *)c->timer, handle_free);
        c->timer = NULL;
    }
    if (c->vms_timer) {
        uv_timer_stop(c->vms_timer);
        uv_close((uv_handle_t *)c->vms_timer, handle_free);
        c->vms_timer = NULL;
    }
    kh_etcd_watch_cancel(c->vms_watch);
    c->vms_watch = NULL;
    json_object_clear(c->vms);
    kh_etcd_watch_cancel(c->hosts.watch);
    kh_etcd_watch_cancel(c->revoked.watch);
    c->revoked.watch = NULL;
    kh_etcd_watch_cancel(c->live.watch);
    c->hosts.watch = c->live.watch = NULL;
    kh_etcd_keeper_stop(c->keeper);
    c->keeper = NULL;
    if (revoke && c->lease && c->keeper_ok)
        kh_etcd_lease_revoke(c->etcd, c->lease, NULL);
    c->lease = 0;
    c->keeper_ok = false;
    kh_etcd *etcd = c->etcd;
    c->etcd = NULL;
    kh_etcd_free(etcd); /* the requests on their way end: their callbacks run */
    json_object_clear(c->mig_puts);
    kh_etcdproc_free(c->proc);
    c->proc = NULL;
    json_object_clear(c->hosts.map);
    json_object_clear(c->revoked.map);
    json_object_clear(c->live.map);
    kh_cluster_vms_view_stale(c);
    free(c->record);
    c->record = NULL;
    c->record_busy = c->members_busy = c->removed = c->leaving = false;
    json_decref(c->etcd_members);
    c->etcd_members = NULL;
    c->granting = false;
    c->granted_lease = 0;
    c->enabled = false;
    c->stopping = false;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? xstrdup(s) : NULL;
}

kh_cluster *kh_cluster_new(uv_loop_t *loop, kh_store *store, const kh_cluster_config *cfg,
                           kh_err *err)
{
    kh_cluster *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->store = store;
    c->state_dir = xstrdup(cfg->state_dir);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    c->host_name = xstrdup(cfg->host_name && *cfg->host_name ? cfg->host_name
                           : cfg->instance && *cfg->instance ? cfg->instance : host);
    if (cfg->advertise && *cfg->advertise) {
        c->advertise = xstrdup(cfg->advertise);
    } else if (cfg->listen && cfg->listen[0] != '[') {
        const char *colon = strrchr(cfg->listen, ':');
        c->advertise = colon ? xstrndup(cfg->listen, (size_t)(colon - cfg->listen)) : NULL;
    }
    if (c->advertise && (!*c->advertise || strcmp(c->advertise, "0.0.0.0") == 0)) {
        free(c->advertise);
        c->advertise = NULL;
    }
    if (cfg->listen && c->advertise) {
        const char *colon = strrchr(cfg->listen, ':');
        c->api_url = xasprintf("%s://%s:%s", cfg->tls ? "https" : "http", c->advertise,
                               colon ? colon + 1 : "8443");
        /* the host-to-host listener (mutual TLS): the API port + 1 */
        long port = colon ? strtol(colon + 1, NULL, 10) : 8443;
        c->cluster_url = xasprintf("https://%s:%ld", c->advertise, port + 1);
    }
    c->tls_dir = xasprintf("%s/cluster-tls", cfg->state_dir);
    c->api_cert = cfg->tls && cfg->tls_cert ? xstrdup(cfg->tls_cert) : NULL;
    c->tls_cb = cfg->tls_ready;
    c->tls_opaque = cfg->tls_opaque;
    c->local_vms = cfg->local_vms;
    c->local_vms_opaque = cfg->local_vms_opaque;
    c->event = cfg->event;
    c->event_opaque = cfg->event_opaque;
    c->vms = json_object();
    c->vms_pending = json_object();
    c->mig_puts = json_object();
    c->may_run_ok = json_object();
    c->etcd_binary = xstrdup(cfg->etcd_binary ? cfg->etcd_binary : "/usr/bin/etcd");
    c->ext_endpoints = dup_or_null(cfg->etcd_endpoints);
    c->etcd_ca = dup_or_null(cfg->etcd_ca);
    c->etcd_cert = dup_or_null(cfg->etcd_cert);
    c->etcd_key = dup_or_null(cfg->etcd_key);
    c->ttl_s = cfg->ttl_s ? cfg->ttl_s : 10;
    c->client_port = cfg->etcd_client_port ? cfg->etcd_client_port : 2379;
    c->peer_port = cfg->etcd_peer_port ? cfg->etcd_peer_port : 2380;
    c->usage = cfg->usage;
    c->usage_opaque = cfg->usage_opaque;
    c->hosts = (kh_cluster_cache){ c, KH_CLUSTER_HOSTS, json_object(), NULL, 0 };
    c->live = (kh_cluster_cache){ c, KH_CLUSTER_MEMBERS, json_object(), NULL, 0 };
    c->revoked = (kh_cluster_cache){ c, KH_CLUSTER_REMOVED, json_object(), NULL, 0 };
    int have = kh_cluster_conf_load(store, &c->conf, err);
    if (have < 0) {
        kh_cluster_free(c);
        return NULL;
    }
    if (have == 0)
        return c;
    if (c->ext_endpoints && strcmp(c->conf.mode, "external") == 0) {
        free(c->conf.endpoints);
        c->conf.endpoints = xstrdup(c->ext_endpoints);
    }
    kh_cluster_tls_load(c);
    /* a cluster made before etcd spoke TLS keeps plain HTTP */
    c->etcd_tls = c->conf.endpoints && strncmp(c->conf.endpoints, "https://", 8) == 0;
    /* the cluster view as mirrored: served before etcd answers */
    c->hosts.resume_rev = kh_cluster_mirror_load(c, KH_CLUSTER_HOSTS, load_host);
    c->revoked.resume_rev = kh_cluster_mirror_load(c, KH_CLUSTER_REMOVED, load_revoked);
    kh_cluster_vms_load(c);
    kh_err e = KH_ERR_INIT;
    if (kh_cluster_start(c, &e) < 0) {
        kh_log(KH_LOG_ERROR, "cluster.start", "cluster=%s error=\"%s\"", c->conf.name, e.msg);
        set_error(c, &e);
        c->enabled = true; /* a member still: status says what is wrong */
    } else {
        kh_log(KH_LOG_INFO, "cluster.start", "cluster=%s host_id=%s mode=%s", c->conf.name,
               c->conf.host_id, c->conf.mode);
    }
    return c;
}

void kh_cluster_free(kh_cluster *c)
{
    if (!c)
        return;
    kh_cluster_form_abort(c);
    kh_cluster_stop(c, true);
    kh_cluster_conf_fini(&c->conf);
    json_decref(c->hosts.map);
    json_decref(c->revoked.map);
    json_decref(c->live.map);
    json_decref(c->vms);
    json_decref(c->vms_pending);
    json_decref(c->mig_puts);
    json_decref(c->may_run_ok);
    kh_cluster_vms_view_stale(c);
    free(c->tls_dir);
    free(c->cluster_url);
    free(c->fingerprint);
    free(c->serial);
    free(c->state_dir);
    free(c->host_name);
    free(c->advertise);
    free(c->api_url);
    free(c->api_cert);
    free(c->etcd_binary);
    free(c->ext_endpoints);
    free(c->etcd_ca);
    free(c->etcd_cert);
    free(c->etcd_key);
    free(c);
}
