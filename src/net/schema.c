/* schema.c - the network manager's tables: networks and security_groups.
 * Pure data, compiled into the store library and registered in
 * store/migrations.c. */
#include "store/migrations.h"

/* 3: networks; spec is the stored JSON form. */
const char kh_net_schema_networks[] =
    "CREATE TABLE networks ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  spec TEXT NOT NULL,"
    "  created_at REAL NOT NULL"
    ");";

/* 4: security groups, by name; spec is the stored JSON. */
const char kh_net_schema_security_groups[] =
    "CREATE TABLE security_groups ("
    "  name TEXT PRIMARY KEY,"
    "  spec TEXT NOT NULL,"
    "  created_at REAL NOT NULL"
    ");";

/* 7: security groups filter IPv6 too, and a rule's cidr now names its
 * family. Until now a rule without a cidr was stored as "0.0.0.0/0" (specs
 * are compact with sorted keys, so "cidr" is followed by "direction"); those
 * rules meant "anywhere" while IPv6 was not filtered at all, so they become
 * rules without a cidr (both families) rather than IPv4-only ones. */
const char kh_net_schema_sg_cidr_any[] =
    "UPDATE security_groups SET spec = replace(spec, '\"cidr\":\"0.0.0.0/0\",', '');";
