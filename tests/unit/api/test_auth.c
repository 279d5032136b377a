/* test_auth.c - the API's access policy over a real server (api/auth.h as
 * the kh_http auth hook): the token on TCP, the unix socket's trust, and
 * browser sessions (api/session_routes: cookie + CSRF token, login, logout).
 * The fixture is tests/unit/http/http_harness.h.
 */
#include "../http/http_harness.h"

static void test_tcp_auth(void)
{
    const char *good[] = { "Authorization: Bearer " TOKEN, NULL };
    const char *bad[] = { "Authorization: Bearer nope", NULL };
    const char *basic[] = { "Authorization: Basic dXNlcjpwYXNz", NULL };
    resp r;
    do_req(VIA_TCP, "GET", "/api/v1/hello", NULL, NULL, 0, &r);
    CHECK(r.status == 401);
    CHECK_STR(err_code(&r), "unauthorized");
    CHECK_STR(resp_header(&r, "WWW-Authenticate"), "Bearer");
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/hello", bad, NULL, 0, &r);
    CHECK(r.status == 401);
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/hello", basic, NULL, 0, &r);
    CHECK(r.status == 401);
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/hello", good, NULL, 0, &r);
    CHECK(r.status == 200);
    json_t *j = resp_json(&r);
    CHECK(json_is_false(json_object_get(j, "local")));
    json_decref(j);
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/public", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_clear(&r);
    /* Unknown routes do not tell an anonymous client what exists. */
    do_req(VIA_TCP, "GET", "/api/v1/nope", NULL, NULL, 0, &r);
    CHECK(r.status == 401);
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/nope", good, NULL, 0, &r);
    CHECK(r.status == 404);
    resp_clear(&r);
    /* Static files are public (the page that asks for the token). */
    do_req(VIA_TCP, "GET", "/", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_clear(&r);
}

/* Browser login: the token buys a cookie; the cookie authenticates reads,
 * event streams and WebSockets; writes also need the CSRF token; logout
 * ends it. */
static void test_session(void)
{
    const char *json_hdr[] = { "Content-Type: application/json", NULL };
    resp r;
    /* wrong token, bad bodies */
    do_req(VIA_TCP, "POST", "/api/v1/session", json_hdr, "{\"token\":\"nope\"}", 0, &r);
    CHECK(r.status == 401);
    CHECK(resp_header(&r, "Set-Cookie") == NULL);
    resp_clear(&r);
    do_req(VIA_TCP, "POST", "/api/v1/session", json_hdr, "{\"token\":7}", 0, &r);
    CHECK(r.status == 400);
    resp_clear(&r);
    do_req(VIA_TCP, "POST", "/api/v1/session", json_hdr,
           "{\"token\":\"" TOKEN "\",\"x\":1}", 0, &r);
    CHECK(r.status == 400);
    resp_clear(&r);
    /* login */
    do_req(VIA_TCP, "POST", "/api/v1/session", json_hdr, "{\"token\":\"" TOKEN "\"}", 0, &r);
    CHECK(r.status == 201);
    const char *sc = resp_header(&r, "Set-Cookie");
    CHECK(sc && strncmp(sc, "kh_session=", 11) == 0);
    CHECK(sc && strstr(sc, "HttpOnly") && strstr(sc, "SameSite=Strict") && strstr(sc, "Path=/"));
    char cookie[200] = "";
    if (sc)
        snprintf(cookie, sizeof(cookie), "Cookie: %.*s", (int)strcspn(sc, ";"), sc);
    json_t *j = resp_json(&r);
    char csrf_hdr[200] = "", csrf[80] = "";
    const char *c = json_string_value(json_object_get(j, "csrf_token"));
    CHECK(c && strlen(c) == 64);
    snprintf(csrf, sizeof(csrf), "%s", c ? c : "");
    snprintf(csrf_hdr, sizeof(csrf_hdr), "X-CSRF-Token: %s", csrf);
    json_decref(j);
    resp_clear(&r);

    const char *with_cookie[] = { cookie, NULL };
    do_req(VIA_TCP, "GET", "/api/v1/hello", with_cookie, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/session", with_cookie, NULL, 0, &r);
    CHECK(r.status == 200);
    j = resp_json(&r);
    CHECK_STR(json_string_value(json_object_get(j, "via")), "session");
    CHECK_STR(json_string_value(json_object_get(j, "csrf_token")), csrf);
    json_decref(j);
    resp_clear(&r);
    /* a write without, or with a wrong, CSRF token: 403, the handler never runs */
    int before = atomic_load(&n_items);
    const char *no_csrf[] = { cookie, "Content-Type: application/json", NULL };
    do_req(VIA_TCP, "POST", "/api/v1/items", no_csrf, "{}", 0, &r);
    CHECK(r.status == 403);
    CHECK_STR(err_code(&r), "forbidden");
    resp_clear(&r);
    const char *bad_csrf[] = { cookie, "Content-Type: application/json",
                               "X-CSRF-Token: 0000", NULL };
    do_req(VIA_TCP, "POST", "/api/v1/items", bad_csrf, "{}", 0, &r);
    CHECK(r.status == 403);
    resp_clear(&r);
    do_req(VIA_TCP, "DELETE", "/api/v1/items/a", with_cookie, NULL, 0, &r);
    CHECK(r.status == 403);
    resp_clear(&r);
    CHECK(atomic_load(&n_items) == before);
    const char *good[] = { cookie, "Content-Type: application/json", csrf_hdr, NULL };
    do_req(VIA_TCP, "POST", "/api/v1/items", good, "{}", 0, &r);
    CHECK(r.status == 201);
    resp_clear(&r);
    CHECK(atomic_load(&n_items) == before + 1);
    /* the same, from a foreign Origin: refused */
    const char *foreign[] = { cookie, "Content-Type: application/json", csrf_hdr,
                              "Origin: http://evil.example", NULL };
    do_req(VIA_TCP, "POST", "/api/v1/items", foreign, "{}", 0, &r);
    CHECK(r.status == 403);
    resp_clear(&r);
    /* a forged cookie */
    const char *forged[] = { "Cookie: kh_session=00112233", NULL };
    do_req(VIA_TCP, "GET", "/api/v1/hello", forged, NULL, 0, &r);
    CHECK(r.status == 401);
    resp_clear(&r);
    /* a WebSocket with the cookie (same Origin) */
    char hdrs[400], buf[1024];
    snprintf(hdrs, sizeof(hdrs), "%s\r\nOrigin: http://127.0.0.1:%d\r\n", cookie, tcp_port);
    int fd = ws_connect(VIA_TCP, hdrs, buf, sizeof(buf));
    CHECK(status_of(buf) == 101);
    CHECK(ws_echo(fd, "with a cookie"));
    close(fd);
    snprintf(hdrs, sizeof(hdrs), "%s\r\nOrigin: http://evil.example\r\n", cookie);
    fd = ws_connect(VIA_TCP, hdrs, buf, sizeof(buf));
    CHECK(status_of(buf) == 403);
    close(fd);
    /* logout needs the CSRF token too, then the cookie is dead */
    do_req(VIA_TCP, "DELETE", "/api/v1/session", with_cookie, NULL, 0, &r);
    CHECK(r.status == 403);
    resp_clear(&r);
    const char *logout[] = { cookie, csrf_hdr, NULL };
    do_req(VIA_TCP, "DELETE", "/api/v1/session", logout, NULL, 0, &r);
    CHECK(r.status == 204);
    sc = resp_header(&r, "Set-Cookie");
    CHECK(sc && strstr(sc, "Max-Age=0"));
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/hello", with_cookie, NULL, 0, &r);
    CHECK(r.status == 401);
    resp_clear(&r);
    do_req(VIA_TCP, "GET", "/api/v1/session", with_cookie, NULL, 0, &r);
    CHECK(r.status == 200);
    j = resp_json(&r);
    CHECK(json_is_false(json_object_get(j, "authenticated")));
    CHECK(json_object_get(j, "csrf_token") == NULL);
    json_decref(j);
    resp_clear(&r);
    /* the bearer token still works, and says so */
    const char *bearer[] = { "Authorization: Bearer " TOKEN, NULL };
    do_req(VIA_TCP, "GET", "/api/v1/session", bearer, NULL, 0, &r);
    CHECK(r.status == 200);
    j = resp_json(&r);
    CHECK_STR(json_string_value(json_object_get(j, "via")), "token");
    CHECK(json_object_get(j, "csrf_token") == NULL);
    json_decref(j);
    resp_clear(&r);
}

int main(void)
{
    if (harness_start() < 0)
        return 1;
    harness_run();
    RUN(test_tcp_auth);
    RUN(test_session);
    CHECK(harness_stop() == 0);
    TEST_DONE();
}
