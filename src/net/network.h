/* network.h - what a network is, as the user defines it (pure).
 *
 * JSON form (POST /api/v1/networks and the stored spec):
 *   { "name": "net1", "type": "nat" | "isolated" | "bridged",
 *     "subnet": "10.10.0.0/24",      (nat, isolated; gateway = first address)
 *     "bridge": "br0",               (bridged: the admin's existing bridge)
 *     "ipv6": "fd00:10::/64",        (optional, nat/isolated: a /64; the
 *                                     gateway is prefix::1, guests use SLAAC) 
 *     "forwards": [ { "proto": "tcp"|"udp", "host_port": 8080,
 *                     "vm": "web1", "vm_port": 80, "ip": "10.10.0.5" } ] }
 * nat and isolated networks get a bridge owned by kvmhost named
 * "khbr" + the first 8 hex digits of the network id.
 */
#ifndef KH_NET_NETWORK_H
#define KH_NET_NETWORK_H

#include <jansson.h>
#include <stdint.h>

#include "util/err.h"

#define KH_NET_FORWARDS_MAX 256
#define KH_NET_PREFIX_MIN 8
#define KH_NET_PREFIX_MAX 29

typedef enum kh_net_type {
    KH_NET_NAT,
    KH_NET_ISOLATED,
    KH_NET_BRIDGED,
} kh_net_type;

typedef struct kh_net_forward {
    char proto[4];     /* "tcp" | "udp" */
    unsigned host_port;
    char *vm;
    unsigned vm_port;
    char *ip;          /* the VM's address on this network when the rule was made */
} kh_net_forward;

/* A VM's NIC on a network, as the VM manager reports it. */
typedef struct kh_net_binding {
    const char *vm;      /* VM name */
    const char *network; /* network name */
    const char *mac;
    const char *ip;      /* static reservation or NULL */
    const char *tap;     /* the tap's name while (or whenever) the VM runs */
    const char *groups;  /* security group names joined by ',', or NULL */
    uint64_t out_bps;    /* what the guest may send, bytes/s (0: no limit) */
    uint64_t out_burst;  /* bytes */
} kh_net_binding;

typedef struct kh_network {
    char id[37];
    char *name;
    kh_net_type type;
    uint32_t subnet;   /* host order; 0 for bridged */
    unsigned prefix;
    char bridge[16];   /* the bridge NICs attach to */
    kh_net_forward *forwards;
    size_t nforwards;
    double created_at;
    int has_v6;                /* an IPv6 /64 (nat, isolated) */
    unsigned char prefix6[16]; /* network order, the last 8 bytes zero */
} kh_network;

#define KH_NET_IPV6_STRLEN 52
/* prefix6 with its last byte set to host (0: the prefix itself, 1: the
 * gateway), as text, with "/64" when with_len. */
void kh_network_ipv6(const kh_network *n, unsigned host, char *out, size_t size, int with_len);

/* Parse a user's network (name, type, subnet, bridge; no forwards) for
 * the id given. Unknown keys are rejected. Subnet may be absent (the
 * caller picks one; prefix is then 0). */
kh_network *kh_network_from_json(const json_t *obj, const char *id, kh_err *err);
/* Parse the stored form (with forwards). */
kh_network *kh_network_from_stored(const json_t *obj, const char *id, kh_err *err);
/* The stored form. */
json_t *kh_network_to_json(const kh_network *n);
/* The API form: stored form + id, bridge, gateway, dhcp range. */
json_t *kh_network_api_json(const kh_network *n);
/* Parse a forward from the API ({proto, host_port, vm, vm_port}). */
int kh_net_forward_parse(const json_t *obj, kh_net_forward *out, kh_err *err);
void kh_net_forward_clear(kh_net_forward *f);
void kh_network_free(kh_network *n);
const char *kh_net_type_name(kh_net_type t);
/* Gateway (first address), DHCP range (second .. last before broadcast). */
uint32_t kh_network_gateway(const kh_network *n);
void kh_network_dhcp_range(const kh_network *n, uint32_t *first, uint32_t *last);
/* Does the network own its bridge (nat, isolated)? */
int kh_network_owns_bridge(const kh_network *n);

#endif
