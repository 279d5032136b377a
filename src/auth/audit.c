/* audit.c - the audit log: one row per write and per login attempt, in an
 * append-only table (triggers refuse UPDATE and DELETE; see schema.c), and
 * the KH-Forwarded header that carries a caller's name to the host a request
 * is forwarded to. */
#include "auth/auth.h"

#include <ctype.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "util/mem.h"

int kh_audit_add(kh_store *st, const kh_audit_entry *e, double at, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "INSERT INTO auth_audit (at, principal, address, "
                                    "method, path, object, status, detail) VALUES "
                                    "(?, ?, ?, ?, ?, ?, ?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_double(s, 1, at);
    kh_store_bind_text(s, 2, e->principal);
    kh_store_bind_text(s, 3, e->address);
    kh_store_bind_text(s, 4, e->method ? e->method : "?");
    kh_store_bind_text(s, 5, e->path ? e->path : "?");
    kh_store_bind_text(s, 6, e->object);
    sqlite3_bind_int(s, 7, (int)e->status);
    kh_store_bind_text(s, 8, e->detail);
    return kh_store_step_done(st, s, "writing the audit log", err);
}

static void set_opt(json_t *o, const char *key, sqlite3_stmt *s, int col)
{
    const char *v = (const char *)sqlite3_column_text(s, col);
    json_object_set_new(o, key, v ? json_string(v) : json_null());
}

json_t *kh_audit_query(kh_store *st, const kh_audit_filter *f, kh_err *err)
{
    unsigned limit = f->limit ? f->limit : 100;
    if (limit > 1000)
        limit = 1000;
    sqlite3_stmt *s = kh_store_prep(
        st, "SELECT id, at, principal, address, method, path, object, status, detail "
            "FROM auth_audit WHERE (?1 IS NULL OR principal = ?1) AND (?2 IS NULL OR method = ?2) "
            "AND (?3 IS NULL OR substr(path, 1, length(?3)) = ?3) AND (?4 IS NULL OR object = ?4) "
            "AND status >= ?5 AND status <= ?6 AND at >= ?7 AND (?8 = 0 OR at <= ?8) "
            "AND (?9 = 0 OR id < ?9) ORDER BY id DESC LIMIT ?10", err);
    if (!s)
        return NULL;
    kh_store_bind_text(s, 1, f->principal);
    kh_store_bind_text(s, 2, f->method);
    kh_store_bind_text(s, 3, f->path_prefix);
    kh_store_bind_text(s, 4, f->object);
    sqlite3_bind_int(s, 5, (int)f->status_min);
    sqlite3_bind_int(s, 6, f->status_max ? (int)f->status_max : 999);
    sqlite3_bind_double(s, 7, f->since);
    sqlite3_bind_double(s, 8, f->until);
    sqlite3_bind_int64(s, 9, f->before_id);
    sqlite3_bind_int(s, 10, (int)limit + 1);
    json_t *a = json_array();
    json_t *next = json_null();
    int rc;
    unsigned n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n++ == limit) {
            json_decref(next);
            next = json_integer((json_int_t)json_integer_value(
                json_object_get(json_array_get(a, limit - 1), "id")));
            break;
        }
        json_t *o = json_pack("{s:I,s:f,s:s,s:s,s:i}", "id",
                              (json_int_t)sqlite3_column_int64(s, 0), "at",
                              sqlite3_column_double(s, 1), "method",
                              (const char *)sqlite3_column_text(s, 4), "path",
                              (const char *)sqlite3_column_text(s, 5), "status",
                              sqlite3_column_int(s, 7));
        set_opt(o, "principal", s, 2);
        set_opt(o, "address", s, 3);
        set_opt(o, "object", s, 6);
        set_opt(o, "detail", s, 8);
        json_array_append_new(a, o);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        json_decref(a);
        json_decref(next);
        kh_store_db_error(st, err, "reading the audit log");
        return NULL;
    }
    return json_pack("{s:o,s:o}", "entries", a, "next_before", next);
}

/* A principal as the auth layer names them: user, realm, token name. */
static bool principal_ok(const char *p)
{
    if (!p || !*p || strlen(p) > 128)
        return false;
    for (; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("@._!:+-", *p))
            return false;
    return true;
}

char *kh_audit_forwarded_header(const char *host, const char *principal)
{
    if (!principal_ok(host))
        host = "?";
    if (principal_ok(principal))
        return xasprintf("KH-Forwarded: for=%s; host=%s", principal, host);
    return xasprintf("KH-Forwarded: host=%s", host);
}

bool kh_audit_forwarded_for(const char *value, char *out, size_t outsz)
{
    char who[129] = "", host[129] = "";
    for (const char *p = value; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        const char *eq = strchr(p, '=');
        if (!eq)
            break;
        size_t klen = (size_t)(eq - p), vlen = strcspn(eq + 1, ";");
        char *dst = klen == 3 && strncmp(p, "for", 3) == 0    ? who
                    : klen == 4 && strncmp(p, "host", 4) == 0 ? host
                                                              : NULL;
        if (dst && vlen < sizeof(who)) {
            memcpy(dst, eq + 1, vlen);
            dst[vlen] = '\0';
        }
        p = eq + 1 + vlen;
    }
    if (!principal_ok(who))
        return false;
    snprintf(out, outsz, "%s via %s", who, principal_ok(host) ? host : "?");
    return true;
}
