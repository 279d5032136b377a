/* mirror.c - the cluster view kept in SQLite (tables cluster_mirror and
 * cluster_mirror_rev of schema.c, migration 14): every key of etcd's
 * /kvmhost/hosts/ and /kvmhost/vms/ as the watches last saw it, and the
 * revision each prefix was mirrored at.
 *
 * A restarted daemon loads it into its caches before etcd answers (so it
 * serves the cluster-wide reads even without quorum), then watches each
 * prefix from the revision after the mirrored one: what changed while it
 * was down arrives as watch events, and no re-listing is needed. Only when
 * etcd compacted that revision away (or nothing was mirrored) does the
 * tick list the prefix again and replace its rows.
 */
#include "cluster/cluster_int.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/mem.h"

static void warn(const char *what, const kh_err *err)
{
    kh_log(KH_LOG_WARN, "cluster.mirror", "what=%s error=\"%s\"", what, err->msg);
}

static int set_rev(kh_cluster *c, const char *prefix, int64_t rev, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(c->store, "INSERT OR REPLACE INTO cluster_mirror_rev "
                                              "(prefix, revision) VALUES (?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, rev);
    return kh_store_step_done(c->store, s, "saving the mirror's revision", err);
}

void kh_cluster_mirror_event(kh_cluster *c, const char *prefix, const kh_etcd_kv *kv, bool put)
{
    kh_err err = KH_ERR_INIT;
    sqlite3_stmt *s = kh_store_prep(c->store, put ? "INSERT OR REPLACE INTO cluster_mirror "
                                                    "(key, value) VALUES (?, ?)"
                                                  : "DELETE FROM cluster_mirror WHERE key = ?",
                                    &err);
    if (!s) {
        warn("event", &err);
        return;
    }
    sqlite3_bind_text(s, 1, kv->key, -1, SQLITE_STATIC);
    if (put)
        sqlite3_bind_blob(s, 2, kv->value, (int)kv->value_len, SQLITE_STATIC);
    if (kh_store_step_done(c->store, s, "mirroring a key", &err) < 0 ||
        set_rev(c, prefix, kv->mod_revision, &err) < 0)
        warn("event", &err);
}

void kh_cluster_mirror_replace(kh_cluster *c, const char *prefix, const kh_etcd_kvs *kvs)
{
    kh_err err = KH_ERR_INIT;
    if (kh_store_begin(c->store, &err) < 0) {
        warn("replace", &err);
        return;
    }
    sqlite3_stmt *s = kh_store_prep(c->store, "DELETE FROM cluster_mirror WHERE "
                                              "substr(key, 1, length(?1)) = ?1", &err);
    int rc = s ? 0 : -1;
    if (s) {
        sqlite3_bind_text(s, 1, prefix, -1, SQLITE_STATIC);
        rc = kh_store_step_done(c->store, s, "clearing the mirror", &err);
    }
    for (size_t i = 0; i < kvs->n && rc == 0; i++) {
        s = kh_store_prep(c->store, "INSERT OR REPLACE INTO cluster_mirror (key, value) "
                                    "VALUES (?, ?)", &err);
        if (!s) {
            rc = -1;
            break;
        }
        sqlite3_bind_text(s, 1, kvs->kv[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 2, kvs->kv[i].value, (int)kvs->kv[i].value_len, SQLITE_STATIC);
        rc = kh_store_step_done(c->store, s, "mirroring a key", &err);
    }
    if (rc == 0)
        rc = set_rev(c, prefix, kvs->revision, &err);
    if (rc == 0 && kh_store_commit(c->store, &err) == 0)
        return;
    kh_store_rollback(c->store);
    warn("replace", &err);
}

int64_t kh_cluster_mirror_load(kh_cluster *c, const char *prefix,
                               void (*apply)(kh_cluster *c, const kh_etcd_kv *kv))
{
    kh_err err = KH_ERR_INIT;
    sqlite3_stmt *s = kh_store_prep(c->store, "SELECT revision FROM cluster_mirror_rev WHERE "
                                              "prefix = ?", &err);
    if (!s) {
        warn("load", &err);
        return 0;
    }
    sqlite3_bind_text(s, 1, prefix, -1, SQLITE_STATIC);
    int64_t rev = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_finalize(s);
    if (!rev)
        return 0;
    s = kh_store_prep(c->store, "SELECT key, value FROM cluster_mirror WHERE "
                                "substr(key, 1, length(?1)) = ?1", &err);
    if (!s) {
        warn("load", &err);
        return 0;
    }
    sqlite3_bind_text(s, 1, prefix, -1, SQLITE_STATIC);
    size_t n = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        const unsigned char *key = sqlite3_column_text(s, 0);
        const void *value = sqlite3_column_blob(s, 1);
        size_t len = (size_t)sqlite3_column_bytes(s, 1);
        if (!key || !value)
            continue;
        kh_etcd_kv kv = { .key = xstrdup((const char *)key), .value = xmalloc(len + 1),
                          .value_len = len };
        memcpy(kv.value, value, len);
        kv.value[len] = '\0';
        apply(c, &kv);
        kh_etcd_kv_clear(&kv);
        n++;
    }
    sqlite3_finalize(s);
    kh_log(KH_LOG_INFO, "cluster.mirror", "prefix=%s keys=%zu revision=%lld", prefix, n,
           (long long)rev);
    return rev;
}

void kh_cluster_mirror_clear(kh_cluster *c)
{
    kh_err err = KH_ERR_INIT;
    if (kh_store_exec(c->store, "DELETE FROM cluster_mirror; DELETE FROM cluster_mirror_rev;",
                      &err) < 0)
        warn("clear", &err);
}
