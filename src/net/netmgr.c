/* netmgr.c - networks: store, reconcile, dnsmasq supervision, taps
 * (see netmgr.h); the security groups are in netmgr_sg.c. */
#include "net/netmgr.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/dnsmasq.h"
#include "net/link.h"
#include "net/netdb.h"
#include "net/netmgr_int.h"
#include "net/network.h"
#include "net/nft.h"
#include "net/secgroup.h"
#include "host/spawn.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/inet.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define DNS_RESTART_MS 500
#define DNS_RESTART_SLOW_MS 5000
#define LEASES_MAX (4 * 1024 * 1024)

static void bindings_replace(kh_netmgr *nm, const kh_net_binding *b, size_t n);

/* ---- helpers ---- */

static net_rt *find(kh_netmgr *nm, const char *name, kh_err *err)
{
    if (kh_check_name(name, "network name", err) < 0)
        return NULL;
    for (net_rt *r = nm->nets; r; r = r->next)
        if (strcmp(r->n->name, name) == 0)
            return r;
    kh_err_set(err, KH_E_NOTFOUND, "no network named %s", name);
    return NULL;
}

static void alias_of(const kh_netmgr *nm, const kh_network *n, char out[KH_LINK_ALIAS_MAX])
{
    snprintf(out, KH_LINK_ALIAS_MAX, "kvmhost:%s:%s", nm->owner, n->id);
}

static int persist(kh_netmgr *nm, const kh_network *n, kh_err *err)
{
    json_t *j = kh_network_to_json(n);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    kh_netdb_row row;
    memset(&row, 0, sizeof(row));
    memcpy(row.id, n->id, sizeof(row.id));
    row.name = n->name;
    row.spec_json = text;
    row.created_at = n->created_at;
    int rc = kh_netdb_network_put(nm->store, &row, err);
    free(text);
    return rc;
}

int kh_netmgr_apply_nft(kh_netmgr *nm, kh_err *err)
{
    size_t count = 0;
    for (net_rt *r = nm->nets; r; r = r->next)
        count++;
    const kh_network **v = xcalloc(count + 1, sizeof(const kh_network *));
    size_t i = 0;
    bool nat = false, nat6 = false;
    for (net_rt *r = nm->nets; r; r = r->next) {
        v[i++] = r->n;
        nat = nat || r->n->type == KH_NET_NAT;
        nat6 = nat6 || (r->n->type == KH_NET_NAT && r->n->has_v6);
    }
    char *script = kh_nft_render_table(nm->table, v, count, nm->binds, nm->nbinds,
                                       (const kh_secgroup *const *)nm->groups, nm->ngroups);
    free(v);
    int rc = kh_nft_apply(script, err);
    free(script);
    if (rc == 0 && nat) {
        /* masquerade needs forwarding on (per network namespace) */
        int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "1\n", 2) != 2)
            kh_log(KH_LOG_WARN, "net.forwarding", "error=\"cannot enable ip_forward\"");
        if (fd >= 0)
            close(fd);
    }
    /* A forward used from the host on 127.0.0.1 leaves through the
     * network's bridge with a loopback source (masqueraded there): the
     * kernel routes that only with route_localnet on the bridge. Off
     * without forwards. */
    for (net_rt *r = nm->nets; rc == 0 && r; r = r->next) {
        if (r->n->type != KH_NET_NAT)
            continue;
        bool fw = false;
        for (size_t f = 0; f < r->n->nforwards && !fw; f++)
            fw = r->n->forwards[f].ip != NULL;
        char p[128];
        snprintf(p, sizeof(p), "/proc/sys/net/ipv4/conf/%s/route_localnet", r->n->bridge);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, fw ? "1\n" : "0\n", 2) != 2)
            kh_log(KH_LOG_WARN, "net.route_localnet", "bridge=%s error=\"%s\"", r->n->bridge,
                   strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (rc == 0 && nat6) {
        /* the same for IPv6 (this namespace's hosts stop taking RAs then) */
        int fd = open("/proc/sys/net/ipv6/conf/all/forwarding", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "1\n", 2) != 2)
            kh_log(KH_LOG_WARN, "net.forwarding", "error=\"cannot enable IPv6 forwarding\"");
        if (fd >= 0)
            close(fd);
    }
    return rc;
}

/* The bridge of an owned network: created if missing, addressed, up. A
 * link of that name we did not mark is left alone (KH_E_CONFLICT). */
static int bridge_ensure(kh_netmgr *nm, const kh_network *n, kh_err *err)
{
    char alias[KH_LINK_ALIAS_MAX];
    alias_of(nm, n, alias);
    kh_link_info li;
    int have = kh_link_get(n->bridge, &li, err);
    if (have < 0)
        return -1;
    if (have && strcmp(li.alias, alias) != 0) {
        kh_err_set(err, KH_E_CONFLICT, "a link named %s exists and is not kvmhost's",
                   n->bridge);
        return -1;
    }
    if (!have) {
        if (kh_link_bridge_add(n->bridge, alias, err) < 0 ||
            kh_link_get(n->bridge, &li, err) != 1) {
            kh_err_set(err, KH_E_INTERNAL, "bridge %s vanished after creation", n->bridge);
            return -1;
        }
    }
    if (kh_link_addr_add(li.index, kh_network_gateway(n), n->prefix, err) < 0)
        return -1;
    if (n->has_v6) {
        unsigned char g6[16];
        memcpy(g6, n->prefix6, sizeof(g6));
        g6[15] = 1;
        if (kh_link_addr6_add(li.index, g6, 64, err) < 0)
            return -1;
    }
    if (kh_link_set_up(li.index, err) < 0)
        return -1;
    return 0;
}

static void bridge_remove(kh_netmgr *nm, const kh_network *n)
{
    char alias[KH_LINK_ALIAS_MAX];
    alias_of(nm, n, alias);
    kh_link_info li;
    kh_err err = KH_ERR_INIT;
    if (kh_link_get(n->bridge, &li, &err) == 1 && strcmp(li.alias, alias) == 0 &&
        kh_link_del(li.index, &err) < 0)
        kh_log(KH_LOG_WARN, "net.bridge", "bridge=%s error=\"%s\"", n->bridge, err.msg);
}

/* ---- dnsmasq ---- */

static void dns_start(net_rt *r);

static void handle_free(uv_handle_t *h)
{
    free(h);
}

static void dns_unwatch(net_rt *r)
{
    if (r->dns_poll) {
        uv_close((uv_handle_t *)r->dns_poll, handle_free);
        r->dns_poll = NULL;
    }
    if (r->dns_pidfd >= 0) {
        close(r->dns_pidfd);
        r->dns_pidfd = -1;
    }
}

static void dns_timer_fire(uv_timer_t *t)
{
    net_rt *r = t->data;
    dns_start(r);
}

static void dns_exited(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    net_rt *r = h->data;
    kh_log(KH_LOG_WARN, "net.dnsmasq.exit", "network=%s pid=%d note=\"restarting\"",
           r->n->name, (int)r->dns_pid);
    dns_unwatch(r);
    r->dns_pid = 0;
    uint64_t lived = kh_now_ms() - r->dns_started_ms;
    r->dns_quick_deaths = lived < 2000 ? r->dns_quick_deaths + 1 : 0;
    if (!r->dns_timer) {
        r->dns_timer = xcalloc(1, sizeof(*r->dns_timer));
        uv_timer_init(r->nm->loop, r->dns_timer);
        r->dns_timer->data = r;
    }
    uv_timer_start(r->dns_timer, dns_timer_fire,
                   r->dns_quick_deaths > 3 ? DNS_RESTART_SLOW_MS : DNS_RESTART_MS, 0);
}

/* A dnsmasq from an earlier daemon: the pid in our pid file whose command
 * line names our config. */
static void dns_kill_stale(net_rt *r)
{
    char *pidfile = xasprintf("%s/dnsmasq.pid", r->dir);
    char *text = kh_fs_read(pidfile, 64, NULL, NULL);
    free(pidfile);
    if (!text)
        return;
    long pid = strtol(text, NULL, 10);
    free(text);
    if (pid <= 1)
        return;
    char path[64];
    kh_fmt(path, sizeof(path), "/proc/%ld/cmdline", pid);
    size_t len = 0;
    char *cmd = kh_fs_read(path, 8192, &len, NULL);
    char *conf = xasprintf("--conf-file=%s/dnsmasq.conf", r->dir);
    bool ours = false;
    if (cmd) {
        for (size_t off = 0; off < len; off += strlen(cmd + off) + 1)
            ours = ours || strcmp(cmd + off, conf) == 0;
    }
    free(cmd);
    free(conf);
    if (!ours)
        return;
    int pfd = kh_spawn_pidfd_open((pid_t)pid);
    kill((pid_t)pid, SIGTERM);
    /* wait up to 1 s for it to let go of the address and port */
    if (pfd >= 0) {
        struct pollfd p = { pfd, POLLIN, 0 };
        while (poll(&p, 1, 1000) < 0 && errno == EINTR)
            ;
        close(pfd);
    } else {
        for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
            usleep(10000); /* no pidfd on this kernel */
    }
    kh_log(KH_LOG_INFO, "net.dnsmasq.stale", "network=%s pid=%ld note=\"replaced\"",
           r->n->name, pid);
}

static int write_hosts(net_rt *r, const char *text, kh_err *err)
{
    char *path = xasprintf("%s/hosts", r->dir);
    int rc = kh_fs_write_atomic(path, text, strlen(text), 0644, err);
    free(path);
    return rc;
}

static void dns_start(net_rt *r)
{
    kh_err err = KH_ERR_INIT;
    char *conf = kh_dnsmasq_conf(r->n, r->dir);
    char *conf_path = xasprintf("%s/dnsmasq.conf", r->dir);
    char *conf_arg = xasprintf("--conf-file=%s", conf_path);
    char *log_path = xasprintf("%s/dnsmasq.log", r->dir);
    char *leases = xasprintf("%s/leases", r->dir);
    int log_fd = -1;
    if (kh_fs_write_atomic(conf_path, conf, strlen(conf), 0644, &err) < 0 ||
        write_hosts(r, r->hosts ? r->hosts : "", &err) < 0)
        goto fail;
    int lf = open(leases, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (lf >= 0)
        close(lf);
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    char *argv[] = { (char *)(uintptr_t)KH_DNSMASQ_BINARY, conf_arg,
                     (char *)(uintptr_t)"--keep-in-foreground",
                     (char *)(uintptr_t)"--log-facility=-", NULL };
    /* Its own session and no death signal: it outlives a daemon restart,
     * and the next daemon replaces it (dns_kill_stale). */
    kh_spawn_spec ps = { .argv = argv, .stdin_fd = -1, .stdout_fd = log_fd, .stderr_fd = log_fd,
                         .new_session = true, .no_new_privs = true };
    kh_spawn_child child;
    if (kh_spawn(&ps, &child, &err) < 0)
        goto fail;
    pid_t pid = child.pid;
    r->dns_pid = pid;
    r->dns_started_ms = kh_now_ms();
    r->dns_pidfd = child.pidfd;
    if (r->dns_pidfd >= 0) {
        r->dns_poll = xcalloc(1, sizeof(*r->dns_poll));
        uv_poll_init(r->nm->loop, r->dns_poll, r->dns_pidfd);
        r->dns_poll->data = r;
        uv_poll_start(r->dns_poll, UV_READABLE, dns_exited);
    }
    kh_log(KH_LOG_INFO, "net.dnsmasq.start", "network=%s pid=%d", r->n->name, (int)pid);
    goto out;
fail:
    kh_log(KH_LOG_ERROR, "net.dnsmasq.start", "network=%s error=\"%s\"", r->n->name, err.msg);
out:
    if (log_fd >= 0)
        close(log_fd);
    free(conf);
    free(conf_path);
    free(conf_arg);
    free(log_path);
    free(leases);
}

static void dns_stop(net_rt *r)
{
    if (r->dns_timer) {
        uv_timer_stop(r->dns_timer);
        uv_close((uv_handle_t *)r->dns_timer, handle_free);
        r->dns_timer = NULL;
    }
    dns_unwatch(r);
    if (r->dns_pid > 0) {
        kill(r->dns_pid, SIGTERM);
        r->dns_pid = 0;
    }
}

/* ---- lifecycle of one network ---- */

static net_rt *rt_new(kh_netmgr *nm, kh_network *n)
{
    net_rt *r = xcalloc(1, sizeof(*r));
    r->nm = nm;
    r->n = n;
    r->dns_pidfd = -1;
    r->dir = xasprintf("%s/networks/%s", nm->state_dir, n->id);
    net_rt **pp = &nm->nets;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
    return r;
}

static void rt_unlink_free(net_rt *r)
{
    kh_netmgr *nm = r->nm;
    for (net_rt **pp = &nm->nets; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    if (r->dns_timer) {
        uv_timer_stop(r->dns_timer);
        uv_close((uv_handle_t *)r->dns_timer, handle_free);
    }
    dns_unwatch(r);
    kh_network_free(r->n);
    free(r->dir);
    free(r->hosts);
    json_decref(r->leases);
    free(r);
}

/* Bring up an owned network's bridge and dnsmasq (rules: kh_netmgr_apply_nft). */
static int rt_up(net_rt *r, kh_err *err)
{
    if (!kh_network_owns_bridge(r->n))
        return 0;
    /* dnsmasq drops to nobody and re-reads its hosts file on SIGHUP: the
     * way there must be searchable (the state dir is 0711). */
    char *parent = xasprintf("%s/networks", r->nm->state_dir);
    int rc = kh_fs_mkdir_p(parent, 0711, err);
    if (rc == 0 && chmod(parent, 0711) < 0)
        rc = -1;
    free(parent);
    if (rc < 0 || kh_fs_mkdir_p(r->dir, 0755, err) < 0 || chmod(r->dir, 0755) < 0 ||
        bridge_ensure(r->nm, r->n, err) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "network %s: cannot prepare %s", r->n->name, r->dir);
        return -1;
    }
    dns_kill_stale(r);
    dns_start(r);
    return 0;
}

static int load_row(const kh_netdb_row *row, void *opaque)
{
    kh_netmgr *nm = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *j = json_loads(row->spec_json, 0, NULL);
    kh_network *n = j ? kh_network_from_stored(j, row->id, &err) : NULL;
    json_decref(j);
    if (!n) {
        kh_log(KH_LOG_ERROR, "net.load", "id=%s error=\"%s\"", row->id, err.msg);
        return 0;
    }
    n->created_at = row->created_at;
    rt_new(nm, n);
    return 0;
}

static int load_sg(const char *name, const char *spec_json, double created_at, void *opaque)
{
    kh_netmgr *nm = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *j = json_loads(spec_json, 0, NULL);
    kh_secgroup *g = j ? kh_secgroup_from_json(j, &err) : NULL;
    json_decref(j);
    if (!g) {
        kh_log(KH_LOG_ERROR, "net.load", "security_group=%s error=\"%s\"", name, err.msg);
        return 0;
    }
    g->created_at = created_at;
    nm->groups = xreallocarray(nm->groups, nm->ngroups + 1, sizeof(kh_secgroup *));
    nm->groups[nm->ngroups++] = g;
    return 0;
}

typedef struct orphan_ctx {
    kh_netmgr *nm;
    int idx[64];
    size_t n;
} orphan_ctx;

static int orphan_cb(const char *name, const kh_link_info *li, void *opaque)
{
    orphan_ctx *o = opaque;
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "kvmhost:%s:", o->nm->owner);
    if (strncmp(li->alias, prefix, strlen(prefix)) != 0 || strcmp(li->kind, "bridge") != 0)
        return 0;
    const char *id = li->alias + strlen(prefix);
    for (net_rt *r = o->nm->nets; r; r = r->next)
        if (strcmp(r->n->id, id) == 0)
            return 0;
    kh_log(KH_LOG_INFO, "net.orphan", "bridge=%s note=\"removing a bridge kvmhost no longer "
           "needs\"", name);
    if (o->n < KH_ARRAY_LEN(o->idx))
        o->idx[o->n++] = li->index;
    return 0;
}

kh_netmgr *kh_netmgr_new(uv_loop_t *loop, kh_store *store, const char *state_dir,
                         const char *instance, kh_err *err)
{
    kh_netmgr *nm = xcalloc(1, sizeof(*nm));
    kh_nft_table_name(instance, nm->table, sizeof(nm->table));
    nm->loop = loop;
    nm->store = store;
    nm->state_dir = xstrdup(state_dir);
    uint32_t h = 2166136261u;
    for (const char *p = state_dir; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(nm->owner, sizeof(nm->owner), "%08x", h);
    if (kh_netdb_network_foreach(store, load_row, nm, err) < 0 ||
        kh_netdb_secgroup_foreach(store, load_sg, nm, err) < 0) {
        kh_netmgr_free(nm);
        return NULL;
    }
    if (!nm->nets)
        return nm; /* nothing of ours: touch nothing (not even nftables) */
    kh_err e = KH_ERR_INIT;
    orphan_ctx o = { nm, { 0 }, 0 };
    if (kh_link_foreach(orphan_cb, &o, &e) < 0)
        kh_log(KH_LOG_WARN, "net.reconcile", "error=\"%s\"", e.msg);
    for (size_t i = 0; i < o.n; i++)
        kh_link_del(o.idx[i], NULL);
    unsigned count = 0;
    for (net_rt *r = nm->nets; r; r = r->next, count++) {
        kh_err_clear(&e);
        if (rt_up(r, &e) < 0)
            kh_log(KH_LOG_ERROR, "net.reconcile", "network=%s error=\"%s\"", r->n->name, e.msg);
    }
    kh_err_clear(&e);
    if (kh_netmgr_apply_nft(nm, &e) < 0)
        kh_log(KH_LOG_ERROR, "net.reconcile", "error=\"%s\"", e.msg);
    kh_log(KH_LOG_INFO, "net.ready", "networks=%u", count);
    return nm;
}

void kh_netmgr_free(kh_netmgr *nm)
{
    if (!nm)
        return;
    while (nm->nets)
        rt_unlink_free(nm->nets); /* dnsmasq keeps running: the next daemon replaces it */
    bindings_replace(nm, NULL, 0);
    for (size_t i = 0; i < nm->ngroups; i++)
        kh_secgroup_free(nm->groups[i]);
    free(nm->groups);
    free(nm->state_dir);
    free(nm);
}

/* ---- API ---- */

static json_t *rt_json(const net_rt *r)
{
    json_t *j = kh_network_api_json(r->n);
    json_t *vms = json_array();
    for (size_t i = 0; i < r->nm->nbinds; i++) {
        const kh_net_binding *b = &r->nm->binds[i];
        if (strcmp(b->network, r->n->name) != 0)
            continue;
        json_t *o = json_pack("{s:s,s:s}", "vm", b->vm, "mac", b->mac);
        if (b->ip)
            json_object_set_new(o, "ip", json_string(b->ip));
        json_array_append_new(vms, o);
    }
    json_object_set_new(j, "nics", vms);
    if (kh_network_owns_bridge(r->n))
        json_object_set_new(j, "dnsmasq_pid", json_integer(r->dns_pid));
    return j;
}

json_t *kh_netmgr_list_json(kh_netmgr *nm)
{
    json_t *arr = json_array();
    for (net_rt *r = nm->nets; r; r = r->next)
        json_array_append_new(arr, rt_json(r));
    return arr;
}

json_t *kh_netmgr_get_json(kh_netmgr *nm, const char *name, kh_err *err)
{
    net_rt *r = find(nm, name, err);
    return r ? rt_json(r) : NULL;
}

/* The first 10.X.Y.0/24 (X from 200) that overlaps no network of ours. */
static void pick_subnet(kh_netmgr *nm, kh_network *n)
{
    for (uint32_t k = 0; k < 55 * 256; k++) {
        uint32_t cand = (10u << 24) | ((200u + k / 256) << 16) | ((k % 256) << 8);
        bool clash = false;
        for (net_rt *r = nm->nets; r && !clash; r = r->next)
            clash = kh_network_owns_bridge(r->n) &&
                    kh_inet_cidr_overlap(cand, 24, r->n->subnet, r->n->prefix);
        if (!clash) {
            n->subnet = cand;
            n->prefix = 24;
            return;
        }
    }
}

json_t *kh_netmgr_create(kh_netmgr *nm, const json_t *body, kh_err *err)
{
    char id[37];
    kh_uuid_generate(id);
    kh_network *n = kh_network_from_json(body, id, err);
    if (!n)
        return NULL;
    for (net_rt *r = nm->nets; r; r = r->next) {
        if (strcmp(r->n->name, n->name) == 0) {
            kh_err_set(err, KH_E_CONFLICT, "a network named %s already exists", n->name);
            goto fail;
        }
        if (strcmp(r->n->bridge, n->bridge) == 0) {
            kh_err_set(err, KH_E_CONFLICT, "network %s already uses bridge %s", r->n->name,
                       n->bridge);
            goto fail;
        }
    }
    if (n->type == KH_NET_BRIDGED) {
        kh_link_info li;
        int have = kh_link_get(n->bridge, &li, err);
        if (have < 0)
            goto fail;
        if (!have || strcmp(li.kind, "bridge") != 0) {
            kh_err_set(err, KH_E_INVALID, "bridge: %s is not an existing bridge on this host",
                       n->bridge);
            goto fail;
        }
    }
    for (net_rt *r = nm->nets; n->has_v6 && r; r = r->next) {
        if (r->n->has_v6 && memcmp(r->n->prefix6, n->prefix6, 8) == 0) {
            kh_err_set(err, KH_E_CONFLICT, "ipv6: network %s has that prefix", r->n->name);
            goto fail;
        }
    }
    if (n->type != KH_NET_BRIDGED && n->prefix == 0) {
        pick_subnet(nm, n);
    } else if (n->type != KH_NET_BRIDGED) {
        for (net_rt *r = nm->nets; r; r = r->next) {
            if (kh_network_owns_bridge(r->n) &&
                kh_inet_cidr_overlap(n->subnet, n->prefix, r->n->subnet, r->n->prefix)) {
                kh_err_set(err, KH_E_CONFLICT, "subnet: overlaps network %s", r->n->name);
                goto fail;
            }
        }
    }
    if (n->type != KH_NET_BRIDGED) {
        kh_link_info li;
        int have = kh_link_get(n->bridge, &li, err);
        if (have < 0)
            goto fail;
        if (have) {
            kh_err_set(err, KH_E_CONFLICT, "a link named %s already exists", n->bridge);
            goto fail;
        }
    }
    n->created_at = kh_wall_time();
    /* Recorded first: a crash from here on is repaired by the next start's
     * reconcile (or the orphan sweep when the row is gone). */
    if (persist(nm, n, err) < 0)
        goto fail;
    net_rt *r = rt_new(nm, n);
    n = NULL;
    if (rt_up(r, err) < 0 || kh_netmgr_apply_nft(nm, err) < 0) {
        dns_stop(r);
        bridge_remove(nm, r->n);
        kh_netdb_network_delete(nm->store, r->n->id, NULL);
        kh_fs_rm_rf(r->dir, NULL);
        rt_unlink_free(r);
        kh_netmgr_apply_nft(nm, NULL);
        return NULL;
    }
    kh_log(KH_LOG_INFO, "net.create", "network=%s id=%s type=%s bridge=%s", r->n->name,
           r->n->id, kh_net_type_name(r->n->type), r->n->bridge);
    return rt_json(r);
fail:
    kh_network_free(n);
    return NULL;
}

static const kh_net_binding *first_binding(kh_netmgr *nm, const char *network)
{
    for (size_t i = 0; i < nm->nbinds; i++)
        if (strcmp(nm->binds[i].network, network) == 0)
            return &nm->binds[i];
    return NULL;
}

int kh_netmgr_delete(kh_netmgr *nm, const char *name, kh_err *err)
{
    net_rt *r = find(nm, name, err);
    if (!r)
        return -1;
    const kh_net_binding *b = first_binding(nm, name);
    if (b) {
        kh_err_set(err, KH_E_CONFLICT, "network %s is in use by vm %s", name, b->vm);
        return -1;
    }
    if (kh_netdb_network_delete(nm->store, r->n->id, err) < 0)
        return -1;
    dns_stop(r);
    bridge_remove(nm, r->n);
    kh_fs_rm_rf(r->dir, NULL);
    kh_log(KH_LOG_INFO, "net.delete", "network=%s id=%s", name, r->n->id);
    rt_unlink_free(r);
    kh_err e = KH_ERR_INIT;
    if (kh_netmgr_apply_nft(nm, &e) < 0)
        kh_log(KH_LOG_ERROR, "net.nft", "error=\"%s\"", e.msg);
    return 0;
}

/* The network's DHCP leases, parsed (borrowed: valid until the next call).
 * Every VM reply names its NICs' addresses from them, so the file is read
 * and parsed again only when dnsmasq has rewritten it (mtime or size). */
static const json_t *leases_of(net_rt *r)
{
    char *path = xasprintf("%s/leases", r->dir);
    struct stat st;
    bool have = stat(path, &st) == 0;
    if (r->leases && have && st.st_size == r->leases_size &&
        st.st_mtim.tv_sec == r->leases_mtime.tv_sec &&
        st.st_mtim.tv_nsec == r->leases_mtime.tv_nsec) {
        free(path);
        return r->leases;
    }
    char *text = have ? kh_fs_read(path, LEASES_MAX, NULL, NULL) : NULL;
    free(path);
    json_decref(r->leases);
    r->leases = kh_dnsmasq_leases_parse(text ? text : "");
    free(text);
    r->leases_mtime = have ? st.st_mtim : (struct timespec){ 0, 0 };
    r->leases_size = have ? st.st_size : -1;
    return r->leases;
}

json_t *kh_netmgr_leases_json(kh_netmgr *nm, const char *name, kh_err *err)
{
    net_rt *r = find(nm, name, err);
    if (!r)
        return NULL;
    json_t *arr = json_deep_copy(leases_of(r));
    /* name the VM of each lease */
    size_t i;
    json_t *l;
    json_array_foreach(arr, i, l) {
        const char *mac = json_string_value(json_object_get(l, "mac"));
        for (size_t k = 0; k < nm->nbinds; k++)
            if (strcmp(nm->binds[k].network, name) == 0 && strcmp(nm->binds[k].mac, mac) == 0)
                json_object_set_new(l, "vm", json_string(nm->binds[k].vm));
    }
    return arr;
}

json_t *kh_netmgr_addresses_of(kh_netmgr *nm, const char *network, const char *mac)
{
    json_t *out = json_array();
    for (net_rt *r = nm->nets; r && mac; r = r->next) {
        if (network && strcmp(r->n->name, network) != 0)
            continue;
        json_t *res = NULL;
        for (size_t i = 0; i < nm->nbinds && !res; i++) {
            const kh_net_binding *b = &nm->binds[i];
            if (b->ip && strcmp(b->network, r->n->name) == 0 && strcasecmp(b->mac, mac) == 0)
                res = json_pack("{s:s,s:s,s:s}", "ip", b->ip, "family", "ipv4", "source",
                                "reservation");
        }
        if (res)
            json_array_append_new(out, res);
        const json_t *leases = kh_network_owns_bridge(r->n) ? leases_of(r) : NULL;
        size_t i;
        json_t *l;
        json_array_foreach(leases, i, l) {
            const char *ip = json_string_value(json_object_get(l, "ip"));
            if (strcasecmp(json_string_value(json_object_get(l, "mac")), mac) != 0)
                continue;
            json_t *e = res && strcmp(json_string_value(json_object_get(res, "ip")), ip) == 0
                            ? res
                            : NULL;
            if (!e) {
                e = json_pack("{s:s,s:s,s:s}", "ip", ip, "family", "ipv4", "source", "dhcp");
                json_array_append_new(out, e);
            }
            json_object_set(e, "expires", json_object_get(l, "expires"));
        }
    }
    return out;
}

json_t *kh_netmgr_forward_add(kh_netmgr *nm, const char *name, const json_t *body,
                              kh_err *err)
{
    net_rt *r = find(nm, name, err);
    if (!r)
        return NULL;
    if (r->n->type != KH_NET_NAT) {
        kh_err_set(err, KH_E_INVALID, "network %s is %s: port forwards need a nat network",
                   name, kh_net_type_name(r->n->type));
        return NULL;
    }
    if (json_is_object(body) && json_object_get(body, "ip")) {
        kh_err_set(err, KH_E_INVALID, "ip: unknown field (the VM's address is looked up)");
        return NULL;
    }
    kh_net_forward f;
    if (kh_net_forward_parse(body, &f, err) < 0)
        return NULL;
    for (net_rt *o = nm->nets; o; o = o->next) {
        for (size_t i = 0; i < o->n->nforwards; i++) {
            if (o->n->forwards[i].host_port == f.host_port &&
                strcmp(o->n->forwards[i].proto, f.proto) == 0) {
                kh_err_set(err, KH_E_CONFLICT, "%s port %u is already forwarded (network %s)",
                           f.proto, f.host_port, o->n->name);
                kh_net_forward_clear(&f);
                return NULL;
            }
        }
    }
    const kh_net_binding *b = NULL;
    for (size_t i = 0; i < nm->nbinds && !b; i++)
        if (strcmp(nm->binds[i].network, name) == 0 && strcmp(nm->binds[i].vm, f.vm) == 0)
            b = &nm->binds[i];
    if (!b) {
        kh_err_set(err, KH_E_INVALID, "vm: %s has no NIC on network %s", f.vm, name);
        kh_net_forward_clear(&f);
        return NULL;
    }
    if (b->ip) {
        f.ip = xstrdup(b->ip);
    } else {
        const json_t *leases = leases_of(r);
        size_t i;
        json_t *l;
        json_array_foreach(leases, i, l) {
            if (strcmp(json_string_value(json_object_get(l, "mac")), b->mac) == 0) {
                free(f.ip);
                f.ip = xstrdup(json_string_value(json_object_get(l, "ip")));
            }
        }
    }
    if (!f.ip) {
        kh_err_set(err, KH_E_CONFLICT,
                   "vm %s has no address on %s yet (no lease and no static ip): start it "
                   "first or give its NIC an \"ip\"", f.vm, name);
        kh_net_forward_clear(&f);
        return NULL;
    }
    kh_network *n = r->n;
    n->forwards = xreallocarray(n->forwards, n->nforwards + 1, sizeof(*n->forwards));
    n->forwards[n->nforwards++] = f;
    if (persist(nm, n, err) < 0 || kh_netmgr_apply_nft(nm, err) < 0) {
        kh_net_forward_clear(&n->forwards[--n->nforwards]);
        persist(nm, n, NULL);
        kh_netmgr_apply_nft(nm, NULL);
        return NULL;
    }
    kh_log(KH_LOG_INFO, "net.forward.add", "network=%s proto=%s host_port=%u to=%s:%u",
           name, f.proto, f.host_port, f.ip, f.vm_port);
    return rt_json(r);
}

int kh_netmgr_forward_delete(kh_netmgr *nm, const char *name, const char *proto,
                             unsigned host_port, kh_err *err)
{
    net_rt *r = find(nm, name, err);
    if (!r)
        return -1;
    kh_network *n = r->n;
    for (size_t i = 0; i < n->nforwards; i++) {
        if (n->forwards[i].host_port == host_port && strcmp(n->forwards[i].proto, proto) == 0) {
            kh_net_forward_clear(&n->forwards[i]);
            memmove(&n->forwards[i], &n->forwards[i + 1],
                    (n->nforwards - i - 1) * sizeof(*n->forwards));
            n->nforwards--;
            if (persist(nm, n, err) < 0)
                return -1;
            return kh_netmgr_apply_nft(nm, err);
        }
    }
    kh_err_set(err, KH_E_NOTFOUND, "no %s forward of port %u on network %s", proto, host_port,
               name);
    return -1;
}

/* ---- NICs ---- */

int kh_netmgr_nic_check(kh_netmgr *nm, const char *vm, const char *network, const char *ip,
                        kh_err *err)
{
    net_rt *r = NULL;
    for (net_rt *x = nm->nets; x; x = x->next)
        if (strcmp(x->n->name, network) == 0)
            r = x;
    if (!r) {
        kh_err_set(err, KH_E_INVALID, "nics: no network named %s", network);
        return -1;
    }
    if (!ip)
        return 0;
    if (r->n->type == KH_NET_BRIDGED) {
        kh_err_set(err, KH_E_INVALID, "nics: network %s is bridged: kvmhost serves no DHCP "
                   "there, so a static ip cannot be reserved", network);
        return -1;
    }
    uint32_t a, first, last;
    if (kh_inet_ipv4_parse(ip, &a, "nics.ip", err) < 0)
        return -1;
    kh_network_dhcp_range(r->n, &first, &last);
    if (a < first || a > last) {
        kh_err_set(err, KH_E_INVALID, "nics: ip %s is not a host address of network %s "
                   "(the gateway is the first address)", ip, network);
        return -1;
    }
    for (size_t i = 0; i < nm->nbinds; i++) {
        const kh_net_binding *b = &nm->binds[i];
        if (b->ip && strcmp(b->network, network) == 0 && strcmp(b->ip, ip) == 0 &&
            strcmp(b->vm, vm) != 0) {
            kh_err_set(err, KH_E_CONFLICT, "nics: ip %s on %s is reserved by vm %s", ip,
                       network, b->vm);
            return -1;
        }
    }
    return 0;
}

static void sync_hosts(kh_netmgr *nm)
{
    for (net_rt *r = nm->nets; r; r = r->next) {
        if (!kh_network_owns_bridge(r->n))
            continue;
        kh_dhcp_host *hosts = xcalloc(nm->nbinds + 1, sizeof(*hosts));
        size_t n = 0;
        for (size_t i = 0; i < nm->nbinds; i++) {
            const kh_net_binding *b = &nm->binds[i];
            if (b->ip && strcmp(b->network, r->n->name) == 0)
                hosts[n++] = (kh_dhcp_host){ b->mac, b->ip, b->vm };
        }
        char *text = kh_dnsmasq_hosts(hosts, n);
        free(hosts);
        if (r->hosts && strcmp(r->hosts, text) == 0) {
            free(text);
            continue;
        }
        free(r->hosts);
        r->hosts = text;
        kh_err err = KH_ERR_INIT;
        if (write_hosts(r, text, &err) < 0) {
            kh_log(KH_LOG_WARN, "net.hosts", "network=%s error=\"%s\"", r->n->name, err.msg);
            continue;
        }
        if (r->dns_pid > 0)
            kill(r->dns_pid, SIGHUP); /* dnsmasq re-reads dhcp-hostsfile */
    }
}

static void bindings_replace(kh_netmgr *nm, const kh_net_binding *b, size_t n)
{
    for (size_t i = 0; i < nm->nbinds; i++) {
        free((char *)(uintptr_t)nm->binds[i].vm);
        free((char *)(uintptr_t)nm->binds[i].network);
        free((char *)(uintptr_t)nm->binds[i].mac);
        free((char *)(uintptr_t)nm->binds[i].ip);
        free((char *)(uintptr_t)nm->binds[i].tap);
        free((char *)(uintptr_t)nm->binds[i].groups);
    }
    free(nm->binds);
    nm->binds = NULL;
    nm->nbinds = 0;
    if (n) {
        nm->binds = xcalloc(n, sizeof(*nm->binds));
        for (size_t i = 0; i < n; i++) {
            nm->binds[i].vm = xstrdup(b[i].vm);
            nm->binds[i].network = xstrdup(b[i].network);
            nm->binds[i].mac = xstrdup(b[i].mac);
            nm->binds[i].ip = xstrdup(b[i].ip);
            nm->binds[i].tap = xstrdup(b[i].tap);
            nm->binds[i].groups = xstrdup(b[i].groups);
            nm->binds[i].out_bps = b[i].out_bps;
            nm->binds[i].out_burst = b[i].out_burst;
        }
        nm->nbinds = n;
    }
}

void kh_netmgr_set_bindings(kh_netmgr *nm, const kh_net_binding *b, size_t n)
{
    bindings_replace(nm, b, n);
    if (nm->nets) {
        sync_hosts(nm);
        kh_err err = KH_ERR_INIT;
        if (kh_netmgr_apply_nft(nm, &err) < 0) /* the anti-spoofing rules follow the NICs */
            kh_log(KH_LOG_ERROR, "net.nft", "error=\"%s\"", err.msg);
    }
}

int kh_netmgr_tap_open(kh_netmgr *nm, const char *network, const char *ifname, unsigned queues,
                       int *fds, kh_err *err)
{
    net_rt *r = NULL;
    for (net_rt *x = nm->nets; x; x = x->next)
        if (strcmp(x->n->name, network) == 0)
            r = x;
    if (!r) {
        kh_err_set(err, KH_E_INVALID, "nics: network %s no longer exists", network);
        return -1;
    }
    kh_link_info br;
    int have = kh_link_get(r->n->bridge, &br, err);
    if (have < 0)
        return -1;
    if (!have && kh_network_owns_bridge(r->n)) {
        /* someone removed our bridge: put it back */
        if (rt_up(r, err) < 0 || kh_link_get(r->n->bridge, &br, err) != 1)
            return -1;
        kh_netmgr_apply_nft(nm, NULL);
    } else if (!have) {
        kh_err_set(err, KH_E_UNAVAILABLE, "network %s: host bridge %s does not exist", network,
                   r->n->bridge);
        return -1;
    }
    if (kh_link_tap_open(ifname, queues, fds, err) < 0)
        return -1;
    kh_link_info tap;
    if (kh_link_get(ifname, &tap, err) != 1 || kh_link_set_master(tap.index, br.index, err) < 0 ||
        kh_link_set_up(tap.index, err) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "tap %s: cannot attach it to %s", ifname, r->n->bridge);
        for (unsigned q = 0; q < queues; q++)
            close(fds[q]);
        return -1;
    }
    return 0;
}
