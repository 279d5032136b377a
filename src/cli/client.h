/* client.h - talking HTTP to kvmhostd (libcurl), over its unix socket or TCP.
 *
 * Errors follow the API contract: a 4xx/5xx answer becomes a kh_err with
 * the code named in the body ({"error": {"code", "message"}}); a daemon
 * that cannot be reached becomes KH_E_UNAVAILABLE with a message naming
 * the socket or URL and asking whether kvmhostd runs.
 */
#ifndef KH_CLI_CLIENT_H
#define KH_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/buf.h"
#include "util/err.h"

typedef struct cli_client cli_client;

/* socket_path is used when url is NULL. token (may be NULL) is sent as
 * "Authorization: Bearer" with a url only. Strings are copied. */
cli_client *cli_client_new(const char *socket_path, const char *url, const char *token);
/* https: trust this PEM certificate file (CURLOPT_CAINFO) instead of the
 * system's CAs. */
void cli_client_set_cacert(cli_client *c, const char *path);
void cli_client_free(cli_client *c);
/* "socket /run/kvmhost/kvmhostd.sock" or "http://h:port": for messages. */
const char *cli_client_where(const cli_client *c);

/* A JSON request. body (borrowed, may be NULL) is sent as JSON. On a 2xx
 * answer returns the status and sets *out to the parsed body (NULL when
 * the body is empty, e.g. 204; the caller decrefs). On an error answer
 * returns -1 with err set from the body and, if err_body is not NULL,
 * *err_body set to the error JSON (caller decrefs; NULL if unparsable).
 * On a transport failure returns -1 with KH_E_UNAVAILABLE. */
int cli_client_json(cli_client *c, const char *method, const char *path, const json_t *body,
                    json_t **out, json_t **err_body, kh_err *err);

/* A GET whose answer is not JSON (the console log): the body into *out
 * (caller frees, NUL-terminated), its length into *len. */
int cli_client_get_raw(cli_client *c, const char *path, char **out, size_t *len, kh_err *err);

/* A PUT whose body is the file f (size bytes, streamed), answered with
 * JSON: as cli_client_json. */
int cli_client_upload(cli_client *c, const char *path, FILE *f, uint64_t size, json_t **out,
                      kh_err *err);
/* The same with another method (POST) and content type. */
int cli_client_send_file(cli_client *c, const char *method, const char *path,
                         const char *content_type, FILE *f, uint64_t size, json_t **out,
                         kh_err *err);

/* A streaming GET (server-sent events): on_data gets the body as it
 * arrives and returns nonzero to stop. timeout_ms > 0 ends the stream
 * after that long (not an error). Returns 0 when the stream ended, was
 * stopped or timed out; -1 with err on error answers or transport failure. */
typedef int (*cli_stream_fn)(const char *data, size_t len, void *ud);
int cli_client_stream(cli_client *c, const char *path, const char *const *headers,
                      cli_stream_fn on_data, void *ud, long timeout_ms, kh_err *err);

/* An incremental parser of a text/event-stream (server-sent events).
 * Feed it the bytes as they come; for each complete event (a blank line
 * after "data:" lines) it calls fn with the event's type ("message" when
 * absent), its id ("" when absent) and its data (several data lines
 * joined with '\n'). Comment lines (":") are skipped. Pure; unit-tested. */
typedef int (*cli_sse_fn)(const char *type, const char *id, const char *data, void *ud);
typedef struct cli_sse {
    cli_sse_fn fn;
    void *ud;
    kh_buf line;  /* the incomplete line */
    kh_buf data;  /* data lines of the current event */
    bool have_data;
    char type[64];
    char id[64];
} cli_sse;

void cli_sse_init(cli_sse *s, cli_sse_fn fn, void *ud);
/* Returns nonzero as soon as fn returns nonzero (the rest is not parsed). */
int cli_sse_feed(cli_sse *s, const char *buf, size_t len);
void cli_sse_clear(cli_sse *s);

/* A connected stream socket to the daemon for protocols libcurl does not
 * speak here (the console WebSocket). Fills host (for the Host header,
 * at least 256 bytes) and tells whether the Authorization header is due.
 * https URLs are refused (KH_E_UNSUPPORTED): the console has no TLS. */
int cli_client_connect(cli_client *c, char *host, size_t host_size, const char **token,
                       kh_err *err);

/* Percent-encode one path segment (a VM name, a task id). Caller frees. */
char *cli_path_escape(const char *segment);
/* "/api/v1/<collection>/<name escaped><suffix>" (suffix may be NULL), e.g.
 * cli_api_path("vms", "web1", "/start"). Caller frees. */
char *cli_api_path(const char *collection, const char *name, const char *suffix);
/* A string member of a JSON object, or NULL. */
const char *cli_jstr(const json_t *o, const char *key);

/* The error for an HTTP error answer: code from the body when it has the
 * contract's shape, else from the status. Pure; used by the console too. */
void cli_error_from_answer(long status, const char *body, size_t len, kh_err *err);

#endif
