/* session.c - browser sessions for the TCP listener (see session.h). */
#include "api/session.h"

#include <string.h>
#include <stdio.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "util/mem.h"

#define SESSIONS_DEFAULT_MAX 128u
#define SESSIONS_DEFAULT_IDLE_MS (8ull * 3600 * 1000)
#define SESSIONS_DEFAULT_AGE_MS (24ull * 3600 * 1000)

typedef struct session {
    bool used;
    unsigned char id_hash[32];
    char csrf[KH_SESSION_HEX + 1];
    char principal[KH_SESSION_PRINCIPAL_MAX]; /* who logged in ("" = root@local) */
    uint64_t created_ms, last_ms;
} session;

struct kh_sessions {
    session *s;
    unsigned max;
    uint64_t idle_ms, max_age_ms;
};

kh_sessions *kh_sessions_new(unsigned max, uint64_t idle_ms, uint64_t max_age_ms)
{
    kh_sessions *t = xcalloc(1, sizeof(*t));
    t->max = max ? max : SESSIONS_DEFAULT_MAX;
    t->idle_ms = idle_ms ? idle_ms : SESSIONS_DEFAULT_IDLE_MS;
    t->max_age_ms = max_age_ms ? max_age_ms : SESSIONS_DEFAULT_AGE_MS;
    t->s = xcalloc(t->max, sizeof(*t->s));
    return t;
}

void kh_sessions_free(kh_sessions *t)
{
    if (!t)
        return;
    OPENSSL_cleanse(t->s, t->max * sizeof(*t->s));
    free(t->s);
    free(t);
}

static bool live(const kh_sessions *t, const session *s, uint64_t now)
{
    return s->used && now - s->last_ms < t->idle_ms && now - s->created_ms < t->max_age_ms &&
           now >= s->created_ms;
}

static void hash_id(const char *id, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    if (!EVP_Digest(id, len, out, &n, EVP_sha256(), NULL) || n != 32)
        memset(out, 0xff, 32);
}

static int random_hex(char out[KH_SESSION_HEX + 1])
{
    unsigned char raw[KH_SESSION_HEX / 2];
    if (RAND_bytes(raw, (int)sizeof(raw)) != 1)
        return -1;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[KH_SESSION_HEX] = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));
    return 0;
}

int kh_sessions_create(kh_sessions *t, uint64_t now_ms, char id[KH_SESSION_HEX + 1],
                       char csrf[KH_SESSION_HEX + 1], kh_err *err)
{
    session *slot = NULL;
    for (unsigned i = 0; i < t->max; i++) {
        session *s = &t->s[i];
        if (s->used && !live(t, s, now_ms))
            memset(s, 0, sizeof(*s));
        if (!s->used) {
            if (!slot)
                slot = s;
        }
    }
    if (!slot) { /* full of live sessions: the least recently used goes */
        slot = &t->s[0];
        for (unsigned i = 1; i < t->max; i++)
            if (t->s[i].last_ms < slot->last_ms)
                slot = &t->s[i];
    }
    if (random_hex(id) != 0 || random_hex(csrf) != 0) {
        kh_err_set(err, KH_E_INTERNAL, "no random bytes for a session");
        return -1;
    }
    memset(slot, 0, sizeof(*slot));
    slot->used = true;
    hash_id(id, KH_SESSION_HEX, slot->id_hash);
    memcpy(slot->csrf, csrf, KH_SESSION_HEX + 1);
    slot->created_ms = slot->last_ms = now_ms;
    return 0;
}

static session *find(kh_sessions *t, const char *id, uint64_t now_ms)
{
    if (!id || strlen(id) != KH_SESSION_HEX)
        return NULL;
    unsigned char h[32];
    hash_id(id, KH_SESSION_HEX, h);
    session *hit = NULL;
    for (unsigned i = 0; i < t->max; i++) {
        session *s = &t->s[i];
        /* Compare every slot, so the time does not tell which one matched. */
        if (s->used && CRYPTO_memcmp(s->id_hash, h, 32) == 0 && live(t, s, now_ms))
            hit = s;
    }
    return hit;
}

const char *kh_sessions_lookup(kh_sessions *t, const char *id, uint64_t now_ms)
{
    session *s = find(t, id, now_ms);
    if (!s)
        return NULL;
    s->last_ms = now_ms;
    return s->csrf;
}

bool kh_sessions_remove(kh_sessions *t, const char *id)
{
    if (!id || strlen(id) != KH_SESSION_HEX)
        return false;
    unsigned char h[32];
    hash_id(id, KH_SESSION_HEX, h);
    bool found = false;
    for (unsigned i = 0; i < t->max; i++) {
        session *s = &t->s[i];
        if (s->used && CRYPTO_memcmp(s->id_hash, h, 32) == 0) {
            OPENSSL_cleanse(s, sizeof(*s));
            memset(s, 0, sizeof(*s));
            found = true;
        }
    }
    return found;
}

unsigned kh_sessions_count(const kh_sessions *t, uint64_t now_ms)
{
    unsigned n = 0;
    for (unsigned i = 0; i < t->max; i++)
        if (live(t, &t->s[i], now_ms))
            n++;
    return n;
}

bool kh_sessions_cookie(const char *header, const char *name, char *out, size_t outsz)
{
    if (!header || !name || !out || outsz == 0)
        return false;
    size_t nl = strlen(name);
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *end = p + strcspn(p, ";");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq) {
            const char *ne = eq;
            while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
                ne--;
            if ((size_t)(ne - p) == nl && strncmp(p, name, nl) == 0) {
                const char *v = eq + 1;
                while (v < end && (*v == ' ' || *v == '\t'))
                    v++;
                const char *ve = end;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"') {
                    v++;
                    ve--;
                }
                size_t vl = (size_t)(ve - v);
                if (vl == 0 || vl >= outsz)
                    return false;
                memcpy(out, v, vl);
                out[vl] = '\0';
                return true;
            }
        }
        p = end;
    }
    return false;
}

static bool safe_method(const char *m)
{
    return m && (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0);
}

kh_code kh_sessions_check(kh_sessions *t, const char *cookie_header, const char *method,
                          const char *csrf_header, uint64_t now_ms)
{
    char id[KH_SESSION_HEX + 1];
    if (!t || !kh_sessions_cookie(cookie_header, KH_SESSION_COOKIE, id, sizeof(id)))
        return KH_E_UNAUTHORIZED;
    const char *csrf = kh_sessions_lookup(t, id, now_ms);
    OPENSSL_cleanse(id, sizeof(id));
    if (!csrf)
        return KH_E_UNAUTHORIZED;
    if (safe_method(method))
        return KH_OK;
    if (!csrf_header || strlen(csrf_header) != KH_SESSION_HEX ||
        CRYPTO_memcmp(csrf_header, csrf, KH_SESSION_HEX) != 0)
        return KH_E_FORBIDDEN;
    return KH_OK;
}

int kh_sessions_set_principal(kh_sessions *t, const char *id, const char *principal,
                              uint64_t now_ms)
{
    session *s = find(t, id, now_ms);
    if (!s || !principal || strlen(principal) >= sizeof(s->principal))
        return -1;
    snprintf(s->principal, sizeof(s->principal), "%s", principal);
    return 0;
}

const char *kh_sessions_principal(kh_sessions *t, const char *cookie_header, uint64_t now_ms)
{
    char id[KH_SESSION_HEX + 1];
    if (!t || !kh_sessions_cookie(cookie_header, KH_SESSION_COOKIE, id, sizeof(id)))
        return NULL;
    session *s = find(t, id, now_ms);
    OPENSSL_cleanse(id, sizeof(id));
    return s ? s->principal : NULL;
}
