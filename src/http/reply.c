/* reply.c - responses: building MHD responses (JSON, errors, data, a
 * file), installing the one reply of a request with the default headers,
 * and queueing it (with the request log line and the latency hook).
 */
#include "http/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- responses ---- */

void kh_reply_header(struct MHD_Response *resp, const char *name, const char *value)
{
    if (MHD_add_response_header(resp, name, value) != MHD_YES)
        kh_log(KH_LOG_WARN, "http.header", "name=%s reason=\"rejected by MHD\"", name);
}

struct MHD_Response *kh_reply_copy(const void *data, size_t len)
{
    char *copy = xmalloc(len ? len : 1);
    if (len)
        memcpy(copy, data, len);
    return MHD_create_response_from_buffer(len, copy, MHD_RESPMEM_MUST_FREE);
}

/* Install resp as the reply (the one and only). API responses get the
 * pending headers and the no-store/nosniff defaults. The access callback
 * queues it (at once when inside the handler, else after the resume). */
void kh_reply_set(kh_http_req *req, unsigned status, struct MHD_Response *resp)
{
    if (req->replied) {
        kh_log(KH_LOG_ERROR, "http.bug", "reason=\"second reply to one request\" path=%s",
               req->path ? req->path : "?");
        MHD_destroy_response(resp);
        return;
    }
    req->replied = true;
    req->app_holds = false;
    if (!req->conn || req->peer_gone) {
        MHD_destroy_response(resp);
        if (!req->conn)
            kh_req_free(req); /* detached: this reply was the last owner */
        return;
    }
    if (req->hdrs) {
        for (size_t i = 0; i + 1 < req->hdrs->n; i += 2) {
            /* the request's own value wins over the error reply's default
             * (a rate limit's Retry-After over a busy error's "1") */
            const char *had = MHD_get_response_header(resp, req->hdrs->v[i]);
            if (had && strcasecmp(req->hdrs->v[i], MHD_HTTP_HEADER_RETRY_AFTER) == 0) {
                char *copy = xstrdup(had);
                MHD_del_response_header(resp, req->hdrs->v[i], copy);
                free(copy);
            }
            kh_reply_header(resp, req->hdrs->v[i], req->hdrs->v[i + 1]);
        }
    }
    if (!MHD_get_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL))
        kh_reply_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (!MHD_get_response_header(resp, "X-Content-Type-Options"))
        kh_reply_header(resp, "X-Content-Type-Options", "nosniff");
    if (req->lis && req->lis->tls &&
        !MHD_get_response_header(resp, "Strict-Transport-Security"))
        kh_reply_header(resp, "Strict-Transport-Security", "max-age=31536000");
    req->resp = resp;
    req->status = status;
    if (req->suspended)
        kh_req_resume(req);
}

enum MHD_Result kh_reply_queue(kh_http_req *req)
{
    struct MHD_Response *resp = req->resp;
    req->resp = NULL;
    if (req->state == REQ_NEW)
        req->early = true;
    req->state = REQ_DONE;
    enum MHD_Result r = MHD_queue_response(req->conn, req->status, resp);
    MHD_destroy_response(resp);
    if (r != MHD_YES)
        kh_log(KH_LOG_WARN, "http.queue", "status=%u reason=\"MHD refused the response\"",
               req->status);
    char q[512];
    kh_log(req->status >= 500 ? KH_LOG_WARN : KH_LOG_DEBUG, "http.request", "method=%s path=%s status=%u ms=%llu",
           req->method ? req->method : "?",
           kh_log_quote(q, sizeof(q), req->path ? req->path : "?"), req->status,
           (unsigned long long)(kh_now_ms() - req->start_ms));
    if (req->srv && req->srv->on_request)
        req->srv->on_request(req->srv->on_request_opaque, req->method ? req->method : "?",
                             req->route ? req->route->path : NULL, req->status,
                             (double)(uv_hrtime() - req->start_ns) / 1e9);
    if (req->srv && req->srv->on_reply)
        req->srv->on_reply(req, req->status, req->srv->auth_opaque);
    return r;
}

static struct MHD_Response *error_response(const kh_err *err, unsigned *status)
{
    kh_code code = err && err->code != KH_OK ? err->code : KH_E_INTERNAL;
    const char *msg = err && err->code != KH_OK && err->msg[0] ? err->msg : "internal error";
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "code", kh_code_name(code), "message", msg);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s)
        s = xstrdup("{\"error\":{\"code\":\"internal\",\"message\":\"cannot encode error\"}}");
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    kh_reply_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (code == KH_E_UNAUTHORIZED)
        kh_reply_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (code == KH_E_BUSY) /* a full queue or a rate limit: worth a retry soon */
        kh_reply_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    *status = (unsigned)kh_code_http_status(code);
    return resp;
}

enum MHD_Result kh_reply_fail(kh_http_req *req, kh_code code, const char *fmt, ...)
{
    kh_err err = KH_ERR_INIT;
    char msg[sizeof(err.msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kh_err_set(&err, code, "%s", msg);
    unsigned status;
    struct MHD_Response *resp = error_response(&err, &status);
    kh_reply_set(req, status, resp);
    if (!req->resp)
        return MHD_NO;
    return kh_reply_queue(req);
}

void kh_http_reply_json(kh_http_req *req, int status, json_t *body)
{
    struct MHD_Response *resp;
    if (status == MHD_HTTP_NO_CONTENT || !body) {
        json_decref(body);
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        char *s = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!s) {
            kh_err err = KH_ERR_INIT;
            kh_err_set(&err, KH_E_INTERNAL, "cannot encode the reply");
            kh_http_reply_error(req, &err);
            return;
        }
        resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
        kh_reply_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    kh_reply_set(req, (unsigned)status, resp);
}

void kh_http_reply_error(kh_http_req *req, const kh_err *err)
{
    unsigned status;
    struct MHD_Response *resp = error_response(err, &status);
    kh_reply_set(req, status, resp);
}

void kh_http_reply_fd(kh_http_req *req, int status, const char *content_type, int fd,
                      uint64_t size)
{
    struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);
    if (!resp) {
        close(fd);
        kh_err err = KH_ERR_INIT;
        kh_err_set(&err, KH_E_INTERNAL, "cannot stream the file");
        kh_http_reply_error(req, &err);
        return;
    }
    kh_reply_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
            content_type ? content_type : "application/octet-stream");
    kh_reply_set(req, (unsigned)status, resp);
}

void kh_http_reply_data(kh_http_req *req, int status, const char *content_type,
                        const void *data, size_t len)
{
    struct MHD_Response *resp = kh_reply_copy(data, len);
    kh_reply_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
            content_type ? content_type : "application/octet-stream");
    kh_reply_set(req, (unsigned)status, resp);
}

enum MHD_Result kh_reply_fail_err(kh_http_req *req, const kh_err *err)
{
    unsigned status;
    struct MHD_Response *resp = error_response(err, &status);
    kh_reply_set(req, status, resp);
    if (!req->resp)
        return MHD_NO;
    return kh_reply_queue(req);
}

enum MHD_Result kh_reply_fail_status(kh_http_req *req, unsigned status, const kh_err *err,
                                     bool close)
{
    unsigned dummy;
    struct MHD_Response *resp = error_response(err, &dummy);
    if (close)
        kh_reply_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    kh_reply_set(req, status, resp);
    if (!req->resp)
        return MHD_NO;
    return kh_reply_queue(req);
}
