/* qmp.c - QEMU Machine Protocol client: line framing and the libuv connection.
 *
 * Lifetime of a kh_qmp: new -> attach/connect -> greeting -> qmp_capabilities
 * -> ready -> ... -> close. Everything that ends the connection (EOF, read or
 * write error, protocol error, kh_qmp_close) goes through qmp_shutdown(),
 * which only stops I/O and calls uv_close(). The callbacks that report the
 * end (on_ready with an error, failed commands, on_closed) and the free all
 * run from the uv_close callback, in a later loop iteration, so nothing is
 * freed under the feet of a callback that closed the connection while we
 * were still walking a batch of messages.
 */
#include "qemu/qmp.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mem.h"

/* ------------------------------------------------------------------------
 * Layer 1: framing
 * ---------------------------------------------------------------------- */

struct kh_qmp_parser {
    char *line;        /* the partial line (no '\n' in it yet) */
    size_t len, cap;
    json_t **msgs;     /* parsed messages not yet taken: msgs[head..count) */
    size_t head, count, msgs_cap;
    bool broken;       /* once broken, the stream stays broken */
    kh_err broken_err;
};

kh_qmp_parser *kh_qmp_parser_new(void)
{
    kh_qmp_parser *p = xcalloc(1, sizeof(*p));
    return p;
}

void kh_qmp_parser_free(kh_qmp_parser *p)
{
    if (!p)
        return;
    for (size_t i = p->head; i < p->count; i++)
        json_decref(p->msgs[i]);
    free(p->msgs);
    free(p->line);
    free(p);
}

static void parser_push(kh_qmp_parser *p, json_t *msg)
{
    if (p->head == p->count)
        p->head = p->count = 0;
    if (p->count == p->msgs_cap) {
        if (p->head > 0) {
            memmove(p->msgs, p->msgs + p->head, (p->count - p->head) * sizeof(json_t *));
            p->count -= p->head;
            p->head = 0;
        }
        if (p->count == p->msgs_cap) {
            p->msgs_cap = p->msgs_cap ? p->msgs_cap * 2 : 8;
            p->msgs = xreallocarray(p->msgs, p->msgs_cap, sizeof(json_t *));
        }
    }
    p->msgs[p->count++] = msg;
}

static int parser_fail(kh_qmp_parser *p, kh_err *err, const char *fmt, const char *detail)
{
    p->broken = true;
    kh_err_set(&p->broken_err, KH_E_QEMU, fmt, detail);
    kh_err_copy(err, &p->broken_err);
    return -1;
}

static bool only_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

/* One complete line, without its '\n'. */
static int parser_line(kh_qmp_parser *p, const char *s, size_t len, kh_err *err)
{
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (len > KH_QMP_MAX_MESSAGE)
        return parser_fail(p, err, "QMP message over the %s byte limit", "16 MiB");
    if (only_space(s, len))
        return 0;
    json_error_t jerr;
    json_t *msg = json_loadb(s, len, 0, &jerr);
    /* QEMU prints uint64 values that do not fit jansson's json_int_t; keep
     * the message rather than lose the connection, with numbers as reals. */
    if (!msg && json_error_code(&jerr) == json_error_numeric_overflow)
        msg = json_loadb(s, len, JSON_DECODE_INT_AS_REAL, &jerr);
    if (!msg)
        return parser_fail(p, err, "QMP sent invalid JSON: %s", jerr.text);
    if (!json_is_object(msg)) {
        json_decref(msg);
        return parser_fail(p, err, "QMP sent a JSON %s that is not an object", "value");
    }
    parser_push(p, msg);
    return 0;
}

static void parser_append(kh_qmp_parser *p, const char *data, size_t len)
{
    if (p->len + len > p->cap) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < p->len + len)
            cap *= 2;
        p->line = xrealloc(p->line, cap);
        p->cap = cap;
    }
    memcpy(p->line + p->len, data, len);
    p->len += len;
}

int kh_qmp_parser_feed(kh_qmp_parser *p, const char *data, size_t len, kh_err *err)
{
    if (p->broken) {
        kh_err_copy(err, &p->broken_err);
        return -1;
    }
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t seg = nl ? (size_t)(nl - data) : len;
        /* A line may carry one '\r' past the limit before its '\n'. */
        if (p->len + seg > (size_t)KH_QMP_MAX_MESSAGE + 1)
            return parser_fail(p, err, "QMP message over the %s byte limit", "16 MiB");
        if (!nl) {
            parser_append(p, data, seg);
            return 0;
        }
        int rc;
        if (p->len == 0) {
            rc = parser_line(p, data, seg, err);
        } else {
            parser_append(p, data, seg);
            rc = parser_line(p, p->line, p->len, err);
            p->len = 0;
        }
        if (rc < 0)
            return -1;
        data += seg + 1;
        len -= seg + 1;
    }
    /* Give back the memory of a big line once it is done with. */
    if (p->len == 0 && p->cap > 65536) {
        KH_FREE(p->line);
        p->cap = 0;
    }
    return 0;
}

json_t *kh_qmp_parser_next(kh_qmp_parser *p)
{
    if (p->head == p->count)
        return NULL;
    return p->msgs[p->head++];
}

/* ------------------------------------------------------------------------
 * Layer 2: the connection
 * ---------------------------------------------------------------------- */

typedef struct qmp_cmd {
    struct qmp_cmd *next;
    json_int_t id;
    char *text;          /* serialized, "\r\n" terminated */
    size_t text_len;
    kh_qmp_reply_cb cb;
    void *opaque;
    uint64_t sent_ns;
    bool internal;       /* qmp_capabilities, ours */
    int fd;              /* sent with the command's bytes (SCM_RIGHTS), or -1; owned */
} qmp_cmd;

typedef struct qmp_write {
    uv_write_t req;
    kh_qmp *qmp;
    size_t len;
    char data[];
} qmp_write;

enum qmp_state {
    QMP_NEW,        /* not attached yet */
    QMP_CONNECTING, /* uv_pipe_connect under way */
    QMP_GREETING,   /* waiting for {"QMP": ...} */
    QMP_CAPS,       /* qmp_capabilities sent */
    QMP_READY,
};

struct kh_qmp {
    uv_loop_t *loop;
    kh_qmp_callbacks cbs;
    void *opaque;
    uv_pipe_t pipe;
    uv_connect_t connect_req;
    kh_qmp_parser *parser;
    enum qmp_state state;
    bool started;         /* attach or connect succeeded: on_ready is owed */
    bool ready_reported;  /* on_ready has run */
    bool closing;         /* uv_close called; no more I/O or commands */
    qmp_cmd *head, *tail; /* FIFO; inflight (if any) is the head */
    qmp_cmd *inflight;
    json_int_t next_id;
    unsigned long rtt_us;
    kh_err close_err;     /* why it closed, given to the late callbacks */
    char rbuf[65536];
};

static void qmp_shutdown(kh_qmp *qmp, const kh_err *why);

static void qmp_shutdown_msg(kh_qmp *qmp, const char *what, int uverr)
{
    kh_err err = KH_ERR_INIT;
    if (uverr)
        kh_err_set(&err, KH_E_QEMU, "QMP connection closed: %s: %s", what, uv_strerror(uverr));
    else
        kh_err_set(&err, KH_E_QEMU, "QMP connection closed: %s", what);
    qmp_shutdown(qmp, &err);
}

kh_qmp *kh_qmp_new(uv_loop_t *loop, const kh_qmp_callbacks *cbs, void *opaque)
{
    kh_qmp *qmp = xcalloc(1, sizeof(*qmp));
    qmp->loop = loop;
    if (cbs)
        qmp->cbs = *cbs;
    qmp->opaque = opaque;
    qmp->parser = kh_qmp_parser_new();
    qmp->next_id = 1;
    uv_pipe_init(loop, &qmp->pipe, 0);
    qmp->pipe.data = qmp;
    return qmp;
}

static void cmd_free(qmp_cmd *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->text);
    free(c);
}

static qmp_cmd *cmd_pop(kh_qmp *qmp)
{
    qmp_cmd *c = qmp->head;
    if (!c)
        return NULL;
    qmp->head = c->next;
    if (!qmp->head)
        qmp->tail = NULL;
    if (qmp->inflight == c)
        qmp->inflight = NULL;
    c->next = NULL;
    return c;
}

static void on_pipe_closed(uv_handle_t *h)
{
    kh_qmp *qmp = h->data;
    kh_err err = qmp->close_err;
    if (!kh_err_isset(&err))
        kh_err_set(&err, KH_E_QEMU, "QMP connection closed");

    if (qmp->started && !qmp->ready_reported) {
        qmp->ready_reported = true;
        if (qmp->cbs.on_ready)
            qmp->cbs.on_ready(qmp, &err, qmp->opaque);
    }
    /* closing is set: callbacks cannot queue more commands. */
    qmp_cmd *c;
    while ((c = cmd_pop(qmp))) {
        if (c->cb && !c->internal)
            c->cb(qmp, NULL, &err, c->opaque);
        cmd_free(c);
    }
    if (qmp->cbs.on_closed)
        qmp->cbs.on_closed(qmp, qmp->opaque);

    kh_qmp_parser_free(qmp->parser);
    free(qmp);
}

static void qmp_shutdown(kh_qmp *qmp, const kh_err *why)
{
    if (qmp->closing)
        return;
    qmp->closing = true;
    kh_err_copy(&qmp->close_err, why);
    if (why && kh_err_isset(why) && qmp->started)
        kh_log(KH_LOG_DEBUG, "qmp.closed", "reason=\"%s\"", why->msg);
    uv_read_stop((uv_stream_t *)&qmp->pipe);
    /* Pending writes and the connect request are cancelled (their callbacks
     * run with UV_ECANCELED) before on_pipe_closed. */
    uv_close((uv_handle_t *)&qmp->pipe, on_pipe_closed);
}

void kh_qmp_close(kh_qmp *qmp)
{
    if (!qmp)
        return;
    qmp_shutdown(qmp, NULL);
}

unsigned long kh_qmp_last_rtt_us(const kh_qmp *qmp)
{
    return qmp ? qmp->rtt_us : 0;
}

static void on_write(uv_write_t *req, int status)
{
    qmp_write *w = (qmp_write *)req;
    kh_qmp *qmp = w->qmp;
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        qmp_shutdown_msg(qmp, "write", status);
}

/* Write (the start of) c's text with c->fd attached; the bytes written or
 * -1 with errno set. */
static ssize_t qmp_send_fd(kh_qmp *qmp, const qmp_cmd *c)
{
    uv_os_fd_t sock;
    if (uv_fileno((const uv_handle_t *)&qmp->pipe, &sock) != 0) {
        errno = EBADF;
        return -1;
    }
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof(cbuf));
    struct iovec iov = { .iov_base = c->text, .iov_len = c->text_len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                          .msg_controllen = sizeof(cbuf) };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &c->fd, sizeof(int));
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n >= 0 || errno != EINTR)
            return n;
    }
}

/* Send the head of the queue if nothing is in flight and the handshake is
 * far enough along. */
static void qmp_pump(kh_qmp *qmp)
{
    if (qmp->closing || qmp->inflight || !qmp->head)
        return;
    if (qmp->state != QMP_CAPS && qmp->state != QMP_READY)
        return;
    qmp_cmd *c = qmp->head;
    size_t off = 0;
    qmp->inflight = c;
    c->sent_ns = uv_hrtime();
    if (c->fd >= 0) {
        /* The fd rides on the command's own bytes. Nothing else is queued
         * on the stream: one command is in flight at a time and the
         * previous one was answered, so its bytes were all written. */
        ssize_t n = qmp_send_fd(qmp, c);
        if (n < 0) {
            qmp_shutdown_msg(qmp, "sendmsg", uv_translate_sys_error(errno));
            return;
        }
        close(c->fd);
        c->fd = -1;
        off = (size_t)n;
        if (off == c->text_len)
            return;
    }
    qmp_write *w = xmalloc(sizeof(*w) + c->text_len - off);
    w->qmp = qmp;
    w->len = c->text_len - off;
    memcpy(w->data, c->text + off, w->len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&qmp->pipe, &buf, 1, on_write);
    if (rc < 0) {
        free(w);
        qmp_shutdown_msg(qmp, "write", rc);
    }
}

/* Serialize a command (args stolen, may be NULL). NULL with err set when the
 * name is not valid UTF-8 or the object cannot be printed. */
static qmp_cmd *cmd_build(kh_qmp *qmp, const char *command, json_t *args, kh_err *err)
{
    json_t *name = json_string(command);
    if (!name) {
        json_decref(args);
        kh_err_set(err, KH_E_INVALID, "QMP command name is not valid UTF-8");
        return NULL;
    }
    json_int_t id = qmp->next_id++;
    json_t *obj = json_object();
    json_object_set_new(obj, "execute", name);
    if (args)
        json_object_set_new(obj, "arguments", args);
    json_object_set_new(obj, "id", json_integer(id));
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) {
        kh_err_set(err, KH_E_INTERNAL, "QMP command %s cannot be serialized", command);
        return NULL;
    }
    size_t n = strlen(s);
    qmp_cmd *c = xcalloc(1, sizeof(*c));
    c->fd = -1;
    c->id = id;
    c->text_len = n + 2;
    c->text = xmalloc(n + 3);
    memcpy(c->text, s, n);
    memcpy(c->text + n, "\r\n", 3);
    free(s);
    return c;
}

int kh_qmp_command(kh_qmp *qmp, const char *command, json_t *args, kh_qmp_reply_cb cb,
                   void *opaque, kh_err *err)
{
    return kh_qmp_command_fd(qmp, command, args, -1, cb, opaque, err);
}

int kh_qmp_command_fd(kh_qmp *qmp, const char *command, json_t *args, int fd,
                      kh_qmp_reply_cb cb, void *opaque, kh_err *err)
{
    if (qmp->closing) {
        if (fd >= 0)
            close(fd);
        json_decref(args);
        kh_err_set(err, KH_E_QEMU, "QMP connection closed");
        return -1;
    }
    if (!command || !*command || (args && !json_is_object(args))) {
        json_decref(args);
        if (fd >= 0)
            close(fd);
        kh_err_set(err, KH_E_INVALID, "QMP command needs a name and object arguments");
        return -1;
    }
    qmp_cmd *c = cmd_build(qmp, command, args, err);
    if (!c) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    c->fd = fd;
    c->cb = cb;
    c->opaque = opaque;
    if (qmp->tail)
        qmp->tail->next = c;
    else
        qmp->head = c;
    qmp->tail = c;
    qmp_pump(qmp);
    return 0;
}

/* ---- incoming messages ---- */

static void handle_greeting(kh_qmp *qmp, json_t *msg)
{
    if (!json_is_object(json_object_get(msg, "QMP"))) {
        qmp_shutdown_msg(qmp, "protocol error: expected the QMP greeting", 0);
        return;
    }
    kh_err err = KH_ERR_INIT;
    qmp_cmd *c = cmd_build(qmp, "qmp_capabilities", NULL, &err);
    if (!c) {
        qmp_shutdown(qmp, &err);
        return;
    }
    c->internal = true;
    /* Before anything the user queued while we waited for the greeting. */
    c->next = qmp->head;
    qmp->head = c;
    if (!qmp->tail)
        qmp->tail = c;
    qmp->state = QMP_CAPS;
    qmp_pump(qmp);
}

static void handle_event(kh_qmp *qmp, json_t *msg)
{
    const char *name = json_string_value(json_object_get(msg, "event"));
    if (!name || !qmp->cbs.on_event)
        return;
    json_t *ts = json_object_get(msg, "timestamp");
    double t = json_number_value(json_object_get(ts, "seconds")) +
               json_number_value(json_object_get(ts, "microseconds")) / 1e6;
    qmp->cbs.on_event(qmp, name, json_object_get(msg, "data"), t, qmp->opaque);
}

static void handle_reply(kh_qmp *qmp, json_t *msg)
{
    qmp_cmd *c = qmp->inflight;
    json_t *id = json_object_get(msg, "id");
    /* QEMU echoes our id; a reply without one (a parse error on its side)
     * still belongs to the only command in flight. */
    /* A reply with a uint64 over INT64_MAX (balloon statistics) is decoded
     * with every number as a real, our id included. */
    bool id_ok = !id || (json_is_integer(id) && json_integer_value(id) == c->id) ||
                 (c && json_is_real(id) && json_real_value(id) == (double)c->id);
    if (c && !id_ok && c->internal && id) {
        /* Before our qmp_capabilities is answered, a reply with another id
         * is a previous client's: a daemon killed mid-command, whose
         * answer QEMU writes to whoever connects next. QEMU answers in
         * order, so ours still comes. */
        kh_log(KH_LOG_INFO, "qmp.stale_reply", "note=\"a reply meant for the previous "
               "connection, dropped\"");
        return;
    }
    if (!c || !id_ok) {
        qmp_shutdown_msg(qmp, "protocol error: reply to a command not in flight", 0);
        return;
    }
    /* One command in flight at a time, always the queue's head. */
    qmp_cmd *popped = cmd_pop(qmp);
    assert(popped == c);
    (void)popped;
    qmp->rtt_us = (unsigned long)((uv_hrtime() - c->sent_ns) / 1000);

    kh_err err = KH_ERR_INIT;
    json_t *ret = json_object_get(msg, "return");
    if (!ret) {
        json_t *e = json_object_get(msg, "error");
        const char *desc = json_string_value(json_object_get(e, "desc"));
        const char *cls = json_string_value(json_object_get(e, "class"));
        if (desc)
            kh_err_set(&err, KH_E_QEMU, "%s", desc);
        else
            kh_err_set(&err, KH_E_QEMU, "QEMU error %s", cls ? cls : "(no class)");
    }

    if (c->internal) {
        if (kh_err_isset(&err)) {
            kh_err_prefix(&err, "QMP connection closed: qmp_capabilities");
            qmp_shutdown(qmp, &err);
        } else {
            qmp->state = QMP_READY;
            qmp->ready_reported = true;
            if (qmp->cbs.on_ready)
                qmp->cbs.on_ready(qmp, NULL, qmp->opaque);
        }
    } else if (c->cb) {
        c->cb(qmp, kh_err_isset(&err) ? NULL : ret, kh_err_isset(&err) ? &err : NULL, c->opaque);
    }
    cmd_free(c);
    qmp_pump(qmp);
}

static void handle_message(kh_qmp *qmp, json_t *msg)
{
    if (qmp->state == QMP_GREETING) {
        handle_greeting(qmp, msg);
        return;
    }
    if (json_object_get(msg, "event"))
        handle_event(qmp, msg);
    else if (json_object_get(msg, "return") || json_object_get(msg, "error"))
        handle_reply(qmp, msg);
    /* Anything else (a second greeting, future message kinds) is ignored. */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    kh_qmp *qmp = h->data;
    (void)suggested;
    *buf = uv_buf_init(qmp->rbuf, sizeof(qmp->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    kh_qmp *qmp = s->data;
    (void)buf;
    if (qmp->closing || nread == 0)
        return;
    if (nread == UV_EOF) {
        qmp_shutdown(qmp, NULL); /* the plain "QMP connection closed" */
        return;
    }
    if (nread < 0) {
        qmp_shutdown_msg(qmp, "read", (int)nread);
        return;
    }
    kh_err perr = KH_ERR_INIT;
    int rc = kh_qmp_parser_feed(qmp->parser, qmp->rbuf, (size_t)nread, &perr);
    /* A callback may close the qmp: that only sets closing, the memory stays
     * until on_pipe_closed runs from the loop, so checking it here is safe.
     * Messages left in the parser are freed with it. */
    json_t *msg;
    while (!qmp->closing && (msg = kh_qmp_parser_next(qmp->parser))) {
        handle_message(qmp, msg);
        json_decref(msg);
    }
    if (rc < 0 && !qmp->closing) {
        kh_err_prefix(&perr, "QMP connection closed: protocol error");
        qmp_shutdown(qmp, &perr);
    }
}

static int qmp_start_reading(kh_qmp *qmp, kh_err *err)
{
    int rc = uv_read_start((uv_stream_t *)&qmp->pipe, on_alloc, on_read);
    if (rc < 0) {
        kh_err_set(err, KH_E_INTERNAL, "QMP: cannot read the monitor socket: %s",
                   uv_strerror(rc));
        return -1;
    }
    return 0;
}

int kh_qmp_attach_fd(kh_qmp *qmp, int fd, kh_err *err)
{
    if (qmp->closing || qmp->state != QMP_NEW) {
        close(fd);
        kh_err_set(err, KH_E_INTERNAL, "QMP: connection already attached or closed");
        return -1;
    }
    int rc = uv_pipe_open(&qmp->pipe, fd);
    if (rc < 0) {
        close(fd);
        kh_err_set(err, KH_E_INTERNAL, "QMP: cannot use fd %d: %s", fd, uv_strerror(rc));
        return -1;
    }
    /* From here the pipe owns fd; uv_close closes it. */
    if (qmp_start_reading(qmp, err) < 0)
        return -1;
    qmp->state = QMP_GREETING;
    qmp->started = true;
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    kh_qmp *qmp = req->handle->data;
    if (qmp->closing)
        return;
    if (status < 0) {
        qmp_shutdown_msg(qmp, "connect", status);
        return;
    }
    kh_err err = KH_ERR_INIT;
    if (qmp_start_reading(qmp, &err) < 0) {
        qmp_shutdown(qmp, &err);
        return;
    }
    qmp->state = QMP_GREETING;
}

int kh_qmp_connect_path(kh_qmp *qmp, const char *path, kh_err *err)
{
    if (qmp->closing || qmp->state != QMP_NEW) {
        kh_err_set(err, KH_E_INTERNAL, "QMP: connection already attached or closed");
        return -1;
    }
    struct sockaddr_un sun;
    if (!path || !*path || strlen(path) >= sizeof(sun.sun_path)) {
        kh_err_set(err, KH_E_INVALID, "QMP socket path is empty or too long");
        return -1;
    }
    qmp->state = QMP_CONNECTING;
    qmp->started = true;
    uv_pipe_connect(&qmp->connect_req, &qmp->pipe, path, on_connect);
    return 0;
}
