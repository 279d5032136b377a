/* nft.c - render and apply the kvmhost nftables table (see nft.h).
 *
 * Per network with bridge BR and subnet S (gateway G):
 *   forward (filter, policy accept):
 *     iifname BR oifname BR accept
 *     nat:      iifname BR ip saddr S accept
 *               oifname BR ct state established,related accept
 *               oifname BR ct status dnat accept
 *     both:     iifname BR drop ; oifname BR drop
 *   input (isolated): iifname BR ip daddr != { G, 255.255.255.255 } drop
 *   postrouting (nat): ip saddr S ip daddr != S oifname != BR masquerade
 *   prerouting/output (nat, per forward):
 *     fib daddr type local PROTO dport HP dnat ip to IP:VP
 *   with forwards, for the host's own connections to 127.0.0.1 (the output
 *   DNAT sends them out of BR, which has route_localnet on, netmgr.c):
 *     postrouting: ip saddr 127.0.0.0/8 oifname BR ct status dnat masquerade
 *     input: iifname BR ip daddr 127.0.0.0/8 ct state != established,related drop
 */
#include "net/nft.h"

#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/inet.h"
#include "util/mem.h"

typedef struct buf {
    char *s;
    size_t len, cap;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, line, (size_t)n + 1);
    b->len += (size_t)n;
    free(line);
}

static void cidr(const kh_network *n, char out[24])
{
    char a[KH_IPV4_STRLEN];
    kh_inet_ipv4_format(n->subnet, a);
    snprintf(out, 24, "%s/%u", a, n->prefix);
}

/* Whether a nat network has a port forward to an address (its DNAT rules). */
static bool has_forwards(const kh_network *w)
{
    for (size_t f = 0; w->type == KH_NET_NAT && f < w->nforwards; f++)
        if (w->forwards[f].ip)
            return true;
    return false;
}

static const kh_network *net_named(const kh_network *const *nets, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(nets[i]->name, name) == 0)
            return nets[i];
    return NULL;
}

static void render_bridge(buf *b, const char *table, const kh_network *const *nets, size_t n,
                          const kh_net_binding *binds, size_t nbinds)
{
    put(b, "table bridge %s {\n", table);
    put(b, "\tchain prerouting {\n\t\ttype filter hook prerouting priority filter; "
           "policy accept;\n");
    for (size_t i = 0; i < nbinds; i++) {
        const kh_net_binding *nb = &binds[i];
        const kh_network *w = net_named(nets, n, nb->network);
        if (!w || !nb->tap || !nb->mac)
            continue;
        put(b, "\t\tiifname \"%s\" ether saddr != %s drop\n", nb->tap, nb->mac);
        /* limits.nic outbound_bps: a policer on what the guest sends (this
         * kernel has no tc police action; nft's byte limit is the same
         * token bucket). */
        if (nb->out_bps)
            put(b, "\t\tiifname \"%s\" limit rate over %llu bytes/second burst %llu bytes "
                   "drop\n",
                nb->tap, (unsigned long long)nb->out_bps, (unsigned long long)nb->out_burst);
        if (!kh_network_owns_bridge(w))
            continue;
        char allowed[40];
        if (nb->ip) {
            snprintf(allowed, sizeof(allowed), "%s", nb->ip);
        } else {
            char a[KH_IPV4_STRLEN];
            kh_inet_ipv4_format(w->subnet, a);
            snprintf(allowed, sizeof(allowed), "%s/%u", a, w->prefix);
        }
        put(b, "\t\tiifname \"%s\" ip saddr != { 0.0.0.0, %s } drop\n", nb->tap, allowed);
        put(b, "\t\tiifname \"%s\" arp saddr ether != %s drop\n", nb->tap, nb->mac);
        put(b, "\t\tiifname \"%s\" arp saddr ip != { 0.0.0.0, %s } drop\n", nb->tap, allowed);
        if (w->has_v6) {
            char p6[KH_NET_IPV6_STRLEN];
            kh_network_ipv6(w, 0, p6, sizeof(p6), 1);
            put(b, "\t\tiifname \"%s\" ip6 saddr != { ::, fe80::/10, %s } drop\n", nb->tap, p6);
        }
    }
    put(b, "\t}\n");
}

static const kh_secgroup *group_named(const kh_secgroup *const *groups, size_t n,
                                      const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(groups[i]->name, name) == 0)
            return groups[i];
    return NULL;
}

/* One security group rule for one family (4 or 6): a rule without a cidr
 * is rendered once per family, from 0.0.0.0/0 and ::/0. */
static void render_rule(buf *b, const char *tap, const kh_sg_rule *rule, int family)
{
    char a[KH_IPV6_STRLEN] = "::", match[64] = "";
    unsigned prefix = rule->family ? rule->prefix : 0;
    if (family == 4)
        kh_inet_ipv4_format(rule->family ? rule->cidr : 0, a);
    else if (rule->family == 6)
        kh_inet_ipv6_format(rule->cidr6, a);
    bool any = strcmp(rule->proto, "any") == 0;
    if (strcmp(rule->proto, "icmp") == 0)
        snprintf(match, sizeof(match), family == 4 ? " ip protocol icmp"
                                                   : " meta l4proto ipv6-icmp");
    else if (!any && rule->port_min && rule->port_min == rule->port_max)
        snprintf(match, sizeof(match), " %s dport %u", rule->proto, rule->port_min);
    else if (!any && rule->port_min)
        snprintf(match, sizeof(match), " %s dport %u-%u", rule->proto, rule->port_min,
                 rule->port_max);
    else if (!any)
        snprintf(match, sizeof(match), family == 4 ? " ip protocol %s" : " meta l4proto %s",
                 rule->proto);
    put(b, "\t\toifname \"%s\" %s saddr %s/%u%s accept\n", tap, family == 4 ? "ip" : "ip6", a,
        prefix, match);
}

static void render_groups(buf *b, const char *hook, const kh_net_binding *binds, size_t nbinds,
                          const kh_secgroup *const *groups, size_t ngroups)
{
    put(b, "\tchain sg_%s {\n\t\ttype filter hook %s priority filter; policy accept;\n", hook,
        hook);
    for (size_t i = 0; i < nbinds; i++) {
        const kh_net_binding *nb = &binds[i];
        if (!nb->groups || !nb->tap)
            continue;
        const char *t = nb->tap;
        /* Stateless (no conntrack in the bridge family here): neither IPv4
         * nor IPv6 (ARP), DHCP, DHCPv6 and DNS replies, TCP segments that do
         * not open a connection, ICMP/ICMPv6 errors and echo replies and
         * ICMPv6 neighbour discovery and router advertisements (133-137:
         * without them the guest loses its SLAAC address and neighbours)
         * pass; new inbound traffic of either family must match a rule. */
        put(b, "\t\toifname \"%s\" ether type != { ip, ip6 } accept\n", t);
        put(b, "\t\toifname \"%s\" udp sport 67 udp dport 68 accept\n", t);
        put(b, "\t\toifname \"%s\" udp sport 547 udp dport 546 accept\n", t);
        put(b, "\t\toifname \"%s\" udp sport 53 accept\n", t);
        put(b, "\t\toifname \"%s\" tcp flags & (syn | ack) != syn accept\n", t);
        put(b, "\t\toifname \"%s\" icmp type { echo-reply, destination-unreachable, "
               "time-exceeded } accept\n", t);
        put(b, "\t\toifname \"%s\" icmpv6 type { echo-reply, destination-unreachable, "
               "packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, "
               "nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } "
               "accept\n", t);
        char *copy = xstrdup(nb->groups), *save = NULL;
        for (char *gname = strtok_r(copy, ",", &save); gname;
             gname = strtok_r(NULL, ",", &save)) {
            const kh_secgroup *g = group_named(groups, ngroups, gname);
            for (size_t r = 0; g && r < g->nrules; r++) {
                if (g->rules[r].family != 6)
                    render_rule(b, t, &g->rules[r], 4);
                if (g->rules[r].family != 4)
                    render_rule(b, t, &g->rules[r], 6);
            }
        }
        free(copy);
        put(b, "\t\toifname \"%s\" drop\n", t);
    }
    put(b, "\t}\n");
}

char *kh_nft_render(const kh_network *const *nets, size_t n, const kh_net_binding *binds,
                    size_t nbinds, const kh_secgroup *const *groups, size_t ngroups)
{
    return kh_nft_render_table(KH_NFT_TABLE, nets, n, binds, nbinds, groups, ngroups);
}

char *kh_nft_render_table(const char *table, const kh_network *const *nets, size_t n,
                          const kh_net_binding *binds, size_t nbinds,
                          const kh_secgroup *const *groups, size_t ngroups)
{
    buf b = { NULL, 0, 0 };
    put(&b, "table inet %s\ndelete table inet %s\n", table, table);
    put(&b, "table bridge %s\ndelete table bridge %s\n", table, table);
    if (n == 0)
        return b.s;
    render_bridge(&b, table, nets, n, binds, nbinds);
    render_groups(&b, "forward", binds, nbinds, groups, ngroups);
    render_groups(&b, "output", binds, nbinds, groups, ngroups);
    put(&b, "}\n");
    size_t owned = 0;
    for (size_t i = 0; i < n; i++)
        owned += kh_network_owns_bridge(nets[i]) ? 1 : 0;
    if (owned == 0)
        return b.s;
    put(&b, "table inet %s {\n", table);
    put(&b, "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    for (size_t i = 0; i < n; i++) {
        const kh_network *w = nets[i];
        if (!kh_network_owns_bridge(w))
            continue;
        char s[24];
        cidr(w, s);
        put(&b, "\t\tiifname \"%s\" oifname \"%s\" accept\n", w->bridge, w->bridge);
        char p6[KH_NET_IPV6_STRLEN] = "";
        if (w->has_v6)
            kh_network_ipv6(w, 0, p6, sizeof(p6), 1);
        if (w->type == KH_NET_NAT) {
            put(&b, "\t\tiifname \"%s\" ip saddr %s accept\n", w->bridge, s);
            if (w->has_v6)
                put(&b, "\t\tiifname \"%s\" ip6 saddr %s accept\n", w->bridge, p6);
            put(&b, "\t\toifname \"%s\" ct state established,related accept\n", w->bridge);
            put(&b, "\t\toifname \"%s\" ct status dnat accept\n", w->bridge);
        }
        put(&b, "\t\tiifname \"%s\" drop\n\t\toifname \"%s\" drop\n", w->bridge, w->bridge);
    }
    put(&b, "\t}\n");
    put(&b, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
    for (size_t i = 0; i < n; i++) {
        const kh_network *w = nets[i];
        /* route_localnet is on for this bridge (forwards from 127.0.0.1):
         * only the replies of those connections may come in to 127/8, not
         * a guest's own packets to the host's loopback services. */
        if (has_forwards(w))
            put(&b, "\t\tiifname \"%s\" ip daddr 127.0.0.0/8 ct state != { established, "
                    "related } drop\n", w->bridge);
        if (w->type != KH_NET_ISOLATED)
            continue;
        char g[KH_IPV4_STRLEN];
        kh_inet_ipv4_format(kh_network_gateway(w), g);
        put(&b, "\t\tiifname \"%s\" ip daddr != { %s, 255.255.255.255 } drop\n", w->bridge, g);
        if (w->has_v6) {
            char g6[KH_NET_IPV6_STRLEN];
            kh_network_ipv6(w, 1, g6, sizeof(g6), 0);
            put(&b, "\t\tiifname \"%s\" ip6 daddr != { %s, fe80::/10, ff00::/8 } drop\n",
                w->bridge, g6);
        }
    }
    put(&b, "\t}\n");
    put(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; "
            "policy accept;\n");
    for (size_t i = 0; i < n; i++) {
        const kh_network *w = nets[i];
        if (w->type != KH_NET_NAT)
            continue;
        char s[24];
        cidr(w, s);
        put(&b, "\t\tip saddr %s ip daddr != %s oifname != \"%s\" masquerade\n", s, s,
            w->bridge);
        /* A forward used from the host itself on 127.0.0.1 (output DNAT):
         * the guest sees the gateway, and its replies come back. */
        if (has_forwards(w))
            put(&b, "\t\tip saddr 127.0.0.0/8 oifname \"%s\" ct status dnat masquerade\n",
                w->bridge);
        if (w->has_v6) {
            char p6[KH_NET_IPV6_STRLEN];
            kh_network_ipv6(w, 0, p6, sizeof(p6), 1);
            put(&b, "\t\tip6 saddr %s ip6 daddr != %s oifname != \"%s\" masquerade\n", p6, p6,
                w->bridge);
        }
    }
    put(&b, "\t}\n");
    static const char *const dnat_chains[2][2] = { { "prerouting", "dstnat" },
                                                   { "output", "-100" } }; /* dstnat is not a keyword on output */
    for (int c = 0; c < 2; c++) {
        put(&b, "\tchain %s {\n\t\ttype nat hook %s priority %s; policy accept;\n",
            dnat_chains[c][0], dnat_chains[c][0], dnat_chains[c][1]);
        for (size_t i = 0; i < n; i++) {
            const kh_network *w = nets[i];
            if (w->type != KH_NET_NAT)
                continue;
            for (size_t f = 0; f < w->nforwards; f++) {
                const kh_net_forward *fw = &w->forwards[f];
                if (!fw->ip)
                    continue;
                put(&b, "\t\tfib daddr type local %s dport %u dnat ip to %s:%u\n", fw->proto,
                    fw->host_port, fw->ip, fw->vm_port);
            }
        }
        put(&b, "\t}\n");
    }
    put(&b, "}\n");
    return b.s;
}

int kh_nft_apply(const char *script, kh_err *err)
{
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!ctx) {
        kh_err_set(err, KH_E_INTERNAL, "nftables: cannot create a context");
        return -1;
    }
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    int rc = nft_run_cmd_from_buffer(ctx, script);
    if (rc != 0) {
        const char *msg = nft_ctx_get_error_buffer(ctx);
        char first[400];
        snprintf(first, sizeof(first), "%s", msg && *msg ? msg : "failed");
        char *nl = strchr(first, '\n');
        if (nl)
            *nl = '\0';
        kh_err_set(err, KH_E_INTERNAL, "nftables: %s", first);
    }
    nft_ctx_free(ctx);
    return rc == 0 ? 0 : -1;
}

void kh_nft_table_name(const char *instance, char *out, size_t size)
{
    if (instance && instance[0])
        snprintf(out, size, "%s-%s", KH_NFT_TABLE, instance);
    else
        snprintf(out, size, "%s", KH_NFT_TABLE);
}
