/* secgroup.h - security groups: named inbound rule sets for NICs (pure).
 *
 * JSON: { "name": "web",
 *         "rules": [ { "direction": "in", "proto": "tcp"|"udp"|"icmp"|"any",
 *                      "ports": "80" | "8000-8080" (tcp/udp; absent = all),
 *                      "cidr": "0.0.0.0/0" (absent = anywhere) } ] }
 * A NIC with groups accepts new inbound IPv4 traffic only as their rules
 * allow; outbound is always allowed. The filter is stateless (the bridge
 * family has no conntrack on this kernel): TCP segments that do not open a
 * connection, DHCP/DNS replies, ICMP echo replies and errors, and non-IPv4
 * frames (ARP) always pass; UDP replies from other ports need a rule. A
 * NIC without groups is not filtered.
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
    uint32_t cidr;
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
