/* secgroup.h - security groups: named inbound rule sets for NICs (pure).
 *
 * JSON: { "name": "web",
 *         "rules": [ { "direction": "in", "proto": "tcp"|"udp"|"icmp"|"any",
 *                      "ports": "80" | "8000-8080" (tcp/udp; absent = all),
 *                      "cidr": "10.0.0.0/8" | "2001:db8::/32"
 *                              (absent = anywhere, both families) } ] }
 * A rule without a cidr applies to IPv4 and IPv6; one with an IPv4 cidr to
 * IPv4 only, with an IPv6 cidr to IPv6 only ("icmp" is ICMPv6 there). A NIC
 * with groups accepts new inbound IPv4 and IPv6 traffic only as their rules
 * allow; outbound is always allowed. The filter is stateless (the bridge
 * family has no conntrack on this kernel): TCP segments that do not open a
 * connection, DHCP/DHCPv6/DNS replies, ICMP/ICMPv6 echo replies and errors,
 * ICMPv6 neighbour discovery and router advertisements (types 133-137) and
 * frames that are neither IPv4 nor IPv6 (ARP) always pass; UDP replies from
 * other ports need a rule. A NIC without groups is not filtered.
 */
#ifndef KH_NET_SECGROUP_H
#define KH_NET_SECGROUP_H

#include <jansson.h>
#include <stdint.h>

#include "util/err.h"

#define KH_SG_RULES_MAX 64

typedef struct kh_sg_rule {
    char proto[5];     /* "tcp", "udp", "icmp", "any" */
    unsigned port_min; /* 0: all ports */
    unsigned port_max;
    int family;        /* 0: both (no cidr), 4: cidr is IPv4, 6: cidr6 is IPv6 */
    uint32_t cidr;
    uint8_t cidr6[16];
    unsigned prefix;
} kh_sg_rule;

typedef struct kh_secgroup {
    char *name;
    kh_sg_rule *rules;
    size_t nrules;
    double created_at;
} kh_secgroup;

kh_secgroup *kh_secgroup_from_json(const json_t *obj, kh_err *err);
json_t *kh_secgroup_to_json(const kh_secgroup *g);
void kh_secgroup_free(kh_secgroup *g);

#endif
