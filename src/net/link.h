/* link.h - network links through rtnetlink (libmnl) and /dev/net/tun.
 *
 * Bridges, addresses, up/down, enslaving and taps, in the calling thread's
 * network namespace. Nothing here parses `ip` output. Each call opens its
 * own netlink socket and waits for the kernel's ack, so errors arrive
 * where they happen (KH_E_INTERNAL with the kernel's errno text).
 */
#ifndef KH_NET_LINK_H
#define KH_NET_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define KH_LINK_ALIAS_MAX 128

typedef struct kh_link_info {
    int index;
    int master;          /* ifindex of the bridge it is enslaved to, 0 = none */
    bool up;
    char kind[16];       /* "bridge", "tun", "" */
    char alias[KH_LINK_ALIAS_MAX];
} kh_link_info;

/* 1 and *out filled when a link named name exists, 0 when not, -1 on error. */
int kh_link_get(const char *name, kh_link_info *out, kh_err *err);
/* Create a bridge (fails with KH_E_CONFLICT when the name exists) with an
 * ifalias that marks who owns it. */
int kh_link_bridge_add(const char *name, const char *alias, kh_err *err);
int kh_link_set_up(int index, kh_err *err);
int kh_link_set_master(int index, int master, kh_err *err);
/* Add (or replace) an IPv4 address addr/prefix with its broadcast. */
int kh_link_addr_add(int index, uint32_t addr, unsigned prefix, kh_err *err);
/* Add (or replace) an IPv6 address addr/prefix, without duplicate
 * address detection. */
int kh_link_addr6_add(int index, const unsigned char addr[16], unsigned prefix, kh_err *err);
int kh_link_del(int index, kh_err *err);
/* Call cb for every link (a dump); stops at the first non-zero return. */
int kh_link_foreach(int (*cb)(const char *name, const kh_link_info *info, void *opaque),
                    void *opaque, kh_err *err);
#define KH_LINK_TAP_QUEUES_MAX 8
/* Open /dev/net/tun as a tap named name (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR,
 * plus IFF_MULTI_QUEUE when queues > 1; not persistent: the link goes
 * away with the last fd). Fills fds[0..queues-1] (O_CLOEXEC, one per
 * queue) and returns 0, or -1 with nothing left open. */
int kh_link_tap_open(const char *name, unsigned queues, int *fds, kh_err *err);

/* Shape what the link sends (its egress: for a tap, what its guest
 * receives) to bps bytes/s with a bucket of burst bytes: a tbf qdisc at
 * the root, created or replaced. */
int kh_link_rate_set(const char *name, uint64_t bps, uint64_t burst, kh_err *err);
/* Back to the link's default root qdisc (no error when there was none or
 * the link is gone). */
int kh_link_rate_clear(const char *name, kh_err *err);

#endif
