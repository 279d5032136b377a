/* mac.h - MAC addresses for VM NICs. */
#ifndef KH_NET_MAC_H
#define KH_NET_MAC_H

#include <stdbool.h>

#include "util/inet.h"

/* Is mac taken (by another NIC on this host)? */
typedef bool (*kh_mac_taken_fn)(const char *mac, void *opaque);

/* A stable MAC for NIC `index` of VM `vm_id` that taken() refuses not
 * (after 1000 tries, the last one tried) into out. */
void kh_mac_pick(const char *vm_id, unsigned index, kh_mac_taken_fn taken, void *opaque,
                 char out[KH_MAC_STRLEN]);

#endif
