/* test_streams.c - the HTTP server's long-lived replies (src/http: upgrade,
 * ws, sse, stream) against raw sockets: WebSocket echo, frames, overflow
 * and handshakes, server-sent events and their overflow; the WebSocket
 * accept key. The fixture is http_harness.h.
 */
#include "http_harness.h"

static void test_websocket(void)
{
    char buf[4096];
    int opens = atomic_load(&ws_opens), closes = atomic_load(&ws_closes);
    int fd = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    CHECK(fd >= 0);
    CHECK(status_of(buf) == 101);
    CHECK(strcasestr(buf, "\r\nUpgrade: websocket\r\n") != NULL);
    char want[128];
    snprintf(want, sizeof(want), "\r\nSec-WebSocket-Accept: %s\r\n", ws_accept);
    CHECK(strstr(buf, want) != NULL);
    CHECK(wait_for(&ws_opens, opens + 1, 2000));
    CHECK(ws_echo(fd, "hello"));
    /* A binary message over 125 bytes (16-bit length). */
    char big[300], frame[400], payload[400];
    memset(big, 'x', sizeof(big));
    size_t flen, plen = 0;
    ws_frame(frame, &flen, 2, big, sizeof(big), true);
    send_all(fd, frame, flen);
    CHECK(ws_read_frame(fd, payload, sizeof(payload), &plen, 3000) == 2);
    CHECK(plen == sizeof(big) && memcmp(payload, big, plen) == 0);
    /* Ping gets a pong with the same payload. */
    ws_frame(frame, &flen, 9, "pp", 2, true);
    send_all(fd, frame, flen);
    CHECK(ws_read_frame(fd, payload, sizeof(payload), &plen, 3000) == 10);
    CHECK(plen == 2 && memcmp(payload, "pp", 2) == 0);
    /* Client close: server answers with close, then on_close. */
    ws_frame(frame, &flen, 8, "\x03\xe8", 2, true);
    send_all(fd, frame, flen);
    CHECK(ws_read_frame(fd, payload, sizeof(payload), &plen, 3000) == 8);
    close(fd);
    CHECK(wait_for(&ws_closes, closes + 1, 2000));

    /* Server-initiated close ("close" makes the echo handler close). */
    fd = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    CHECK(status_of(buf) == 101);
    ws_frame(frame, &flen, 1, "close", 5, true);
    send_all(fd, frame, flen);
    CHECK(ws_read_frame(fd, payload, sizeof(payload), &plen, 3000) == 8);
    ws_frame(frame, &flen, 8, "\x03\xe8", 2, true);
    send_all(fd, frame, flen);
    bool eof = false;
    read_until(fd, buf, sizeof(buf), NULL, 3000, &eof);
    CHECK(eof);
    close(fd);
    CHECK(wait_for(&ws_closes, closes + 2, 2000));

    /* Unmasked client frame: protocol error, the server closes (1002). */
    fd = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    ws_frame(frame, &flen, 1, "bad", 3, false);
    send_all(fd, frame, flen);
    int op = ws_read_frame(fd, payload, sizeof(payload), &plen, 3000);
    CHECK(op == 8);
    CHECK(plen >= 2 && ((unsigned char)payload[0] << 8 | (unsigned char)payload[1]) == 1002);
    close(fd);
    CHECK(wait_for(&ws_closes, closes + 3, 2000));

    /* A frame sent in the same packet as the handshake (MHD's extra_in). */
    fd = raw_unix();
    char req[1024];
    int hl = snprintf(req, sizeof(req),
                      "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: %s\r\n\r\n",
                      ws_key);
    ws_frame(req + hl, &flen, 1, "early", 5, true);
    send_all(fd, req, (size_t)hl + flen);
    char hdr[2048];
    read_until(fd, hdr, sizeof(hdr), "\r\n\r\n", 3000, NULL);
    CHECK(status_of(hdr) == 101);
    /* The echo may already sit behind the header in hdr. */
    char *end = strstr(hdr, "\r\n\r\n");
    size_t rest = end ? strlen(end + 4) : 0;
    if (rest >= 7) {
        CHECK(memcmp(end + 4 + 2, "early", 5) == 0);
    } else {
        CHECK(ws_read_frame(fd, payload, sizeof(payload), &plen, 3000) == 1);
        CHECK(plen == 5 && memcmp(payload, "early", 5) == 0);
    }
    close(fd);
    CHECK(wait_for(&ws_closes, closes + 4, 2000));

    /* Two clients at once. */
    int a = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    int b = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    CHECK(ws_echo(a, "from a"));
    CHECK(ws_echo(b, "from b"));
    CHECK(ws_echo(a, "again a"));
    close(a);
    CHECK(ws_echo(b, "b still here"));
    close(b);
    CHECK(wait_for(&ws_closes, closes + 6, 2000));
}

static void test_websocket_overflow(void)
{
    char buf[4096], frame[64];
    size_t flen;
    int closes = atomic_load(&ws_closes);
    int fd = ws_connect(VIA_UNIX, NULL, buf, sizeof(buf));
    CHECK(status_of(buf) == 101);
    ws_frame(frame, &flen, 1, "flood", 5, true);
    send_all(fd, frame, flen);
    CHECK(wait_for(&ws_overflows, 1, 3000));
    CHECK(wait_for(&ws_closes, closes + 1, 3000));
    bool eof = false;
    static char sink[1 << 16];
    for (int i = 0; i < 100 && !eof; i++)
        read_until(fd, sink, sizeof(sink), NULL, 100, &eof);
    CHECK(eof);
    close(fd);
}

static void test_websocket_handshake(void)
{
    char buf[4096];
    /* Not an upgrade at all. */
    resp r;
    do_req(VIA_UNIX, "GET", "/api/v1/ws", NULL, NULL, 0, &r);
    CHECK(r.status == 400);
    resp_clear(&r);
    /* Bad key. */
    int fd = raw_unix();
    int st = raw_request_status(fd, "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                    "Sec-WebSocket-Key: short\r\n\r\n");
    CHECK(st == 400);
    close(fd);
    /* Wrong version. */
    fd = raw_unix();
    char req[512];
    snprintf(req, sizeof(req),
             "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: %s\r\n\r\n",
             ws_key);
    CHECK(raw_request_status(fd, req) == 400);
    close(fd);
    /* TCP: token needed; a foreign Origin is refused, the same-host one
     * accepted; unix clients are trusted whatever the Origin. */
    fd = ws_connect(VIA_TCP, NULL, buf, sizeof(buf));
    CHECK(status_of(buf) == 401);
    close(fd);
    fd = ws_connect(VIA_TCP,
                    "Authorization: Bearer " TOKEN "\r\nOrigin: http://evil.example\r\n", buf,
                    sizeof(buf));
    CHECK(status_of(buf) == 403);
    close(fd);
    char hdrs[256];
    snprintf(hdrs, sizeof(hdrs), "Authorization: Bearer " TOKEN "\r\nOrigin: http://127.0.0.1:%d\r\n",
             tcp_port);
    fd = ws_connect(VIA_TCP, hdrs, buf, sizeof(buf));
    CHECK(status_of(buf) == 101);
    CHECK(ws_echo(fd, "over tcp"));
    close(fd);
    fd = ws_connect(VIA_UNIX, "Origin: http://evil.example\r\n", buf, sizeof(buf));
    CHECK(status_of(buf) == 101);
    close(fd);
}

static void test_sse(void)
{
    int closes = atomic_load(&sse_closes);
    int fd = raw_unix();
    const char *req = "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, req, strlen(req));
    char buf[8192];
    read_until(fd, buf, sizeof(buf), "data: {\"n\":3}\n\n", 3000, NULL);
    CHECK(status_of(buf) == 200);
    CHECK(strcasestr(buf, "\r\nContent-Type: text/event-stream\r\n") != NULL);
    CHECK(strcasestr(buf, "\r\nCache-Control: no-cache\r\n") != NULL);
    CHECK(strstr(buf, "id: 1\nevent: tick\ndata: {\"n\":1}\n\n") != NULL);
    CHECK(strstr(buf, "id: 2\nevent: tick\ndata: {\"n\":2}\n\n") != NULL);
    CHECK(strstr(buf, "id: 3\nevent: tick\ndata: {\"n\":3}\n\n") != NULL);
    CHECK(atomic_load(&sse_closes) == closes);
    close(fd);
    CHECK(wait_for(&sse_closes, closes + 1, 2000));
}

static void flood_sse(void *arg)
{
    int *rc = arg;
    static char big[60000];
    memset(big, 'x', sizeof(big) - 1);
    *rc = 0;
    for (int i = 0; i < 40 && *rc == 0 && last_sse; i++)
        *rc = kh_sse_send(last_sse, 0, "big", big);
}

static void close_sse(void *arg)
{
    (void)arg;
    kh_sse_close(last_sse);
}

static void test_sse_close_and_overflow(void)
{
    char buf[8192];
    int closes = atomic_load(&sse_closes);
    /* The server ends the stream: the chunked body ends, on_close runs. */
    int fd = raw_unix();
    const char *req = "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, req, strlen(req));
    read_until(fd, buf, sizeof(buf), "data: {\"n\":3}\n\n", 3000, NULL);
    loop_call(close_sse, NULL);
    read_until(fd, buf, sizeof(buf), "0\r\n\r\n", 3000, NULL);
    CHECK(strstr(buf, "0\r\n\r\n") != NULL);
    CHECK(wait_for(&sse_closes, closes + 1, 2000));
    /* The connection is still good for another request. */
    CHECK(raw_request_status(fd, "GET /api/v1/hello HTTP/1.1\r\nHost: x\r\n\r\n") == 200);
    close(fd);

    /* A client that does not read: over 1 MiB queued, it is dropped. */
    fd = raw_unix();
    send_all(fd, req, strlen(req));
    read_until(fd, buf, sizeof(buf), "data: {\"n\":3}\n\n", 3000, NULL);
    int rc = 0;
    loop_call(flood_sse, &rc);
    CHECK(rc == -1);
    CHECK(wait_for(&sse_closes, closes + 2, 3000));
    bool eof = false;
    static char sink[1 << 16];
    for (int i = 0; i < 100 && !eof; i++)
        read_until(fd, sink, sizeof(sink), NULL, 100, &eof);
    CHECK(eof);
    close(fd);
}


static void test_unit_helpers(void)
{
    char out[29];
    CHECK(kh_ws__accept_key(ws_key, out));
    CHECK_STR(out, ws_accept);
    CHECK(!kh_ws__accept_key("dGhlIHNhbXBsZSBub25jZQ", out));
    CHECK(!kh_ws__accept_key("dGhlIHNhbXBsZSBub25j!Q==", out));
    CHECK(!kh_ws__accept_key(NULL, out));
}

int main(void)
{
    test_unit_helpers();
    if (harness_start() < 0)
        return 1;
    harness_run();
    RUN(test_websocket);
    RUN(test_websocket_overflow);
    RUN(test_websocket_handshake);
    RUN(test_sse);
    RUN(test_sse_close_and_overflow);
    CHECK(harness_stop() == 0);
    TEST_DONE();
}
