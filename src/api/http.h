/* http.h - the HTTP server: routing, JSON replies, WebSocket and SSE.
 *
 * Built on GNU libmicrohttpd, driven from the daemon's libuv loop (MHD's
 * epoll fd is polled by libuv; nothing runs on another thread). Serves one
 * route table (kh_route) which is also the source of the OpenAPI document.
 *
 * Listeners: a unix socket (trusted: its file mode is the access control)
 * and optionally TCP, where every request except KH_ROUTE_PUBLIC ones needs
 * "Authorization: Bearer <token>" (compared in constant time), optionally
 * with TLS. Bodies over max_body get 413 before they are buffered; a body
 * that is not a JSON object where one is expected gets 400.
 *
 * Request lifetime: the handler receives a kh_http_req and must reply
 * exactly once, now or later (async: the connection is suspended meanwhile).
 * After the reply, the request is gone. If the client disconnects before a
 * late reply, the abort callback runs and the request is gone after it.
 *
 * Rules for callers (see http.c for the details):
 *  - Everything runs on the loop's thread; no call is thread-safe.
 *  - A late reply to a request whose client left is dropped quietly when
 *    no abort callback was set (the request lives until that reply).
 *  - on_close of a WebSocket or an event stream runs exactly once per
 *    kh_http_reply_websocket/_sse call, even when the upgrade or the stream
 *    never started (then without on_open); never from inside kh_ws_send,
 *    kh_ws_close, kh_sse_send or kh_sse_close.
 *  - kh_http_server_free must not be called from inside one of the server's
 *    callbacks. It closes handles asynchronously: run the loop once more
 *    (uv_run) before uv_loop_close. The same after a kh_http_server_new
 *    that failed.
 *  - max_connections and idle_timeout apply per listener. WebSockets and
 *    event streams are exempt from idle_timeout; requests waiting for a
 *    late reply too.
 */
#ifndef KH_API_HTTP_H
#define KH_API_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "util/err.h"

typedef struct kh_http_server kh_http_server;
typedef struct kh_http_req kh_http_req;
typedef struct kh_ws kh_ws;
typedef struct kh_sse kh_sse;

typedef void (*kh_route_fn)(kh_http_req *req, void *app);

enum {
    KH_ROUTE_PUBLIC = 1u << 0,    /* no token needed, even on TCP */
    KH_ROUTE_WEBSOCKET = 1u << 1, /* documented as a WebSocket upgrade */
    KH_ROUTE_SSE = 1u << 2,       /* documented as text/event-stream */
    KH_ROUTE_RAW = 1u << 3,       /* body is not JSON (not parsed) */
    KH_ROUTE_LOOPBACK_PUBLIC = 1u << 4, /* no token from a loopback TCP client when the
                                         * server has loopback_public */
    KH_ROUTE_STREAM = 1u << 5,    /* body streamed to the handler (kh_http_req_stream),
                                   * not collected; no body size limit of its own */
};

/* Called once per answered request (after the reply is queued): the method,
 * the route pattern (NULL when no route matched) and the latency. */
typedef void (*kh_http_request_cb)(void *opaque, const char *method, const char *route,
                                   unsigned status, double seconds);

typedef struct kh_route {
    const char *method;          /* "GET", "POST", "PATCH", "DELETE", "PUT" */
    const char *path;            /* "/api/v1/vms/{name}/start" */
    kh_route_fn handler;
    unsigned flags;
    const char *summary;         /* one line, for OpenAPI and docs */
    const char *request_schema;  /* components/schemas name or NULL */
    const char *response_schema; /* components/schemas name or NULL */
} kh_route;

typedef struct kh_http_config {
    const char *unix_path;   /* NULL: no unix listener */
    mode_t unix_mode;        /* e.g. 0660; 0 = 0660 */
    const char *tcp_listen;  /* "ADDR:PORT" ("[::1]:8443" for v6) or NULL */
    const char *token;       /* required on TCP (must be set when tcp_listen is) */
    const char *tls_cert;    /* PEM file; with tls_key enables TLS on TCP */
    const char *tls_key;
    size_t max_body;         /* bytes; 0 = 1 MiB */
    unsigned max_connections;/* 0 = 256 */
    const char *web_dir;     /* static files served under "/" (GET), or NULL */
    unsigned idle_timeout;   /* seconds an idle plain HTTP connection is kept;
                              * 0 = 60 (WebSocket and SSE are exempt) */
    bool loopback_public;    /* KH_ROUTE_LOOPBACK_PUBLIC routes need no token from
                              * 127.0.0.0/8 or ::1 */
    kh_http_request_cb on_request; /* optional */
    void *on_request_opaque;
} kh_http_config;

kh_http_server *kh_http_server_new(uv_loop_t *loop, const kh_http_config *cfg,
                                   const kh_route *routes, size_t nroutes, void *app,
                                   kh_err *err);
/* Stop listening, close every connection (WebSockets and SSE included). */
void kh_http_server_free(kh_http_server *srv);
/* The bound TCP port (useful with "ADDR:0"), or -1 without a TCP listener. */
int kh_http_server_tcp_port(const kh_http_server *srv);

/* The OpenAPI 3.0 document for the routes; schemas (borrowed) becomes
 * components/schemas. A new reference. */
json_t *kh_http_openapi(const kh_route *routes, size_t nroutes, const json_t *schemas,
                        const char *version);

/* ---- request ---- */
const char *kh_http_req_method(const kh_http_req *req);
const char *kh_http_req_path(const kh_http_req *req);
/* Path parameter from the route pattern ("name" for {name}); URL-decoded. */
const char *kh_http_req_param(const kh_http_req *req, const char *name);
const char *kh_http_req_query(const kh_http_req *req, const char *key);
const char *kh_http_req_header(const kh_http_req *req, const char *name);
/* The body parsed as a JSON object (borrowed; NULL with err set when it is
 * missing, malformed, or not an object: KH_E_INVALID with the parse error
 * position). An empty body gives NULL with err set. */
json_t *kh_http_req_json(kh_http_req *req, kh_err *err);
/* As kh_http_req_json, but an empty body gives an empty object. */
json_t *kh_http_req_json_or_empty(kh_http_req *req, kh_err *err);
const char *kh_http_req_body(const kh_http_req *req, size_t *len);
/* True when the request came over the unix socket. */
bool kh_http_req_is_local(const kh_http_req *req);

/* ---- replies (exactly one per request) ---- */
void kh_http_reply_json(kh_http_req *req, int status, json_t *body /* stolen */);
/* {"error": {"code": "<kh_code_name>", "message": "..."}} with the status
 * from kh_code_http_status(). */
void kh_http_reply_error(kh_http_req *req, const kh_err *err);
void kh_http_reply_data(kh_http_req *req, int status, const char *content_type,
                        const void *data, size_t len);
/* KH_ROUTE_STREAM routes: the handler runs once the headers are in, before
 * the body. It replies at once (an error; the body is then drained), or
 * hands the body to a sink: on_data gets each piece as it arrives (return
 * -1 after replying with an error: the rest of the body is read and
 * dropped, then the reply goes out), on_end runs when the body is complete
 * (reply then or later). Neither runs after a reply; a client that goes
 * away meanwhile gets the abort callback (kh_http_req_on_abort) instead. */
typedef int (*kh_http_data_fn)(kh_http_req *req, const char *data, size_t len, void *opaque);
typedef void (*kh_http_end_fn)(kh_http_req *req, void *opaque);
void kh_http_req_stream(kh_http_req *req, kh_http_data_fn on_data, kh_http_end_fn on_end,
                        void *opaque);
/* The announced Content-Length, UINT64_MAX when none (chunked). */
uint64_t kh_http_req_content_length(const kh_http_req *req);
/* Reply with a file's bytes, streamed by MHD (fd is owned from the call on). */
void kh_http_reply_fd(kh_http_req *req, int status, const char *content_type, int fd,
                      uint64_t size);
/* Add a response header to the coming reply (e.g. Location). */
void kh_http_req_add_header(kh_http_req *req, const char *name, const char *value);
/* Called if the client goes away before a late reply. */
void kh_http_req_on_abort(kh_http_req *req, void (*cb)(kh_http_req *req, void *opaque),
                          void *opaque);

/* ---- WebSocket (RFC 6455, via wslay) ---- */
typedef struct kh_ws_callbacks {
    void (*on_open)(kh_ws *ws, void *opaque);
    void (*on_message)(kh_ws *ws, bool binary, const void *data, size_t len, void *opaque);
    /* After on_close returns, ws is freed. */
    void (*on_close)(kh_ws *ws, void *opaque);
} kh_ws_callbacks;

/* Answer an upgrade request (400 if it is not one). */
void kh_http_reply_websocket(kh_http_req *req, const kh_ws_callbacks *cbs, void *opaque);
/* Queue a message. If the peer is too slow (over 1 MiB queued) the
 * connection is closed rather than growing memory. */
int kh_ws_send(kh_ws *ws, bool binary, const void *data, size_t len);
/* Bytes queued for the peer and not yet written: a relay stops reading
 * its source while this is high (kh_ws_send gives up over 1 MiB). */
size_t kh_ws_queued(const kh_ws *ws);
void kh_ws_close(kh_ws *ws);

/* ---- Server-sent events ---- */
typedef struct kh_sse_callbacks {
    void (*on_open)(kh_sse *sse, void *opaque);
    void (*on_close)(kh_sse *sse, void *opaque); /* then sse is freed */
} kh_sse_callbacks;

void kh_http_reply_sse(kh_http_req *req, const kh_sse_callbacks *cbs, void *opaque);
/* Queue one event ("id: N\nevent: type\ndata: json\n\n"); id may be 0 for none.
 * A slow client (over 1 MiB queued) is disconnected. */
int kh_sse_send(kh_sse *sse, unsigned long long id, const char *event, const char *data);
void kh_sse_close(kh_sse *sse);

/* ---- browser sessions (TCP): route handlers for /api/v1/session ----
 * POST (a KH_ROUTE_PUBLIC route) {"token": "<API token>"} -> 201
 * {"csrf_token": ...} and an HttpOnly, SameSite=Strict session cookie;
 * afterwards the cookie authenticates like the bearer token, and writes
 * (anything but GET/HEAD) also need "X-CSRF-Token: <csrf_token>" (403
 * without). GET (public) tells whether and how the request is
 * authenticated ({"authenticated": false} rather than 401), with the CSRF
 * token again for a session. DELETE logs out. See session.h. */
void kh_http_session_post(kh_http_req *req, void *app);
void kh_http_session_get(kh_http_req *req, void *app);
void kh_http_session_delete(kh_http_req *req, void *app);

/* ---- internal: shared by http.c and ws.c only, not for callers ---- */
#ifdef KH_HTTP_INTERNAL
/* A WebSocket session over a connected, upgraded socket (wslay framing,
 * driven by a uv_poll_t). Created pending by kh_http_reply_websocket,
 * attached once MHD hands over the socket. */
kh_ws *kh_ws__new(uv_loop_t *loop, const kh_ws_callbacks *cbs, void *opaque);
/* Start the session on fd (borrowed: the caller closes it after gone()
 * ran); extra holds bytes MHD already read (copied). hangup_fd (or -1) is
 * the client's own socket when fd is a relay (TLS): a hang-up there ends
 * the session too. on_open runs now. gone(ws, ctx) runs once, right after
 * on_close, when neither fd is watched any more; ws memory is released
 * later by the loop. */
void kh_ws__attach(kh_ws *ws, int fd, int hangup_fd, const void *extra, size_t extra_len,
                   void (*gone)(kh_ws *ws, void *ctx), void *ctx);
/* Close now (server shutdown, or an upgrade that never happened): on_close
 * runs if it has not yet, then gone() if attached. */
void kh_ws__shutdown(kh_ws *ws);
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key; false if the key is not
 * base64 of 16 bytes. */
bool kh_ws__accept_key(const char *key, char out[29]);
#endif

#endif
