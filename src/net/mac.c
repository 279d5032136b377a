/* mac.c - owns the allocation of NIC MAC addresses: stable per VM id and
 * NIC index, bumped past the ones already taken on this host. */
#include "net/mac.h"

void kh_mac_pick(const char *vm_id, unsigned index, kh_mac_taken_fn taken, void *opaque,
                 char out[KH_MAC_STRLEN])
{
    unsigned attempt = 0;
    do
        kh_inet_mac_generate(vm_id, index, attempt++, out);
    while (taken(out, opaque) && attempt < 1000);
}
