/* test_http.c - the HTTP server (src/api/http.c, ws.c, openapi.c) against
 * real clients.
 *
 * The server runs on a uv loop in a second thread; the main thread is the
 * client (libcurl, and raw sockets for what curl will not do: WebSocket
 * frames, broken requests, early disconnects, bursts). Handlers run on the
 * loop thread; they share only atomics with the main thread, and main
 * touches the server only through loop_call().
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../kh_test.h"
#define KH_HTTP_INTERNAL /* kh_ws__accept_key */
#include "api/auth.h"
#include "api/openapi.h"
#include "http/http.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define TOKEN "s3cret-token-for-tests"

static uv_loop_t loop;
static pthread_t loop_thread;
static kh_http_server *srv;
static char tmpdir[256];
static char sock_path[300];
static char web_dir[300];
static kh_auth *auth; /* the API policy with TOKEN (api/auth.h) */
static int tcp_port;

static atomic_int n_items;      /* POST /api/v1/items handler runs */
static atomic_int n_aborts;     /* abort callbacks */
static atomic_int n_late_drop;  /* late replies to a request nobody waits for */
static atomic_int ws_opens, ws_closes, ws_overflows;
static atomic_int sse_opens, sse_closes;
static kh_sse *last_sse;        /* loop thread only */

/* ---- running things on the loop thread ---- */

static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t call_cv = PTHREAD_COND_INITIALIZER;
static void (*call_fn)(void *);
static void *call_arg;
static bool call_done;
static uv_async_t call_async;

static void call_async_cb(uv_async_t *a)
{
    (void)a;
    pthread_mutex_lock(&call_mu);
    void (*fn)(void *) = call_fn;
    void *arg = call_arg;
    call_fn = NULL;
    pthread_mutex_unlock(&call_mu);
    if (!fn)
        return;
    fn(arg);
    pthread_mutex_lock(&call_mu);
    call_done = true;
    pthread_cond_signal(&call_cv);
    pthread_mutex_unlock(&call_mu);
}

/* Run fn(arg) on the loop thread and wait for it. */
static void loop_call(void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&call_mu);
    call_fn = fn;
    call_arg = arg;
    call_done = false;
    pthread_mutex_unlock(&call_mu);
    uv_async_send(&call_async);
    pthread_mutex_lock(&call_mu);
    while (!call_done)
        pthread_cond_wait(&call_cv, &call_mu);
    pthread_mutex_unlock(&call_mu);
}

static void *loop_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- handlers (loop thread) ---- */

static void h_hello(kh_http_req *req, void *app)
{
    (void)app;
    const char *x = kh_http_req_query(req, "x");
    json_t *j = json_pack("{s:s,s:b}", "hello", "world", "local", kh_http_req_is_local(req));
    if (x)
        json_object_set_new(j, "x", json_string(x));
    kh_http_reply_json(req, 200, j);
}

static void h_item(kh_http_req *req, void *app)
{
    (void)app;
    kh_http_reply_json(req, 200, json_pack("{s:s}", "name", kh_http_req_param(req, "name")));
}

static void h_items_post(kh_http_req *req, void *app)
{
    (void)app;
    atomic_fetch_add(&n_items, 1);
    kh_err err = KH_ERR_INIT;
    json_t *j = kh_http_req_json(req, &err);
    if (!j) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_req_add_header(req, "Location", "/api/v1/items/x");
    kh_http_reply_json(req, 201, json_pack("{s:O}", "got", j));
}

static void h_raw(kh_http_req *req, void *app)
{
    (void)app;
    size_t len;
    const char *b = kh_http_req_body(req, &len);
    kh_http_reply_data(req, 200, "text/plain", b, len);
}

static void h_public(kh_http_req *req, void *app)
{
    (void)app;
    kh_http_reply_json(req, 200, json_pack("{s:b}", "public", 1));
}

typedef struct slow {
    uv_timer_t t;
    kh_http_req *req;
    bool drop_counts;
} slow;

static void slow_closed(uv_handle_t *h)
{
    free(h->data);
}

static void slow_fire(uv_timer_t *t)
{
    slow *s = t->data;
    if (s->drop_counts)
        atomic_fetch_add(&n_late_drop, 1);
    kh_http_reply_json(s->req, 200, json_pack("{s:b}", "slow", 1));
    uv_close((uv_handle_t *)t, slow_closed);
}

static void slow_abort(kh_http_req *req, void *opaque)
{
    (void)req;
    slow *s = opaque;
    atomic_fetch_add(&n_aborts, 1);
    uv_timer_stop(&s->t);
    uv_close((uv_handle_t *)&s->t, slow_closed);
}

/* Replies 50 ms later from a timer; cancels on abort. */
static void h_slow(kh_http_req *req, void *app)
{
    uv_loop_t *l = app;
    slow *s = xcalloc(1, sizeof(*s));
    s->req = req;
    uv_timer_init(l, &s->t);
    s->t.data = s;
    const char *ms = kh_http_req_query(req, "ms");
    uv_timer_start(&s->t, slow_fire, ms ? strtoull(ms, NULL, 10) : 50, 0);
    kh_http_req_on_abort(req, slow_abort, s);
}

/* Replies 300 ms later and sets no abort callback. */
static void h_noabort(kh_http_req *req, void *app)
{
    uv_loop_t *l = app;
    slow *s = xcalloc(1, sizeof(*s));
    s->req = req;
    s->drop_counts = true;
    uv_timer_init(l, &s->t);
    s->t.data = s;
    uv_timer_start(&s->t, slow_fire, 300, 0);
}

static void ws_on_open(kh_ws *ws, void *opaque)
{
    (void)ws;
    (void)opaque;
    atomic_fetch_add(&ws_opens, 1);
}

static void ws_on_message(kh_ws *ws, bool binary, const void *data, size_t len, void *opaque)
{
    (void)opaque;
    if (len == 5 && memcmp(data, "close", 5) == 0) {
        kh_ws_close(ws);
        return;
    }
    if (len == 5 && memcmp(data, "flood", 5) == 0) {
        /* 2.5 MiB at once: over the 1 MiB queue bound. */
        static char chunk[64 * 1024];
        int rc = 0;
        for (int i = 0; i < 40 && rc == 0; i++)
            rc = kh_ws_send(ws, true, chunk, sizeof(chunk));
        if (rc != 0)
            atomic_fetch_add(&ws_overflows, 1);
        return;
    }
    kh_ws_send(ws, binary, data, len);
}

static void ws_on_close(kh_ws *ws, void *opaque)
{
    (void)ws;
    (void)opaque;
    atomic_fetch_add(&ws_closes, 1);
}

static const kh_ws_callbacks ws_cbs = { ws_on_open, ws_on_message, ws_on_close };

static void h_ws(kh_http_req *req, void *app)
{
    (void)app;
    kh_http_reply_websocket(req, &ws_cbs, NULL);
}

static void sse_on_open(kh_sse *sse, void *opaque)
{
    (void)opaque;
    atomic_fetch_add(&sse_opens, 1);
    last_sse = sse;
    for (int i = 1; i <= 3; i++) {
        char data[64];
        snprintf(data, sizeof(data), "{\"n\":%d}", i);
        kh_sse_send(sse, (unsigned long long)i, "tick", data);
    }
}

static void sse_on_close(kh_sse *sse, void *opaque)
{
    (void)opaque;
    if (last_sse == sse)
        last_sse = NULL;
    atomic_fetch_add(&sse_closes, 1);
}

static const kh_sse_callbacks sse_cbs = { sse_on_open, sse_on_close };

static void h_events(kh_http_req *req, void *app)
{
    (void)app;
    kh_http_reply_sse(req, &sse_cbs, NULL);
}

static const kh_route routes[] = {
    { "GET", "/api/v1/hello", h_hello, 0, "say hello", NULL, "Hello" },
    { "GET", "/api/v1/items/{name}", h_item, 0, "one item", NULL, "Item" },
    { "DELETE", "/api/v1/items/{name}", h_item, 0, "delete an item", NULL, NULL },
    { "POST", "/api/v1/items", h_items_post, 0, "create an item", "ItemSpec", "Item" },
    { "POST", "/api/v1/raw", h_raw, KH_ROUTE_RAW, "raw echo", NULL, NULL },
    { "GET", "/api/v1/slow", h_slow, 0, "late reply", NULL, NULL },
    { "GET", "/api/v1/noabort", h_noabort, 0, "late reply, no abort callback", NULL, NULL },
    { "GET", "/api/v1/public", h_public, KH_ROUTE_PUBLIC, "public", NULL, NULL },
    { "GET", "/api/v1/ws", h_ws, KH_ROUTE_WEBSOCKET, "echo WebSocket", NULL, NULL },
    { "GET", "/api/v1/events", h_events, KH_ROUTE_SSE, "event stream", NULL, NULL },
    { "POST", "/api/v1/session", kh_session_routes_post, KH_ROUTE_PUBLIC, "log in", NULL, NULL },
    { "GET", "/api/v1/session", kh_session_routes_get, KH_ROUTE_PUBLIC, "session", NULL, NULL },
    { "DELETE", "/api/v1/session", kh_session_routes_delete, 0, "log out", NULL, NULL },
};

/* ---- libcurl client ---- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char *hdrs;
    size_t hlen;
    double secs;
} resp;

static void resp_clear(resp *r)
{
    free(r->body);
    free(r->hdrs);
    memset(r, 0, sizeof(*r));
}

static void buf_append(char **buf, size_t *len, const char *p, size_t n)
{
    *buf = xrealloc(*buf, *len + n + 1);
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static size_t body_cb(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    buf_append(&r->body, &r->len, p, sz * n);
    return sz * n;
}

static size_t hdr_cb(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    buf_append(&r->hdrs, &r->hlen, p, sz * n);
    return sz * n;
}

/* The value of a response header (a static copy), or NULL. */
static const char *resp_header(const resp *r, const char *name)
{
    static char val[512];
    if (!r->hdrs)
        return NULL;
    size_t nl = strlen(name);
    for (const char *p = r->hdrs; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t l = strcspn(v, "\r\n");
            if (l >= sizeof(val))
                l = sizeof(val) - 1;
            memcpy(val, v, l);
            val[l] = '\0';
            return val;
        }
    }
    return NULL;
}

typedef struct upload {
    size_t left;
} upload;

static size_t read_cb(char *buf, size_t sz, size_t n, void *ud)
{
    upload *u = ud;
    size_t m = sz * n;
    if (m > u->left)
        m = u->left;
    memset(buf, ' ', m);
    u->left -= m;
    return m;
}

enum { VIA_UNIX, VIA_TCP, VIA_TLS };

static int tls_port;

/* One request. body NULL: none; chunked_size > 0: a chunked upload of
 * that many bytes instead. Returns the curl code. */
static int do_req(int via, const char *method, const char *path, const char *const *hdrs,
                  const char *body, size_t chunked_size, resp *r)
{
    memset(r, 0, sizeof(*r));
    CURL *c = curl_easy_init();
    char url[512];
    if (via == VIA_UNIX) {
        snprintf(url, sizeof(url), "http://localhost%s", path);
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock_path);
    } else if (via == VIA_TCP) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", tcp_port, path);
    } else {
        snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", tls_port, path);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hdr_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist *sl = NULL;
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        sl = curl_slist_append(sl, hdrs[i]);
    upload up = { chunked_size };
    if (chunked_size) {
        sl = curl_slist_append(sl, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    int rc = (int)curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &r->secs);
    curl_slist_free_all(sl);
    curl_easy_cleanup(c);
    return rc;
}

static json_t *resp_json(const resp *r)
{
    return r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
}

static const char *err_code(const resp *r)
{
    static char code[64];
    json_t *j = resp_json(r);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    snprintf(code, sizeof(code), "%s", c ? c : "(none)");
    json_decref(j);
    return code;
}

/* ---- raw sockets ---- */

static int raw_unix(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(sock_path) >= sizeof(sa.sun_path)) {
        close(fd);
        return -1;
    }
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_tcp(int port, bool nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read into buf until needle shows up (NULL: until EOF), EOF, or timeout.
 * Returns the bytes held; *eof tells whether the peer closed. */
static size_t read_until(int fd, char *buf, size_t cap, const char *needle, int timeout_ms,
                         bool *eof)
{
    size_t len = 0;
    uint64_t end = kh_now_ms() + (uint64_t)timeout_ms;
    if (eof)
        *eof = false;
    buf[0] = '\0';
    while (len + 1 < cap) {
        if (needle && memmem(buf, len, needle, strlen(needle)))
            break;
        int64_t left = (int64_t)(end - kh_now_ms());
        if (left <= 0)
            break;
        struct pollfd pfd = { fd, POLLIN, 0 };
        int pr = poll(&pfd, 1, (int)left);
        if (pr <= 0)
            continue;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (eof)
                *eof = true;
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
    }
    return len;
}

static int status_of(const char *buf)
{
    int st = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &st) != 1)
        return 0;
    return st;
}

static int raw_request_status(int fd, const char *req)
{
    char buf[8192];
    if (!send_all(fd, req, strlen(req)))
        return -1;
    read_until(fd, buf, sizeof(buf), "\r\n\r\n", 3000, NULL);
    return status_of(buf);
}

/* ---- WebSocket client bits ---- */

static const char ws_key[] = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455's example */
static const char ws_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

static void ws_frame(char *out, size_t *outlen, int opcode, const void *data, size_t len,
                     bool masked)
{
    size_t o = 0;
    out[o++] = (char)(0x80 | opcode);
    if (len < 126) {
        out[o++] = (char)((masked ? 0x80 : 0) | len);
    } else {
        out[o++] = (char)((masked ? 0x80 : 0) | 126);
        out[o++] = (char)(len >> 8);
        out[o++] = (char)(len & 0xff);
    }
    const unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    if (masked) {
        memcpy(out + o, mask, 4);
        o += 4;
    }
    for (size_t i = 0; i < len; i++)
        out[o + i] = (char)(((const unsigned char *)data)[i] ^ (masked ? mask[i % 4] : 0));
    *outlen = o + len;
}

/* Read one unmasked server frame; returns its opcode, -1 on failure. */
static int ws_read_frame(int fd, char *payload, size_t cap, size_t *plen, int timeout_ms)
{
    unsigned char h[4];
    size_t got = 0;
    uint64_t end = kh_now_ms() + (uint64_t)timeout_ms;
    size_t need = 2;
    size_t len = 0;
    int opcode = -1;
    unsigned char *dst = h;
    bool header = true;
    while (got < need) {
        int64_t left = (int64_t)(end - kh_now_ms());
        if (left <= 0)
            return -1;
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        ssize_t n = recv(fd, dst + got, need - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
        if (got < need)
            continue;
        if (header && need == 2) {
            if (h[1] & 0x80)
                return -2; /* servers must not mask */
            opcode = h[0] & 0x0f;
            len = h[1] & 0x7f;
            if (len == 126) {
                need = 4;
                continue;
            }
        } else if (header && need == 4) {
            len = ((size_t)h[2] << 8) | h[3];
        }
        if (header) {
            header = false;
            if (len > cap)
                return -1;
            dst = (unsigned char *)payload;
            got = 0;
            need = len;
        }
    }
    *plen = len;
    return opcode;
}

static int ws_connect(int via, const char *extra_headers, char *resp_out, size_t cap)
{
    int fd = via == VIA_UNIX ? raw_unix() : raw_tcp(tcp_port, false);
    if (fd < 0)
        return -1;
    char req[1024];
    snprintf(req, sizeof(req),
             "GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
             "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Key: %s\r\n%s\r\n",
             tcp_port, ws_key, extra_headers ? extra_headers : "");
    send_all(fd, req, strlen(req));
    read_until(fd, resp_out, cap, "\r\n\r\n", 3000, NULL);
    return fd;
}

static bool ws_echo(int fd, const char *msg)
{
    char frame[512], payload[512];
    size_t flen, plen = 0;
    ws_frame(frame, &flen, 1, msg, strlen(msg), true);
    if (!send_all(fd, frame, flen))
        return false;
    int op = ws_read_frame(fd, payload, sizeof(payload), &plen, 3000);
    return op == 1 && plen == strlen(msg) && memcmp(payload, msg, plen) == 0;
}

static bool wait_for(atomic_int *v, int want, int timeout_ms)
{
    uint64_t end = kh_now_ms() + (uint64_t)timeout_ms;
    while (atomic_load(v) < want) {
        if (kh_now_ms() > end)
            return false;
        sleep_ms(5);
    }
    return true;
}

/* ---- tests ---- */

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

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    kh_err err = KH_ERR_INIT;
    kh_fs_write_atomic(path, content, strlen(content), 0644, &err);
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
    CHECK(answered >= 64);
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
    tls_srv = kh_http_server_new(&loop, &cfg, routes, KH_ARRAY_LEN(routes), &loop, &err);
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

/* ---- OpenAPI ---- */

/* j["a"]["b"]... for "a|b|..." */
static json_t *jget(json_t *j, const char *keys)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", keys);
    char *save = NULL;
    for (char *k = strtok_r(buf, "|", &save); k && j; k = strtok_r(NULL, "|", &save))
        j = json_object_get(j, k);
    return j;
}

static void test_openapi(void)
{
    json_t *schemas = json_pack("{s:{s:s},s:{s:s},s:{s:s}}", "Hello", "type", "object", "Item",
                                "type", "object", "ItemSpec", "type", "object");
    json_t *doc = kh_http_openapi(routes, KH_ARRAY_LEN(routes), schemas, "1.2.3");
    CHECK(doc != NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "openapi")), "3.0.3");
    CHECK_STR(json_string_value(json_object_get(json_object_get(doc, "info"), "title")), "kvmhost");
    CHECK_STR(json_string_value(json_object_get(json_object_get(doc, "info"), "version")), "1.2.3");
    json_t *paths = json_object_get(doc, "paths");
    CHECK(json_object_size(paths) == 10);
    json_t *item = json_object_get(paths, "/api/v1/items/{name}");
    json_t *get = json_object_get(item, "get");
    CHECK(get && json_object_get(item, "delete"));
    json_t *p0 = json_array_get(json_object_get(get, "parameters"), 0);
    CHECK_STR(json_string_value(json_object_get(p0, "name")), "name");
    CHECK_STR(json_string_value(json_object_get(p0, "in")), "path");
    CHECK(json_is_true(json_object_get(p0, "required")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(p0, "schema"), "type")), "string");
    CHECK_STR(json_string_value(json_object_get(get, "summary")), "one item");
    json_t *gresp = json_object_get(get, "responses");
    CHECK(json_object_get(gresp, "404") && json_object_get(gresp, "401"));
    CHECK_STR(json_string_value(jget(gresp, "200|content|application/json|schema|$ref")),
              "#/components/schemas/Item");
    json_t *post = json_object_get(json_object_get(paths, "/api/v1/items"), "post");
    CHECK_STR(json_string_value(jget(post, "requestBody|content|application/json|schema|$ref")),
              "#/components/schemas/ItemSpec");
    CHECK(json_object_get(json_object_get(post, "responses"), "413") != NULL);
    CHECK(json_object_get(json_object_get(post, "responses"), "415") != NULL);
    /* Security: global bearer, public routes opt out. */
    json_t *sec = json_array_get(json_object_get(doc, "security"), 0);
    CHECK(json_object_get(sec, "bearer") != NULL);
    json_t *pub = json_object_get(json_object_get(paths, "/api/v1/public"), "get");
    CHECK(json_is_array(json_object_get(pub, "security")) &&
          json_array_size(json_object_get(pub, "security")) == 0);
    CHECK(json_object_get(get, "security") == NULL);
    CHECK(json_object_get(json_object_get(pub, "responses"), "401") == NULL);
    json_t *comp = json_object_get(doc, "components");
    CHECK(json_object_get(json_object_get(comp, "schemas"), "Error") != NULL);
    CHECK(json_object_get(json_object_get(comp, "schemas"), "ItemSpec") != NULL);
    CHECK_STR(json_string_value(jget(comp, "securitySchemes|bearer|scheme")), "bearer");
    json_t *ws = json_object_get(json_object_get(paths, "/api/v1/ws"), "get");
    CHECK(json_object_get(json_object_get(ws, "responses"), "101") != NULL);
    CHECK(json_object_get(ws, "description") != NULL);
    json_t *ev = json_object_get(json_object_get(paths, "/api/v1/events"), "get");
    CHECK(jget(ev, "responses|200|content|text/event-stream") != NULL);
    /* Every $ref resolves. */
    char *s1 = json_dumps(doc, JSON_COMPACT);
    for (const char *p = s1; (p = strstr(p, "\"$ref\":\"#/components/")) != NULL; p++) {
        const char *q = p + strlen("\"$ref\":\"#/components/");
        char kind[64], name[64];
        CHECK(sscanf(q, "%63[^/]/%63[^\"]", kind, name) == 2);
        CHECK(json_object_get(json_object_get(comp, kind), name) != NULL);
    }
    /* Deterministic. */
    json_t *doc2 = kh_http_openapi(routes, KH_ARRAY_LEN(routes), schemas, "1.2.3");
    char *s2 = json_dumps(doc2, JSON_COMPACT);
    CHECK(strcmp(s1, s2) == 0);
    free(s1);
    free(s2);
    json_decref(doc2);
    json_decref(doc);
    json_decref(schemas);
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

/* ---- shutdown with everything open ---- */

static void free_server(void *arg)
{
    (void)arg;
    kh_http_server_free(srv);
    srv = NULL;
    uv_close((uv_handle_t *)&call_async, NULL);
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
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getenv("KH_TEST_DEBUG"))
        kh_log_init(NULL, KH_LOG_DEBUG);
    curl_global_init(CURL_GLOBAL_ALL);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kh-http-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(sock_path, sizeof(sock_path), "%s/api.sock", tmpdir);
    snprintf(web_dir, sizeof(web_dir), "%s/web", tmpdir);
    mkdir(web_dir, 0755);
    char sub[400];
    snprintf(sub, sizeof(sub), "%s/sub", web_dir);
    mkdir(sub, 0755);
    write_file(web_dir, "index.html", "<h1>kvmhost</h1>");
    write_file(web_dir, "app.js", "console.log(1)");
    write_file(web_dir, "app.js.gz", "GZIPPED");
    write_file(web_dir, ".hidden", "secret");
    write_file(sub, "style.css", "body{}");
    char link[400];
    snprintf(link, sizeof(link), "%s/evil", web_dir);
    CHECK(symlink("/etc/passwd", link) == 0);
    snprintf(link, sizeof(link), "%s/evildir", web_dir);
    CHECK(symlink("/etc", link) == 0);

    test_unit_helpers();
    test_openapi();
    printf("ok test_openapi\n");

    uv_loop_init(&loop);
    uv_async_init(&loop, &call_async, call_async_cb);
    auth = kh_auth_new(TOKEN, false);
    kh_http_config cfg = {
        .unix_path = sock_path,
        .unix_mode = 0600,
        .tcp_listen = "127.0.0.1:0",
        .auth = kh_auth_check,
        .auth_opaque = auth,
        .max_connections = 64,
        .web_dir = web_dir,
        .web_skip = "/api",
        .idle_timeout = 2,
    };
    kh_err err = KH_ERR_INIT;
    srv = kh_http_server_new(&loop, &cfg, routes, KH_ARRAY_LEN(routes), &loop, &err);
    if (!srv) {
        printf("not ok - server: %s\n", err.msg);
        return 1;
    }
    tcp_port = kh_http_server_tcp_port(srv);
    CHECK(tcp_port > 0);
    struct stat st;
    CHECK(stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
    test_config_errors();
    pthread_create(&loop_thread, NULL, loop_main, NULL);

    RUN(test_json_unix);
    RUN(test_params);
    RUN(test_404_405);
    RUN(test_bodies);
    RUN(test_too_large);
    RUN(test_tcp_auth);
    RUN(test_session);
    RUN(test_async);
    RUN(test_abort);
    RUN(test_websocket);
    RUN(test_websocket_overflow);
    RUN(test_websocket_handshake);
    RUN(test_sse);
    RUN(test_sse_close_and_overflow);
    RUN(test_static);
    RUN(test_burst);
    RUN(test_timeouts);
    RUN(test_tls);
    int bad = 0;
    loop_call(tcp_errors, &bad);
    CHECK(bad == 0);
    loop_call(unix_cases, &bad);
    CHECK(bad == 0);
    RUN(test_shutdown);

    pthread_join(loop_thread, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    kh_auth_free(auth);
    curl_global_cleanup();
    kh_err err2 = KH_ERR_INIT;
    kh_fs_rm_rf(tmpdir, &err2);
    TEST_DONE();
}
