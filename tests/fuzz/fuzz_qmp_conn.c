/* fuzz_qmp_conn.c - libFuzzer target for the QMP connection state machine.
 *
 * The input is what a (hostile) QEMU monitor sends on the socket, then the
 * monitor half-closes. Commands are queued before and from inside callbacks,
 * and callbacks close the connection at points chosen from a hash of the
 * input. Checked: every command callback runs exactly once, on_ready at most
 * once, on_closed exactly once and last, no handle left open (the object
 * freed itself), and ASan sees no use after free.
 */
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qemu/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct state {
    kh_qmp *qmp;
    uint64_t bits;     /* decides which callback closes or chains */
    int issued, done, ready, closed, events;
} state;

static bool pick(state *s)
{
    bool b = s->bits & 1;
    s->bits = (s->bits >> 1) | (s->bits << 63);
    return b && (s->bits & 2);
}

static void on_reply(kh_qmp *qmp, json_t *ret, const kh_err *err, void *opaque);

static void issue(state *s, const char *cmd)
{
    kh_err err = KH_ERR_INIT;
    if (kh_qmp_command(s->qmp, cmd, NULL, on_reply, s, &err) == 0)
        s->issued++;
    else if (err.code != KH_E_QEMU)
        abort();
}

static void on_reply(kh_qmp *qmp, json_t *ret, const kh_err *err, void *opaque)
{
    state *s = opaque;
    if (s->closed || (ret == NULL) == (err == NULL))
        abort();
    s->done++;
    if (pick(s))
        kh_qmp_close(qmp);
    else if (pick(s) && s->issued < 8)
        issue(s, "query-status");
}

static void on_ready(kh_qmp *qmp, const kh_err *err, void *opaque)
{
    state *s = opaque;
    if (s->closed || s->ready++)
        abort();
    if (!err && pick(s))
        kh_qmp_close(qmp);
}

static void on_event(kh_qmp *qmp, const char *event, json_t *data, double ts, void *opaque)
{
    state *s = opaque;
    (void)data;
    (void)ts;
    if (s->closed || !event)
        abort();
    s->events++;
    if (pick(s))
        kh_qmp_close(qmp);
    else if (pick(s) && s->issued < 8)
        issue(s, "query-name");
}

static void on_closed(kh_qmp *qmp, void *opaque)
{
    state *s = opaque;
    if (s->closed++ || s->done != s->issued)
        abort();
    kh_qmp_close(qmp); /* allowed, a no-op */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        signal(SIGPIPE, SIG_IGN);
        init = true;
    }
    if (size > 65536) /* what fits the socket buffer without a writer loop */
        return 0;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    int sndbuf = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);

    uv_loop_t loop;
    uv_loop_init(&loop);
    state s = { .bits = h };
    static const kh_qmp_callbacks cbs = { on_ready, on_event, on_closed };
    s.qmp = kh_qmp_new(&loop, &cbs, &s);
    kh_err err = KH_ERR_INIT;
    if (kh_qmp_attach_fd(s.qmp, sv[0], &err) < 0)
        abort();
    issue(&s, "query-status");
    issue(&s, "query-version");
    if (h & 0x100)
        issue(&s, "cont");
    if ((h & 0x600) == 0x600)
        kh_qmp_close(s.qmp);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (s.closed != 1 || s.done != s.issued || uv_loop_close(&loop) != 0)
        abort();
    close(sv[1]);
    return 0;
}
