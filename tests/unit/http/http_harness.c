/* http_harness.c - the shared fixture of the HTTP server tests: the test
 * routes and their handlers, the loop thread, the clients (libcurl, raw
 * sockets, WebSocket frames), start and stop (http_harness.h). */
#include "http_harness.h"

uv_loop_t loop;
static pthread_t loop_thread;
static kh_http_server *srv;
char tmpdir[256];
char sock_path[300];
static char web_dir[300];
kh_auth *auth; /* the API policy with TOKEN (api/auth.h) */
int tcp_port;

atomic_int n_items;      /* POST /api/v1/items handler runs */
atomic_int n_aborts;     /* abort callbacks */
atomic_int n_late_drop;  /* late replies to a request nobody waits for */
atomic_int ws_opens, ws_closes, ws_overflows;
atomic_int sse_opens, sse_closes;
kh_sse *last_sse;        /* loop thread only */

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
void loop_call(void (*fn)(void *), void *arg)
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

void sleep_ms(int ms)
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

const kh_route routes[] = {
    { "GET", "/api/v1/hello", h_hello, 0, "say hello", NULL, "Hello", NULL, NULL },
    { "GET", "/api/v1/items/{name}", h_item, 0, "one item", NULL, "Item", NULL, NULL },
    { "DELETE", "/api/v1/items/{name}", h_item, 0, "delete an item", NULL, NULL, NULL, NULL },
    { "POST", "/api/v1/items", h_items_post, 0, "create an item", "ItemSpec", "Item", NULL, NULL },
    { "POST", "/api/v1/raw", h_raw, KH_ROUTE_RAW, "raw echo", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/slow", h_slow, 0, "late reply", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/noabort", h_noabort, 0, "late reply, no abort callback", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/public", h_public, KH_ROUTE_PUBLIC, "public", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/ws", h_ws, KH_ROUTE_WEBSOCKET, "echo WebSocket", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/events", h_events, KH_ROUTE_SSE, "event stream", NULL, NULL, NULL, NULL },
    { "POST", "/api/v1/session", kh_session_routes_post, KH_ROUTE_PUBLIC, "log in", NULL, NULL, NULL, NULL },
    { "GET", "/api/v1/session", kh_session_routes_get, KH_ROUTE_PUBLIC, "session", NULL, NULL, NULL, NULL },
    { "DELETE", "/api/v1/session", kh_session_routes_delete, 0, "log out", NULL, NULL, NULL, NULL },
};
const size_t nroutes = KH_ARRAY_LEN(routes);

/* ---- libcurl client ---- */


void resp_clear(resp *r)
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
const char *resp_header(const resp *r, const char *name)
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


int tls_port;

/* One request. body NULL: none; chunked_size > 0: a chunked upload of
 * that many bytes instead. Returns the curl code. */
int do_req(int via, const char *method, const char *path, const char *const *hdrs,
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

json_t *resp_json(const resp *r)
{
    return r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
}

const char *err_code(const resp *r)
{
    static char code[64];
    json_t *j = resp_json(r);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    snprintf(code, sizeof(code), "%s", c ? c : "(none)");
    json_decref(j);
    return code;
}

/* ---- raw sockets ---- */

int raw_unix(void)
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

int raw_tcp(int port, bool nonblock)
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

bool send_all(int fd, const void *p, size_t n)
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
size_t read_until(int fd, char *buf, size_t cap, const char *needle, int timeout_ms,
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

int status_of(const char *buf)
{
    int st = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &st) != 1)
        return 0;
    return st;
}

int raw_request_status(int fd, const char *req)
{
    char buf[8192];
    if (!send_all(fd, req, strlen(req)))
        return -1;
    read_until(fd, buf, sizeof(buf), "\r\n\r\n", 3000, NULL);
    return status_of(buf);
}

/* ---- WebSocket client bits ---- */

const char ws_key[] = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455's example */
const char ws_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

void ws_frame(char *out, size_t *outlen, int opcode, const void *data, size_t len,
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
int ws_read_frame(int fd, char *payload, size_t cap, size_t *plen, int timeout_ms)
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

int ws_connect(int via, const char *extra_headers, char *resp_out, size_t cap)
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

bool ws_echo(int fd, const char *msg)
{
    char frame[512], payload[512];
    size_t flen, plen = 0;
    ws_frame(frame, &flen, 1, msg, strlen(msg), true);
    if (!send_all(fd, frame, flen))
        return false;
    int op = ws_read_frame(fd, payload, sizeof(payload), &plen, 3000);
    return op == 1 && plen == strlen(msg) && memcmp(payload, msg, plen) == 0;
}

bool wait_for(atomic_int *v, int want, int timeout_ms)
{
    uint64_t end = kh_now_ms() + (uint64_t)timeout_ms;
    while (atomic_load(v) < want) {
        if (kh_now_ms() > end)
            return false;
        sleep_ms(5);
    }
    return true;
}


void write_file(const char *dir, const char *name, const char *content)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    kh_err err = KH_ERR_INIT;
    kh_fs_write_atomic(path, content, strlen(content), 0644, &err);
}


void free_server(void *arg)
{
    (void)arg;
    kh_http_server_free(srv);
    srv = NULL;
    uv_close((uv_handle_t *)&call_async, NULL);
}

int harness_start(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getenv("KH_TEST_DEBUG"))
        kh_log_init(NULL, KH_LOG_DEBUG);
    curl_global_init(CURL_GLOBAL_ALL);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kh-http-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return -1;
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
        return -1;
    }
    tcp_port = kh_http_server_tcp_port(srv);
    CHECK(tcp_port > 0);
    struct stat st;
    CHECK(stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
    return kh_test_failures ? -1 : 0;
}

void harness_run(void)
{
    pthread_create(&loop_thread, NULL, loop_main, NULL);
}

int harness_stop(void)
{
    if (srv)
        loop_call(free_server, NULL);
    pthread_join(loop_thread, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    kh_auth_free(auth);
    curl_global_cleanup();
    kh_err err2 = KH_ERR_INIT;
    kh_fs_rm_rf(tmpdir, &err2);
    return kh_test_failures ? -1 : 0;
}
