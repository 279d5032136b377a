/* dnsmasq.h - one dnsmasq per network: its config, hosts and leases.
 *
 * Pure parts (tested): the config text, the dhcp-hostsfile text and the
 * lease-file parser. The process itself is run and supervised by
 * net/netmgr.c.
 */
#ifndef KH_NET_DNSMASQ_H
#define KH_NET_DNSMASQ_H

#include <jansson.h>
#include <stddef.h>

#include "net/network.h"

#define KH_DNSMASQ_BINARY "/usr/sbin/dnsmasq"

/* A static DHCP reservation: mac -> ip (and the VM's name as hostname). */
typedef struct kh_dhcp_host {
    const char *mac;
    const char *ip;
    const char *name;
} kh_dhcp_host;

/* dnsmasq.conf for a nat/isolated network whose files live in dir. */
char *kh_dnsmasq_conf(const kh_network *n, const char *dir);
/* The dhcp-hostsfile ("mac,ip,name" per line). */
char *kh_dnsmasq_hosts(const kh_dhcp_host *hosts, size_t n);
/* Parse a lease file's text into [{"expires":T,"mac":..,"ip":..,"hostname":..}]
 * (malformed lines are skipped). */
json_t *kh_dnsmasq_leases_parse(const char *text);

#endif
