/* internal.h - the server's shared state, for the files of src/http only.
 *
 * Request lifetime. The URI-log callback (server.c) creates the kh_http_req
 * when the request line arrives; it becomes MHD's per-request context. Two
 * owners:
 *   - the connection, until MHD's completion callback (server.c);
 *   - the application, from the handler call until it replies, or until
 *     its abort callback returns.
 * The req is freed when both have let go. Cases:
 *   - reply inside the handler: queued before the access callback returns.
 *   - no reply inside the handler: the connection is suspended, and its
 *     socket is watched for a hang-up (MHD does not see disconnects of a
 *     suspended connection). A late reply stores the response and resumes;
 *     MHD calls the access callback again, which queues it.
 *   - hang-up while suspended: peer_gone, resume; the access callback then
 *     fails the connection, MHD completes it, the completion runs the abort
 *     callback (the req is gone for the app after it returns).
 *   - completion while the app still holds the req and set no abort
 *     callback: the req stays alive, detached (conn == NULL, srv == NULL);
 *     the late reply is dropped and frees it.
 * SSE streams and WebSockets outlive their req: see sse.c and upgrade.c.
 *
 * Event loop. One MHD daemon per listener, in external-loop epoll mode
 * (listen.c). Whatever wants MHD to run soon (a late reply, a resumed
 * connection, a closed WebSocket) calls kh_listen_kick; nothing calls
 * MHD_run from inside an MHD callback.
 *
 * Memory: the server is freed with the last close callback of its uv
 * handles (refs), so the caller runs the loop once more after
 * kh_http_server_free.
 */
#ifndef KH_HTTP_INTERNAL_H
#define KH_HTTP_INTERNAL_H

#define KH_HTTP_INTERNAL
#include "http/http.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/strv.h"

#define HTTP_DEFAULT_MAX_BODY (1024u * 1024u)
#define HTTP_DEFAULT_MAX_CONN 1024u
#define HTTP_DEFAULT_PER_IP 64u
#define HTTP_DEFAULT_HEAD_TIMEOUT_MS 10000u
#define GUARD_EVICT_RESERVE_DIV 16u  /* 1/16 of the slots (64 and up) kept free by
                                      * dropping the oldest unfinished head */
#define GUARD_BODY_WINDOW_MS 10000u
#define GUARD_BODY_MIN_RATE 1024u    /* bytes per second over each window */
#define GUARD_MAX_QUERY_ARGS 128u
#define HTTP_DEFAULT_IDLE_S 60u
#define HTTP_CONN_MEMORY (64u * 1024u)  /* MHD's per-connection pool: headers, buffers */
#define HTTP_TLS_FILE_MAX (1024u * 1024u)
#define SSE_QUEUE_MAX (1024u * 1024u)
#define SSE_KEEPALIVE_MS 15000u
#define SSE_BLOCK 16384u
#define WS_LINGER_MS 1000u            /* TLS: wait for MHD to relay our last bytes */
#define STREAM_DROP_MAX (64u << 20) /* a refused streamed body is read this far, then cut */
#define DRAIN_MS 10000u               /* read and drop an unwanted body this long at most */
#define DRAIN_MAX_OPEN 64u

typedef struct listener listener;
typedef struct ws_link ws_link;
typedef struct drainer drainer;
typedef struct guard_conn guard_conn;
typedef struct kh_ratelimit kh_ratelimit;

enum guard_phase {
    GUARD_HEAD,    /* TLS handshake and request head: head_timeout */
    GUARD_BODY,    /* receiving the body: minimum rate */
    GUARD_HANDLER, /* the application has it (incl. SSE, WebSocket): no limit here */
};

/* One open connection of a listener (guard.c), MHD's socket context. */
struct guard_conn {
    int fd;
    listener *lis;
    enum guard_phase phase;
    uint64_t since_ms;        /* phase start, or the last body-rate window */
    uint64_t body_bytes, mark_bytes;
    bool closing;
    bool upgraded;            /* a WebSocket: phases no longer change */
    guard_conn *prev, *next;
};

/* A connection answered before its body was read (413, 401, 404...): MHD
 * closes it after the reply, and a client still sending would get EPIPE or
 * a reset instead of reading the answer. So the socket is kept (a dup) and
 * what comes is read and dropped until EOF, a byte budget or a timeout. */
struct drainer {
    int fd;
    uv_poll_t poll;
    uv_timer_t timer;
    int open_handles;
    uint64_t left;
    kh_http_server *srv;
    drainer *prev, *next;
};

struct listener {
    kh_http_server *srv;
    bool local;               /* unix socket: trusted */
    bool tls;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;           /* MHD's epoll fd */
    uv_timer_t timer;         /* MHD_get_timeout, and kicks */
    bool handles;
    bool kick;                /* run MHD at the next loop iteration */
    bool running;             /* inside MHD_run */
    bool was_full;            /* at the connection limit after the last run */
    char *unix_path;          /* unlinked at free (if still ours) */
    dev_t unix_dev;
    ino_t unix_ino;
    int port;
    char *tls_cert, *tls_key; /* PEM, kept while the daemon lives */
    char *tls_trust;          /* PEM: client certificates are checked against it */
    guard_conn *conns;        /* open connections (guard.c) */
    unsigned nconns;
};

/* An upgraded connection, from MHD's upgrade callback until ws.c's gone(). */
struct ws_link {
    listener *lis;
    kh_ws *ws;
    int raw_fd;               /* the client's socket, when a TLS relay is between */
    int app_fd;               /* our end of the relay */
    uint64_t linger_until;
    struct MHD_UpgradeResponseHandle *urh;
    ws_link *prev, *next;
};

struct kh_http_server {
    uv_loop_t *loop;
    const kh_route *routes;
    size_t nroutes;
    void *app;
    size_t max_body;
    unsigned max_conn;
    unsigned idle_timeout;
    unsigned per_ip;
    uint64_t head_timeout_ms;
    kh_ratelimit *ratelimit;  /* NULL: no rate limit */
    uv_timer_t sweep;         /* guard.c, each second */
    kh_http_auth_fn auth;
    void (*on_reply)(kh_http_req *req, unsigned status, void *auth_opaque);
    void *auth_opaque;
    kh_http_request_cb on_request;
    void *on_request_opaque;
    bool (*pre)(kh_http_req *req, void *app);
    int web_fd;
    char *web_skip;           /* never served from web_fd: this prefix, or NULL */
    listener *lis[2];
    size_t nlis;
    kh_http_req *reqs;        /* requests attached to a connection */
    kh_sse *sses;             /* open streams (on_close not yet called) */
    ws_link *links;
    ws_link *lingering;       /* closed TLS WebSockets whose last bytes are in flight */
    uv_timer_t linger;
    drainer *drainers;
    unsigned ndrainers;
    uv_timer_t keepalive;
    int refs;                 /* 1 for the owner + one per open uv handle */
    bool freeing;
};

enum req_state {
    REQ_NEW,   /* request line seen, headers not yet looked at */
    REQ_BODY,  /* accepted, receiving the body */
    REQ_WAIT,  /* handler called, no response queued yet */
    REQ_DONE,  /* a response is queued */
};

struct kh_http_req {
    kh_http_server *srv;       /* NULL once detached */
    listener *lis;             /* NULL once detached */
    struct MHD_Connection *conn; /* NULL after completion */
    enum req_state state;
    char *target;              /* raw request-target, as sent */
    const char *uri_raw;       /* MHD's copy in its read buffer (guard.c), or NULL */
    char *method;
    char *path;                /* raw path (no query) */
    const kh_route *route;
    size_t nparams;
    kh_router_param params[KH_ROUTER_MAX_PARAMS];
    char *body;                /* NUL-terminated */
    size_t body_len, body_cap, body_seen;
    bool too_large;
    bool too_many_args;        /* kh_guard_uri */
    bool body_pending;         /* a body was announced */
    bool early;                /* answered before the body was read */
    json_t *json;
    bool local;                /* came over the unix socket */
    bool app_holds, replied, suspended, peer_gone;
    struct MHD_Response *resp; /* stored until the access callback queues it */
    unsigned status;
    kh_strv *hdrs;             /* name, value, name, value ... */
    void (*abort_cb)(kh_http_req *req, void *opaque);
    void *abort_opaque;
    uv_poll_t *watch;          /* hang-up watch while suspended */
    kh_sse *sse;
    kh_ws *ws;                 /* pending WebSocket (before the upgrade) */
    /* KH_ROUTE_STREAM: the handler's body sink (kh_http_req_stream) */
    kh_http_data_fn stream_data;
    kh_http_end_fn stream_end;
    void *stream_opaque;
    bool stream_failed;        /* the sink refused: the rest is dropped */
    uint64_t stream_dropped;
    uint64_t start_ms;
    uint64_t start_ns;         /* uv_hrtime(), for the latency hook */
    char *principal;           /* who the auth hook says is calling (owned) */
    char *acting_for;          /* a peer host's caller, for the audit (owned) */
    kh_http_req *prev, *next;
};

/* Server-sent event stream. Freed by MHD's response free callback (the
 * content reader may run until then); the req link is cut at completion.
 * on_close runs once: at completion, at response free, or at server free,
 * whichever is first; after it the stream is out of srv->sses. */
struct kh_sse {
    kh_http_server *srv;
    kh_http_req *req;
    kh_sse_callbacks cbs;
    void *opaque;
    char *buf;
    size_t off, len, cap;
    bool closed;   /* on_close ran */
    bool ending;   /* kh_sse_close: end after flushing */
    bool overflow; /* slow client: drop */
    kh_sse *prev, *next;
};

#define DL_INSERT(head, x) \
    do { (x)->prev = NULL; (x)->next = (head); if (head) (head)->prev = (x); (head) = (x); } while (0)
#define DL_REMOVE(head, x)                                             \
    do {                                                               \
        if ((x)->prev) (x)->prev->next = (x)->next; else (head) = (x)->next; \
        if ((x)->next) (x)->next->prev = (x)->prev;                    \
        (x)->prev = (x)->next = NULL;                                  \
    } while (0)


/* ---- server.c ---- */
void kh_server_unref(kh_http_server *srv);
enum MHD_Result kh_server_on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls);
void *kh_server_on_uri(void *cls, const char *uri, struct MHD_Connection *conn);
void kh_server_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe);
void kh_server_on_log(void *cls, const char *fmt, va_list ap);

/* ---- guard.c ---- */
void kh_guard_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe);
guard_conn *kh_guard_of(struct MHD_Connection *conn);
void kh_guard_phase(struct MHD_Connection *conn, enum guard_phase phase);
void kh_guard_body_bytes(struct MHD_Connection *conn, size_t n);
void kh_guard_evict_oldest(listener *lis, guard_conn *except);
void kh_guard_sweep(kh_http_server *srv);
/* The parsed head against the framing rules; -1 with err and the status
 * to answer (400, 414, 501). */
int kh_guard_head(kh_http_req *req, const char *version, unsigned *status, kh_err *err);
/* The raw request target, at the URI-log callback: true (and the query cut
 * short in MHD's buffer) when it has too many query arguments. */
bool kh_guard_uri(const char *uri);

/* ---- ratelimit.c ---- */
kh_ratelimit *kh_ratelimit_new(unsigned rate, unsigned burst);
void kh_ratelimit_free(kh_ratelimit *rl);
/* 0: go on; else the seconds to wait (Retry-After). */
unsigned kh_ratelimit_take(kh_ratelimit *rl, const char *key, bool priority, uint64_t now);
void kh_ratelimit_key(const kh_http_req *req, char *buf, size_t size);

/* ---- listen.c ---- */
/* A listening socket: unix (path, mode) or TCP ("ADDR:PORT", bound port out). */
int kh_listen_unix(const char *path, mode_t mode, kh_err *err);
int kh_listen_tcp(const char *spec, int *port_out, kh_err *err);
/* Start an MHD daemon on fd (taken: closed on failure), hooked to the loop. */
int kh_listen_start(kh_http_server *srv, listener *lis, int fd, kh_err *err);
/* Ask for MHD_run at the next loop iteration (safe inside MHD callbacks). */
void kh_listen_kick(listener *lis);
/* Close the handles, stop the daemon, unlink the unix socket if ours. */
void kh_listen_stop(listener *lis);
/* Free a listener's memory (after its handles closed). */
void kh_listen_free(listener *lis);

/* ---- req.c ---- */
void kh_req_suspend(kh_http_req *req);
void kh_req_resume(kh_http_req *req);
void kh_req_unwatch(kh_http_req *req);
void kh_req_free(kh_http_req *req);

/* ---- reply.c ---- */
void kh_reply_header(struct MHD_Response *resp, const char *name, const char *value);
struct MHD_Response *kh_reply_copy(const void *data, size_t len);
/* Install resp as the reply (the one and only); the access callback queues it. */
void kh_reply_set(kh_http_req *req, unsigned status, struct MHD_Response *resp);
enum MHD_Result kh_reply_queue(kh_http_req *req);
/* Answer from inside the access callback, before the app saw the req. */
enum MHD_Result kh_reply_fail(kh_http_req *req, kh_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
enum MHD_Result kh_reply_fail_err(kh_http_req *req, const kh_err *err);
/* As kh_reply_fail_err with another status than the code's (421, 431,
 * 501...); close: end the connection after the answer (framing errors). */
enum MHD_Result kh_reply_fail_status(kh_http_req *req, unsigned status, const kh_err *err,
                                     bool close);

/* ---- limits.c ---- */
/* The announced body (Content-Length, Content-Type) against the route;
 * false with err set. */
bool kh_limits_announced(kh_http_req *req, const kh_route *route, kh_err *err);
/* Collect a piece of a body, up to max_body (then discard, and cut off a
 * client that keeps sending far past it). */
enum MHD_Result kh_limits_body(kh_http_req *req, const char *data, size_t n);
/* Read and drop what a client answered early still sends (a dup of conn's fd). */
void kh_limits_drain(kh_http_server *srv, struct MHD_Connection *conn);
void kh_limits_drain_stop_all(kh_http_server *srv);

/* ---- stream.c ---- */
enum MHD_Result kh_stream_begin(kh_http_req *req);
enum MHD_Result kh_stream_data(kh_http_req *req, const char *data, size_t n);
enum MHD_Result kh_stream_done(kh_http_req *req);

/* ---- static.c ---- */
enum MHD_Result kh_static_serve(kh_http_req *req, const kh_router_path *ps);

/* ---- upgrade.c ---- */
void kh_upgrade_close_all(kh_http_server *srv);
void kh_upgrade_linger_cb(uv_timer_t *t);

/* ---- sse.c ---- */
/* on_close once; the stream leaves the server's list. */
void kh_sse_end(kh_sse *sse);
void kh_sse_keepalive(uv_timer_t *t);

#endif
