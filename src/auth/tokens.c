/* tokens.c - API tokens of users ("user!name"): the secret is shown once,
 * only its SHA-256 is stored (it is 32 random bytes, so a fast hash is
 * enough); expiry and revocation (see auth.h). */
#include "auth/auth.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "util/mem.h"
#include "util/misc.h"

#define SECRET_BYTES 32

static void sha256_hex(const char *s, size_t len, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)s, len);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

int kh_tokens_create(kh_store *st, const char *user, const char *name, double expires_at,
                     const char *comment, char *out, size_t outsz, kh_err *err)
{
    if (!kh_privs_name_ok(name)) {
        kh_err_set(err, KH_E_INVALID, "token names are letters, digits, '_', '.', '-' "
                   "(not first), at most 64");
        return -1;
    }
    if (!kh_users_enabled(st, user)) {
        kh_err_set(err, KH_E_NOTFOUND, "no such user \"%s\"", user);
        return -1;
    }
    unsigned char raw[SECRET_BYTES];
    char hex[2 * SECRET_BYTES + 1];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(hex, sizeof(hex), raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    int n = snprintf(out, outsz, "%s!%s:%s", user, name, hex);
    if (n < 0 || (size_t)n >= outsz) {
        kh_err_set(err, KH_E_INTERNAL, "token buffer too small");
        return -1;
    }
    char h[65];
    sha256_hex(hex, strlen(hex), h);
    sodium_memzero(hex, sizeof(hex));
    sqlite3_stmt *s = kh_store_prep(st, "INSERT INTO auth_tokens (user, name, hash, expires_at, "
                                    "comment, created_at) VALUES (?, ?, ?, ?, ?, ?)", err);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, h, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 4, expires_at);
    kh_store_bind_text(s, 5, comment);
    sqlite3_bind_double(s, 6, kh_wall_time());
    int rc = kh_store_step_done(st, s, "adding a token", err);
    if (rc < 0 && err && err->code == KH_E_CONFLICT) {
        kh_err_clear(err);
        kh_err_set(err, KH_E_CONFLICT, "token \"%s!%s\" exists", user, name);
    }
    if (rc < 0)
        sodium_memzero(out, outsz);
    return rc;
}

int kh_tokens_delete(kh_store *st, const char *user, const char *name, kh_err *err)
{
    if (kh_store_begin(st, err) < 0)
        return -1;
    char *subj = xasprintf("%s!%s", user, name);
    sqlite3_stmt *s = kh_store_prep(st, "DELETE FROM auth_tokens WHERE user = ? AND name = ?",
                                    err);
    int rc = -1;
    if (s) {
        sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
        rc = kh_store_step_done(st, s, "revoking a token", err);
    }
    if (rc == 0 && sqlite3_changes(kh_store_sqlite(st)) == 0) {
        kh_err_set(err, KH_E_NOTFOUND, "no such token \"%s\"", subj);
        rc = -1;
    }
    if (rc == 0) {
        s = kh_store_prep(st, "DELETE FROM auth_acl WHERE subject = ?", err);
        rc = -1;
        if (s) {
            sqlite3_bind_text(s, 1, subj, -1, SQLITE_TRANSIENT);
            rc = kh_store_step_done(st, s, "deleting a token's ACL entries", err);
        }
    }
    free(subj);
    if (rc < 0) {
        kh_store_rollback(st);
        return -1;
    }
    return kh_store_commit(st, err);
}

json_t *kh_tokens_json(kh_store *st, const char *user, kh_err *err)
{
    sqlite3_stmt *s = kh_store_prep(st, "SELECT name, expires_at, comment, created_at FROM "
                                    "auth_tokens WHERE user = ? ORDER BY name", err);
    if (!s)
        return NULL;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    json_t *a = json_array();
    double now = kh_wall_time();
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *n = (const char *)sqlite3_column_text(s, 0);
        double exp = sqlite3_column_double(s, 1);
        char *id = xasprintf("%s!%s", user, n);
        json_t *t = json_pack("{s:s,s:s,s:s,s:f,s:b}", "id", id, "user", user, "name", n,
                              "created_at", sqlite3_column_double(s, 3), "expired",
                              exp > 0 && exp <= now);
        free(id);
        json_object_set_new(t, "expires_at", exp > 0 ? json_real(exp) : json_null());
        const char *c = (const char *)sqlite3_column_text(s, 2);
        if (c)
            json_object_set_new(t, "comment", json_string(c));
        json_array_append_new(a, t);
    }
    sqlite3_finalize(s);
    return a;
}

bool kh_tokens_verify(kh_store *st, const char *secret, double now, char *out, size_t outsz,
                      const char **why)
{
    *why = "unknown or revoked token";
    const char *bang = strchr(secret, '!');
    const char *colon = bang ? strchr(bang, ':') : NULL;
    if (!bang || !colon || (size_t)(colon - secret) >= outsz || (size_t)(colon - secret) >=
        2 * KH_AUTH_NAME_MAX + 2)
        return false;
    char user[KH_AUTH_NAME_MAX + 1], name[KH_AUTH_NAME_MAX + 1];
    size_t ul = (size_t)(bang - secret), nl = (size_t)(colon - bang - 1);
    if (ul > KH_AUTH_NAME_MAX || nl > KH_AUTH_NAME_MAX)
        return false;
    memcpy(user, secret, ul);
    user[ul] = '\0';
    memcpy(name, bang + 1, nl);
    name[nl] = '\0';
    if (!kh_privs_name_ok(user) || !kh_privs_name_ok(name))
        return false;
    char h[65];
    sha256_hex(colon + 1, strlen(colon + 1), h);
    sqlite3_stmt *s = kh_store_prep(st, "SELECT t.hash, t.expires_at, u.enabled FROM "
                                    "auth_tokens t JOIN auth_users u ON u.name = t.user "
                                    "WHERE t.user = ? AND t.name = ?", NULL);
    if (!s)
        return false;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    bool ok = false;
    if (sqlite3_step(s) == SQLITE_ROW) {
        const char *want = (const char *)sqlite3_column_text(s, 0);
        double exp = sqlite3_column_double(s, 1);
        bool match = want && strlen(want) == 64 && sodium_memcmp(want, h, 64) == 0;
        if (match && exp > 0 && exp <= now)
            *why = "token expired";
        else if (match && !sqlite3_column_int(s, 2))
            *why = "user disabled";
        else if (match)
            ok = true;
    }
    sqlite3_finalize(s);
    if (ok)
        snprintf(out, outsz, "%s!%s", user, name);
    return ok;
}
