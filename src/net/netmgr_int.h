/* netmgr_int.h - what netmgr.c (networks) and netmgr_sg.c (security
 * groups) share: the network manager's state. Private to src/net. */
#ifndef KH_NET_NETMGR_INT_H
#define KH_NET_NETMGR_INT_H

#include <jansson.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <uv.h>

#include "net/netmgr.h"
#include "net/network.h"
#include "net/secgroup.h"

typedef struct net_rt net_rt;

struct net_rt {
    kh_netmgr *nm;
    kh_network *n;
    char *dir;             /* STATE_DIR/networks/<id> */
    pid_t dns_pid;
    int dns_pidfd;
    uv_poll_t *dns_poll;
    uv_timer_t *dns_timer; /* restart delay */
    uint64_t dns_started_ms;
    unsigned dns_quick_deaths;
    char *hosts;           /* the hosts file as last written */
    json_t *leases;        /* dnsmasq's lease file, parsed (NULL: not read yet) */
    struct timespec leases_mtime; /* ... as it was when parsed: */
    off_t leases_size;     /* reread only when it changed */
    net_rt *next;
};

struct kh_netmgr {
    uv_loop_t *loop;
    kh_store *store;
    char *state_dir;
    char owner[9];         /* marks our bridges: hash of the state dir */
    char table[64];        /* our nftables tables' name (per daemon instance) */
    net_rt *nets;
    kh_net_binding *binds;
    size_t nbinds;
    kh_secgroup **groups;
    size_t ngroups;
};

/* Render and load our nftables tables from the networks, bindings and
 * security groups as they are now (one transaction). */
int kh_netmgr_apply_nft(kh_netmgr *nm, kh_err *err);

#endif
