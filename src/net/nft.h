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
#include "util/err.h"

#define KH_NFT_TABLE "kvmhost"

/* The nft script for these networks (bridged ones add nothing). Returns a
 * new string; with n == 0 it only removes the table. */
char *kh_nft_render(const kh_network *const *nets, size_t n);
/* Run an nft script through libnftables. KH_E_INTERNAL with nft's message. */
int kh_nft_apply(const char *script, kh_err *err);

#endif
