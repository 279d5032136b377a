/* hosts.c - the cluster's views: GET /api/v1/hosts (every member with its
 * state, capacity and load) and GET /api/v1/cluster (name, members, etcd,
 * quorum, this host's lease). They read the caches member.c keeps from its
 * watches, so they answer without etcd; without quorum the states are
 * "unknown" (this host cannot tell) and quorum is false.
 */
#include "cluster/cluster_int.h"

#include <string.h>
#include <unistd.h>

#include "cluster/etcd_int.h"
#include "util/fs.h"
#include "util/mem.h"

/* One host of the view from its record. */
static json_t *host_json(kh_cluster *c, const char *id, const json_t *rec, const char *state)
{
    json_t *h = json_object();
    json_object_set_new(h, "id", json_string(id));
    const char *keys[] = { "name", "address", "api_url", "cluster_url", "cert_fingerprint",
                           "capacity", "memory_free_mib", "vms", "version" };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(rec, keys[i]);
        json_object_set(h, keys[i], v ? v : json_null());
    }
    json_object_set_new(h, "state", json_string(state));
    json_object_set_new(h, "self", json_boolean(c->enabled && strcmp(id, c->conf.host_id) == 0));
    return h;
}

static json_t *self_record(kh_cluster *c)
{
    char *text = kh_cluster_record(c);
    json_t *rec = json_loads(text, 0, NULL);
    free(text);
    return rec;
}

json_t *kh_cluster_hosts_json(kh_cluster *c)
{
    json_t *arr = json_array();
    if (!c->enabled) {
        json_t *rec = self_record(c);
        json_array_append_new(arr, host_json(c, "", rec, "online"));
        json_decref(rec);
        return json_pack("{s:o}", "hosts", arr);
    }
    bool quorum = kh_cluster_quorum(c);
    const char *id;
    json_t *rec;
    bool self_seen = false;
    json_object_foreach(c->hosts.map, id, rec) {
        bool self = strcmp(id, c->conf.host_id) == 0;
        self_seen = self_seen || self;
        const char *state = !quorum ? "unknown"
                            : json_object_get(c->live.map, id) ? "online" : "offline";
        json_t *live = json_object_get(c->live.map, id);
        json_array_append_new(arr, host_json(c, id, live ? live : rec, state));
    }
    if (!self_seen) {
        json_t *own = self_record(c);
        json_array_append_new(arr, host_json(c, c->conf.host_id, own, quorum ? "online"
                                                                             : "unknown"));
        json_decref(own);
    }
    return json_pack("{s:o}", "hosts", arr);
}

json_t *kh_cluster_status_json(kh_cluster *c)
{
    if (!c->enabled)
        return json_pack("{s:b, s:s}", "enabled", 0, "host_name", c->host_name);
    bool quorum = kh_cluster_quorum(c);
    int64_t left = kh_cluster_fence_left_ms(c);
    json_t *etcd = json_pack("{s:s, s:s, s:b}", "mode", c->conf.mode, "endpoints",
                             c->conf.endpoints ? c->conf.endpoints : "", "healthy", quorum);
    if (c->proc)
        json_object_set_new(etcd, "pid", json_integer(kh_etcdproc_pid(c->proc)));
    if (c->proc)
        json_object_set_new(etcd, "restarts", json_integer(kh_etcdproc_restarts(c->proc)));
    /* read on the loop without blocking it (the tick and here): the list
     * as last read */
    if (c->etcd_members)
        json_object_set_new(etcd, "members", json_deep_copy(c->etcd_members));
    if (quorum)
        kh_cluster_members_refresh(c);
    json_t *hosts = kh_cluster_hosts_json(c);
    json_t *members = json_incref(json_object_get(hosts, "hosts"));
    json_decref(hosts);
    unsigned online = 0;
    size_t i;
    json_t *h;
    json_array_foreach(members, i, h)
        online += strcmp(json_string_value(json_object_get(h, "state")), "online") == 0;
    json_t *j = json_pack("{s:b, s:s, s:s, s:s, s:s, s:b, s:b, s:i, s:I, s:o, s:o, s:i}",
                          "enabled", 1, "name", c->conf.name, "id", c->conf.cluster_id,
                          "host_id", c->conf.host_id, "host_name", c->host_name, "quorum",
                          quorum, "fenced", kh_cluster_fenced(c), "lease_ttl_s", (int)c->ttl_s,
                          "fence_in_ms", (json_int_t)left, "etcd", etcd, "members", members,
                          "online", (int)online);
    if (c->last_error[0])
        json_object_set_new(j, "error", json_string(c->last_error));
    return j;
}

json_t *kh_cluster_ca_json(kh_cluster *c, kh_err *err)
{
    char *path = kh_cluster_tls_path(c, "ca.pem");
    char *ca = c->enabled ? kh_fs_read(path, 1 << 20, NULL, NULL) : NULL;
    free(path);
    if (!ca || !c->cluster_url) {
        free(ca);
        kh_err_set(err, KH_E_NOTFOUND, "this host has no cluster CA (not in a cluster, or no "
                   "TCP listener)");
        return NULL;
    }
    char *fp = kh_pki_fingerprint(ca);
    json_t *j = json_pack("{s:s, s:s, s:s*}", "ca", ca, "cluster_url", c->cluster_url,
                          "fingerprint", fp);
    free(ca);
    free(fp);
    return j;
}
