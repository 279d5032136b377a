/* session.h - browser sessions for the TCP listener.
 *
 * A browser cannot put "Authorization: Bearer" on an EventSource or a
 * WebSocket, so the web console logs in once with the API token
 * (POST /api/v1/session) and gets a session cookie instead: a random id
 * (HttpOnly, SameSite=Strict) that names a server-side entry here, with a
 * CSRF token the page must echo in X-CSRF-Token on every write. Only the
 * SHA-256 of a session id is kept, and every comparison is constant time.
 *
 * Pure bookkeeping: the caller passes the time, so expiry is testable. The
 * table is bounded; a new session over the limit evicts the expired ones
 * first, then the least recently used one.
 */
#ifndef KH_API_SESSION_H
#define KH_API_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define KH_SESSION_COOKIE "kh_session"
#define KH_SESSION_HEX 64 /* 32 random bytes, hex: the id and the CSRF token */
#define KH_SESSION_PRINCIPAL_MAX 160 /* "user!token" and its NUL */

typedef struct kh_sessions kh_sessions;

/* max sessions (0 = 128); idle_ms: a session unused this long expires
 * (0 = 8 h); max_age_ms: a session expires this long after login whatever
 * its use (0 = 24 h). */
kh_sessions *kh_sessions_new(unsigned max, uint64_t idle_ms, uint64_t max_age_ms);
void kh_sessions_free(kh_sessions *t);

/* A new session: its id and CSRF token (KH_SESSION_HEX hex digits, NUL).
 * -1 with err set if the random source fails. */
int kh_sessions_create(kh_sessions *t, uint64_t now_ms, char id[KH_SESSION_HEX + 1],
                       char csrf[KH_SESSION_HEX + 1], kh_err *err);
/* The CSRF token of the live session id (NULL if unknown or expired); a
 * hit counts as use. The pointer lives until the session is removed. */
const char *kh_sessions_lookup(kh_sessions *t, const char *id, uint64_t now_ms);
/* Who logged in with session id (a principal such as "alice"); -1 when
 * the session is unknown or the name too long. */
int kh_sessions_set_principal(kh_sessions *t, const char *id, const char *principal,
                              uint64_t now_ms);
/* The principal of the live session named by a Cookie header, or NULL.
 * The pointer lives until the session is removed. */
const char *kh_sessions_principal(kh_sessions *t, const char *cookie_header, uint64_t now_ms);
/* Forget a session; false if there was none. */
bool kh_sessions_remove(kh_sessions *t, const char *id);
/* Live sessions at now_ms. */
unsigned kh_sessions_count(const kh_sessions *t, uint64_t now_ms);

/* The value of cookie `name` in a Cookie request header, copied to out;
 * false when absent, empty or longer than outsz - 1. */
bool kh_sessions_cookie(const char *header, const char *name, char *out, size_t outsz);

/* The whole check of a request that has no bearer token: the Cookie
 * header, the method, and the X-CSRF-Token header (each may be NULL).
 * KH_OK, KH_E_UNAUTHORIZED (no or no live session) or KH_E_FORBIDDEN (a
 * write whose CSRF token is missing or wrong). Reads need no CSRF token. */
kh_code kh_sessions_check(kh_sessions *t, const char *cookie_header, const char *method,
                          const char *csrf_header, uint64_t now_ms);

#endif
