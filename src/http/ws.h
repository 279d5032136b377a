/* ws.h - WebSocket (RFC 6455, via wslay): the upgrade reply (upgrade.c)
 * and the session on the upgraded socket (ws.c).
 *
 * on_close runs exactly once per kh_http_reply_websocket call, even when
 * the upgrade never happened (then without on_open); never from inside
 * kh_ws_send or kh_ws_close. WebSockets are exempt from the idle timeout.
 */
#ifndef KH_HTTP_WS_H
#define KH_HTTP_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "http/req.h"

typedef struct kh_ws kh_ws;

typedef struct kh_ws_callbacks {
    void (*on_open)(kh_ws *ws, void *opaque);
    void (*on_message)(kh_ws *ws, bool binary, const void *data, size_t len, void *opaque);
    /* After on_close returns, ws is freed. */
    void (*on_close)(kh_ws *ws, void *opaque);
} kh_ws_callbacks;

/* Answer an upgrade request (400 if it is not one, 403 if its Origin is
 * not the Host). */
void kh_http_reply_websocket(kh_http_req *req, const kh_ws_callbacks *cbs, void *opaque);
/* Queue a message. If the peer is too slow (over 1 MiB queued) the
 * connection is closed rather than growing memory. */
int kh_ws_send(kh_ws *ws, bool binary, const void *data, size_t len);
/* Bytes queued for the peer and not yet written: a relay stops reading
 * its source while this is high (kh_ws_send gives up over 1 MiB). */
size_t kh_ws_queued(const kh_ws *ws);
void kh_ws_close(kh_ws *ws);

/* ---- wsclient.c: a WebSocket client over mutual TLS ----
 * Open wss://HOST:PORT path (url: "https://HOST:PORT", an IP address or
 * a name the certificate carries) presenting cert/key, trusting only ca;
 * header: extra request header lines ("Name: value\r\n"...) or NULL. The
 * TLS connection and the handshake run on a thread of their own, which
 * then pumps bytes between TLS and a socket pair the loop side frames
 * (wslay, client mode). on_open runs on the loop once the server answered
 * 101; on_close once in every case (without on_open when it failed). -1
 * with *err (a static message) when it cannot even start. */
typedef struct kh_ws_connect_opts {
    const char *url, *path, *ca, *cert, *key, *header;
    unsigned timeout_ms;      /* connect + TLS + handshake (0: 10 s) */
} kh_ws_connect_opts;
int kh_ws_connect(uv_loop_t *loop, const kh_ws_connect_opts *o, const kh_ws_callbacks *cbs,
                  void *opaque, const char **err);

/* ---- internal: shared by upgrade.c and ws.c only, not for callers ---- */
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
/* A client session (masked frames) on fd, a connected socket past the
 * server's 101 answer; fd is closed when the session ends. on_open runs
 * now; on_close once, as for a server session. */
void kh_ws__client_attach(uv_loop_t *loop, int fd, const kh_ws_callbacks *cbs, void *opaque);
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key; false if the key is not
 * base64 of 16 bytes. */
bool kh_ws__accept_key(const char *key, char out[29]);
/* Is s[0..len) well-formed UTF-8 (RFC 3629: no overlongs, surrogates, or
 * code points past U+10FFFF)? Text frames must be. */
bool kh_ws__utf8_valid(const unsigned char *s, size_t len);
#endif

#endif
