/* http_harness.h - the shared fixture of the HTTP server tests
 * (tests/unit/http, tests/unit/api): a kh_http server with test routes on
 * a uv loop in a second thread, and the clients that talk to it (libcurl,
 * raw sockets, WebSocket frames).
 *
 * The main thread is the client; handlers run on the loop thread; they
 * share only atomics with the main thread, and main touches the server
 * only through loop_call(). harness_start() makes a temporary directory
 * with a web root, starts the server (unix socket, TCP with the API's
 * token policy, api/auth.h) and its thread; harness_stop() frees the
 * server (when a test did not already) and removes the directory.
 */
#ifndef KH_TEST_HTTP_HARNESS_H
#define KH_TEST_HTTP_HARNESS_H

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../kh_test.h"
#define KH_HTTP_INTERNAL /* kh_ws__accept_key */
#include "api/auth.h"
#include "api/openapi.h"
#include "http/http.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define TOKEN "s3cret-token-for-tests"

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char *hdrs;
    size_t hlen;
    double secs;
} resp;

enum { VIA_UNIX, VIA_TCP, VIA_TLS };

extern const size_t nroutes;
extern uv_loop_t loop;
extern char tmpdir[256];
extern char sock_path[300];
extern kh_auth *auth;
extern int tcp_port;
extern atomic_int n_items;
extern atomic_int n_aborts;
extern atomic_int n_late_drop;
extern atomic_int ws_opens, ws_closes, ws_overflows;
extern atomic_int sse_opens, sse_closes;
extern kh_sse *last_sse;
void loop_call(void (*fn)(void *), void *arg);
void sleep_ms(int ms);
extern const kh_route routes[];
void resp_clear(resp *r);
const char *resp_header(const resp *r, const char *name);
extern int tls_port;
int do_req(int via, const char *method, const char *path, const char *const *hdrs,
    const char *body, size_t chunked_size, resp *r);
json_t *resp_json(const resp *r);
const char *err_code(const resp *r);
int raw_unix(void);
int raw_tcp(int port, bool nonblock);
bool send_all(int fd, const void *p, size_t n);
size_t read_until(int fd, char *buf, size_t cap, const char *needle, int timeout_ms,
    bool *eof);
int status_of(const char *buf);
int raw_request_status(int fd, const char *req);
extern const char ws_key[];
extern const char ws_accept[];
void ws_frame(char *out, size_t *outlen, int opcode, const void *data, size_t len,
    bool masked);
int ws_read_frame(int fd, char *payload, size_t cap, size_t *plen, int timeout_ms);
int ws_connect(int via, const char *extra_headers, char *resp_out, size_t cap);
bool ws_echo(int fd, const char *msg);
bool wait_for(atomic_int *v, int want, int timeout_ms);
void write_file(const char *dir, const char *name, const char *content);
void free_server(void *arg);

/* Set up and start the server; 0 when it runs and every check of the
 * setup held (the harness's checks count in its own file: a failed one
 * shows as "not ok" and makes this -1). */
int harness_start(void);
/* Stop the server and the loop thread, clean up. */
/* Start the loop thread (after the tests that need the loop idle). */
void harness_run(void);
/* -1 when a check of the harness failed (start's or stop's). */
int harness_stop(void);

#endif
