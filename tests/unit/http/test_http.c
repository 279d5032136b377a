/* test_http.c - the HTTP server's core (src/http: server, listen, router,
 * req, reply, limits, static) against real clients: JSON over the unix
 * socket, path parameters, 404/405, bodies and their limits, late replies
 * and aborts, timeouts, static files, bursts, configuration errors, and a
 * shutdown with everything open. The fixture is http_harness.h.
 */
#include "http_harness.h"

static void test_json_unix(void)
{
    resp r;
    CHECK(do_req(VIA_UNIX, "GET", "/api/v1/hello?x=a%20b", NULL, NULL, 0, &r) == 0);
    CHECK(r.status == 200);
    CHECK_STR(resp_header(&r, "Content-Type"), "application/json");
    CHECK_STR(resp_header(&r, "Cache-Control"), "no-store");
    json_t *j = resp_json(&r);
    CHECK_STR(json_string_value(json_object_get(j, "hello")), "world");
    CHECK_STR(json_string_value(json_object_get(j, "x")), "a b");
    CHECK(json_is_true(json_object_get(j, "local")));
    json_decref(j);
    resp_clear(&r);
}

static void test_params(void)
{
    resp r;
    do_req(VIA_UNIX, "GET", "/api/v1/items/web%2D1%20x", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    json_t *j = resp_json(&r);
    CHECK_STR(json_string_value(json_object_get(j, "name")), "web-1 x");
    json_decref(j);
    resp_clear(&r);
    do_req(VIA_UNIX, "GET", "/api/v1/items/a%2Fb", NULL, NULL, 0, &r);
    CHECK(r.status == 400);
    CHECK_STR(err_code(&r), "invalid");
    resp_clear(&r);
    do_req(VIA_UNIX, "GET", "/api/v1/items/%zz", NULL, NULL, 0, &r);
    CHECK(r.status == 400);
    resp_clear(&r);
    do_req(VIA_UNIX, "GET", "/api/v1/items/a%00b", NULL, NULL, 0, &r);
    CHECK(r.status == 400);
    resp_clear(&r);
    do_req(VIA_UNIX, "GET", "/api/v1/items/", NULL, NULL, 0, &r);
    CHECK(r.status == 404);
    resp_clear(&r);
}

static void test_404_405(void)
{
    resp r;
    do_req(VIA_UNIX, "GET", "/api/v1/nope", NULL, NULL, 0, &r);
    CHECK(r.status == 404);
    CHECK_STR(err_code(&r), "not_found");
    CHECK_STR(resp_header(&r, "Content-Type"), "application/json");
    json_t *j = resp_json(&r);
    CHECK(json_string_value(json_object_get(json_object_get(j, "error"), "message")) != NULL);
    json_decref(j);
    resp_clear(&r);
    do_req(VIA_UNIX, "DELETE", "/api/v1/hello", NULL, NULL, 0, &r);
    CHECK(r.status == 405);
    CHECK_STR(err_code(&r), "method_not_allowed");
    CHECK_STR(resp_header(&r, "Allow"), "GET");
    resp_clear(&r);
    do_req(VIA_UNIX, "PUT", "/api/v1/items/x", NULL, NULL, 0, &r);
    CHECK(r.status == 405);
    CHECK_STR(resp_header(&r, "Allow"), "GET, DELETE");
    resp_clear(&r);
}

static void test_bodies(void)
{
    const char *json_ct[] = { "Content-Type: application/json", NULL };
    const char *json_cs[] = { "Content-Type: Application/JSON; charset=utf-8", NULL };
    const char *text_ct[] = { "Content-Type: text/plain", NULL };
    resp r;
    int before = atomic_load(&n_items);
    do_req(VIA_UNIX, "POST", "/api/v1/items", json_ct, "{\"a\":1}", 0, &r);
    CHECK(r.status == 201);
    CHECK_STR(resp_header(&r, "Location"), "/api/v1/items/x");
    json_t *j = resp_json(&r);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "got"), "a")) == 1);
    json_decref(j);
    resp_clear(&r);

    do_req(VIA_UNIX, "POST", "/api/v1/items", json_cs, "{\"a\":2}", 0, &r);
    CHECK(r.status == 201);
    resp_clear(&r);

    do_req(VIA_UNIX, "POST", "/api/v1/items", json_ct, "{\"a\":1,", 0, &r);
    CHECK(r.status == 400);
    CHECK_STR(err_code(&r), "invalid");
    CHECK(r.body && strstr(r.body, "line 1") != NULL);
    resp_clear(&r);

    do_req(VIA_UNIX, "POST", "/api/v1/items", json_ct, "{\"a\":1,\"a\":2}", 0, &r);
    CHECK(r.status == 400);
    CHECK(r.body && strstr(r.body, "duplicate") != NULL);
    resp_clear(&r);

    do_req(VIA_UNIX, "POST", "/api/v1/items", json_ct, "[1,2]", 0, &r);
    CHECK(r.status == 400);
    CHECK(r.body && strstr(r.body, "object") != NULL);
    resp_clear(&r);

    do_req(VIA_UNIX, "POST", "/api/v1/items", NULL, NULL, 0, &r);
    CHECK(r.status == 400); /* empty body: a JSON object is required */
    resp_clear(&r);

    int ran = atomic_load(&n_items);
    do_req(VIA_UNIX, "POST", "/api/v1/items", text_ct, "{\"a\":1}", 0, &r);
    CHECK(r.status == 415);
    CHECK_STR(err_code(&r), "unsupported");
    resp_clear(&r);
    CHECK(atomic_load(&n_items) == ran);

    do_req(VIA_UNIX, "POST", "/api/v1/raw", text_ct, "not json", 0, &r);
    CHECK(r.status == 200);
    CHECK(r.len == 8 && memcmp(r.body, "not json", 8) == 0);
    CHECK_STR(resp_header(&r, "Content-Type"), "text/plain");
    resp_clear(&r);
    CHECK(atomic_load(&n_items) == before + 6);
}

static void test_too_large(void)
{
    int before = atomic_load(&n_items);
    /* Content-Length over the limit: 413 before a byte of body is sent. */
    int fd = raw_unix();
    CHECK(fd >= 0);
    int st = raw_request_status(fd,
                                "POST /api/v1/items HTTP/1.1\r\nHost: x\r\n"
                                "Content-Type: application/json\r\n"
                                "Content-Length: 2097152\r\n\r\n");
    CHECK(st == 413);
    close(fd);

    /* A client that sends the whole body before reading (no Expect) still
     * reads its 413: the rest of the body is drained, not reset. */
    size_t bn = 3u * 1024 * 1024;
    char *blob = xmalloc(bn);
    memset(blob, ' ', bn);
    for (int via = 0; via < 2; via++) {
        fd = via == 0 ? raw_unix() : raw_tcp(tcp_port, false);
        char head[512];
        snprintf(head, sizeof(head),
                 "POST /api/v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Authorization: Bearer " TOKEN "\r\nContent-Length: %zu\r\n\r\n",
                 bn);
        CHECK(send_all(fd, head, strlen(head)));
        CHECK(send_all(fd, blob, bn));
        char rbuf[2048];
        read_until(fd, rbuf, sizeof(rbuf), "}}", 3000, NULL);
        CHECK(status_of(rbuf) == 413);
        close(fd);
    }
    /* The same for an early 404 with a body. */
    fd = raw_unix();
    char head[256];
    snprintf(head, sizeof(head),
             "POST /api/v1/nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n", (size_t)(512 * 1024));
    CHECK(send_all(fd, head, strlen(head)));
    CHECK(send_all(fd, blob, 512 * 1024));
    char rbuf[2048];
    read_until(fd, rbuf, sizeof(rbuf), "}}", 3000, NULL);
    CHECK(status_of(rbuf) == 404);
    close(fd);
    free(blob);

    /* The same with curl and a real 2 MiB body. */
    size_t n = 2u * 1024 * 1024;
    char *big = xmalloc(n + 1);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = '\0';
    const char *json_ct[] = { "Content-Type: application/json", NULL };
    resp r;
    do_req(VIA_UNIX, "POST", "/api/v1/items", json_ct, big, 0, &r);
    CHECK(r.status == 413);
    CHECK_STR(err_code(&r), "too_large");
    resp_clear(&r);
    free(big);

    /* Chunked, no length announced: counted, 413. */
    do_req(VIA_UNIX, "POST", "/api/v1/items", json_ct, NULL, n, &r);
    CHECK(r.status == 413);
    resp_clear(&r);
    CHECK(atomic_load(&n_items) == before);

    /* A body just under the limit still works. */
    size_t ok = 1024 * 1024 - 16;
    char *fine = xmalloc(ok + 1);
    memset(fine, ' ', ok);
    fine[0] = '{';
    fine[ok - 1] = '}';
    fine[ok] = '\0';
    do_req(VIA_UNIX, "POST", "/api/v1/items", json_ct, fine, 0, &r);
    CHECK(r.status == 201);
    resp_clear(&r);
    free(fine);
}


static void test_async(void)
{
    resp r;
    do_req(VIA_UNIX, "GET", "/api/v1/slow", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    CHECK(r.secs >= 0.045);
    json_t *j = resp_json(&r);
    CHECK(json_is_true(json_object_get(j, "slow")));
    json_decref(j);
    resp_clear(&r);
    /* Keep-alive: several late replies on one connection. */
    int fd = raw_unix();
    for (int i = 0; i < 3; i++)
        CHECK(raw_request_status(fd, "GET /api/v1/slow HTTP/1.1\r\nHost: x\r\n\r\n") == 200);
    close(fd);
    CHECK(atomic_load(&n_aborts) == 0);
}

static void test_abort(void)
{
    int before = atomic_load(&n_aborts);
    int fd = raw_unix();
    const char *req = "GET /api/v1/slow HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, req, strlen(req));
    sleep_ms(15);
    close(fd);
    CHECK(wait_for(&n_aborts, before + 1, 2000));
    sleep_ms(100); /* the timer would have fired by now: it was cancelled */
    CHECK(atomic_load(&n_aborts) == before + 1);

    /* Same over TCP. */
    fd = raw_tcp(tcp_port, false);
    const char *treq = "GET /api/v1/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                       "\r\n\r\n";
    send_all(fd, treq, strlen(treq));
    sleep_ms(15);
    close(fd);
    CHECK(wait_for(&n_aborts, before + 2, 2000));

    /* No abort callback: the late reply is dropped, nothing breaks. */
    int drops = atomic_load(&n_late_drop);
    fd = raw_unix();
    const char *nreq = "GET /api/v1/noabort HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, nreq, strlen(nreq));
    sleep_ms(15);
    close(fd);
    CHECK(wait_for(&n_late_drop, drops + 1, 2000));
    sleep_ms(20);
    resp r;
    do_req(VIA_UNIX, "GET", "/api/v1/hello", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_clear(&r);
}


static void send_late_event(void *arg)
{
    (void)arg;
    if (last_sse)
        kh_sse_send(last_sse, 0, NULL, "line1\nline2");
}

/* Idle plain connections are closed after idle_timeout (2 s here);
 * WebSockets and event streams are not, and nothing spins meanwhile. */
static void test_timeouts(void)
{
    char buf[4096];
    int idle = raw_unix();
    /* A late reply that takes longer than the idle timeout still arrives. */
    int late = raw_unix();
    const char *lreq = "GET /api/v1/slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(late, lreq, strlen(lreq));
    int ws = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    int sse = raw_unix();
    const char *req = "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(sse, req, strlen(req));
    read_until(sse, buf, sizeof(buf), "data: {\"n\":3}\n\n", 3000, NULL);
    CHECK(strstr(buf, "data: {\"n\":3}") != NULL);

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    bool eof = false;
    uint64_t t0 = kh_now_ms();
    read_until(idle, buf, sizeof(buf), NULL, 4500, &eof);
    uint64_t waited = kh_now_ms() - t0;
    CHECK(eof);
    CHECK(waited >= 1500 && waited < 4500);
    sleep_ms(800);
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("# cpu while idle: %.3f s over %.1f s\n", cpu, (double)(waited + 800) / 1000);
    CHECK(cpu < 0.5);
    close(idle);

    CHECK(ws_echo(ws, "still open"));
    close(ws);
    read_until(late, buf, sizeof(buf), "}", 3000, NULL);
    CHECK(status_of(buf) == 200);
    CHECK(strstr(buf, "\"slow\":true") != NULL);
    close(late);
    loop_call(send_late_event, NULL);
    read_until(sse, buf, sizeof(buf), "data: line2\n\n", 3000, NULL);
    CHECK(strstr(buf, "data: line1\ndata: line2\n\n") != NULL);
    close(sse);
}


static void test_static(void)
{
    resp r;
    do_req(VIA_UNIX, "GET", "/", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    CHECK(r.body && strcmp(r.body, "<h1>kvmhost</h1>") == 0);
    CHECK_STR(resp_header(&r, "Content-Type"), "text/html; charset=utf-8");
    CHECK_STR(resp_header(&r, "X-Content-Type-Options"), "nosniff");
    CHECK(resp_header(&r, "Content-Security-Policy") &&
          strstr(resp_header(&r, "Content-Security-Policy"), "default-src 'self'"));
    resp_clear(&r);

    do_req(VIA_UNIX, "GET", "/app.js", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    CHECK_STR(r.body, "console.log(1)");
    CHECK_STR(resp_header(&r, "Content-Type"), "text/javascript; charset=utf-8");
    CHECK(resp_header(&r, "Content-Encoding") == NULL);
    resp_clear(&r);

    const char *gz[] = { "Accept-Encoding: gzip, deflate", NULL };
    do_req(VIA_UNIX, "GET", "/app.js", gz, NULL, 0, &r);
    CHECK(r.status == 200);
    CHECK_STR(resp_header(&r, "Content-Encoding"), "gzip");
    CHECK_STR(resp_header(&r, "Content-Type"), "text/javascript; charset=utf-8");
    CHECK_STR(r.body, "GZIPPED");
    resp_clear(&r);

    do_req(VIA_UNIX, "GET", "/sub/style.css", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    CHECK_STR(resp_header(&r, "Content-Type"), "text/css; charset=utf-8");
    resp_clear(&r);
    do_req(VIA_UNIX, "HEAD", "/sub/style.css", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_clear(&r);

    const char *bad400[] = { "/../etc/passwd", "/%2e%2e/etc/passwd", "/sub/../../etc/passwd",
                             "/sub/%2e%2e/%2e%2e/etc/passwd", "/..%2fetc/passwd",
                             "/x%00.html" };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad400); i++) {
        do_req(VIA_UNIX, "GET", bad400[i], NULL, NULL, 0, &r);
        CHECK(r.status == 400 || r.status == 404);
        CHECK(r.body == NULL || strstr(r.body, "root:") == NULL);
        resp_clear(&r);
    }
    const char *bad404[] = { "/evil", "/evildir/passwd", "/missing.html", "/.hidden",
                             "/sub/", "/sub//style.css" };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad404); i++) {
        do_req(VIA_UNIX, "GET", bad404[i], NULL, NULL, 0, &r);
        CHECK(r.status == 404);
        CHECK(r.body == NULL || strstr(r.body, "root:") == NULL);
        resp_clear(&r);
    }
    /* A raw "/../" that no client library normalises away. */
    int fd = raw_unix();
    CHECK(raw_request_status(fd, "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n") == 400);
    close(fd);

    do_req(VIA_UNIX, "POST", "/index.html", NULL, NULL, 0, &r);
    CHECK(r.status == 405);
    resp_clear(&r);
    /* /api/ is never static. */
    do_req(VIA_UNIX, "GET", "/api/index.html", NULL, NULL, 0, &r);
    CHECK(r.status == 404);
    CHECK_STR(resp_header(&r, "Content-Type"), "application/json");
    resp_clear(&r);
}

static void test_burst(void)
{
    enum { N = 300 };
    int fds[N];
    int connected = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = raw_tcp(tcp_port, true);
        connected += fds[i] >= 0;
    }
    CHECK(connected == N);
    sleep_ms(50);
    const char *req = "GET /api/v1/public HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            send(fds[i], req, strlen(req), MSG_NOSIGNAL);
    int answered = 0;
    uint64_t end = kh_now_ms() + 2000;
    bool done[N] = { false };
    while (kh_now_ms() < end && answered < N) {
        struct pollfd pfd[N];
        for (int i = 0; i < N; i++)
            pfd[i] = (struct pollfd){ done[i] ? -1 : fds[i], POLLIN, 0 };
        if (poll(pfd, N, 100) <= 0)
            continue;
        for (int i = 0; i < N; i++) {
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[2048];
            ssize_t n = recv(fds[i], buf, sizeof(buf) - 1, 0);
            done[i] = true;
            if (n > 0) {
                buf[n] = '\0';
                answered += status_of(buf) == 200;
            }
        }
    }
    printf("# burst: %d of %d answered while holding connections\n", answered, N);
    /* max_connections is 64; near it (the last 1/16) each new connection
     * drops the oldest one still sending its head (http/guard.c) */
    CHECK(answered >= 64 - 64 / 16);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* Still serving afterwards, on both listeners. */
    resp r;
    int rc = do_req(VIA_TCP, "GET", "/api/v1/public", NULL, NULL, 0, &r);
    if (r.status != 200)
        printf("# after burst: curl %d (%s) status %ld after %.3f s\n", rc,
               curl_easy_strerror((CURLcode)rc), r.status, r.secs);
    CHECK(r.status == 200);
    resp_clear(&r);
    do_req(VIA_UNIX, "GET", "/api/v1/hello", NULL, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_clear(&r);
}


/* ---- configuration errors ---- */

static void test_config_errors(void)
{
    kh_err err = KH_ERR_INIT;
    kh_http_config none = { 0 };
    CHECK(kh_http_server_new(&loop, &none, routes, 1, NULL, &err) == NULL);
    CHECK(err.code == KH_E_INVALID);
    kh_err_clear(&err);
    kh_http_config notoken = { .tcp_listen = "127.0.0.1:0" };
    CHECK(kh_http_server_new(&loop, &notoken, routes, 1, NULL, &err) == NULL);
    CHECK(err.code == KH_E_INVALID);
}

static void tcp_errors(void *arg)
{
    int *bad = arg;
    const char *specs[] = { "127.0.0.1", "::1:80", "[::1]80", "127.0.0.1:99999", "127.0.0.1:x" };
    for (size_t i = 0; i < KH_ARRAY_LEN(specs); i++) {
        kh_err err = KH_ERR_INIT;
        kh_http_config cfg = { .tcp_listen = specs[i], .auth = kh_auth_check,
                               .auth_opaque = auth };
        kh_http_server *s = kh_http_server_new(&loop, &cfg, routes, 1, NULL, &err);
        if (s || err.code != KH_E_INVALID)
            (*bad)++;
        kh_http_server_free(s);
    }
    /* v6 loopback with brackets works (when the host has IPv6). */
    kh_err err = KH_ERR_INIT;
    kh_http_config cfg = { .tcp_listen = "[::1]:0", .auth = kh_auth_check,
                           .auth_opaque = auth };
    kh_http_server *s = kh_http_server_new(&loop, &cfg, routes, 1, NULL, &err);
    if (s && kh_http_server_tcp_port(s) <= 0)
        (*bad)++;
    kh_http_server_free(s);
}

/* A stale socket file is replaced; a regular file is not touched. */
static void unix_cases(void *arg)
{
    int *bad = arg;
    char path[400];
    snprintf(path, sizeof(path), "%s/stale.sock", tmpdir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        (*bad)++;
    close(fd); /* the file stays: stale */
    kh_err err = KH_ERR_INIT;
    kh_http_config cfg = { .unix_path = path };
    kh_http_server *s = kh_http_server_new(&loop, &cfg, routes, 1, NULL, &err);
    struct stat st;
    if (!s || stat(path, &st) != 0 || (st.st_mode & 0777) != 0660)
        (*bad)++;
    kh_http_server_free(s);
    if (stat(path, &st) == 0)
        (*bad)++;
    snprintf(path, sizeof(path), "%s/regular", tmpdir);
    write_file(tmpdir, "regular", "keep me");
    kh_http_config cfg2 = { .unix_path = path };
    s = kh_http_server_new(&loop, &cfg2, routes, 1, NULL, &err);
    if (s || err.code != KH_E_CONFLICT || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        (*bad)++;
    kh_http_server_free(s);
}


static void test_shutdown(void)
{
    char buf[4096];
    int ws_c = atomic_load(&ws_closes), sse_c = atomic_load(&sse_closes);
    int aborts = atomic_load(&n_aborts);
    int ws = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    CHECK(status_of(buf) == 101);
    int sse = raw_unix();
    const char *req = "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(sse, req, strlen(req));
    read_until(sse, buf, sizeof(buf), "data: {\"n\":3}\n\n", 3000, NULL);
    int slowfd = raw_unix();
    const char *sreq = "GET /api/v1/slow HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(slowfd, sreq, strlen(sreq));
    int idle = raw_unix();
    sleep_ms(10);

    loop_call(free_server, NULL);
    CHECK(atomic_load(&ws_closes) == ws_c + 1);
    CHECK(atomic_load(&sse_closes) == sse_c + 1);
    CHECK(atomic_load(&n_aborts) == aborts + 1);
    bool eof = false;
    read_until(ws, buf, sizeof(buf), NULL, 2000, &eof);
    CHECK(eof);
    read_until(sse, buf, sizeof(buf), NULL, 2000, &eof);
    CHECK(eof);
    read_until(slowfd, buf, sizeof(buf), NULL, 2000, &eof);
    CHECK(eof);
    close(ws);
    close(sse);
    close(slowfd);
    close(idle);
    struct stat st;
    CHECK(stat(sock_path, &st) != 0); /* the socket file is gone */
}

int main(void)
{
    if (harness_start() < 0)
        return 1;
    test_config_errors();
    harness_run();

    RUN(test_json_unix);
    RUN(test_params);
    RUN(test_404_405);
    RUN(test_bodies);
    RUN(test_too_large);
    RUN(test_async);
    RUN(test_abort);
    RUN(test_static);
    RUN(test_burst);
    RUN(test_timeouts);
    int bad = 0;
    loop_call(tcp_errors, &bad);
    CHECK(bad == 0);
    loop_call(unix_cases, &bad);
    CHECK(bad == 0);
    RUN(test_shutdown);
    CHECK(harness_stop() == 0);
    TEST_DONE();
}
