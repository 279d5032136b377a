/* nft.h - kvmhost's own nftables table, `inet kvmhost`.
 *
 * The whole table is rendered from the networks (a pure function, tested)
 * and applied in ONE nft transaction: "add table; delete table; table {...}".
 * So a restart or a second apply never duplicates a rule, and no other
 * table is ever read or touched.
 */
#ifndef KH_NET_NFT_H
#define KH_NET_NFT_H

#include <stddef.h>

#include "net/network.h"
#include "net/secgroup.h"
#include "util/err.h"

#define KH_NFT_TABLE "kvmhost" /* the default instance's table */

/* The nft script for these networks and NICs. Returns a new string; with
 * no networks it only removes the tables.
 *
 * Two tables, both kvmhost's own: `inet kvmhost` (forwarding, masquerade,
 * port forwards) and `bridge kvmhost`: anti-spoofing per tap, frames a
 * guest sends with another MAC than its NIC's, or IPv4/ARP from an address
 * that is not its own (its reservation; without one, its network's subnet)
 * are dropped; and the security groups of each NIC (secgroup.h), on the
 * bridge's forward (guest to guest) and output (host to guest) hooks. */
char *kh_nft_render(const kh_network *const *nets, size_t n, const kh_net_binding *binds,
                    size_t nbinds, const kh_secgroup *const *groups, size_t ngroups);
/* The same for a table of another name: each daemon instance has its own
 * (kh_nft_table_name), so several daemons on one kernel never touch each
 * other's rules. */
char *kh_nft_render_table(const char *table, const kh_network *const *nets, size_t n,
                          const kh_net_binding *binds, size_t nbinds,
                          const kh_secgroup *const *groups, size_t ngroups);
/* The table of a daemon instance: "kvmhost" for NULL or "", else
 * "kvmhost-<instance>" (written to out, size at least 64). */
void kh_nft_table_name(const char *instance, char *out, size_t size);
/* Run an nft script through libnftables. KH_E_INTERNAL with nft's message. */
int kh_nft_apply(const char *script, kh_err *err);

#endif
