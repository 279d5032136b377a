/* tap.c - owns the naming of VM NIC taps (kh + the MAC's hex digits). */
#include "net/tap.h"

#include <stddef.h>

void kh_tap_name(const char *mac, char out[16])
{
    size_t k = 0;
    out[k++] = 'k';
    out[k++] = 'h';
    for (const char *p = mac; p && *p && k < 15; p++)
        if (*p != ':')
            out[k++] = *p;
    out[k] = '\0';
}
