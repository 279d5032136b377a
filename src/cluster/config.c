/* config.c - this host's cluster configuration in SQLite (the `cluster`
 * table of schema.c): what a restarted daemon needs to rejoin. */
#include "cluster/cluster_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

static void col(sqlite3_stmt *s, int i, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

static char *col_dup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? xstrdup((const char *)t) : NULL;
}

int kh_cluster_conf_load(kh_store *st, kh_cluster_conf *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *s = kh_store_prep(st, "SELECT name, cluster_id, host_id, mode, "
                                        "initial_cluster, endpoints, created_at FROM cluster "
                                        "WHERE id = 1", err);
    if (!s)
        return -1;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        col(s, 0, out->name, sizeof(out->name));
        col(s, 1, out->cluster_id, sizeof(out->cluster_id));
        col(s, 2, out->host_id, sizeof(out->host_id));
        col(s, 3, out->mode, sizeof(out->mode));
        out->initial_cluster = col_dup(s, 4);
        out->endpoints = col_dup(s, 5);
        out->created_at = sqlite3_column_double(s, 6);
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return kh_store_db_error(st, err, "reading the cluster configuration");
}

int kh_cluster_conf_save(kh_store *st, const kh_cluster_conf *c, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "INSERT OR REPLACE INTO cluster (id, name, cluster_id, "
                                        "host_id, mode, initial_cluster, endpoints, created_at) "
                                        "VALUES (1, ?, ?, ?, ?, ?, ?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, c->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, c->cluster_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, c->host_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, c->mode, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 5, c->initial_cluster, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 6, c->endpoints ? c->endpoints : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 7, c->created_at);
    return kh_store_step_done(st, s, "saving the cluster configuration", err);
}

int kh_cluster_conf_clear(kh_store *st, kh_err *err)
{
    return kh_store_exec(st, "DELETE FROM cluster", err);
}

void kh_cluster_conf_fini(kh_cluster_conf *c)
{
    free(c->initial_cluster);
    free(c->endpoints);
    memset(c, 0, sizeof(*c));
}
