/* client.c - owns the CLI's HTTP to kvmhostd (libcurl, unix socket or
 * TCP with the token) and the reading of its replies (cli/client.h). */
#include "cli/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kh_config.h"
#include "util/buf.h"
#include "util/mem.h"

/* Answers larger than this are a daemon bug; stop reading. */
#define CLIENT_BODY_MAX (64u * 1024 * 1024)

struct cli_client {
    char *socket_path; /* NULL with a url */
    char *base;        /* "http://localhost" for the socket, else the url without '/' at the end */
    char *token;
    char *where;
    char *cacert;      /* trust this PEM for https, or NULL: the system's CAs */
    CURL *curl;        /* one handle, so that polling reuses the connection */
};

typedef struct body_buf {
    kh_buf body;
    bool overflow; /* over CLIENT_BODY_MAX: the transfer stops */
} body_buf;

static void buf_append(body_buf *b, const char *data, size_t len)
{
    if (b->body.len + len > CLIENT_BODY_MAX)
        b->overflow = true;
    else
        kh_buf_add(&b->body, data, len);
}

void cli_client_set_cacert(cli_client *c, const char *path)
{
    free(c->cacert);
    c->cacert = xstrdup(path);
}

cli_client *cli_client_new(const char *socket_path, const char *url, const char *token)
{
    cli_client *c = xcalloc(1, sizeof(*c));
    if (url) {
        c->base = xstrdup(url);
        size_t n = strlen(c->base);
        while (n > 0 && c->base[n - 1] == '/')
            c->base[--n] = '\0';
        c->token = xstrdup(token);
        c->where = xstrdup(c->base);
    } else {
        c->socket_path = xstrdup(socket_path);
        c->base = xstrdup("http://localhost");
        c->where = xasprintf("%s", socket_path);
    }
    return c;
}

void cli_client_free(cli_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    free(c->socket_path);
    free(c->base);
    if (c->token) {
        explicit_bzero(c->token, strlen(c->token));
        free(c->token);
    }
    free(c->where);
    free(c->cacert);
    free(c);
}

const char *cli_client_where(const cli_client *c)
{
    return c->where;
}

char *cli_path_escape(const char *segment)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(segment);
    char *out = xmalloc(n * 3 + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)segment; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

void cli_error_from_answer(long status, const char *body, size_t len, kh_err *err)
{
    json_t *j = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code && msg) {
        kh_err_set(err, kh_code_from_name(code), "%s", msg);
    } else {
        kh_code k = status >= 500 ? KH_E_INTERNAL : KH_E_INVALID;
        for (int i = 1; i < KH_CODE__COUNT; i++) {
            if (kh_code_http_status((kh_code)i) == status) {
                k = (kh_code)i;
                break;
            }
        }
        kh_err_set(err, k, "kvmhostd answered HTTP %ld (%s)", status,
                   msg ? msg : "no error message");
    }
    json_decref(j);
}

/* Why a connect to the unix socket fails, as errno (0 if it works now). */
static int unix_connect_errno(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path))
        return ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? errno : 0;
    close(fd);
    return rc;
}

static void set_connect_error(const cli_client *c, int errnum, const char *detail, kh_err *err)
{
    if (c->socket_path) {
        if (errnum == EACCES)
            kh_err_set(err, KH_E_UNAVAILABLE,
                       "cannot connect to kvmhostd at %s: permission denied (the socket is for "
                       "root and its group; run as root or join the group)",
                       c->socket_path);
        else
            kh_err_set(err, KH_E_UNAVAILABLE,
                       "cannot connect to kvmhostd at %s: %s (is kvmhostd running? "
                       "--socket or KVMHOST_SOCKET select another socket)",
                       c->socket_path, errnum ? strerror(errnum) : detail);
    } else {
        kh_err_set(err, KH_E_UNAVAILABLE, "cannot connect to kvmhostd at %s: %s (is kvmhostd "
                   "running and listening there?)",
                   c->base, errnum ? strerror(errnum) : detail);
    }
}

static size_t write_buf(char *data, size_t size, size_t nmemb, void *ud)
{
    body_buf *b = ud;
    buf_append(b, data, size * nmemb);
    return b->overflow ? 0 : size * nmemb;
}

typedef struct stream_state {
    CURL *curl;
    cli_stream_fn fn;
    void *ud;
    long status;
    bool stopped;
    body_buf errbody;
} stream_state;

static size_t write_stream(char *data, size_t size, size_t nmemb, void *ud)
{
    stream_state *s = ud;
    size_t n = size * nmemb;
    if (!s->status)
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status >= 300) {
        buf_append(&s->errbody, data, n);
        return s->errbody.overflow ? 0 : n;
    }
    if (s->fn(data, n, s->ud)) {
        s->stopped = true;
        return 0;
    }
    return n;
}

/* Prepare the handle for one request; returns the header list to free. */
static struct curl_slist *prepare(cli_client *c, const char *method, const char *path,
                                  const char *body, char *errbuf)
{
    if (!c->curl) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        c->curl = curl_easy_init();
        if (!c->curl)
            abort();
    } else {
        curl_easy_reset(c->curl);
    }
    CURL *h = c->curl;
    char *url = xasprintf("%s%s", c->base, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    free(url);
    if (c->socket_path)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
    if (c->cacert)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "kvmhost/" KH_VERSION);
    struct curl_slist *hdr = NULL;
    hdr = curl_slist_append(hdr, "Accept: application/json");
    if (c->token) {
        char *auth = xasprintf("Authorization: Bearer %s", c->token);
        hdr = curl_slist_append(hdr, auth);
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    if (body) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    /* No "Expect: 100-continue" round trip for small bodies. */
    hdr = curl_slist_append(hdr, "Expect:");
    if (strcmp(method, "GET") != 0 && !(body && strcmp(method, "POST") == 0))
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    return hdr;
}

/* Turn a failed perform into an error. */
static void set_transport_error(cli_client *c, CURLcode rc, const char *errbuf, kh_err *err)
{
    const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
        int e = c->socket_path ? unix_connect_errno(c->socket_path) : 0;
        set_connect_error(c, e, detail, err);
    } else {
        kh_err_set(err, KH_E_UNAVAILABLE, "talking to kvmhostd at %s: %s", c->where, detail);
    }
}

static long perform(cli_client *c, const char *method, const char *path, const char *body,
                    body_buf *out, kh_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdr = prepare(c, method, path, body, errbuf);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, write_buf);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, 300000L);
    CURLcode rc = curl_easy_perform(c->curl);
    curl_slist_free_all(hdr);
    if (out->overflow) {
        kh_err_set(err, KH_E_TOOLARGE, "the answer of kvmhostd to %s %s is over %u bytes",
                   method, path, CLIENT_BODY_MAX);
        return -1;
    }
    if (rc != CURLE_OK) {
        set_transport_error(c, rc, errbuf, err);
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

int cli_client_json(cli_client *c, const char *method, const char *path, const json_t *body,
                    json_t **out, json_t **err_body, kh_err *err)
{
    *out = NULL;
    if (err_body)
        *err_body = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    body_buf b = { 0 };
    long status = perform(c, method, path, text, &b, err);
    free(text);
    if (status < 0) {
        free(b.body.p);
        return -1;
    }
    if (status >= 300) {
        cli_error_from_answer(status, b.body.p, b.body.len, err);
        if (err_body && b.body.len)
            *err_body = json_loadb(b.body.p, b.body.len, 0, NULL);
        free(b.body.p);
        return -1;
    }
    if (b.body.len) {
        json_error_t je;
        *out = json_loadb(b.body.p, b.body.len, 0, &je);
        if (!*out) {
            kh_err_set(err, KH_E_INTERNAL, "kvmhostd sent bad JSON for %s %s: %s", method,
                       path, je.text);
            free(b.body.p);
            return -1;
        }
    }
    free(b.body.p);
    return (int)status;
}

int cli_client_get_raw(cli_client *c, const char *path, char **out, size_t *len, kh_err *err)
{
    body_buf b = { 0 };
    *out = NULL;
    *len = 0;
    long status = perform(c, "GET", path, NULL, &b, err);
    if (status < 0) {
        free(b.body.p);
        return -1;
    }
    if (status >= 300) {
        cli_error_from_answer(status, b.body.p, b.body.len, err);
        free(b.body.p);
        return -1;
    }
    *out = b.body.p ? b.body.p : xstrdup("");
    *len = b.body.len;
    return 0;
}

int cli_client_upload(cli_client *c, const char *path, FILE *f, uint64_t size, json_t **out,
                      kh_err *err)
{
    return cli_client_send_file(c, "PUT", path, "application/octet-stream", f, size, out, err);
}

int cli_client_send_file(cli_client *c, const char *method, const char *path,
                         const char *content_type, FILE *f, uint64_t size, json_t **out,
                         kh_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    *out = NULL;
    struct curl_slist *hdr = prepare(c, method, path, NULL, errbuf);
    char *ct = xasprintf("Content-Type: %s", content_type);
    hdr = curl_slist_append(hdr, ct);
    free(ct);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c->curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c->curl, CURLOPT_READDATA, f);
    curl_easy_setopt(c->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
    body_buf b = { 0 };
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, write_buf);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(c->curl);
    curl_slist_free_all(hdr);
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    int ret = -1;
    if (status >= 300)
        cli_error_from_answer(status, b.body.p, b.body.len, err);
    else if (rc != CURLE_OK)
        set_transport_error(c, rc, errbuf, err);
    else if (!b.body.len || !(*out = json_loadb(b.body.p, b.body.len, 0, NULL)))
        kh_err_set(err, KH_E_INTERNAL, "kvmhostd sent bad JSON for %s %s", method, path);
    else
        ret = (int)status;
    free(b.body.p);
    return ret;
}

int cli_client_stream(cli_client *c, const char *path, const char *const *headers,
                      cli_stream_fn on_data, void *ud, long timeout_ms, kh_err *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdr = prepare(c, "GET", path, NULL, errbuf);
    for (; headers && *headers; headers++)
        hdr = curl_slist_append(hdr, *headers);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdr);
    stream_state s = { .curl = c->curl, .fn = on_data, .ud = ud };
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, write_stream);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &s);
    if (timeout_ms > 0)
        curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    CURLcode rc = curl_easy_perform(c->curl);
    curl_slist_free_all(hdr);
    int ret = 0;
    if (!s.status)
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &s.status);
    if (s.status >= 300) {
        cli_error_from_answer(s.status, s.errbody.body.p, s.errbody.body.len, err);
        ret = -1;
    } else if (rc == CURLE_OK || s.stopped || (rc == CURLE_OPERATION_TIMEDOUT && s.status)) {
        ret = 0;
    } else {
        set_transport_error(c, rc, errbuf, err);
        ret = -1;
    }
    free(s.errbody.body.p);
    return ret;
}

static int connect_unix(cli_client *c, kh_err *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(c->socket_path) >= sizeof(sa.sun_path)) {
        set_connect_error(c, ENAMETOOLONG, NULL, err);
        return -1;
    }
    memcpy(sa.sun_path, c->socket_path, strlen(c->socket_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        set_connect_error(c, errno, NULL, err);
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_tcp(cli_client *c, char *host, size_t host_size, kh_err *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *h = NULL, *port = NULL;
    int fd = -1;
    if (curl_url_set(u, CURLUPART_URL, c->base, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        kh_err_set(err, KH_E_INVALID, "--url '%s' is not a http://HOST:PORT URL", c->base);
        goto out;
    }
    if (strcmp(scheme, "http") != 0) {
        kh_err_set(err, KH_E_UNSUPPORTED,
                   "the console speaks plain http only, not %s (use the unix socket, or an "
                   "http:// URL)",
                   scheme);
        goto out;
    }
    snprintf(host, host_size, "%s:%s", h, port);
    /* getaddrinfo wants an IPv6 literal without its brackets. */
    char *name = h;
    size_t hl = strlen(h);
    if (hl > 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        name = h + 1;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int gai = getaddrinfo(name, port, &hints, &res);
    if (gai != 0) {
        set_connect_error(c, 0, gai_strerror(gai), err);
        goto out;
    }
    int last = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        set_connect_error(c, last ? last : ECONNREFUSED, NULL, err);
out:
    curl_free(scheme);
    curl_free(h);
    curl_free(port);
    curl_url_cleanup(u);
    return fd;
}

int cli_client_connect(cli_client *c, char *host, size_t host_size, const char **token,
                       kh_err *err)
{
    *token = c->token;
    if (c->socket_path) {
        snprintf(host, host_size, "localhost");
        return connect_unix(c, err);
    }
    return connect_tcp(c, host, host_size, err);
}

/* ---- server-sent events ---- */

void cli_sse_init(cli_sse *s, cli_sse_fn fn, void *ud)
{
    memset(s, 0, sizeof(*s));
    s->fn = fn;
    s->ud = ud;
}

void cli_sse_clear(cli_sse *s)
{
    if (!s)
        return;
    kh_buf_release(&s->line);
    kh_buf_release(&s->data);
    memset(s, 0, sizeof(*s));
}

/* Handle one complete line (without its end of line). */
static int sse_line(cli_sse *s, const char *line, size_t n)
{
    if (n == 0) {
        int rc = 0;
        if (s->have_data)
            rc = s->fn(s->type[0] ? s->type : "message", s->id, s->data.p ? s->data.p : "",
                       s->ud);
        s->have_data = false;
        kh_buf_reset(&s->data);
        s->type[0] = '\0';
        /* The id persists across events, as in the EventSource spec. */
        return rc;
    }
    if (line[0] == ':')
        return 0;
    const char *colon = memchr(line, ':', n);
    size_t flen = colon ? (size_t)(colon - line) : n;
    const char *v = colon ? colon + 1 : line + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && strncmp(line, "data", 4) == 0) {
        if (s->have_data)
            kh_buf_add(&s->data, "\n", 1);
        kh_buf_add(&s->data, v, vlen);
        s->have_data = true;
    } else if (flen == 5 && strncmp(line, "event", 5) == 0) {
        snprintf(s->type, sizeof(s->type), "%.*s", (int)vlen, v);
    } else if (flen == 2 && strncmp(line, "id", 2) == 0) {
        snprintf(s->id, sizeof(s->id), "%.*s", (int)vlen, v);
    }
    return 0;
}

int cli_sse_feed(cli_sse *s, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (ch == '\n') {
            size_t n = s->line.len;
            if (n && s->line.p[n - 1] == '\r')
                n--;
            int rc = sse_line(s, s->line.p ? s->line.p : "", n);
            kh_buf_reset(&s->line);
            if (rc)
                return rc;
        } else {
            kh_buf_add(&s->line, &ch, 1);
        }
    }
    return 0;
}

char *cli_api_path(const char *collection, const char *name, const char *suffix)
{
    char *esc = cli_path_escape(name);
    char *p = xasprintf("/api/v1/%s/%s%s", collection, esc, suffix ? suffix : "");
    free(esc);
    return p;
}

const char *cli_jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}
