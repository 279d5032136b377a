/* wsclient.c - a WebSocket client over mutual TLS (ws.h, kh_ws_connect).
 *
 * A thread of its own connects, does TLS with OpenSSL (the given CA file
 * only; the server's certificate must carry the URL's IP address or name),
 * sends the upgrade request and checks the 101 answer and its
 * Sec-WebSocket-Accept. Then it pumps bytes between the TLS connection and
 * one end of a socket pair until either side closes; the loop frames the
 * other end (ws.c, client mode). The thread owns the TLS side and its end
 * of the pair; the loop owns the other end: closing it ends the thread.
 * Why a thread and not the loop: OpenSSL's blocking calls keep this short,
 * and the relay of one console is a few bytes a second.
 */
#define KH_HTTP_INTERNAL
#include "http/ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "util/log.h"
#include "util/mem.h"

#define HEAD_MAX 8192

typedef struct wsc {
    uv_loop_t *loop;
    char *host, *port, *path, *ca, *cert, *key, *header;
    unsigned timeout_ms;
    kh_ws_callbacks cbs;
    void *opaque;
    char key64[25];
    int fd_loop, fd_thread;
    uv_async_t *async;
    /* the thread's answer, read by the loop after the async fired */
    bool ok;
    char error[256];
} wsc;

static void wsc_free(wsc *w)
{
    free(w->host);
    free(w->port);
    free(w->path);
    free(w->ca);
    free(w->cert);
    free(w->key);
    free(w->header);
    free(w);
}

static void ssl_error(wsc *w, const char *what)
{
    char e[160] = "";
    unsigned long code = ERR_get_error();
    if (code)
        ERR_error_string_n(code, e, sizeof(e));
    snprintf(w->error, sizeof(w->error), "%s: %s", what, e[0] ? e : strerror(errno));
    ERR_clear_error();
}

static int tcp_connect(wsc *w)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(w->host, w->port, &hints, &res);
    if (rc != 0) {
        snprintf(w->error, sizeof(w->error), "%s: %s", w->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    struct timeval tv = { .tv_sec = w->timeout_ms / 1000,
                          .tv_usec = (w->timeout_ms % 1000) * 1000 };
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        /* bounded: connect, TLS and the handshake each wait at most this */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            snprintf(w->error, sizeof(w->error), "connect to %s:%s: %s", w->host, w->port,
                     strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static SSL *tls_connect(wsc *w, int fd, SSL_CTX **ctx_out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    *ctx_out = ctx;
    if (!ctx) {
        ssl_error(w, "TLS");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY); /* the pump polls: never block in a read */
    if (SSL_CTX_load_verify_locations(ctx, w->ca, NULL) != 1) {
        ssl_error(w, "the CA file");
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, w->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, w->key, SSL_FILETYPE_PEM) != 1) {
        ssl_error(w, "the client certificate");
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        ssl_error(w, "TLS");
        return NULL;
    }
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    unsigned char ip[16];
    if (inet_pton(AF_INET, w->host, ip) == 1 || inet_pton(AF_INET6, w->host, ip) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(param, w->host);
    } else {
        X509_VERIFY_PARAM_set1_host(param, w->host, 0);
        SSL_set_tlsext_host_name(ssl, w->host);
    }
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        ssl_error(w, "TLS handshake");
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Send the upgrade request, read the answer's head, check it; bytes past
 * the head go to the pair. */
static int upgrade(wsc *w, SSL *ssl)
{
    char *req = xasprintf("GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                          "Sec-WebSocket-Version: 13\r\n%s\r\n", w->path, w->host, w->port,
                          w->key64, w->header ? w->header : "");
    int rc = SSL_write(ssl, req, (int)strlen(req));
    free(req);
    if (rc <= 0) {
        ssl_error(w, "sending the upgrade request");
        return -1;
    }
    char head[HEAD_MAX + 1];
    size_t len = 0;
    char *end = NULL;
    while (!end) {
        if (len == HEAD_MAX) {
            snprintf(w->error, sizeof(w->error), "the answer's head is over %d bytes", HEAD_MAX);
            return -1;
        }
        int n = SSL_read(ssl, head + len, (int)(HEAD_MAX - len));
        if (n <= 0) {
            if (SSL_get_error(ssl, n) == SSL_ERROR_WANT_READ)
                continue;
            ssl_error(w, "reading the answer");
            return -1;
        }
        len += (size_t)n;
        head[len] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    *end = '\0';
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1 || status != 101) {
        snprintf(w->error, sizeof(w->error), "the server answered HTTP %d, not 101", status);
        return -1;
    }
    char want[29];
    const char *got = NULL;
    for (char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, "Sec-WebSocket-Accept:", 21) == 0)
            got = line + 2 + 21;
    while (got && *got == ' ')
        got++;
    if (!kh_ws__accept_key(w->key64, want) || !got || strncmp(got, want, 28) != 0) {
        snprintf(w->error, sizeof(w->error), "the server's Sec-WebSocket-Accept is wrong");
        return -1;
    }
    const char *rest = end + 4;
    size_t extra = len - (size_t)(rest - head);
    return extra ? write_all(w->fd_thread, rest, extra) : 0;
}

/* TLS <-> the pair until either side ends. */
static void pump(SSL *ssl, int sock, int fd)
{
    char buf[16384];
    for (;;) {
        if (SSL_pending(ssl) == 0) {
            struct pollfd p[2] = { { .fd = sock, .events = POLLIN },
                                   { .fd = fd, .events = POLLIN } };
            if (poll(p, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                return;
            }
            if (p[1].revents) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0 || SSL_write(ssl, buf, (int)n) <= 0)
                    return;
            }
            if (!p[0].revents)
                continue;
        }
        int n = SSL_read(ssl, buf, sizeof(buf));
        if (n <= 0) {
            if (SSL_get_error(ssl, n) == SSL_ERROR_WANT_READ)
                continue;
            return;
        }
        if (write_all(fd, buf, (size_t)n) < 0)
            return;
    }
}

static void *run(void *arg)
{
    wsc *w = arg;
    int fd = w->fd_thread;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    int sock = tcp_connect(w);
    if (sock >= 0)
        ssl = tls_connect(w, sock, &ctx);
    bool ok = ssl && upgrade(w, ssl) == 0;
    if (ok) {
        struct timeval none = { 0 };
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
    }
    w->ok = ok;
    uv_async_send(w->async); /* w is the loop's from here on */
    if (ok)
        pump(ssl, sock, fd);
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
    if (sock >= 0)
        close(sock);
    close(fd);
    ERR_clear_error();
    OPENSSL_thread_stop();
    return NULL;
}

static void async_closed(uv_handle_t *h)
{
    free(h);
}

static void on_ready(uv_async_t *a)
{
    wsc *w = a->data;
    uv_close((uv_handle_t *)a, async_closed);
    if (w->ok) {
        kh_ws__client_attach(w->loop, w->fd_loop, &w->cbs, w->opaque);
    } else {
        kh_log(KH_LOG_WARN, "ws.connect", "host=%s path=\"%s\" error=\"%s\"", w->host, w->path,
               w->error);
        close(w->fd_loop);
        if (w->cbs.on_close)
            w->cbs.on_close(NULL, w->opaque);
    }
    wsc_free(w);
}

/* "https://HOST:PORT" (HOST may be [v6]) into host and port. */
static int parse_url(const char *url, char **host, char **port)
{
    if (strncmp(url, "https://", 8) != 0)
        return -1;
    const char *h = url + 8, *colon;
    size_t hl;
    if (*h == '[') {
        const char *close_br = strchr(h, ']');
        if (!close_br || close_br[1] != ':')
            return -1;
        h++;
        hl = (size_t)(close_br - h);
        colon = close_br + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - h);
    }
    const char *p = colon + 1;
    size_t pl = strcspn(p, "/");
    if (!hl || !pl || pl > 5 || strspn(p, "0123456789") != pl)
        return -1;
    *host = xstrndup(h, hl);
    *port = xstrndup(p, pl);
    return 0;
}

int kh_ws_connect(uv_loop_t *loop, const kh_ws_connect_opts *o, const kh_ws_callbacks *cbs,
                  void *opaque, const char **err)
{
    wsc *w = xcalloc(1, sizeof(*w));
    if (parse_url(o->url, &w->host, &w->port) < 0) {
        *err = "the URL must be https://HOST:PORT";
        wsc_free(w);
        return -1;
    }
    unsigned char nonce[16];
    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        *err = "no random bytes for the WebSocket key";
        wsc_free(w);
        return -1;
    }
    EVP_EncodeBlock((unsigned char *)w->key64, nonce, sizeof(nonce));
    w->loop = loop;
    w->path = xstrdup(o->path);
    w->ca = xstrdup(o->ca);
    w->cert = xstrdup(o->cert);
    w->key = xstrdup(o->key);
    w->header = o->header ? xstrdup(o->header) : NULL;
    w->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    if (cbs)
        w->cbs = *cbs;
    w->opaque = opaque;
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
        *err = "cannot make a socket pair";
        wsc_free(w);
        return -1;
    }
    fcntl(sp[0], F_SETFL, fcntl(sp[0], F_GETFL) | O_NONBLOCK);
    w->fd_loop = sp[0];
    w->fd_thread = sp[1];
    w->async = xcalloc(1, sizeof(*w->async));
    uv_async_init(loop, w->async, on_ready);
    w->async->data = w;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, run, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        *err = "cannot start the connection's thread";
        close(sp[0]);
        close(sp[1]);
        uv_close((uv_handle_t *)w->async, async_closed);
        wsc_free(w);
        return -1;
    }
    return 0;
}
