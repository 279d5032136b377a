/* schema.c - the cluster module's table: cluster (this host's membership,
 * one row or none), and the mirror of the cluster's state (mirror.c). Pure data, compiled into the store library and
 * registered in store/migrations.c. */
#include "store/migrations.h"

/* 11: the cluster this host belongs to (no row: a single host). */
const char kh_cluster_schema_config[] =
    "CREATE TABLE IF NOT EXISTS cluster ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  name TEXT NOT NULL,"
    "  cluster_id TEXT NOT NULL,"
    "  host_id TEXT NOT NULL,"
    "  mode TEXT NOT NULL,"
    "  initial_cluster TEXT,"
    "  endpoints TEXT NOT NULL,"
    "  created_at REAL NOT NULL"
    ");";

/* 14: the mirror of etcd's /kvmhost/hosts/ and /kvmhost/vms/ (the cluster
 * view this host serves reads from), with the revision each prefix was
 * mirrored at: a restarted daemon loads it and watches from the next one. */
const char kh_cluster_schema_mirror[] =
    "CREATE TABLE IF NOT EXISTS cluster_mirror ("
    "  key TEXT PRIMARY KEY,"
    "  value BLOB NOT NULL"
    ");"
    "CREATE TABLE IF NOT EXISTS cluster_mirror_rev ("
    "  prefix TEXT PRIMARY KEY,"
    "  revision INTEGER NOT NULL"
    ");";
