/* console.c - owns `vm console`: the serial console of a VM over the
 * daemon's WebSocket, the terminal in raw mode, the escape key
 * (cli/console.h). */
#include "cli/console.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "util/fs.h"
#include "util/mem.h"
#include "util/misc.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define HANDSHAKE_MAX 16384
#define HANDSHAKE_TIMEOUT_MS 10000
/* Stop reading stdin while this many frames wait to be sent. */
#define QUEUE_HIGH 64

void cli_ws_accept_for_key(const char *key, char *out, size_t size)
{
    char *cat = xasprintf("%s" WS_GUID, key);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(cat, strlen(cat), md, &mdlen, EVP_sha1(), NULL))
        abort();
    free(cat);
    unsigned char b64[64];
    EVP_EncodeBlock(b64, md, (int)mdlen);
    snprintf(out, size, "%s", (const char *)b64);
}

/* ---- terminal and signals (process-wide by nature) ---- */

static struct termios saved_termios;
static bool termios_saved;
static int signal_pipe[2] = { -1, -1 };

static void restore_terminal(void)
{
    if (termios_saved) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
        termios_saved = false;
    }
}

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (signal_pipe[1] >= 0 && write(signal_pipe[1], &b, 1) < 0) {
        /* nothing to do: the pipe is full, a wake-up is pending anyway */
    }
    errno = saved;
}

static int raw_terminal(kh_err *err)
{
    struct termios t;
    if (tcgetattr(STDIN_FILENO, &t) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "reading the terminal settings");
        return -1;
    }
    saved_termios = t;
    termios_saved = true;
    static bool registered;
    if (!registered) {
        atexit(restore_terminal);
        registered = true;
    }
    cfmakeraw(&t);
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0) {
        termios_saved = false;
        kh_err_errno(err, KH_E_INTERNAL, errno, "setting the terminal to raw mode");
        return -1;
    }
    return 0;
}

/* ---- the HTTP upgrade ---- */

static int write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The value of header `name` in a raw header block, trimmed, into out;
 * false when absent. */
static bool header_value(const char *headers, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    const char *line = strstr(headers, "\r\n");
    while (line) {
        line += 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t n = end ? (size_t)(end - v) : strlen(v);
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            snprintf(out, size, "%.*s", (int)n, v);
            return true;
        }
        line = strstr(line, "\r\n");
    }
    return false;
}

/* Read until the end of the header block (or EOF for an error body). */
static ssize_t read_some(int fd, char *buf, size_t size, uint64_t deadline)
{
    for (;;) {
        uint64_t now = kh_now_ms();
        if (now >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        ssize_t n = recv(fd, buf, size, 0);
        if (n < 0 && errno == EINTR)
            continue;
        return n;
    }
}

typedef struct session {
    int fd;
    bool interactive;
    bool read_only;
    bool stdin_eof;
    bool server_eof;
    bool stdout_closed;
    /* bytes read past the HTTP header: the first WebSocket frames */
    char *pending;
    size_t pending_len, pending_off;
} session;

static int handshake(session *s, cli_client *c, const char *vm, kh_err *err)
{
    char host[300];
    const char *token = NULL;
    s->fd = cli_client_connect(c, host, sizeof(host), &token, err);
    if (s->fd < 0)
        return -1;

    unsigned char raw[16];
    kh_random_bytes(raw, sizeof(raw));
    char key[32];
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw));
    char *name = cli_path_escape(vm);
    char *auth = token ? xasprintf("Authorization: Bearer %s\r\n", token) : xstrdup("");
    char *req = xasprintf("GET /api/v1/vms/%s/console HTTP/1.1\r\n"
                          "Host: %s\r\n"
                          "User-Agent: kvmhost\r\n"
                          "Upgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Key: %s\r\n"
                          "Sec-WebSocket-Version: 13\r\n"
                          "%s\r\n",
                          name, host, key, auth);
    free(name);
    explicit_bzero(auth, strlen(auth));
    free(auth);
    int wrc = write_all(s->fd, req, strlen(req));
    explicit_bzero(req, strlen(req));
    free(req);
    if (wrc < 0) {
        kh_err_errno(err, KH_E_UNAVAILABLE, errno, "sending the console request to kvmhostd");
        return -1;
    }

    uint64_t deadline = kh_now_ms() + HANDSHAKE_TIMEOUT_MS;
    char *buf = xmalloc(HANDSHAKE_MAX + 1);
    size_t len = 0;
    char *end = NULL;
    while (!end) {
        if (len == HANDSHAKE_MAX) {
            kh_err_set(err, KH_E_INTERNAL, "kvmhostd sent an oversized console answer");
            goto fail;
        }
        ssize_t n = read_some(s->fd, buf + len, HANDSHAKE_MAX - len, deadline);
        if (n <= 0) {
            kh_err_set(err, KH_E_UNAVAILABLE, "kvmhostd closed the console connection: %s",
                       n < 0 ? strerror(errno) : "no answer");
            goto fail;
        }
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end - buf) + 4;
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        kh_err_set(err, KH_E_INTERNAL, "kvmhostd sent a malformed console answer");
        goto fail;
    }
    end[2] = '\0'; /* headers end with the last "\r\n" */
    char val[256];
    if (status != 101) {
        /* An API error: read the body (Content-Length or until EOF). */
        size_t want = HANDSHAKE_MAX;
        if (header_value(buf, "Content-Length", val, sizeof(val)))
            want = head_len + (size_t)strtoul(val, NULL, 10);
        if (want > HANDSHAKE_MAX)
            want = HANDSHAKE_MAX;
        while (len < want) {
            ssize_t n = read_some(s->fd, buf + len, want - len, deadline);
            if (n <= 0)
                break;
            len += (size_t)n;
        }
        cli_error_from_answer(status, buf + head_len, len - head_len, err);
        goto fail;
    }
    char expect[64];
    cli_ws_accept_for_key(key, expect, sizeof(expect));
    if (!header_value(buf, "Upgrade", val, sizeof(val)) || strcasecmp(val, "websocket") != 0) {
        kh_err_set(err, KH_E_INTERNAL, "kvmhostd answered 101 without Upgrade: websocket");
        goto fail;
    }
    if (!header_value(buf, "Sec-WebSocket-Accept", val, sizeof(val)) ||
        strcmp(val, expect) != 0) {
        kh_err_set(err, KH_E_INTERNAL, "kvmhostd sent a wrong Sec-WebSocket-Accept");
        goto fail;
    }
    s->pending_len = len - head_len;
    s->pending = xmalloc(s->pending_len + 1);
    memcpy(s->pending, buf + head_len, s->pending_len);
    free(buf);
    return 0;
fail:
    free(buf);
    return -1;
}

/* ---- wslay callbacks ---- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *data, size_t len, int flags,
                       void *ud)
{
    session *s = ud;
    if (s->pending_off < s->pending_len) {
        size_t n = s->pending_len - s->pending_off;
        if (n > len)
            n = len;
        memcpy(data, s->pending + s->pending_off, n);
        s->pending_off += n;
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t n = recv(s->fd, data, len, 0);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        s->server_eof = true;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    session *s = ud;
    for (;;) {
        ssize_t n = send(s->fd, data, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        else
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    kh_random_bytes(buf, (uint32_t)len);
    return 0;
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud)
{
    session *s = ud;
    if (s->stdout_closed)
        return;
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
        return; /* ping/pong/close: wslay answers them itself */
    const uint8_t *p = arg->msg;
    size_t left = arg->msg_length;
    while (left) {
        ssize_t n = write(STDOUT_FILENO, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            s->stdout_closed = true;
            return;
        }
        p += n;
        left -= (size_t)n;
    }
}

/* Queue stdin bytes as one binary frame. */
static void queue_bytes(wslay_event_context_ptr ctx, const char *data, size_t len)
{
    if (!len)
        return;
    struct wslay_event_msg msg = { WSLAY_BINARY_FRAME, (const uint8_t *)data, len };
    wslay_event_queue_msg(ctx, &msg);
}

/* Read stdin once; returns true when the user detached. */
static bool pump_stdin(session *s, wslay_event_context_ptr ctx)
{
    char buf[4096];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return false;
        n = 0;
    }
    if (n == 0) {
        s->stdin_eof = true;
        return s->interactive; /* a tty that hangs up ends the session */
    }
    if (s->interactive) {
        char *esc = memchr(buf, CLI_CONSOLE_ESCAPE, (size_t)n);
        if (esc) {
            queue_bytes(ctx, buf, (size_t)(esc - buf));
            return true;
        }
    }
    queue_bytes(ctx, buf, (size_t)n);
    return false;
}

static void install_signals(struct sigaction *old)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < KH_ARRAY_LEN(sigs); i++)
        sigaction(sigs[i], &sa, &old[i]);
}

static void restore_signals(const struct sigaction *old)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    for (size_t i = 0; i < KH_ARRAY_LEN(sigs); i++)
        sigaction(sigs[i], &old[i], NULL);
}

int cli_console_run(cli_client *c, const cli_console_opts *o, kh_err *err)
{
    session s = { .fd = -1, .read_only = o->read_only };
    s.interactive = !o->read_only && isatty(STDIN_FILENO);
    if (o->read_only)
        s.stdin_eof = true;
    int rc = -1;
    wslay_event_context_ptr ctx = NULL;
    struct sigaction old[4];
    bool signals_set = false;
    bool server_closed = false;

    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "pipe");
        return -1;
    }
    install_signals(old);
    signals_set = true;

    if (handshake(&s, c, o->vm, err) < 0)
        goto out;
    kh_fd_set_nonblock(s.fd, 1);

    struct wslay_event_callbacks cb = {
        .recv_callback = ws_recv,
        .send_callback = ws_send,
        .genmask_callback = ws_genmask,
        .on_msg_recv_callback = ws_on_msg,
    };
    if (wslay_event_context_client_init(&ctx, &cb, &s) != 0)
        abort();

    if (!o->read_only) {
        fprintf(stderr, "Connected to %s (escape character is ^])\n", o->vm);
        fflush(stderr);
    }
    if (s.interactive && raw_terminal(err) < 0)
        goto out;

    uint64_t deadline = o->timeout > 0 ? kh_now_ms() + (uint64_t)(o->timeout * 1000.0) : 0;
    bool ending = false; /* our close frame is queued: drain, then leave */
    uint64_t drain_deadline = 0;
    for (;;) {
        if (s.stdout_closed && !ending) {
            wslay_event_queue_close(ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
            ending = true;
            drain_deadline = kh_now_ms() + 1000;
        }
        if (!wslay_event_want_read(ctx) && !wslay_event_want_write(ctx)) {
            server_closed = !ending; /* close handshake done; who began it? */
            break;
        }
        if (s.server_eof) {
            server_closed = true;
            break;
        }
        struct pollfd p[3];
        int np = 0;
        p[np++] = (struct pollfd){ .fd = signal_pipe[0], .events = POLLIN };
        p[np++] = (struct pollfd){
            .fd = s.fd,
            .events = (short)((wslay_event_want_read(ctx) ? POLLIN : 0) |
                              (wslay_event_want_write(ctx) ? POLLOUT : 0)),
        };
        int stdin_idx = -1;
        if (!s.stdin_eof && !ending && wslay_event_get_queued_msg_count(ctx) < QUEUE_HIGH) {
            stdin_idx = np;
            p[np++] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
        }
        int wait_ms = -1;
        uint64_t now = kh_now_ms();
        uint64_t until = ending ? drain_deadline : deadline;
        if (until) {
            if (now >= until) {
                if (ending)
                    break;
                wslay_event_queue_close(ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
                ending = true;
                drain_deadline = now + 1000;
                continue;
            }
            wait_ms = (int)(until - now);
        }
        int r = poll(p, (nfds_t)np, wait_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            kh_err_errno(err, KH_E_INTERNAL, errno, "poll");
            goto out;
        }
        if (p[0].revents & POLLIN) {
            unsigned char sig;
            while (read(signal_pipe[0], &sig, 1) == 1) {
            }
            if (ending)
                break; /* a second signal: leave without waiting */
            wslay_event_queue_close(ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
            ending = true;
            drain_deadline = kh_now_ms() + 1000;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (wslay_event_recv(ctx) != 0) {
                if (!s.server_eof) {
                    kh_err_set(err, KH_E_UNAVAILABLE, "the console connection broke");
                    goto out;
                }
            }
        }
        if (stdin_idx >= 0 && (p[stdin_idx].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (pump_stdin(&s, ctx) && !ending) {
                wslay_event_queue_close(ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
                ending = true;
                drain_deadline = kh_now_ms() + 1000;
            }
        }
        if (wslay_event_want_write(ctx) && wslay_event_send(ctx) != 0) {
            if (ending)
                break;
            kh_err_set(err, KH_E_UNAVAILABLE, "the console connection broke while sending");
            goto out;
        }
    }
    rc = 0;
out:
    restore_terminal();
    if (rc == 0 && s.interactive) {
        if (server_closed)
            fprintf(stderr, "\nConnection to %s closed by kvmhostd\n", o->vm);
        else
            fputc('\n', stderr);
    }
    if (ctx)
        wslay_event_context_free(ctx);
    if (s.fd >= 0)
        close(s.fd);
    free(s.pending);
    if (signals_set)
        restore_signals(old);
    close(signal_pipe[0]);
    close(signal_pipe[1]);
    signal_pipe[0] = signal_pipe[1] = -1;
    return rc;
}
