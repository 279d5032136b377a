/* http.h - a generic HTTP/WebSocket/SSE server on GNU libmicrohttpd,
 * driven by a libuv loop: the one header users of src/http include.
 *
 * Knows nothing of the application: it serves a route table (router.h)
 * and asks the application's auth hook (server.h) whether a request may
 * go on. MHD's epoll fd is polled by libuv; nothing runs on another
 * thread, and no call is thread-safe.
 *
 * Files, one job each:
 *   server.c  the server object, MHD's callbacks, routing a request to its
 *             handler; listen.c  sockets and one MHD daemon per listener
 *             on the loop; router.c  path matching; req.c  request
 *             lifetime and accessors; reply.c  responses; limits.c  body
 *             caps and draining refused bodies; stream.c  streamed bodies;
 *             static.c  static files; upgrade.c  the WebSocket handshake
 *             and hand-over; ws.c  WebSocket sessions; sse.c  event streams.
 *
 * Rules for callers:
 *  - kh_http_server_free must not be called from inside one of the server's
 *    callbacks. It closes handles asynchronously: run the loop once more
 *    (uv_run) before uv_loop_close. The same after a kh_http_server_new
 *    that failed.
 *  - max_connections and idle_timeout apply per listener. WebSockets and
 *    event streams are exempt from idle_timeout; requests waiting for a
 *    late reply too.
 *  - Bodies over max_body get 413 before they are buffered; a body that is
 *    not application/json (unless KH_ROUTE_RAW/STREAM) gets 415.
 */
#ifndef KH_HTTP_HTTP_H
#define KH_HTTP_HTTP_H

#include "http/req.h"
#include "http/router.h"
#include "http/server.h"
#include "http/sse.h"
#include "http/ws.h"

#endif
