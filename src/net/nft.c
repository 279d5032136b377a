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
 */
#include "net/nft.h"

#include <nftables/libnftables.h>
#include <stdarg.h>
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

char *kh_nft_render(const kh_network *const *nets, size_t n)
{
    buf b = { NULL, 0, 0 };
    put(&b, "table inet " KH_NFT_TABLE "\ndelete table inet " KH_NFT_TABLE "\n");
    size_t owned = 0;
    for (size_t i = 0; i < n; i++)
        owned += kh_network_owns_bridge(nets[i]) ? 1 : 0;
    if (owned == 0)
        return b.s;
    put(&b, "table inet " KH_NFT_TABLE " {\n");
    put(&b, "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    for (size_t i = 0; i < n; i++) {
        const kh_network *w = nets[i];
        if (!kh_network_owns_bridge(w))
            continue;
        char s[24];
        cidr(w, s);
        put(&b, "\t\tiifname \"%s\" oifname \"%s\" accept\n", w->bridge, w->bridge);
        if (w->type == KH_NET_NAT) {
            put(&b, "\t\tiifname \"%s\" ip saddr %s accept\n", w->bridge, s);
            put(&b, "\t\toifname \"%s\" ct state established,related accept\n", w->bridge);
            put(&b, "\t\toifname \"%s\" ct status dnat accept\n", w->bridge);
        }
        put(&b, "\t\tiifname \"%s\" drop\n\t\toifname \"%s\" drop\n", w->bridge, w->bridge);
    }
    put(&b, "\t}\n");
    put(&b, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
    for (size_t i = 0; i < n; i++) {
        const kh_network *w = nets[i];
        if (w->type != KH_NET_ISOLATED)
            continue;
        char g[KH_IPV4_STRLEN];
        kh_inet_ipv4_format(kh_network_gateway(w), g);
        put(&b, "\t\tiifname \"%s\" ip daddr != { %s, 255.255.255.255 } drop\n", w->bridge, g);
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
