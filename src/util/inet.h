/* inet.h - MAC and IPv4 address text, pure and strict.
 *
 * Used by the VM spec (a NIC's "mac" and "ip") and the networks ("subnet").
 * Parsers accept only the canonical forms and name the field on error.
 */
#ifndef KH_UTIL_INET_H
#define KH_UTIL_INET_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define KH_MAC_STRLEN 18 /* "52:54:00:12:34:56" + NUL */
#define KH_IPV4_STRLEN 16
#define KH_IPV6_STRLEN 46 /* INET6_ADDRSTRLEN */

/* "52:54:00:ab:cd:ef" (either case) -> 6 bytes. Refuses multicast (bit 0 of
 * the first octet), all-zero and anything not six two-digit hex groups. */
int kh_inet_mac_parse(const char *s, uint8_t mac[6], const char *what, kh_err *err);
/* Lowercase text form into out[KH_MAC_STRLEN]. */
void kh_inet_mac_format(const uint8_t mac[6], char out[KH_MAC_STRLEN]);
/* A stable MAC for NIC `index` of VM `vm_id`, salted by `attempt` (bump it
 * on a collision): 52:54:00 (QEMU's OUI) + 3 bytes of FNV-1a hash. */
void kh_inet_mac_generate(const char *vm_id, unsigned index, unsigned attempt,
                          char out[KH_MAC_STRLEN]);

/* Dotted quad -> host-order address. Exactly four decimal octets, no
 * leading zeros (they read as octal elsewhere). */
int kh_inet_ipv4_parse(const char *s, uint32_t *addr, const char *what, kh_err *err);
void kh_inet_ipv4_format(uint32_t addr, char out[KH_IPV4_STRLEN]);
/* "10.0.0.0/24": a network address (host bits zero) and a prefix from
 * min_prefix to max_prefix. */
int kh_inet_cidr_parse(const char *s, uint32_t *net, unsigned *prefix, unsigned min_prefix,
                       unsigned max_prefix, const char *what, kh_err *err);
uint32_t kh_inet_mask(unsigned prefix);
/* "2001:db8::/32", "::/0": an IPv6 network (inet_pton's text, host bits
 * zero) and a prefix from 0 to 128. */
int kh_inet_cidr6_parse(const char *s, uint8_t net[16], unsigned *prefix, const char *what,
                        kh_err *err);
/* Compressed text form (inet_ntop) into out[KH_IPV6_STRLEN]. */
void kh_inet_ipv6_format(const uint8_t addr[16], char out[KH_IPV6_STRLEN]);
/* Do a/pa and b/pb share any address? */
bool kh_inet_cidr_overlap(uint32_t a, unsigned pa, uint32_t b, unsigned pb);

#endif
