/* inet.c - MAC, IPv4 and IPv6 address text (see inet.h). */
#include "util/inet.h"

#include "util/check.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

int kh_inet_mac_parse(const char *s, uint8_t mac[6], const char *what, kh_err *err)
{
    if (!s || strlen(s) != 17)
        goto bad;
    for (int i = 0; i < 6; i++) {
        int hi = kh_hex_digit(s[i * 3]), lo = kh_hex_digit(s[i * 3 + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
            goto bad;
        mac[i] = (uint8_t)(hi << 4 | lo);
    }
    if (mac[0] & 1) {
        kh_err_set(err, KH_E_INVALID, "%s: %s is a multicast address", what, s);
        return -1;
    }
    if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5])) {
        kh_err_set(err, KH_E_INVALID, "%s: the all-zero address is not valid", what);
        return -1;
    }
    return 0;
bad:
    kh_err_set(err, KH_E_INVALID, "%s: must be a MAC address like 52:54:00:12:34:56", what);
    return -1;
}

void kh_inet_mac_format(const uint8_t mac[6], char out[KH_MAC_STRLEN])
{
    snprintf(out, KH_MAC_STRLEN, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
             mac[3], mac[4], mac[5]);
}

void kh_inet_mac_generate(const char *vm_id, unsigned index, unsigned attempt,
                          char out[KH_MAC_STRLEN])
{
    uint32_t h = 2166136261u;
    for (const char *p = vm_id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    uint8_t extra[8] = { (uint8_t)index, (uint8_t)(index >> 8), (uint8_t)attempt,
                         (uint8_t)(attempt >> 8), (uint8_t)(attempt >> 16),
                         (uint8_t)(attempt >> 24), 0x6b, 0x68 };
    for (size_t i = 0; i < sizeof(extra); i++)
        h = (h ^ extra[i]) * 16777619u;
    uint8_t mac[6] = { 0x52, 0x54, 0x00, (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h };
    kh_inet_mac_format(mac, out);
}

int kh_inet_ipv4_parse(const char *s, uint32_t *addr, const char *what, kh_err *err)
{
    uint32_t a = 0;
    const char *p = s;
    if (!s)
        goto bad;
    for (int i = 0; i < 4; i++) {
        if (*p < '0' || *p > '9')
            goto bad;
        unsigned v = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9' && p - start < 4)
            v = v * 10 + (unsigned)(*p++ - '0');
        if (v > 255 || (p - start > 1 && *start == '0') || p - start > 3)
            goto bad;
        a = a << 8 | v;
        if (i < 3 && *p++ != '.')
            goto bad;
    }
    if (*p)
        goto bad;
    *addr = a;
    return 0;
bad:
    kh_err_set(err, KH_E_INVALID, "%s: must be an IPv4 address like 10.0.0.5", what);
    return -1;
}

void kh_inet_ipv4_format(uint32_t a, char out[KH_IPV4_STRLEN])
{
    snprintf(out, KH_IPV4_STRLEN, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255,
             a & 255);
}

uint32_t kh_inet_mask(unsigned prefix)
{
    return prefix == 0 ? 0 : prefix >= 32 ? 0xffffffffu : ~((1u << (32 - prefix)) - 1);
}

/* The prefix length after the '/': decimal digits without a leading zero. */
static int parse_prefix(const char *q, const char *what, unsigned *out, kh_err *err)
{
    unsigned p = 0;
    for (const char *c = q; *c; c++) {
        if (*c < '0' || *c > '9' || (c == q && *c == '0' && c[1])) {
            kh_err_set(err, KH_E_INVALID, "%s: the prefix length must be a number", what);
            return -1;
        }
        p = p * 10 + (unsigned)(*c - '0');
    }
    *out = p;
    return 0;
}

int kh_inet_cidr_parse(const char *s, uint32_t *net, unsigned *prefix, unsigned min_prefix,
                       unsigned max_prefix, const char *what, kh_err *err)
{
    char buf[32];
    const char *slash = s ? strchr(s, '/') : NULL;
    if (!slash || (size_t)(slash - s) >= sizeof(buf) || !slash[1] || strlen(slash + 1) > 2) {
        kh_err_set(err, KH_E_INVALID, "%s: must be an IPv4 network like 10.0.0.0/24", what);
        return -1;
    }
    memcpy(buf, s, (size_t)(slash - s));
    buf[slash - s] = '\0';
    uint32_t a;
    if (kh_inet_ipv4_parse(buf, &a, what, err) < 0)
        return -1;
    unsigned p;
    if (parse_prefix(slash + 1, what, &p, err) < 0)
        return -1;
    if (p < min_prefix || p > max_prefix) {
        kh_err_set(err, KH_E_INVALID, "%s: the prefix length must be from %u to %u", what,
                   min_prefix, max_prefix);
        return -1;
    }
    if (a & ~kh_inet_mask(p)) {
        char n[KH_IPV4_STRLEN];
        kh_inet_ipv4_format(a & kh_inet_mask(p), n);
        kh_err_set(err, KH_E_INVALID, "%s: %s has host bits set (the network is %s/%u)", what,
                   s, n, p);
        return -1;
    }
    *net = a;
    *prefix = p;
    return 0;
}

int kh_inet_cidr6_parse(const char *s, uint8_t net[16], unsigned *prefix, const char *what,
                        kh_err *err)
{
    char buf[KH_IPV6_STRLEN];
    const char *slash = s ? strchr(s, '/') : NULL;
    size_t alen = slash ? (size_t)(slash - s) : 0;
    uint8_t a[16];
    if (!slash || alen == 0 || alen >= sizeof(buf) || !slash[1] || strlen(slash + 1) > 3)
        goto bad;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET6, buf, a) != 1)
        goto bad;
    unsigned p;
    if (parse_prefix(slash + 1, what, &p, err) < 0)
        return -1;
    if (p > 128) {
        kh_err_set(err, KH_E_INVALID, "%s: the prefix length must be from 0 to 128", what);
        return -1;
    }
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = p >= (i + 1) * 8 ? 8 : p > i * 8 ? p - i * 8 : 0;
        uint8_t host = (uint8_t)(0xffu >> keep);
        if (a[i] & host) {
            kh_err_set(err, KH_E_INVALID, "%s: %s has host bits set", what, s);
            return -1;
        }
    }
    memcpy(net, a, sizeof(a));
    *prefix = p;
    return 0;
bad:
    kh_err_set(err, KH_E_INVALID, "%s: must be an IPv6 network like 2001:db8::/32", what);
    return -1;
}

void kh_inet_ipv6_format(const uint8_t addr[16], char out[KH_IPV6_STRLEN])
{
    if (!inet_ntop(AF_INET6, addr, out, KH_IPV6_STRLEN))
        out[0] = '\0';
}

bool kh_inet_cidr_overlap(uint32_t a, unsigned pa, uint32_t b, unsigned pb)
{
    unsigned p = pa < pb ? pa : pb;
    return (a & kh_inet_mask(p)) == (b & kh_inet_mask(p));
}
