/* test_tls.c - the HTTP server over TLS (a certificate made here): requests,
 * WebSockets and the connection limit through TLS. The fixture is
 * http_harness.h.
 */
#include "http_harness.h"

/* ---- TLS ---- */

static int tls_connect_fd(void)
{
    int fd = raw_tcp(tls_port, false);
    struct timeval tv = { 3, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static bool make_cert(const char *cert_path, const char *key_path)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!pkey || !x)
        return false;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    bool ok = X509_sign(x, pkey, EVP_sha256()) > 0;
    FILE *f = fopen(cert_path, "w");
    ok = ok && f && PEM_write_X509(f, x);
    if (f)
        fclose(f);
    f = fopen(key_path, "w");
    ok = ok && f && PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ok;
}

static kh_http_server *tls_srv;
static char tls_err[600];

static void tls_start(void *arg)
{
    (void)arg;
    char cert[400], key[400];
    snprintf(cert, sizeof(cert), "%s/cert.pem", tmpdir);
    snprintf(key, sizeof(key), "%s/key.pem", tmpdir);
    kh_http_config cfg = {
        .tcp_listen = "127.0.0.1:0", .auth = kh_auth_check, .auth_opaque = auth,
        .tls_cert = cert, .tls_key = key,
        .max_connections = 2, /* a connection leaked by a closed WebSocket shows */
    };
    kh_err err = KH_ERR_INIT;
    tls_srv = kh_http_server_new(&loop, &cfg, routes, nroutes, &loop, &err);
    snprintf(tls_err, sizeof(tls_err), "%s", err.msg);
    tls_port = kh_http_server_tcp_port(tls_srv);
}

static void tls_stop(void *arg)
{
    (void)arg;
    kh_http_server_free(tls_srv);
    tls_srv = NULL;
}

static void test_tls(void)
{
    char cert[400], key[400];
    snprintf(cert, sizeof(cert), "%s/cert.pem", tmpdir);
    snprintf(key, sizeof(key), "%s/key.pem", tmpdir);
    CHECK(make_cert(cert, key));
    loop_call(tls_start, NULL);
    CHECK(tls_srv != NULL);
    if (!tls_srv) {
        printf("# tls: %s\n", tls_err);
        return;
    }
    const char *good[] = { "Authorization: Bearer " TOKEN, NULL };
    resp r;
    CHECK(do_req(VIA_TLS, "GET", "/api/v1/hello", good, NULL, 0, &r) == 0);
    CHECK(r.status == 200);
    resp_clear(&r);
    do_req(VIA_TLS, "GET", "/api/v1/hello", NULL, NULL, 0, &r);
    CHECK(r.status == 401);
    resp_clear(&r);
    do_req(VIA_TLS, "GET", "/api/v1/slow", good, NULL, 0, &r);
    CHECK(r.status == 200);
    resp_clear(&r);

    /* A WebSocket through TLS (MHD relays the upgraded stream). */
    int closes = atomic_load(&ws_closes);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    int fd = tls_connect_fd();
    SSL_set_fd(ssl, fd);
    CHECK(SSL_connect(ssl) == 1);
    char req[512];
    snprintf(req, sizeof(req),
             "GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
             "Authorization: Bearer " TOKEN "\r\n\r\n",
             ws_key);
    CHECK(SSL_write(ssl, req, (int)strlen(req)) == (int)strlen(req));
    char buf[4096];
    size_t len = 0;
    while (len < sizeof(buf) - 1 && !memmem(buf, len, "\r\n\r\n", 4)) {
        int n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len));
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    CHECK(status_of(buf) == 101);
    char frame[64];
    size_t flen;
    ws_frame(frame, &flen, 1, "tls echo", 8, true);
    CHECK(SSL_write(ssl, frame, (int)flen) == (int)flen);
    char *end = strstr(buf, "\r\n\r\n");
    size_t have = end ? len - (size_t)(end + 4 - buf) : 0;
    char echo[64];
    memcpy(echo, end ? end + 4 : "", have);
    while (have < 10) {
        int n = SSL_read(ssl, echo + have, (int)(sizeof(echo) - have));
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    CHECK(have == 10 && (unsigned char)echo[0] == 0x81 && echo[1] == 8 &&
          memcmp(echo + 2, "tls echo", 8) == 0);
    /* The client just drops the connection (no close frame, no TLS
     * close_notify): the session still ends. */
    SSL_free(ssl);
    close(fd);
    CHECK(wait_for(&ws_closes, closes + 1, 3000));

    /* Server-initiated close: the close frame makes it through the relay. */
    ssl = SSL_new(ctx);
    fd = tls_connect_fd();
    SSL_set_fd(ssl, fd);
    CHECK(SSL_connect(ssl) == 1);
    SSL_write(ssl, req, (int)strlen(req));
    len = 0;
    while (len < sizeof(buf) - 1 && !memmem(buf, len, "\r\n\r\n", 4)) {
        int n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len));
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    CHECK(status_of(buf) == 101);
    ws_frame(frame, &flen, 1, "close", 5, true);
    SSL_write(ssl, frame, (int)flen);
    end = strstr(buf, "\r\n\r\n");
    have = end ? len - (size_t)(end + 4 - buf) : 0;
    memcpy(echo, end ? end + 4 : "", have);
    while (have < 4) {
        int n = SSL_read(ssl, echo + have, (int)(sizeof(echo) - have));
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    CHECK(have >= 4 && (unsigned char)echo[0] == 0x88);
    ws_frame(frame, &flen, 8, "\x03\xe8", 2, true);
    SSL_write(ssl, frame, (int)flen);
    CHECK(wait_for(&ws_closes, closes + 2, 3000));
    uint64_t t0 = kh_now_ms();
    int n = SSL_read(ssl, echo, sizeof(echo));
    CHECK(n <= 0); /* then the connection ends */
    printf("# tls close took %llu ms\n", (unsigned long long)(kh_now_ms() - t0));
    SSL_free(ssl);
    close(fd);

    /* Client-initiated close: the server's close reply is relayed before
     * the connection ends. */
    ssl = SSL_new(ctx);
    fd = tls_connect_fd();
    SSL_set_fd(ssl, fd);
    CHECK(SSL_connect(ssl) == 1);
    SSL_write(ssl, req, (int)strlen(req));
    len = 0;
    while (len < sizeof(buf) - 1 && !memmem(buf, len, "\r\n\r\n", 4)) {
        int k = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len));
        if (k <= 0)
            break;
        len += (size_t)k;
        buf[len] = '\0';
    }
    CHECK(status_of(buf) == 101);
    ws_frame(frame, &flen, 8, "\x03\xe8", 2, true);
    SSL_write(ssl, frame, (int)flen);
    have = 0;
    t0 = kh_now_ms();
    while (have < 4) {
        int k = SSL_read(ssl, echo + have, (int)(sizeof(echo) - have));
        if (k <= 0)
            break;
        have += (size_t)k;
    }
    CHECK(have == 4 && (unsigned char)echo[0] == 0x88 && echo[1] == 2);
    CHECK(SSL_read(ssl, echo, sizeof(echo)) <= 0);
    CHECK(kh_now_ms() - t0 < 2000);
    CHECK(wait_for(&ws_closes, closes + 3, 3000));
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);

    /* max_connections is 2 here: closed WebSockets left nothing behind. */
    for (int i = 0; i < 3; i++) {
        do_req(VIA_TLS, "GET", "/api/v1/hello", good, NULL, 0, &r);
        CHECK(r.status == 200);
        resp_clear(&r);
    }
    loop_call(tls_stop, NULL);
}

int main(void)
{
    if (harness_start() < 0)
        return 1;
    harness_run();
    RUN(test_tls);
    CHECK(harness_stop() == 0);
    TEST_DONE();
}
