/* netdb.h - the network manager's rows in the store: networks and security
 * groups (tables declared in net/schema.c). The SQL lives here, on the
 * store's statement helpers (store/store.h); every SQLite result is
 * checked and a failure is KH_E_INTERNAL (a full disk KH_E_UNAVAILABLE).
 */
#ifndef KH_NET_NETDB_H
#define KH_NET_NETDB_H

#include "store/store.h"
#include "util/err.h"

/* A network: the spec is its stored JSON. */
typedef struct kh_netdb_row {
    char id[37];
    char *name;
    char *spec_json;
    double created_at;
} kh_netdb_row;

/* Insert, or replace the spec of an existing id. */
int kh_netdb_network_put(kh_store *st, const kh_netdb_row *row, kh_err *err);
int kh_netdb_network_delete(kh_store *st, const char *id, kh_err *err);
/* Every network, oldest first; the row is valid during the call. A
 * negative return from cb stops the walk with KH_E_INTERNAL. */
int kh_netdb_network_foreach(kh_store *st, int (*cb)(const kh_netdb_row *row, void *opaque),
                             void *opaque, kh_err *err);

/* Security groups, by name: insert, or replace the spec of an existing one. */
int kh_netdb_secgroup_put(kh_store *st, const char *name, const char *spec_json,
                          double created_at, kh_err *err);
int kh_netdb_secgroup_delete(kh_store *st, const char *name, kh_err *err);
/* Every group in name order (as kh_netdb_network_foreach). */
int kh_netdb_secgroup_foreach(kh_store *st,
                              int (*cb)(const char *name, const char *spec_json,
                                        double created_at, void *opaque),
                              void *opaque, kh_err *err);

#endif
