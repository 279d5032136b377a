/* fuzz_cookie.c - libFuzzer target: a Cookie header (and an X-CSRF-Token)
 * against the session table: kh_sessions_cookie picks one cookie out of
 * the header, kh_sessions_check judges the request.
 * Properties: the value picked is a substring of the header and fits the
 * buffer; a header naming a live session's id (appended by the target)
 * authenticates a GET; a write passes only with the session's own CSRF
 * token; a header without the id never authenticates.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/session.h"
#include "util/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kh_sessions *t;
    static char id[KH_SESSION_HEX + 1], csrf[KH_SESSION_HEX + 1];
    if (!t) {
        t = kh_sessions_new(16, 0, 0);
        if (kh_sessions_create(t, 1000, id, csrf, NULL) != 0)
            abort();
    }
    char *hdr = xmalloc(size + 1);
    memcpy(hdr, data, size);
    hdr[size] = '\0';
    char out[KH_SESSION_HEX + 1];
    if (kh_sessions_cookie(hdr, KH_SESSION_COOKIE, out, sizeof(out))) {
        if (strlen(out) >= sizeof(out) || !strstr(hdr, out))
            abort();
    }
    /* the fuzzed text as the CSRF token of a write */
    kh_code c = kh_sessions_check(t, hdr, "POST", hdr, 2000);
    if (c == KH_OK && (!strstr(hdr, id) || strcmp(hdr, csrf) != 0))
        abort();
    if (kh_sessions_check(t, hdr, "GET", NULL, 2000) == KH_OK && !strstr(hdr, id))
        abort();
    /* the live id appended as its own cookie: a GET passes */
    char *with = xasprintf("%s; %s=%s", hdr, KH_SESSION_COOKIE, id);
    kh_code g = kh_sessions_check(t, with, "GET", NULL, 2000);
    (void)g; /* may fail when the fuzzed part already names the cookie (first wins) */
    if (!strstr(hdr, KH_SESSION_COOKIE) && !strchr(hdr, '"') && g != KH_OK &&
        strspn(hdr, " ;=abcdefghijklmnopqrstuvwxyz0123456789") == strlen(hdr))
        abort();
    free(with);
    free(hdr);
    return 0;
}
