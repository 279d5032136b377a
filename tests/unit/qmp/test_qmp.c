/* test_qmp.c - QMP framing and a scripted fake monitor (fast, no QEMU);
 * the client against real QEMU is test_qmp_qemu.c.
 *
 * The fake monitor is the other end of a socketpair, driven by the same uv
 * loop: it sends the greeting, then answers each command from a script
 * ("when asked X, answer Y"), one chunk per timer tick so that split writes
 * really arrive as separate reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kh_test.h"
#include "qemu/qmp.h"
#include "util/fs.h"
#include "util/err.h"
#include "util/mem.h"

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ======================================================================
 * Layer 1: parser
 * ==================================================================== */

/* Take every ready message and append its compact JSON + ';' to out. */
static void drain(kh_qmp_parser *p, char *out, size_t size)
{
    json_t *m;
    while ((m = kh_qmp_parser_next(p))) {
        char *s = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
        size_t len = strlen(out);
        snprintf(out + len, size - len, "%s;", s);
        free(s);
        json_decref(m);
    }
}

static const char stream[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, "
    "\"capabilities\": [\"oob\"]}}\r\n"
    "{\"return\": {}, \"id\": 1}\r\n"
    "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 5}, \"event\": \"STOP\"}\r\n"
    "\r\n"
    "{\"return\": {\"status\": \"prelaunch\", \"running\": false}, \"id\": 2}\n";

static const char stream_expect[] =
    "{\"QMP\":{\"capabilities\":[\"oob\"],\"version\":{\"qemu\":{\"major\":7,\"micro\":0,"
    "\"minor\":2}}}};"
    "{\"id\":1,\"return\":{}};"
    "{\"event\":\"STOP\",\"timestamp\":{\"microseconds\":5,\"seconds\":1700000000}};"
    "{\"id\":2,\"return\":{\"running\":false,\"status\":\"prelaunch\"}};";

static void test_parser_chunks(void)
{
    /* One feed, byte by byte, and every chunk size in between. */
    for (size_t chunk = 1; chunk <= sizeof(stream); chunk++) {
        kh_qmp_parser *p = kh_qmp_parser_new();
        char out[2048] = "";
        kh_err err = KH_ERR_INIT;
        int rc = 0;
        for (size_t off = 0; off < sizeof(stream) - 1 && rc == 0; off += chunk) {
            size_t n = sizeof(stream) - 1 - off < chunk ? sizeof(stream) - 1 - off : chunk;
            rc = kh_qmp_parser_feed(p, stream + off, n, &err);
            drain(p, out, sizeof(out)); /* interleaved takes, too */
        }
        CHECK(rc == 0);
        CHECK(!kh_err_isset(&err));
        if (chunk == 1 || chunk == sizeof(stream))
            CHECK_STR(out, stream_expect);
        else if (strcmp(out, stream_expect) != 0)
            CHECK_STR(out, stream_expect);
        kh_qmp_parser_free(p);
    }
}

static void test_parser_many_per_feed(void)
{
    kh_qmp_parser *p = kh_qmp_parser_new();
    kh_err err = KH_ERR_INIT;
    char buf[4096] = "";
    for (int i = 0; i < 100; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof(buf) - len, "{\"id\":%d}\r\n", i);
    }
    CHECK(kh_qmp_parser_feed(p, buf, strlen(buf), &err) == 0);
    int n = 0;
    json_t *m;
    while ((m = kh_qmp_parser_next(p))) {
        CHECK(json_integer_value(json_object_get(m, "id")) == n);
        n++;
        json_decref(m);
    }
    CHECK(n == 100);
    CHECK(kh_qmp_parser_next(p) == NULL);
    /* A partial message stays buffered; nothing comes out yet. */
    CHECK(kh_qmp_parser_feed(p, "{\"a\":", 5, &err) == 0);
    CHECK(kh_qmp_parser_next(p) == NULL);
    CHECK(kh_qmp_parser_feed(p, "1}\r", 3, &err) == 0);
    CHECK(kh_qmp_parser_next(p) == NULL);
    CHECK(kh_qmp_parser_feed(p, "\n", 1, &err) == 0);
    m = kh_qmp_parser_next(p);
    CHECK(m && json_integer_value(json_object_get(m, "a")) == 1);
    json_decref(m);
    /* Freed with unread messages and a partial line inside: no leak. */
    CHECK(kh_qmp_parser_feed(p, "{}\n{}\n{", 7, &err) == 0);
    kh_qmp_parser_free(p);
    kh_qmp_parser_free(NULL);
}

static void test_parser_errors(void)
{
    static const char *const bad[] = {
        "hello\r\n", "[1,2]\r\n", "\"str\"\n", "42\n", "{\"a\":1} trailing\n", "{\"a\":1}{}\n",
        "{\"a\":\"\\u0000\"}\n", "{\"a\":\"\xff\"}\n", "{\"a\":1\n", "\r{\n",
    };
    for (size_t i = 0; i < KH_ARRAY_LEN(bad); i++) {
        kh_qmp_parser *p = kh_qmp_parser_new();
        kh_err err = KH_ERR_INIT;
        /* A good message first: it stays available after the error. */
        CHECK(kh_qmp_parser_feed(p, "{\"ok\":1}\n", 9, &err) == 0);
        CHECK(kh_qmp_parser_feed(p, bad[i], strlen(bad[i]), &err) == -1);
        CHECK(err.code == KH_E_QEMU);
        CHECK(strstr(err.msg, "QMP sent") != NULL);
        json_t *m = kh_qmp_parser_next(p);
        CHECK(m && json_object_get(m, "ok"));
        json_decref(m);
        CHECK(kh_qmp_parser_next(p) == NULL);
        /* Broken for good, with the same message. */
        kh_err err2 = KH_ERR_INIT;
        CHECK(kh_qmp_parser_feed(p, "{}\n", 3, &err2) == -1);
        CHECK_STR(err2.msg, err.msg);
        CHECK(kh_qmp_parser_next(p) == NULL);
        kh_qmp_parser_free(p);
    }
}

static void test_parser_bigint(void)
{
    /* QEMU prints uint64 values; jansson's json_int_t is signed. */
    kh_qmp_parser *p = kh_qmp_parser_new();
    kh_err err = KH_ERR_INIT;
    const char *s = "{\"return\":{\"size\":18446744073709551615},\"id\":3}\n";
    CHECK(kh_qmp_parser_feed(p, s, strlen(s), &err) == 0);
    json_t *m = kh_qmp_parser_next(p);
    CHECK(m != NULL);
    CHECK(json_number_value(json_object_get(m, "id")) == 3.0);
    CHECK(json_number_value(json_object_get(json_object_get(m, "return"), "size")) > 1.8e19);
    json_decref(m);
    kh_qmp_parser_free(p);
}

static void test_parser_oversized(void)
{
    size_t chunk = 1u << 20;
    char *big = xmalloc(chunk + 1); /* '{' then spaces: big or big + 1, chunk bytes */
    memset(big, ' ', chunk + 1);
    big[0] = '{';

    /* Exactly the limit (plus "\r\n") is fine... */
    kh_qmp_parser *p = kh_qmp_parser_new();
    kh_err err = KH_ERR_INIT;
    size_t fed = 0;
    int rc = 0;
    while (rc == 0 && fed + chunk <= KH_QMP_MAX_MESSAGE - 1) {
        rc = kh_qmp_parser_feed(p, fed == 0 ? big : big + 1, chunk, &err);
        fed += chunk;
    }
    while (rc == 0 && fed < KH_QMP_MAX_MESSAGE - 1) {
        rc = kh_qmp_parser_feed(p, " ", 1, &err);
        fed++;
    }
    CHECK(rc == 0);
    CHECK(kh_qmp_parser_feed(p, "}\r\n", 3, &err) == 0);
    json_t *m = kh_qmp_parser_next(p);
    CHECK(m && json_object_size(m) == 0);
    json_decref(m);

    /* ...one byte more is cut off before the line ends (an endless line). */
    fed = 0;
    rc = 0;
    while (rc == 0 && fed <= 2 * (size_t)KH_QMP_MAX_MESSAGE) {
        rc = kh_qmp_parser_feed(p, big + 1, chunk, &err);
        fed += chunk;
    }
    CHECK(rc == -1);
    CHECK(fed <= (size_t)KH_QMP_MAX_MESSAGE + chunk);
    CHECK(err.code == KH_E_QEMU);
    CHECK(strstr(err.msg, "limit") != NULL);
    kh_qmp_parser_free(p);

    /* Same when the line arrives in one feed with its newline: one byte
     * over, with and without the '\r'. */
    for (int cr = 0; cr <= 1; cr++) {
        p = kh_qmp_parser_new();
        kh_err_clear(&err);
        size_t n = (size_t)KH_QMP_MAX_MESSAGE + 1 + (size_t)cr; /* bytes before '\n' */
        char *line = xmalloc(n + 1);
        memset(line, ' ', n);
        line[0] = '{';
        line[KH_QMP_MAX_MESSAGE] = '}';
        if (cr)
            line[n - 1] = '\r';
        line[n] = '\n';
        CHECK(kh_qmp_parser_feed(p, line, n + 1, &err) == -1);
        CHECK(strstr(err.msg, "limit") != NULL);
        kh_qmp_parser_free(p);
        free(line);
    }
    free(big);
}

/* ======================================================================
 * Layer 2: a scripted fake monitor
 * ==================================================================== */

#define JOINED (-1) /* step.split: all reply lines in one write */
#define CLOSE "!close" /* a reply "line" that closes the monitor's socket */

typedef struct step {
    const char *expect;          /* the command we expect ("execute") */
    const char *reply[6];        /* lines to send back; "$ID" = the command's id */
    int split;                   /* 0: one write per line; JOINED; n: n-byte writes */
    int flood_mb;                /* then this many MiB of one endless line */
} step;

#define CAPS_OK { "qmp_capabilities", { "{\"return\": {}, \"id\": $ID}" }, 0, 0 }
#define GREETING                                                                       \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "     \
    "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}"

typedef struct chunk {
    struct chunk *next;
    bool close;        /* close the monitor instead of writing */
    bool end_of_step;  /* the last write of a step's answer */
    size_t len;
    char data[];
} chunk;

typedef struct peer {
    uv_pipe_t pipe;
    uv_timer_t timer;
    kh_qmp_parser *parser;
    const step *script;
    size_t nsteps, pos;
    chunk *head, *tail;
    bool closed;
    bool busy;          /* a command is being answered */
    int overlap;        /* a command arrived while another was in flight */
    int unexpected;     /* commands that did not match the script */
    int received;
    char rbuf[4096];
} peer;

typedef struct peer_write {
    uv_write_t req;
    char data[];
} peer_write;

static void peer_handle_closed(uv_handle_t *h) { (void)h; }

static void peer_close(peer *pr)
{
    if (pr->closed)
        return;
    pr->closed = true;
    uv_close((uv_handle_t *)&pr->pipe, peer_handle_closed);
    uv_close((uv_handle_t *)&pr->timer, peer_handle_closed);
    chunk *c;
    while ((c = pr->head)) {
        pr->head = c->next;
        free(c);
    }
    pr->tail = NULL;
    kh_qmp_parser_free(pr->parser);
    pr->parser = NULL;
}

static void peer_on_write(uv_write_t *req, int status)
{
    (void)status; /* EPIPE once the client cut us off is expected */
    free(req);
}

static void peer_tick(uv_timer_t *t)
{
    peer *pr = t->data;
    chunk *c = pr->head;
    if (!c) {
        uv_timer_stop(&pr->timer);
        return;
    }
    pr->head = c->next;
    if (!pr->head)
        pr->tail = NULL;
    if (c->close) {
        free(c);
        peer_close(pr);
        return;
    }
    peer_write *w = xmalloc(sizeof(*w) + c->len);
    memcpy(w->data, c->data, c->len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)c->len);
    if (uv_write(&w->req, (uv_stream_t *)&pr->pipe, &buf, 1, peer_on_write) < 0)
        free(w);
    if (c->end_of_step)
        pr->busy = false;
    free(c);
}

static chunk *peer_push(peer *pr, const char *data, size_t len, bool close, bool end)
{
    chunk *c = xcalloc(1, sizeof(*c) + len);
    if (len)
        memcpy(c->data, data, len);
    c->len = len;
    c->close = close;
    c->end_of_step = end;
    if (pr->tail)
        pr->tail->next = c;
    else
        pr->head = c;
    pr->tail = c;
    if (!uv_is_active((uv_handle_t *)&pr->timer))
        uv_timer_start(&pr->timer, peer_tick, 1, 1);
    return c;
}

/* Queue the answer lines, "$ID" replaced by id, "\r\n" terminated. */
static void peer_answer(peer *pr, const char *const *lines, size_t nlines, int split,
                        json_int_t id)
{
    char idbuf[32];
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)id);
    size_t cap = 256, len = 0;
    char *all = xmalloc(cap);
    bool close_after = false;
    chunk *last = NULL;
    for (size_t i = 0; i < nlines && lines[i]; i++) {
        if (strcmp(lines[i], CLOSE) == 0) {
            close_after = true;
            break;
        }
        size_t start = len;
        for (const char *s = lines[i]; *s;) {
            const char *piece = s;
            size_t plen = 1;
            if (strncmp(s, "$ID", 3) == 0) {
                piece = idbuf;
                plen = strlen(idbuf);
                s += 3;
            } else {
                s++;
            }
            if (len + plen + 3 > cap) {
                cap = (len + plen + 3) * 2;
                all = xrealloc(all, cap);
            }
            memcpy(all + len, piece, plen);
            len += plen;
        }
        memcpy(all + len, "\r\n", 2);
        len += 2;
        if (split == 0)
            last = peer_push(pr, all + start, len - start, false, false);
    }
    if (split == JOINED && len > 0) {
        last = peer_push(pr, all, len, false, false);
    } else if (split > 0) {
        for (size_t off = 0; off < len; off += (size_t)split) {
            size_t n = len - off < (size_t)split ? len - off : (size_t)split;
            last = peer_push(pr, all + off, n, false, false);
        }
    }
    free(all);
    /* The answer is over when its last byte is written: from then on the
     * client may send the next command. */
    if (close_after)
        peer_push(pr, NULL, 0, true, false);
    else if (last)
        last->end_of_step = true;
    else
        peer_push(pr, "", 0, false, true);
}

static void peer_command(peer *pr, json_t *msg)
{
    const char *name = json_string_value(json_object_get(msg, "execute"));
    json_int_t id = json_integer_value(json_object_get(msg, "id"));
    pr->received++;
    if (pr->busy)
        pr->overlap++;
    pr->busy = true;
    if (pr->pos >= pr->nsteps || !name || strcmp(name, pr->script[pr->pos].expect) != 0) {
        pr->unexpected++;
        printf("# fake monitor: unexpected command %s\n", name ? name : "(none)");
        const char *err[] = {
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"not in the script\"}, "
            "\"id\": $ID}"
        };
        peer_answer(pr, err, 1, 0, id);
        return;
    }
    const step *st = &pr->script[pr->pos++];
    peer_answer(pr, st->reply, KH_ARRAY_LEN(st->reply), st->split, id);
    if (st->flood_mb > 0) {
        size_t mb = 1u << 20;
        char *big = xmalloc(mb);
        memset(big, ' ', mb);
        big[0] = '{';
        for (int i = 0; i < st->flood_mb; i++)
            peer_push(pr, big, mb, false, false);
        free(big);
    }
}

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    peer *pr = h->data;
    (void)suggested;
    *buf = uv_buf_init(pr->rbuf, sizeof(pr->rbuf));
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    peer *pr = s->data;
    (void)buf;
    if (pr->closed || nread == 0)
        return;
    if (nread < 0) {
        peer_close(pr);
        return;
    }
    kh_err err = KH_ERR_INIT;
    if (kh_qmp_parser_feed(pr->parser, pr->rbuf, (size_t)nread, &err) < 0) {
        printf("# fake monitor: client sent garbage: %s\n", err.msg);
        pr->unexpected++;
    }
    json_t *m;
    while (pr->parser && (m = kh_qmp_parser_next(pr->parser))) {
        peer_command(pr, m);
        json_decref(m);
    }
}

/* Start the monitor on fd with a script; greeting is the first lines sent
 * (NULL: the usual greeting). */
static void peer_start(peer *pr, uv_loop_t *loop, int fd, const step *script, size_t nsteps,
                       const char *const *greeting)
{
    memset(pr, 0, sizeof(*pr));
    pr->parser = kh_qmp_parser_new();
    pr->script = script;
    pr->nsteps = nsteps;
    uv_pipe_init(loop, &pr->pipe, 0);
    uv_pipe_open(&pr->pipe, fd);
    pr->pipe.data = pr;
    uv_timer_init(loop, &pr->timer);
    pr->timer.data = pr;
    uv_read_start((uv_stream_t *)&pr->pipe, peer_alloc, peer_read);
    static const char *const hello[] = { GREETING, NULL };
    const char *const *g = greeting ? greeting : hello;
    size_t n = 0;
    while (g[n])
        n++;
    peer_answer(pr, g, n, 0, 0);
    pr->busy = false;
}

/* ---- the client side: a recorder of everything kh_qmp reports ---- */

enum { ACT_NONE, ACT_CLOSE, ACT_CHAIN, ACT_CMD_AFTER_CLOSE };

typedef struct rec {
    kh_qmp *qmp;
    char log[4096];
    int ready_calls, closed_calls;
    int close_on_ready;          /* call kh_qmp_close in on_ready */
    const char *close_on_event;  /* ... in on_event for this name */
    double last_ts;
    char last_event_data[256];
} rec;

typedef struct cmdctx {
    rec *r;
    const char *tag;
    int action;
    struct cmdctx *chain;        /* ACT_CHAIN: the command to queue from the callback */
    const char *chain_cmd;
} cmdctx;

static void logf_(rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(rec *r, const char *fmt, ...)
{
    size_t len = strlen(r->log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->log + len, sizeof(r->log) - len, fmt, ap);
    va_end(ap);
}

static void rec_ready(kh_qmp *qmp, const kh_err *err, void *opaque)
{
    rec *r = opaque;
    CHECK(qmp == r->qmp);
    r->ready_calls++;
    if (err)
        logf_(r, "ready!%s;", err->msg);
    else
        logf_(r, "ready;");
    if (r->close_on_ready) {
        kh_qmp_close(qmp);
        kh_qmp_close(qmp);
    }
}

static void rec_event(kh_qmp *qmp, const char *event, json_t *data, double ts, void *opaque)
{
    rec *r = opaque;
    logf_(r, "ev:%s;", event);
    r->last_ts = ts;
    char *s = data ? json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    snprintf(r->last_event_data, sizeof(r->last_event_data), "%s", s ? s : "(null)");
    free(s);
    if (r->close_on_event && strcmp(event, r->close_on_event) == 0)
        kh_qmp_close(qmp);
}

static void rec_closed(kh_qmp *qmp, void *opaque)
{
    rec *r = opaque;
    r->closed_calls++;
    logf_(r, "closed;");
    kh_qmp_close(qmp); /* still allowed (a no-op) inside on_closed */
}

static void rec_reply(kh_qmp *qmp, json_t *ret, const kh_err *err, void *opaque)
{
    cmdctx *c = opaque;
    rec *r = c->r;
    CHECK((ret == NULL) == (err != NULL));
    if (err) {
        CHECK(err->code == KH_E_QEMU);
        logf_(r, "%s!%s;", c->tag, err->msg);
    } else {
        char *s = json_dumps(ret, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        logf_(r, "%s=%s;", c->tag, s);
        free(s);
    }
    kh_err e2 = KH_ERR_INIT;
    switch (c->action) {
    case ACT_CLOSE:
        kh_qmp_close(qmp);
        kh_qmp_close(qmp);
        break;
    case ACT_CHAIN:
        CHECK(kh_qmp_command(qmp, c->chain_cmd, NULL, rec_reply, c->chain, &e2) == 0);
        break;
    case ACT_CMD_AFTER_CLOSE:
        CHECK(kh_qmp_command(qmp, "query-status", json_object(), rec_reply, c, &e2) == -1);
        CHECK(e2.code == KH_E_QEMU);
        break;
    default:
        break;
    }
}

static const kh_qmp_callbacks rec_cbs = { rec_ready, rec_event, rec_closed };

typedef struct fake {
    uv_loop_t loop;
    peer pr;
    rec r;
} fake;

/* A kh_qmp on one end of a socketpair, the scripted monitor on the other. */
static void fake_start(fake *f, const step *script, size_t nsteps, const char *const *greeting)
{
    memset(f, 0, sizeof(*f));
    uv_loop_init(&f->loop);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        exit(1);
    }
    f->r.qmp = kh_qmp_new(&f->loop, &rec_cbs, &f->r);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qmp_attach_fd(f->r.qmp, sv[0], &err) == 0);
    peer_start(&f->pr, &f->loop, sv[1], script, nsteps, greeting);
}

static void fake_cmd(fake *f, cmdctx *c, const char *name, json_t *args)
{
    kh_err err = KH_ERR_INIT;
    c->r = &f->r;
    if (c->chain)
        c->chain->r = &f->r;
    CHECK(kh_qmp_command(f->r.qmp, name, args, rec_reply, c, &err) == 0);
    CHECK(!kh_err_isset(&err));
}

/* Run the loop to the end: every handle closed, the qmp freed. */
static void fake_finish(fake *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CHECK(f->pr.closed); /* the monitor saw the client hang up */
    if (!f->pr.closed) {
        peer_close(&f->pr);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    CHECK(uv_loop_close(&f->loop) == 0);
    CHECK(f->r.closed_calls == 1);
    CHECK(f->pr.overlap == 0);
    CHECK(f->pr.unexpected == 0);
}

static void test_fake_basic(void)
{
    static const step script[] = {
        CAPS_OK,
        { "query-status",
          { "{\"return\": {\"status\": \"prelaunch\", \"singlestep\": false, "
            "\"running\": false}, \"id\": $ID}" }, 0, 0 },
        { "foo", { "{\"id\": $ID, \"error\": {\"class\": \"CommandNotFound\", "
                   "\"desc\": \"The command foo has not been found\"}}" }, 0, 0 },
        { "query-name", { "{\"return\": {}, \"id\": $ID}" }, 0, 0 },
        { "quit", { "{\"return\": {}, \"id\": $ID}",
                    "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 500000}, "
                    "\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, "
                    "\"reason\": \"host-qmp-quit\"}}", CLOSE }, 0, 0 },
    };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    /* Queued before the greeting: they go out after qmp_capabilities, in order. */
    cmdctx c1 = { .tag = "status" }, c2 = { .tag = "foo" }, c3 = { .tag = "name" };
    cmdctx c4 = { .tag = "quit" };
    fake_cmd(&f, &c1, "query-status", NULL);
    fake_cmd(&f, &c2, "foo", json_object());
    fake_cmd(&f, &c3, "query-name", NULL);
    fake_cmd(&f, &c4, "quit", NULL);
    CHECK(kh_qmp_last_rtt_us(f.r.qmp) == 0);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;status={\"running\":false,\"singlestep\":false,"
                       "\"status\":\"prelaunch\"};foo!The command foo has not been found;"
                       "name={};quit={};ev:SHUTDOWN;closed;");
    CHECK(f.r.last_ts == 1.5);
    CHECK_STR(f.r.last_event_data, "{\"guest\":false,\"reason\":\"host-qmp-quit\"}");
    CHECK(f.pr.received == 5);
    fake_finish(&f);
}

/* A reply with a uint64 over INT64_MAX (balloon statistics): every number,
 * our id included, is decoded as a real; the reply still matches its
 * command and the connection goes on. */
static void test_fake_bigint_reply(void)
{
    static const step script[] = {
        CAPS_OK,
        { "qom-get", { "{\"return\": {\"stats\": {\"stat-free-memory\": "
                       "18446744073709551615}}, \"id\": $ID}" }, 0, 0 },
        { "query-name", { "{\"return\": {}, \"id\": $ID}" }, 0, 0 },
    };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    cmdctx c1 = { .tag = "big" }, c2 = { .tag = "name" };
    fake_cmd(&f, &c1, "qom-get", NULL);
    fake_cmd(&f, &c2, "query-name", NULL);
    uv_run(&f.loop, UV_RUN_NOWAIT);
    for (int i = 0; i < 2000 && !strstr(f.r.log, "name="); i++)
        uv_run(&f.loop, UV_RUN_ONCE);
    CHECK(strstr(f.r.log, "big={\"stats\":{\"stat-free-memory\":1.8446744073709552e") != NULL);
    CHECK(strstr(f.r.log, "name={};") != NULL);
    CHECK(strstr(f.r.log, "closed") == NULL);
    kh_qmp_close(f.r.qmp);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    fake_finish(&f);
}

static void test_fake_events_and_split(void)
{
    static const step script[] = {
        CAPS_OK,
        /* Events before the reply, everything cut into 3-byte writes. */
        { "stop", { "{\"timestamp\": {\"seconds\": 10, \"microseconds\": 1}, \"event\": \"STOP\"}",
                    "{\"timestamp\": {\"seconds\": 11, \"microseconds\": 2}, \"event\": \"X\", "
                    "\"data\": {\"a\": [1, 2]}}",
                    "{\"return\": {}, \"id\": $ID}" }, 3, 0 },
        /* Same again, all in one write. */
        { "cont", { "{\"timestamp\": {\"seconds\": 12, \"microseconds\": 0}, \"event\": \"RESUME\"}",
                    "{\"return\": {}, \"id\": $ID}",
                    "{\"timestamp\": {\"seconds\": 13, \"microseconds\": 0}, \"event\": \"Y\"}" },
          JOINED, 0 },
        /* A reply in one-byte writes. */
        { "query-kvm", { "{\"return\": {\"enabled\": false, \"present\": true}, \"id\": $ID}" }, 1, 0 },
    };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    cmdctx c3 = { .tag = "kvm" };
    cmdctx c2 = { .tag = "cont", .action = ACT_CHAIN, .chain = &c3, .chain_cmd = "query-kvm" };
    cmdctx c1 = { .tag = "stop" };
    fake_cmd(&f, &c1, "stop", NULL);
    fake_cmd(&f, &c2, "cont", NULL);
    uv_run(&f.loop, UV_RUN_NOWAIT);
    while (!strstr(f.r.log, "kvm="))
        if (!uv_run(&f.loop, UV_RUN_ONCE))
            break;
    CHECK_STR(f.r.log, "ready;ev:STOP;ev:X;stop={};ev:RESUME;cont={};ev:Y;"
                       "kvm={\"enabled\":false,\"present\":true};");
    CHECK(kh_qmp_last_rtt_us(f.r.qmp) > 0);
    kh_qmp_close(f.r.qmp);
    fake_finish(&f);
    CHECK(strstr(f.r.log, ";closed;") != NULL);
}

static void test_fake_eof_pending(void)
{
    /* The monitor hangs up while a command is in flight and two more wait. */
    static const step script[] = {
        CAPS_OK,
        { "query-status", { CLOSE }, 0, 0 },
    };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    cmdctx c1 = { .tag = "a" }, c2 = { .tag = "b", .action = ACT_CMD_AFTER_CLOSE };
    cmdctx c3 = { .tag = "c" };
    fake_cmd(&f, &c1, "query-status", NULL);
    fake_cmd(&f, &c2, "query-name", NULL);
    fake_cmd(&f, &c3, "query-kvm", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;a!QMP connection closed;b!QMP connection closed;"
                       "c!QMP connection closed;closed;");
    fake_finish(&f);
}

static void test_fake_close_in_reply(void)
{
    /* The reply and an event arrive in the same read; the reply callback
     * closes: the event must not be delivered, nothing freed under us. */
    static const step script[] = {
        CAPS_OK,
        { "query-status", { "{\"return\": {}, \"id\": $ID}",
                            "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, "
                            "\"event\": \"LATE\"}",
                            "{\"return\": {}, \"id\": 99}" }, JOINED, 0 },
    };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    cmdctx c1 = { .tag = "a", .action = ACT_CLOSE }, c2 = { .tag = "b" };
    fake_cmd(&f, &c1, "query-status", NULL);
    fake_cmd(&f, &c2, "query-name", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;a={};b!QMP connection closed;closed;");
    fake_finish(&f);
}

static void test_fake_close_in_event(void)
{
    static const step script[] = {
        CAPS_OK,
        { "query-status", { "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, "
                            "\"event\": \"A\"}",
                            "{\"timestamp\": {\"seconds\": 2, \"microseconds\": 0}, "
                            "\"event\": \"B\"}",
                            "{\"return\": {}, \"id\": $ID}" }, JOINED, 0 },
    };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    f.r.close_on_event = "A";
    cmdctx c1 = { .tag = "a" };
    fake_cmd(&f, &c1, "query-status", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;ev:A;a!QMP connection closed;closed;");
    fake_finish(&f);
}

static void test_fake_close_in_ready(void)
{
    static const step script[] = { CAPS_OK };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    f.r.close_on_ready = 1;
    cmdctx c1 = { .tag = "a" };
    fake_cmd(&f, &c1, "query-status", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;a!QMP connection closed;closed;");
    CHECK(f.r.ready_calls == 1);
    fake_finish(&f);
}

static void test_fake_close_at_once(void)
{
    /* Closed right after attach, before the greeting: on_ready still gets
     * its one call (an error), then on_closed. */
    static const step script[] = { CAPS_OK };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    cmdctx c1 = { .tag = "a" };
    fake_cmd(&f, &c1, "query-status", NULL);
    kh_qmp_close(f.r.qmp);
    kh_qmp_close(f.r.qmp);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qmp_command(f.r.qmp, "x", NULL, NULL, NULL, &err) == -1);
    CHECK_STR(err.msg, "QMP connection closed");
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready!QMP connection closed;a!QMP connection closed;closed;");
    fake_finish(&f);
}

static void test_never_attached(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rec r;
    memset(&r, 0, sizeof(r));
    r.qmp = kh_qmp_new(&loop, &rec_cbs, &r);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qmp_command(r.qmp, "", NULL, NULL, NULL, &err) == -1);
    CHECK(err.code == KH_E_INVALID);
    kh_err_clear(&err);
    CHECK(kh_qmp_command(r.qmp, "x", json_array(), NULL, NULL, &err) == -1);
    CHECK(err.code == KH_E_INVALID);
    kh_err_clear(&err);
    CHECK(kh_qmp_command(r.qmp, "bad\xff", NULL, NULL, NULL, &err) == -1);
    CHECK(err.code == KH_E_INVALID);
    kh_err_clear(&err);
    CHECK(kh_qmp_connect_path(r.qmp, "", &err) == -1);
    kh_qmp_close(r.qmp);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_STR(r.log, "closed;");
    CHECK(uv_loop_close(&loop) == 0);
    kh_qmp_close(NULL);
}

static void test_connect_missing(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rec r;
    memset(&r, 0, sizeof(r));
    r.qmp = kh_qmp_new(&loop, &rec_cbs, &r);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qmp_connect_path(r.qmp, "/nonexistent/kh-qmp.sock", &err) == 0);
    cmdctx c1 = { .r = &r, .tag = "a" };
    CHECK(kh_qmp_command(r.qmp, "query-status", NULL, rec_reply, &c1, &err) == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(starts(r.log, "ready!QMP connection closed: connect: "));
    CHECK(strstr(r.log, "a!QMP connection closed: connect: ") != NULL);
    CHECK(strstr(r.log, ";closed;") != NULL);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_fake_garbage(void)
{
    static const step script[] = {
        CAPS_OK,
        { "query-status", { "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, "
                            "\"event\": \"OK\"}",
                            "this is not json" }, JOINED, 0 },
    };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    cmdctx c1 = { .tag = "a" };
    fake_cmd(&f, &c1, "query-status", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    /* The event before the bad line is still delivered. */
    CHECK(starts(f.r.log, "ready;ev:OK;a!QMP connection closed: protocol error: QMP sent "
                          "invalid JSON"));
    CHECK(strstr(f.r.log, ";closed;") != NULL);
    fake_finish(&f);
}

static void test_fake_bad_handshake(void)
{
    /* Not a greeting. */
    static const char *const not_hello[] = { "{\"return\": {}}", NULL };
    fake f;
    fake_start(&f, NULL, 0, not_hello);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready!QMP connection closed: protocol error: expected the QMP "
                       "greeting;closed;");
    fake_finish(&f);

    /* qmp_capabilities refused. */
    static const step refuse[] = {
        { "qmp_capabilities", { "{\"error\": {\"class\": \"GenericError\", "
                                "\"desc\": \"nope\"}, \"id\": $ID}" }, 0, 0 },
    };
    fake_start(&f, refuse, KH_ARRAY_LEN(refuse), NULL);
    cmdctx c1 = { .tag = "a" };
    fake_cmd(&f, &c1, "query-status", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready!QMP connection closed: qmp_capabilities: nope;"
                       "a!QMP connection closed: qmp_capabilities: nope;closed;");
    fake_finish(&f);

    /* A reply before our qmp_capabilities' answer, with another id: a
     * previous client's (a daemon killed mid-command), dropped. */
    static const step stale[] = {
        { "qmp_capabilities", { "{\"return\": {\"status\": \"old\"}, \"id\": 777}",
                                "{\"return\": {}, \"id\": $ID}" }, 0, 0 },
        { "query-status", { "{\"return\": {}, \"id\": $ID}" }, 0, 0 },
    };
    fake_start(&f, stale, KH_ARRAY_LEN(stale), NULL);
    cmdctx c3 = { .tag = "a", .action = ACT_CLOSE };
    fake_cmd(&f, &c3, "query-status", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;a={};closed;");
    fake_finish(&f);

    /* A reply with an id nobody asked for. */
    static const step wrong_id[] = {
        CAPS_OK,
        { "query-status", { "{\"return\": {}, \"id\": 12345}" }, 0, 0 },
    };
    fake_start(&f, wrong_id, KH_ARRAY_LEN(wrong_id), NULL);
    cmdctx c2 = { .tag = "a" };
    fake_cmd(&f, &c2, "query-status", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;a!QMP connection closed: protocol error: reply to a command "
                       "not in flight;closed;");
    fake_finish(&f);
}

static void test_fake_endless_line(void)
{
    /* A monitor that never ends its line is cut off at the limit. */
    static const step script[] = { CAPS_OK, { "query-status", { NULL }, 0, 40 } };
    fake f;
    fake_start(&f, script, KH_ARRAY_LEN(script), NULL);
    cmdctx c1 = { .tag = "a" };
    fake_cmd(&f, &c1, "query-status", NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CHECK_STR(f.r.log, "ready;a!QMP connection closed: protocol error: QMP message over the "
                       "16 MiB byte limit;closed;");
    fake_finish(&f);
}


/* kh_qmp_command_fd: the command's bytes arrive with the fd (SCM_RIGHTS),
 * as QEMU's getfd needs; a command without an fd carries none. The monitor
 * here is the test itself, reading with recvmsg. */
typedef struct fdpass {
    int replies;
    char log[256];
} fdpass;

static void fdpass_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    fdpass *f = opaque;
    f->replies++;
    size_t n = strlen(f->log);
    snprintf(f->log + n, sizeof(f->log) - n, "%s;", err ? err->msg : "ok");
}

/* Read one message from the client side; *fd gets a passed fd or -1. */
static ssize_t fdpass_recv(int s, char *buf, size_t size, int *fd)
{
    union {
        char c[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { buf, size - 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
                          .msg_controllen = sizeof(u.c) };
    *fd = -1;
    ssize_t n = recvmsg(s, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n <= 0)
        return n;
    buf[n] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(fd, CMSG_DATA(c), sizeof(int));
    return n;
}

static void test_fd_passing(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2], p[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    const char *greeting = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
    CHECK(write(sv[1], greeting, strlen(greeting)) == (ssize_t)strlen(greeting));
    fdpass f = { 0, "" };
    kh_qmp *q = kh_qmp_new(&loop, NULL, NULL);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_qmp_attach_fd(q, sv[0], &err) == 0);
    CHECK(kh_qmp_command(q, "query-name", NULL, fdpass_reply, &f, &err) == 0);
    CHECK(kh_qmp_command_fd(q, "getfd", json_pack("{s:s}", "fdname", "tap0"), p[0],
                            fdpass_reply, &f, &err) == 0);
    int got_fd = -1, fds_seen = 0;
    char seen[512] = "";
    for (int i = 0; i < 2000 && f.replies < 2; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        char buf[512];
        int fd;
        ssize_t n = fdpass_recv(sv[1], buf, sizeof(buf), &fd);
        if (n <= 0) {
            usleep(1000);
            continue;
        }
        if (fd >= 0) {
            fds_seen++;
            got_fd = fd;
        }
        strncat(seen, buf, sizeof(seen) - strlen(seen) - 1);
        json_t *m = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
        const char *cmd = json_string_value(json_object_get(m, "execute"));
        char reply[128];
        snprintf(reply, sizeof(reply), "{\"return\": {}, \"id\": %lld}\r\n",
                 (long long)json_integer_value(json_object_get(m, "id")));
        if (cmd && strcmp(cmd, "getfd") == 0)
            CHECK(fd >= 0); /* the fd came with the getfd bytes themselves */
        else
            CHECK(fd < 0);
        json_decref(m);
        CHECK(write(sv[1], reply, strlen(reply)) == (ssize_t)strlen(reply));
    }
    CHECK(f.replies == 2);
    CHECK_STR(f.log, "ok;ok;");
    CHECK(fds_seen == 1);
    CHECK(strstr(seen, "\"getfd\"") && strstr(seen, "\"fdname\":\"tap0\""));
    /* the fd received is the pipe's read end */
    CHECK(write(p[1], "x", 1) == 1);
    char c = 0;
    CHECK(got_fd >= 0 && read(got_fd, &c, 1) == 1 && c == 'x');
    if (got_fd >= 0)
        close(got_fd);
    /* a closed connection: the fd is still taken (closed), the call fails */
    kh_qmp_close(q);
    int p2[2];
    CHECK(pipe2(p2, O_CLOEXEC) == 0);
    kh_err e2 = KH_ERR_INIT;
    CHECK(kh_qmp_command_fd(q, "getfd", json_pack("{s:s}", "fdname", "x"), p2[0], fdpass_reply,
                            &f, &e2) == -1);
    CHECK(fcntl(p2[0], F_GETFD) == -1 && errno == EBADF);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(f.replies == 2);
    close(sv[1]);
    close(p[1]);
    close(p2[1]);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(test_parser_chunks);
    RUN(test_parser_many_per_feed);
    RUN(test_parser_errors);
    RUN(test_parser_bigint);
    RUN(test_fake_bigint_reply);
    RUN(test_parser_oversized);
    RUN(test_fake_basic);
    RUN(test_fake_events_and_split);
    RUN(test_fake_eof_pending);
    RUN(test_fake_close_in_reply);
    RUN(test_fake_close_in_event);
    RUN(test_fake_close_in_ready);
    RUN(test_fake_close_at_once);
    RUN(test_never_attached);
    RUN(test_connect_missing);
    RUN(test_fake_garbage);
    RUN(test_fake_bad_handshake);
    RUN(test_fake_endless_line);
    RUN(test_fd_passing);
    TEST_DONE();
}
