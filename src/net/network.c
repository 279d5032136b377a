/* network.c - network specs (see network.h). */
#include "net/network.h"

#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/schema.h"
#include "util/check.h"
#include "util/inet.h"
#include "util/mem.h"

static const char *const type_names[] = { "nat", "isolated", "bridged" };

const char *kh_net_type_name(kh_net_type t)
{
    return (unsigned)t < KH_ARRAY_LEN(type_names) ? type_names[t] : "unknown";
}

void kh_net_forward_clear(kh_net_forward *f)
{
    free(f->vm);
    free(f->ip);
    memset(f, 0, sizeof(*f));
}

void kh_network_free(kh_network *n)
{
    if (!n)
        return;
    free(n->name);
    for (size_t i = 0; i < n->nforwards; i++)
        kh_net_forward_clear(&n->forwards[i]);
    free(n->forwards);
    free(n);
}

static int get_port(const json_t *obj, const char *key, unsigned *out, kh_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
        kh_err_set(err, KH_E_INVALID, "%s: must be a port number from 1 to 65535", key);
        return -1;
    }
    *out = (unsigned)json_integer_value(v);
    return 0;
}

int kh_net_forward_parse(const json_t *obj, kh_net_forward *f, kh_err *err)
{
    memset(f, 0, sizeof(*f));
    if (!json_is_object(obj)) {
        kh_err_set(err, KH_E_INVALID, "forward: must be a JSON object");
        return -1;
    }
    /* Forward.json; its "ip" is read-only (the daemon looks it up), which a
     * stored forward has and a request may not (netmgr refuses it) */
    json_t *keys = json_copy((json_t *)(uintptr_t)obj);
    json_object_del(keys, "ip");
    int rc = kh_schema_check("Forward", keys, "", err);
    json_decref(keys);
    if (rc < 0)
        return -1;
    const char *proto = json_string_value(json_object_get(obj, "proto"));
    if (!proto)
        proto = "tcp";
    if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0) {
        kh_err_set(err, KH_E_INVALID, "proto: must be \"tcp\" or \"udp\"");
        return -1;
    }
    snprintf(f->proto, sizeof(f->proto), "%s", proto);
    if (get_port(obj, "host_port", &f->host_port, err) < 0 ||
        get_port(obj, "vm_port", &f->vm_port, err) < 0)
        return -1;
    const char *vm = json_string_value(json_object_get(obj, "vm"));
    if (!vm) {
        kh_err_set(err, KH_E_INVALID, "vm: is required (the name of a VM on this network)");
        return -1;
    }
    if (kh_check_name(vm, "vm", err) < 0)
        return -1;
    f->vm = xstrdup(vm);
    const char *ip = json_string_value(json_object_get(obj, "ip"));
    uint32_t a;
    if (ip) {
        if (kh_inet_ipv4_parse(ip, &a, "ip", err) < 0) {
            kh_net_forward_clear(f);
            return -1;
        }
        f->ip = xstrdup(ip);
    }
    return 0;
}

static int check_ifname(const char *s, kh_err *err)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 15) {
        kh_err_set(err, KH_E_INVALID, "bridge: must be an interface name of 1 to 15 characters");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || (c == '.' && i > 0))) {
            kh_err_set(err, KH_E_INVALID, "bridge: %zu: not a valid interface name character",
                       i);
            return -1;
        }
    }
    return 0;
}

/* "fdxx:...::/64": a /64 of global or unique-local unicast, host bits zero. */
static int parse_prefix6(const json_t *v, unsigned char out[16], kh_err *err)
{
    const char *s = json_string_value(v);
    char addr[INET6_ADDRSTRLEN + 4];
    const char *slash = s ? strchr(s, '/') : NULL;
    size_t alen = slash ? (size_t)(slash - s) : 0;
    if (!slash || alen == 0 || alen >= INET6_ADDRSTRLEN || strcmp(slash, "/64") != 0) {
        kh_err_set(err, KH_E_INVALID, "ipv6: must be a /64 prefix like fd00:10::/64");
        return -1;
    }
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    if (inet_pton(AF_INET6, addr, out) != 1) {
        kh_err_set(err, KH_E_INVALID, "ipv6: %s is not an IPv6 address", addr);
        return -1;
    }
    for (size_t i = 8; i < 16; i++) {
        if (out[i]) {
            kh_err_set(err, KH_E_INVALID, "ipv6: host bits must be zero (a /64 ends in ::)");
            return -1;
        }
    }
    /* 2000::/3 (global) or fc00::/7 (unique local); not multicast, link-local, ... */
    if ((out[0] & 0xe0) != 0x20 && (out[0] & 0xfe) != 0xfc) {
        kh_err_set(err, KH_E_INVALID,
                   "ipv6: must be global (2000::/3) or unique-local (fc00::/7) unicast");
        return -1;
    }
    return 0;
}

void kh_network_ipv6(const kh_network *n, unsigned host, char *out, size_t size, int with_len)
{
    unsigned char a[16];
    memcpy(a, n->prefix6, sizeof(a));
    a[15] = (unsigned char)host;
    char text[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, a, text, sizeof(text));
    snprintf(out, size, "%s%s", text, with_len ? "/64" : "");
}

static kh_network *parse(const json_t *obj, const char *id, bool stored, kh_err *err)
{
    if (!json_is_object(obj)) {
        kh_err_set(err, KH_E_INVALID, "network: must be a JSON object");
        return NULL;
    }
    /* a request: keys, types and enums are NetworkSpec's; a stored network
     * (written by this daemon) also has its forwards */
    if (!stored && kh_schema_check("NetworkSpec", obj, "", err) < 0)
        return NULL;
    if (!kh_check_uuid(id)) {
        kh_err_set(err, KH_E_INTERNAL, "network id: not a uuid");
        return NULL;
    }
    kh_network *n = xcalloc(1, sizeof(*n));
    snprintf(n->id, sizeof(n->id), "%s", id);
    const json_t *v = json_object_get(obj, "name");
    if (!v) {
        kh_err_set(err, KH_E_INVALID, "network name is required");
        goto fail;
    }
    if (!json_is_string(v) || kh_check_name(json_string_value(v), "network name", err) < 0) {
        kh_err_set(err, KH_E_INVALID, "network name: must be a string");
        goto fail;
    }
    n->name = xstrdup(json_string_value(v));
    const char *type = json_string_value(json_object_get(obj, "type"));
    if (!type)
        type = "nat";
    int t = -1;
    for (size_t i = 0; i < KH_ARRAY_LEN(type_names); i++)
        if (strcmp(type, type_names[i]) == 0)
            t = (int)i;
    if (t < 0) {
        kh_err_set(err, KH_E_INVALID, "type: must be \"nat\", \"isolated\" or \"bridged\"");
        goto fail;
    }
    n->type = (kh_net_type)t;
    v = json_object_get(obj, "subnet");
    const json_t *br = json_object_get(obj, "bridge");
    if (n->type == KH_NET_BRIDGED) {
        if (v) {
            kh_err_set(err, KH_E_INVALID,
                       "subnet: a bridged network has no subnet of its own (the host bridge's "
                       "network applies)");
            goto fail;
        }
        if (!br) {
            kh_err_set(err, KH_E_INVALID, "bridge: is required for a bridged network");
            goto fail;
        }
        if (!json_is_string(br) || check_ifname(json_string_value(br), err) < 0) {
            kh_err_set(err, KH_E_INVALID, "bridge: must be a string");
            goto fail;
        }
        snprintf(n->bridge, sizeof(n->bridge), "%s", json_string_value(br));
    } else {
        if (br) {
            kh_err_set(err, KH_E_INVALID,
                       "bridge: only for type \"bridged\" (kvmhost makes the bridge of a %s "
                       "network)", type);
            goto fail;
        }
        if (v) {
            if (!json_is_string(v)) {
                kh_err_set(err, KH_E_INVALID, "subnet: must be a string like 10.10.0.0/24");
                goto fail;
            }
            if (kh_inet_cidr_parse(json_string_value(v), &n->subnet, &n->prefix,
                                   KH_NET_PREFIX_MIN, KH_NET_PREFIX_MAX, "subnet", err) < 0)
                goto fail;
        }
        snprintf(n->bridge, sizeof(n->bridge), "khbr%.8s", n->id);
    }
    if ((v = json_object_get(obj, "ipv6"))) {
        if (n->type == KH_NET_BRIDGED) {
            kh_err_set(err, KH_E_INVALID, "ipv6: only nat and isolated networks have a prefix");
            goto fail;
        }
        if (parse_prefix6(v, n->prefix6, err) < 0)
            goto fail;
        n->has_v6 = 1;
    }
    const json_t *fw = stored ? json_object_get(obj, "forwards") : NULL;
    if (fw) {
        if (!json_is_array(fw) || json_array_size(fw) > KH_NET_FORWARDS_MAX) {
            kh_err_set(err, KH_E_INVALID, "forwards: must be an array");
            goto fail;
        }
        n->forwards = xcalloc(json_array_size(fw) + 1, sizeof(*n->forwards));
        for (size_t i = 0; i < json_array_size(fw); i++) {
            if (kh_net_forward_parse(json_array_get(fw, i), &n->forwards[i], err) < 0)
                goto fail;
            n->nforwards = i + 1;
        }
    }
    return n;
fail:
    kh_network_free(n);
    return NULL;
}

kh_network *kh_network_from_json(const json_t *obj, const char *id, kh_err *err)
{
    return parse(obj, id, false, err);
}

kh_network *kh_network_from_stored(const json_t *obj, const char *id, kh_err *err)
{
    return parse(obj, id, true, err);
}

static json_t *forward_json(const kh_net_forward *f)
{
    json_t *o = json_pack("{s:s,s:i,s:s,s:i}", "proto", f->proto, "host_port",
                          (json_int_t)f->host_port, "vm", f->vm, "vm_port",
                          (json_int_t)f->vm_port);
    if (f->ip)
        json_object_set_new(o, "ip", json_string(f->ip));
    return o;
}

json_t *kh_network_to_json(const kh_network *n)
{
    json_t *o = json_pack("{s:s,s:s}", "name", n->name, "type", kh_net_type_name(n->type));
    if (n->type == KH_NET_BRIDGED) {
        json_object_set_new(o, "bridge", json_string(n->bridge));
    } else {
        char a[KH_IPV4_STRLEN], s[24];
        kh_inet_ipv4_format(n->subnet, a);
        snprintf(s, sizeof(s), "%s/%u", a, n->prefix);
        json_object_set_new(o, "subnet", json_string(s));
    }
    if (n->has_v6) {
        char p6[KH_NET_IPV6_STRLEN];
        kh_network_ipv6(n, 0, p6, sizeof(p6), 1);
        json_object_set_new(o, "ipv6", json_string(p6));
    }
    json_t *fw = json_array();
    for (size_t i = 0; i < n->nforwards; i++)
        json_array_append_new(fw, forward_json(&n->forwards[i]));
    json_object_set_new(o, "forwards", fw);
    return o;
}

json_t *kh_network_api_json(const kh_network *n)
{
    json_t *o = kh_network_to_json(n);
    json_object_set_new(o, "id", json_string(n->id));
    json_object_set_new(o, "bridge", json_string(n->bridge));
    if (n->type != KH_NET_BRIDGED) {
        char g[KH_IPV4_STRLEN], f[KH_IPV4_STRLEN], l[KH_IPV4_STRLEN];
        uint32_t first, last;
        kh_inet_ipv4_format(kh_network_gateway(n), g);
        kh_network_dhcp_range(n, &first, &last);
        kh_inet_ipv4_format(first, f);
        kh_inet_ipv4_format(last, l);
        json_object_set_new(o, "gateway", json_string(g));
        json_object_set_new(o, "dhcp", json_pack("{s:s,s:s}", "first", f, "last", l));
    }
    if (n->has_v6) {
        char g6[KH_NET_IPV6_STRLEN];
        kh_network_ipv6(n, 1, g6, sizeof(g6), 0);
        json_object_set_new(o, "gateway6", json_string(g6));
    }
    return o;
}

uint32_t kh_network_gateway(const kh_network *n)
{
    return n->subnet + 1;
}

void kh_network_dhcp_range(const kh_network *n, uint32_t *first, uint32_t *last)
{
    uint32_t bcast = n->subnet | ~kh_inet_mask(n->prefix);
    *first = n->subnet + 2;
    *last = bcast - 1;
}

int kh_network_owns_bridge(const kh_network *n)
{
    return n->type != KH_NET_BRIDGED;
}
