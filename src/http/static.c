/* static.c - static files from the web directory: path checks (no dot
 * files, no escape from the directory), MIME types, a pre-compressed .gz
 * twin when the client accepts gzip, and the security headers of a page.
 */
#include "http/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* Static files: same-origin everything, no framing, no inline script or style. */
static const char csp_value[] =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'; style-src 'self' 'unsafe-inline'";

/* ---- static files ---- */

static const char *mime_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".htm", "text/html; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },
        { ".mjs", "text/javascript; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".json", "application/json" },
        { ".map", "application/json" },
        { ".svg", "image/svg+xml" },
        { ".png", "image/png" },
        { ".jpg", "image/jpeg" },
        { ".jpeg", "image/jpeg" },
        { ".gif", "image/gif" },
        { ".ico", "image/x-icon" },
        { ".webp", "image/webp" },
        { ".woff", "font/woff" },
        { ".woff2", "font/woff2" },
        { ".ttf", "font/ttf" },
        { ".txt", "text/plain; charset=utf-8" },
        { ".wasm", "application/wasm" },
    };
    const char *dot = strrchr(name, '.');
    if (dot) {
        for (size_t i = 0; i < KH_ARRAY_LEN(types); i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    }
    return "application/octet-stream";
}

/* Open dir/name as a regular file without following a symlink; -1 if it
 * is missing, a link, or not a regular file (a directory gives -2). */
static int open_regular(int dir, const char *name, struct stat *st)
{
    int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -1;
    if (fstat(fd, st) != 0) {
        close(fd);
        return -1;
    }
    if (S_ISDIR(st->st_mode)) {
        close(fd);
        return -2;
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool accepts_gzip(const kh_http_req *req)
{
    const char *ae = kh_http_req_header(req, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    if (!ae)
        return false;
    /* "gzip" as a token, not refused with q=0 */
    for (const char *p = ae; (p = strcasestr(p, "gzip")) != NULL; p += 4) {
        bool start = p == ae || p[-1] == ' ' || p[-1] == ',' || p[-1] == '\t';
        const char *e = p + 4;
        if (!start || (*e && *e != ',' && *e != ';' && *e != ' '))
            continue;
        const char *q = e;
        while (*q == ' ')
            q++;
        if (*q == ';') {
            q = strchr(q, '=');
            if (q && strtod(q + 1, NULL) == 0.0)
                return false;
        }
        return true;
    }
    return false;
}

/* GET/HEAD of a path outside /api/: a file under web_dir. Every component
 * is opened with O_NOFOLLOW relative to its parent, so neither "..", nor
 * escapes, nor symlinks lead outside. Dot files are not served. */
enum MHD_Result kh_static_serve(kh_http_req *req, const kh_router_path *ps)
{
    kh_http_server *srv = req->srv;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        kh_http_req_add_header(req, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        return kh_reply_fail(req, KH_E_METHOD, "method %s not allowed here", req->method);
    }
    for (size_t i = 0; i < ps->n; i++) {
        const char *s = ps->seg[i];
        if (strcmp(s, "..") == 0 || strcmp(s, ".") == 0 || strchr(s, '/') || strchr(s, '\\'))
            return kh_reply_fail(req, KH_E_INVALID, "invalid path");
        if ((s[0] == '\0' && i + 1 < ps->n) || s[0] == '.')
            return kh_reply_fail(req, KH_E_NOTFOUND, "not found");
    }
    int dir = dup(srv->web_fd);
    if (dir < 0)
        return kh_reply_fail(req, KH_E_INTERNAL, "cannot open the web directory");
    size_t last = ps->n;
    const char *name = "index.html";
    if (ps->n > 0 && ps->seg[ps->n - 1][0] != '\0') {
        name = ps->seg[ps->n - 1];
        last = ps->n - 1;
    } else if (ps->n > 0) {
        last = ps->n - 1; /* trailing "/" */
    }
    for (size_t i = 0; i < last; i++) {
        int sub = openat(dir, ps->seg[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(dir);
        if (sub < 0)
            return kh_reply_fail(req, KH_E_NOTFOUND, "not found");
        dir = sub;
    }
    struct stat st;
    int fd = open_regular(dir, name, &st);
    if (fd == -2) { /* a directory: its index.html */
        int sub = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(dir);
        if (sub < 0)
            return kh_reply_fail(req, KH_E_NOTFOUND, "not found");
        dir = sub;
        name = "index.html";
        fd = open_regular(dir, name, &st);
    }
    if (fd < 0) {
        close(dir);
        return kh_reply_fail(req, KH_E_NOTFOUND, "not found");
    }
    const char *type = mime_type(name);
    bool gz = false;
    if (accepts_gzip(req)) {
        char gzname[NAME_MAX + 1];
        struct stat gst;
        if (snprintf(gzname, sizeof(gzname), "%s.gz", name) < (int)sizeof(gzname)) {
            int gfd = open_regular(dir, gzname, &gst);
            if (gfd >= 0) {
                close(fd);
                fd = gfd;
                st = gst;
                gz = true;
            }
        }
    }
    close(dir);
    struct MHD_Response *resp = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return kh_reply_fail(req, KH_E_INTERNAL, "cannot create response");
    }
    kh_reply_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    kh_reply_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    kh_reply_header(resp, "Content-Security-Policy", csp_value);
    kh_reply_header(resp, "X-Frame-Options", "DENY");
    kh_reply_header(resp, "Referrer-Policy", "no-referrer");
    kh_reply_header(resp, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    if (gz)
        kh_reply_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
    kh_reply_set(req, MHD_HTTP_OK, resp);
    if (!req->resp)
        return MHD_NO;
    return kh_reply_queue(req);
}
