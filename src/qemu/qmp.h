/* qmp.h - QEMU Machine Protocol client, in two layers.
 *
 * Layer 1, kh_qmp_parser: pure framing. Bytes in, whole JSON messages out
 * (QMP sends one JSON object per line). No I/O, unit-tested and fuzzed.
 *
 * Layer 2, kh_qmp: an asynchronous connection on the libuv loop. It reads
 * the greeting, negotiates capabilities, then runs commands one at a time
 * in order (each with an "id"), delivers replies to per-command callbacks
 * and asynchronous events to the event callback.
 *
 * Callback rules: callbacks run on the loop thread. A callback may call
 * kh_qmp_command() and kh_qmp_close() (from any callback, any number of
 * times). There is no kh_qmp_free(): kh_qmp_close(), or the connection going
 * away, frees the object from the loop after on_closed has run.
 */
#ifndef KH_QEMU_QMP_H
#define KH_QEMU_QMP_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "util/err.h"

/* ---- layer 1: framing ---- */

#define KH_QMP_MAX_MESSAGE (16u * 1024 * 1024)

typedef struct kh_qmp_parser kh_qmp_parser;

kh_qmp_parser *kh_qmp_parser_new(void);
void kh_qmp_parser_free(kh_qmp_parser *p);
/* Feed bytes. Returns 0, or -1 with err set (KH_E_QEMU) when the stream is
 * broken (a line that is not a JSON object, or longer than
 * KH_QMP_MAX_MESSAGE); it then stays broken, while the messages completed
 * before the bad line can still be taken. Blank lines are skipped; a message
 * whose integers overflow json_int_t (a QEMU uint64) is kept with its numbers
 * decoded as reals. */
int kh_qmp_parser_feed(kh_qmp_parser *p, const char *data, size_t len, kh_err *err);
/* Next complete message (a new reference), or NULL when none is ready. */
json_t *kh_qmp_parser_next(kh_qmp_parser *p);

/* ---- layer 2: connection ---- */

typedef struct kh_qmp kh_qmp;

/* ret: the "return" value (borrowed, valid during the call) or NULL when err
 * is set (QMP "error" reply -> KH_E_QEMU with QEMU's desc; connection lost
 * or closed -> KH_E_QEMU "QMP connection closed[: reason]"). */
typedef void (*kh_qmp_reply_cb)(kh_qmp *qmp, json_t *ret, const kh_err *err, void *opaque);

typedef struct kh_qmp_callbacks {
    /* Greeting read and qmp_capabilities accepted (err NULL), or the
     * handshake failed or the connection closed before it (err set;
     * on_closed follows). Runs exactly once after a successful attach or
     * connect call. */
    void (*on_ready)(kh_qmp *qmp, const kh_err *err, void *opaque);
    /* An asynchronous event: name, data (borrowed, may be NULL), and the
     * timestamp QEMU gave it in seconds. */
    void (*on_event)(kh_qmp *qmp, const char *event, json_t *data, double ts, void *opaque);
    /* The connection is gone (QEMU exited or closed it). Pending commands
     * have had their callbacks with an error before this. */
    void (*on_closed)(kh_qmp *qmp, void *opaque);
} kh_qmp_callbacks;

kh_qmp *kh_qmp_new(uv_loop_t *loop, const kh_qmp_callbacks *cbs, void *opaque);
/* Take over a connected stream socket fd (the qmp owns and closes it, also
 * when this call fails). */
int kh_qmp_attach_fd(kh_qmp *qmp, int fd, kh_err *err);
/* Connect to a unix socket path (non-blocking connect; errors surface through
 * on_ready). */
int kh_qmp_connect_path(kh_qmp *qmp, const char *path, kh_err *err);
/* Queue a command. args is stolen (may be NULL). cb may be NULL. Returns -1
 * with err set if the connection is closed. */
int kh_qmp_command(kh_qmp *qmp, const char *command, json_t *args, kh_qmp_reply_cb cb,
                   void *opaque, kh_err *err);
/* The same with an fd sent alongside the command's bytes (SCM_RIGHTS), as
 * "getfd" and "add-fd" need. fd is stolen: closed once sent, or on any
 * failure (also when the connection closes before it was sent). */
int kh_qmp_command_fd(kh_qmp *qmp, const char *command, json_t *args, int fd,
                      kh_qmp_reply_cb cb, void *opaque, kh_err *err);
/* Round-trip time of the last completed command, in microseconds. */
unsigned long kh_qmp_last_rtt_us(const kh_qmp *qmp);
/* Close now; pending callbacks get an error, then on_closed runs (from a
 * later loop iteration), then the object frees itself. Safe to call from any
 * callback and more than once (until on_closed has returned). on_closed runs
 * for every kh_qmp, attached or not, so this is also how a qmp that was never
 * attached is disposed of. The loop must run for the free to happen. */
void kh_qmp_close(kh_qmp *qmp);

#endif
