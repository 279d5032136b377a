/* netdb.c - owns the SQL of the network manager's rows (networks and
 * security_groups, whose schema is net/schema.c), on the store's statement
 * helpers. */
#include "net/netdb.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bind created_at, or finalize the statement and fail. */
static int bind_time(kh_store *st, sqlite3_stmt *stmt, int i, double t, const char *what,
                     kh_err *err)
{
    if (sqlite3_bind_double(stmt, i, t) == SQLITE_OK)
        return 0;
    kh_store_db_error(st, err, what);
    sqlite3_finalize(stmt);
    return -1;
}

/* DELETE FROM ... WHERE key = ? */
static int delete_by(kh_store *st, const char *sql, const char *key, const char *what,
                     kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st, sql, err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, key);
    return kh_store_step_done(st, stmt, what, err);
}

/* Step stmt to its end, calling row_fn for each row; a negative return
 * from row_fn stops with "loading <what>". Finalizes stmt. */
static int walk(kh_store *st, sqlite3_stmt *stmt, int (*row_fn)(sqlite3_stmt *s, void *ctx),
                void *ctx, const char *what, kh_err *err)
{
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (row_fn(stmt, ctx) < 0) {
            sqlite3_finalize(stmt);
            kh_err_set(err, KH_E_INTERNAL, "loading %s", what);
            return -1;
        }
    }
    if (rc != SQLITE_DONE) {
        char msg[64];
        snprintf(msg, sizeof(msg), "reading %s", what);
        kh_store_db_error(st, err, msg);
        sqlite3_finalize(stmt);
        return -1;
    }
    sqlite3_finalize(stmt);
    return 0;
}

/* ---- networks ---- */

int kh_netdb_network_put(kh_store *st, const kh_netdb_row *row, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
                                       "INSERT INTO networks (id, name, spec, created_at) "
                                       "VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                                       "spec = excluded.spec",
                                       err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, row->id);
    kh_store_bind_text(stmt, 2, row->name);
    kh_store_bind_text(stmt, 3, row->spec_json);
    if (bind_time(st, stmt, 4, row->created_at, "saving network", err) < 0)
        return -1;
    return kh_store_step_done(st, stmt, "saving network", err);
}

int kh_netdb_network_delete(kh_store *st, const char *id, kh_err *err)
{
    return delete_by(st, "DELETE FROM networks WHERE id = ?", id, "deleting network", err);
}

typedef struct net_walk {
    int (*cb)(const kh_netdb_row *row, void *opaque);
    void *opaque;
} net_walk;

static int net_row(sqlite3_stmt *s, void *ctx)
{
    const net_walk *w = ctx;
    kh_netdb_row row;
    memset(&row, 0, sizeof(row));
    const unsigned char *id = sqlite3_column_text(s, 0);
    snprintf(row.id, sizeof(row.id), "%s", id ? (const char *)id : "");
    row.name = kh_store_col_text(s, 1);
    row.spec_json = kh_store_col_text(s, 2);
    row.created_at = sqlite3_column_double(s, 3);
    int r = w->cb(&row, w->opaque);
    free(row.name);
    free(row.spec_json);
    return r;
}

int kh_netdb_network_foreach(kh_store *st, int (*cb)(const kh_netdb_row *row, void *opaque),
                             void *opaque, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
                                       "SELECT id, name, spec, created_at FROM networks "
                                       "ORDER BY created_at, name",
                                       err);
    if (!stmt)
        return -1;
    net_walk w = { cb, opaque };
    return walk(st, stmt, net_row, &w, "networks", err);
}

/* ---- security groups ---- */

int kh_netdb_secgroup_put(kh_store *st, const char *name, const char *spec_json,
                          double created_at, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
                                       "INSERT INTO security_groups (name, spec, created_at) "
                                       "VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                                       "spec = excluded.spec",
                                       err);
    if (!stmt)
        return -1;
    kh_store_bind_text(stmt, 1, name);
    kh_store_bind_text(stmt, 2, spec_json);
    if (bind_time(st, stmt, 3, created_at, "saving security group", err) < 0)
        return -1;
    return kh_store_step_done(st, stmt, "saving security group", err);
}

int kh_netdb_secgroup_delete(kh_store *st, const char *name, kh_err *err)
{
    return delete_by(st, "DELETE FROM security_groups WHERE name = ?", name,
                     "deleting security group", err);
}

typedef struct sg_walk {
    int (*cb)(const char *name, const char *spec_json, double created_at, void *opaque);
    void *opaque;
} sg_walk;

static int sg_row(sqlite3_stmt *s, void *ctx)
{
    const sg_walk *w = ctx;
    const unsigned char *name = sqlite3_column_text(s, 0);
    const unsigned char *spec = sqlite3_column_text(s, 1);
    return w->cb(name ? (const char *)name : "", spec ? (const char *)spec : "{}",
                 sqlite3_column_double(s, 2), w->opaque);
}

int kh_netdb_secgroup_foreach(kh_store *st,
                              int (*cb)(const char *name, const char *spec_json,
                                        double created_at, void *opaque),
                              void *opaque, kh_err *err)
{
    sqlite3_stmt *stmt = kh_store_prep(st,
                                       "SELECT name, spec, created_at FROM security_groups "
                                       "ORDER BY name",
                                       err);
    if (!stmt)
        return -1;
    sg_walk w = { cb, opaque };
    return walk(st, stmt, sg_row, &w, "security groups", err);
}
