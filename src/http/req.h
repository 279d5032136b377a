/* req.h - one HTTP request: what the handler reads, and its one reply.
 *
 * Request lifetime: the handler receives a kh_http_req and must reply
 * exactly once, now or later (async: the connection is suspended meanwhile).
 * After the reply, the request is gone. If the client disconnects before a
 * late reply, the abort callback runs and the request is gone after it. A
 * late reply to a request whose client left is dropped quietly when no
 * abort callback was set (the request lives until that reply).
 */
#ifndef KH_HTTP_REQ_H
#define KH_HTTP_REQ_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/router.h"
#include "util/err.h"

/* ---- reading the request (req.c) ---- */
const char *kh_http_req_method(const kh_http_req *req);
const char *kh_http_req_path(const kh_http_req *req);
/* The raw request-target as sent (path and query). */
const char *kh_http_req_target(const kh_http_req *req);
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
/* True when it came over TCP with TLS. */
bool kh_http_req_is_tls(const kh_http_req *req);
/* True when it came over TLS with a client certificate that the
 * listener's trust (kh_http_config.tls_trust) verifies. */
bool kh_http_req_peer_verified(const kh_http_req *req);
/* SHA-256 of the TLS client's certificate (DER), lowercase hex: a new
 * string, NULL without one. */
char *kh_http_req_peer_fingerprint(const kh_http_req *req);
/* True when the TCP client connected from 127.0.0.0/8 or ::1. */
bool kh_http_req_is_loopback(const kh_http_req *req);
/* Does the Host header name this server ("localhost", a loopback address,
 * the address the connection came in on)? Against DNS rebinding. */
bool kh_http_req_host_is_self(const kh_http_req *req);
/* No Origin header, a unix-socket request, or an Origin naming the Host
 * the request was sent to (browsers send Origin; cross-site requests
 * name another host). */
bool kh_http_req_same_origin(const kh_http_req *req);
/* The pure part of it: does Origin (NULL: none sent) name Host? */
bool kh_http_origin_same(const char *origin, const char *host);
/* The caller's identity as the auth hook named it (e.g. "root@local",
 * "alice", "alice!ci"), for handlers, rate limits and audit; NULL when
 * none was set. The request keeps a copy. */
void kh_http_req_set_principal(kh_http_req *req, const char *principal);
const char *kh_http_req_principal(const kh_http_req *req);
/* Who a trusted peer (another host of the cluster) acted for, as the auth
 * hook recorded it for the audit ("alice via h1"); NULL when none. */
void kh_http_req_set_acting_for(kh_http_req *req, const char *who);
const char *kh_http_req_acting_for(const kh_http_req *req);
/* The client's address as text into buf ("unix" over the unix socket). */
void kh_http_req_peer_address(const kh_http_req *req, char *buf, size_t len);
/* The route that matched (NULL before routing or when none did). */
const kh_route *kh_http_req_route(const kh_http_req *req);
/* cfg->auth_opaque of the request's server (NULL once the client left). */
void *kh_http_req_auth_data(const kh_http_req *req);
/* Add a response header to the coming reply (e.g. Location). */
void kh_http_req_add_header(kh_http_req *req, const char *name, const char *value);
/* Called if the client goes away before a late reply. */
void kh_http_req_on_abort(kh_http_req *req, void (*cb)(kh_http_req *req, void *opaque),
                          void *opaque);

/* ---- replies, exactly one per request (reply.c) ---- */
void kh_http_reply_json(kh_http_req *req, int status, json_t *body /* stolen */);
/* {"error": {"code": "<kh_code_name>", "message": "..."}} with the status
 * from kh_code_http_status(). */
void kh_http_reply_error(kh_http_req *req, const kh_err *err);
void kh_http_reply_data(kh_http_req *req, int status, const char *content_type,
                        const void *data, size_t len);
/* Reply with a file's bytes, streamed by MHD (fd is owned from the call on). */
void kh_http_reply_fd(kh_http_req *req, int status, const char *content_type, int fd,
                      uint64_t size);

/* ---- streamed request bodies (stream.c) ----
 * KH_ROUTE_STREAM routes: the handler runs once the headers are in, before
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

#endif
