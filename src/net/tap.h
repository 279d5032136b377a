/* tap.h - the names of the taps of VM NICs. */
#ifndef KH_NET_TAP_H
#define KH_NET_TAP_H

/* The tap of the NIC with this MAC: "kh" + its 12 hex digits (unique on the
 * host, within IFNAMSIZ, and stable when other NICs come and go). */
void kh_tap_name(const char *mac, char out[16]);

#endif
