/* netmgr.h - the networks of this host: bridges, nftables, dnsmasq, taps.
 *
 * The network manager owns every network: its spec (in the store), its
 * bridge (nat, isolated: created through netlink, marked with an ifalias
 * "kvmhost:<owner>:<id>"), the `inet kvmhost[-INSTANCE]` nftables table (rebuilt
 * whole, atomically, at every change) and one supervised dnsmasq per
 * nat/isolated network (restarted when it dies). It runs on the loop
 * thread, in the daemon's network namespace.
 *
 * Reconcile at start: create what is missing, delete bridges it marked and
 * no longer has, never touch links it did not mark, replace any dnsmasq
 * left from the previous daemon. The VM manager tells it which NICs exist
 * (kh_netmgr_set_bindings): they give the static DHCP reservations, the
 * port-forward targets and "in use" (409 on delete).
 */
#ifndef KH_NET_NETMGR_H
#define KH_NET_NETMGR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "net/network.h"
#include "store/store.h"
#include "util/err.h"

typedef struct kh_netmgr kh_netmgr;

/* Load the networks and reconcile the host with them. Failures to set up
 * one network are logged and leave it listed (a later start retries);
 * only a store error fails. instance: the daemon instance (NULL or "": the
 * default), which names the nftables tables (nft.h: kh_nft_table_name). */
kh_netmgr *kh_netmgr_new(uv_loop_t *loop, kh_store *store, const char *state_dir,
                         const char *instance, kh_err *err);
/* Stop supervising (daemon shutdown): bridges, rules and dnsmasq stay. */
void kh_netmgr_free(kh_netmgr *nm);

json_t *kh_netmgr_list_json(kh_netmgr *nm);
json_t *kh_netmgr_get_json(kh_netmgr *nm, const char *name, kh_err *err);
json_t *kh_netmgr_create(kh_netmgr *nm, const json_t *body, kh_err *err);
/* KH_E_CONFLICT while a VM has a NIC on it. */
int kh_netmgr_delete(kh_netmgr *nm, const char *name, kh_err *err);
json_t *kh_netmgr_leases_json(kh_netmgr *nm, const char *name, kh_err *err);
/* The addresses known for the NIC with this MAC on network (NULL: any):
 * [{"ip", "family": "ipv4", "source": "reservation"|"dhcp", "expires"?}]
 * from its static DHCP reservation and dnsmasq's current leases (a leased
 * reservation is one entry with "expires"). IPv6 addresses are not known:
 * guests choose them (SLAAC, stateless DHCPv6). A new reference. */
json_t *kh_netmgr_addresses_of(kh_netmgr *nm, const char *network, const char *mac);
/* Port forwards (nat networks): host_port on every local address -> the
 * VM's address on the network (its reservation, else its current lease). */
json_t *kh_netmgr_forward_add(kh_netmgr *nm, const char *name, const json_t *body,
                              kh_err *err);
int kh_netmgr_forward_delete(kh_netmgr *nm, const char *name, const char *proto,
                             unsigned host_port, kh_err *err);

/* Is this NIC acceptable: the network exists and the ip (may be NULL) is
 * a free host address of its subnet? vm is the VM asking (its own
 * reservations do not conflict). */
int kh_netmgr_nic_check(kh_netmgr *nm, const char *vm, const char *network, const char *ip,
                        kh_err *err);
/* Replace the set of NICs (copied). Rewrites the reservations. */
void kh_netmgr_set_bindings(kh_netmgr *nm, const kh_net_binding *b, size_t n);
/* Security groups (secgroup.h). put creates or replaces (201 / 200 by
 * *created); delete is KH_E_CONFLICT while a NIC uses the group. */
json_t *kh_netmgr_sg_list_json(kh_netmgr *nm);
json_t *kh_netmgr_sg_get_json(kh_netmgr *nm, const char *name, kh_err *err);
json_t *kh_netmgr_sg_put(kh_netmgr *nm, const char *name, const json_t *body, bool *created,
                         kh_err *err);
int kh_netmgr_sg_delete(kh_netmgr *nm, const char *name, kh_err *err);
/* Append one rule (a rule object as in the group's "rules") / delete rule
 * index (a decimal string, 0 is the first) of group name, in one step on
 * the loop so concurrent requests do not lose each other's change. The
 * group as it is now (a new reference), or NULL with err (KH_E_NOTFOUND
 * for no such group or rule, KH_E_INVALID for a bad rule or too many). */
json_t *kh_netmgr_sg_rule_add(kh_netmgr *nm, const char *name, const json_t *rule, kh_err *err);
json_t *kh_netmgr_sg_rule_delete(kh_netmgr *nm, const char *name, const char *index,
                                 kh_err *err);
/* Every name in groups (joined by ',', may be NULL) is a security group. */
int kh_netmgr_groups_check(kh_netmgr *nm, const char *groups, kh_err *err);

/* Create tap ifname on the network's bridge, up, with queues queues
 * (link.h): fds[0..queues-1] get one fd each. 0, or -1 with none open. */
int kh_netmgr_tap_open(kh_netmgr *nm, const char *network, const char *ifname, unsigned queues,
                       int *fds, kh_err *err);

#endif
