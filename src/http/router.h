/* router.h - the route table type and the path matcher.
 *
 * A route is a method, a path pattern ("/api/v1/vms/{name}/start", each
 * {param} one whole segment) and a handler. Matching is on the raw
 * request path split at '/' and %-decoded segment by segment, so an
 * encoded '/' never splits a segment. Pure functions: no server, no I/O.
 *
 * Flags: bits 0..15 are the server's (KH_ROUTE_WEBSOCKET ... below); bits
 * 16..31 are left to the application (its auth hook reads them, e.g. "no
 * token needed"), the server never looks at them.
 */
#ifndef KH_HTTP_ROUTER_H
#define KH_HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

typedef struct kh_http_req kh_http_req;

typedef void (*kh_route_fn)(kh_http_req *req, void *app);

enum {
    KH_ROUTE_WEBSOCKET = 1u << 1, /* documented as a WebSocket upgrade */
    KH_ROUTE_SSE = 1u << 2,       /* documented as text/event-stream */
    KH_ROUTE_RAW = 1u << 3,       /* body is not JSON (not parsed) */
    KH_ROUTE_PRIORITY = 1u << 6,  /* its own rate-limit bucket (stop, kill): a flood of
                                   * ordinary requests never delays it */
    KH_ROUTE_STREAM = 1u << 5,    /* body streamed to the handler (kh_http_req_stream),
                                   * not collected; no body size limit of its own */
};
#define KH_ROUTE_APP_SHIFT 16 /* first flag bit the application may use */

typedef struct kh_route {
    const char *method;          /* "GET", "POST", "PATCH", "DELETE", "PUT" */
    const char *path;            /* "/api/v1/vms/{name}/start" */
    kh_route_fn handler;
    unsigned flags;
    const char *summary;         /* one line, for OpenAPI and docs */
    const char *request_schema;  /* components/schemas name or NULL */
    const char *response_schema; /* components/schemas name or NULL */
    /* Access tags for the application's auth hook (the server never reads
     * them): the privilege the route needs (NULL: none beyond being
     * authenticated) and the object path it is checked on, with {param}s
     * of the route path ("/vms/{name}"). */
    const char *priv;
    const char *acl_path;
} kh_route;

#define KH_ROUTER_MAX_PARAMS 8
#define KH_ROUTER_MAX_SEGMENTS 64

/* A request path split into %-decoded segments ("/" has none). */
typedef struct kh_router_path {
    size_t n;
    char *seg[KH_ROUTER_MAX_SEGMENTS];
} kh_router_path;

/* One {param} of a matched pattern: name points into the pattern, value
 * is owned (free it, or kh_router_params_clear). */
typedef struct kh_router_param {
    const char *name;
    size_t name_len;
    char *value;
} kh_router_param;

/* Split "/a/b%20c" into decoded segments. -1 (ps empty) when the path does
 * not start with '/', an escape is malformed or decodes to NUL, or there
 * are more than KH_ROUTER_MAX_SEGMENTS segments. */
int kh_router_split(const char *path, kh_router_path *ps);
void kh_router_path_clear(kh_router_path *ps);

/* Does pattern match the segments? With params (room for
 * KH_ROUTER_MAX_PARAMS), the {param} values are added at *nparams. An
 * empty segment never matches a {param}. */
bool kh_router_match(const char *pattern, const kh_router_path *ps, kh_router_param *params,
                     size_t *nparams);

/* The route for method on ps, or NULL. When some route has the path but
 * not the method, *path_known is set and allow lists their methods
 * ("GET, POST"), for 405 and its Allow header. */
const kh_route *kh_router_find(const kh_route *routes, size_t n, const kh_router_path *ps,
                               const char *method, bool *path_known, char *allow,
                               size_t allowsz);

/* Every route has a method, a path starting with '/', a handler and at
 * most KH_ROUTER_MAX_PARAMS parameters; -1 with err set if not. */
int kh_router_check(const kh_route *routes, size_t n, kh_err *err);

#endif
