/* test_session.c - browser sessions (src/api/session.c): cookie parsing,
 * the CSRF rule, expiry (idle and absolute), eviction, logout. The time is
 * passed in, so expiry needs no sleeping. */
#include <stdio.h>
#include <string.h>

#include "../kh_test.h"
#include "api/session.h"

static void cookie_of(char *out, size_t n, const char *id)
{
    snprintf(out, n, "theme=dark; %s=%s; other=1", KH_SESSION_COOKIE, id);
}

static void test_cookie_parse(void)
{
    char v[80];
    CHECK(kh_sessions_cookie("a=1; kh_session=abc; b=2", "kh_session", v, sizeof(v)));
    CHECK_STR(v, "abc");
    CHECK(kh_sessions_cookie("kh_session=\"q\"", "kh_session", v, sizeof(v)));
    CHECK_STR(v, "q");
    CHECK(kh_sessions_cookie("  kh_session = x ;", "kh_session", v, sizeof(v)));
    CHECK_STR(v, "x");
    /* a longer name with the same prefix is not it */
    CHECK(!kh_sessions_cookie("kh_session2=abc", "kh_session", v, sizeof(v)));
    CHECK(!kh_sessions_cookie("xkh_session=abc", "kh_session", v, sizeof(v)));
    CHECK(!kh_sessions_cookie("kh_session=", "kh_session", v, sizeof(v)));
    CHECK(!kh_sessions_cookie(NULL, "kh_session", v, sizeof(v)));
    CHECK(!kh_sessions_cookie("kh_session", "kh_session", v, sizeof(v)));
    CHECK(!kh_sessions_cookie("kh_session=0123456789", "kh_session", v, 5)); /* too long */
}

static void test_check(void)
{
    kh_sessions *t = kh_sessions_new(4, 1000, 5000);
    char id[KH_SESSION_HEX + 1], csrf[KH_SESSION_HEX + 1], id2[KH_SESSION_HEX + 1],
        csrf2[KH_SESSION_HEX + 1];
    kh_err err = KH_ERR_INIT;
    CHECK(kh_sessions_create(t, 100, id, csrf, &err) == 0);
    CHECK(strlen(id) == KH_SESSION_HEX && strlen(csrf) == KH_SESSION_HEX);
    CHECK(strspn(id, "0123456789abcdef") == KH_SESSION_HEX);
    CHECK(strcmp(id, csrf) != 0);
    CHECK(kh_sessions_create(t, 100, id2, csrf2, &err) == 0);
    CHECK(strcmp(id, id2) != 0 && strcmp(csrf, csrf2) != 0);
    CHECK(kh_sessions_count(t, 100) == 2);

    char ck[256];
    cookie_of(ck, sizeof(ck), id);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 200) == KH_OK);
    CHECK(kh_sessions_check(t, ck, "HEAD", NULL, 200) == KH_OK);
    /* writes need this session's CSRF token */
    CHECK(kh_sessions_check(t, ck, "POST", NULL, 200) == KH_E_FORBIDDEN);
    CHECK(kh_sessions_check(t, ck, "PATCH", "", 200) == KH_E_FORBIDDEN);
    CHECK(kh_sessions_check(t, ck, "DELETE", csrf2, 200) == KH_E_FORBIDDEN);
    CHECK(kh_sessions_check(t, ck, "PUT", id, 200) == KH_E_FORBIDDEN);
    char shortc[KH_SESSION_HEX];
    memcpy(shortc, csrf, KH_SESSION_HEX - 1);
    shortc[KH_SESSION_HEX - 1] = '\0';
    CHECK(kh_sessions_check(t, ck, "POST", shortc, 200) == KH_E_FORBIDDEN);
    CHECK(kh_sessions_check(t, ck, "POST", csrf, 200) == KH_OK);
    CHECK(kh_sessions_check(t, ck, "DELETE", csrf, 200) == KH_OK);
    /* no cookie, a forged id, the CSRF token as the id */
    CHECK(kh_sessions_check(t, NULL, "GET", NULL, 200) == KH_E_UNAUTHORIZED);
    CHECK(kh_sessions_check(t, "kh_session=00", "GET", NULL, 200) == KH_E_UNAUTHORIZED);
    cookie_of(ck, sizeof(ck), csrf);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 200) == KH_E_UNAUTHORIZED);
    char forged[KH_SESSION_HEX + 1];
    memcpy(forged, id, sizeof(forged));
    forged[0] = forged[0] == 'a' ? 'b' : 'a';
    cookie_of(ck, sizeof(ck), forged);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 200) == KH_E_UNAUTHORIZED);

    /* idle expiry (1 s) slides with use; the absolute limit (5 s) does not */
    cookie_of(ck, sizeof(ck), id);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 1000) == KH_OK);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 1900) == KH_OK);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 2800) == KH_OK);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 3700) == KH_OK);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 4600) == KH_OK);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 5100) == KH_E_UNAUTHORIZED); /* age */
    char ck2[256];
    cookie_of(ck2, sizeof(ck2), id2); /* unused since 100: idle-expired */
    CHECK(kh_sessions_check(t, ck2, "GET", NULL, 1200) == KH_E_UNAUTHORIZED);
    CHECK(kh_sessions_count(t, 5100) == 0);

    /* logout */
    CHECK(kh_sessions_create(t, 6000, id, csrf, &err) == 0);
    cookie_of(ck, sizeof(ck), id);
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 6001) == KH_OK);
    CHECK(kh_sessions_remove(t, id));
    CHECK(!kh_sessions_remove(t, id));
    CHECK(kh_sessions_check(t, ck, "GET", NULL, 6002) == KH_E_UNAUTHORIZED);
    CHECK(kh_sessions_lookup(t, id, 6002) == NULL);
    kh_sessions_free(t);
}

static void test_eviction(void)
{
    kh_sessions *t = kh_sessions_new(3, 100000, 100000);
    char id[4][KH_SESSION_HEX + 1], csrf[KH_SESSION_HEX + 1];
    kh_err err = KH_ERR_INIT;
    for (int i = 0; i < 3; i++)
        CHECK(kh_sessions_create(t, (uint64_t)(10 + i), id[i], csrf, &err) == 0);
    /* use the oldest: the second one is now the least recently used */
    CHECK(kh_sessions_lookup(t, id[0], 20) != NULL);
    CHECK(kh_sessions_create(t, 30, id[3], csrf, &err) == 0);
    CHECK(kh_sessions_count(t, 30) == 3);
    CHECK(kh_sessions_lookup(t, id[0], 31) != NULL);
    CHECK(kh_sessions_lookup(t, id[1], 31) == NULL);
    CHECK(kh_sessions_lookup(t, id[2], 31) != NULL);
    CHECK(kh_sessions_lookup(t, id[3], 31) != NULL);
    kh_sessions_free(t);
}

int main(void)
{
    RUN(test_cookie_parse);
    RUN(test_check);
    RUN(test_eviction);
    TEST_DONE();
}
