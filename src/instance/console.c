/* console.c - owns a running VM's serial console (console.h): the chardev
 * connection, the bounded log, the viewers, and the note of what a daemon
 * restart did not capture. */
#include "instance/console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#define INPUT_MAX (64 * 1024)

struct kh_console_viewer {
    kh_console_viewer_cbs cbs;
    void *opaque;
    bool dead;
    kh_console_viewer *next;
};

struct kh_console {
    uv_loop_t *loop;
    uv_pipe_t *pipe;      /* NULL when not attached; freed in its close cb */
    char *log_path;
    int log_fd;
    size_t log_size;
    size_t log_max;
    size_t input_pending;
    kh_console_viewer *viewers;
    int delivering;
};

static void log_open(kh_console *con)
{
    con->log_fd = open(con->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
                       0600);
    struct stat st;
    con->log_size = (con->log_fd >= 0 && fstat(con->log_fd, &st) == 0) ? (size_t)st.st_size : 0;
    if (con->log_fd < 0)
        kh_log(KH_LOG_WARN, "console.log", "path=%s error=\"%s\"", con->log_path,
               strerror(errno));
}

/* Keep the newer half when the log is over its bound. */
static void log_rotate(kh_console *con)
{
    size_t keep = con->log_max / 2;
    kh_err err = KH_ERR_INIT;
    size_t len = 0;
    char *tail = kh_console_log_read(con->log_path, keep, &len, &err);
    if (!tail)
        return;
    if (kh_fs_write_atomic(con->log_path, tail, len, 0600, &err) == 0) {
        close(con->log_fd);
        log_open(con);
    }
    free(tail);
}

static void log_append(kh_console *con, const char *data, size_t len)
{
    if (con->log_fd < 0)
        return;
    ssize_t n = write(con->log_fd, data, len);
    if (n > 0)
        con->log_size += (size_t)n;
    if (con->log_size > con->log_max)
        log_rotate(con);
}

kh_console *kh_console_new(uv_loop_t *loop, const char *log_path, size_t log_max)
{
    kh_console *con = xcalloc(1, sizeof(*con));
    con->loop = loop;
    con->log_path = xstrdup(log_path);
    con->log_max = log_max ? log_max : 1024 * 1024;
    log_open(con);
    return con;
}

static void sweep(kh_console *con)
{
    if (con->delivering)
        return;
    for (kh_console_viewer **pp = &con->viewers; *pp;) {
        if ((*pp)->dead) {
            kh_console_viewer *d = *pp;
            *pp = d->next;
            free(d);
        } else {
            pp = &(*pp)->next;
        }
    }
}

static void pipe_closed(uv_handle_t *h)
{
    free(h);
}

static void detach(kh_console *con)
{
    if (!con->pipe)
        return;
    con->pipe->data = NULL;
    uv_close((uv_handle_t *)con->pipe, pipe_closed);
    con->pipe = NULL;
}

void kh_console_free(kh_console *con)
{
    if (!con)
        return;
    detach(con);
    con->delivering++;
    for (kh_console_viewer *v = con->viewers; v; v = v->next) {
        if (!v->dead && v->cbs.on_closed) {
            v->dead = true;
            v->cbs.on_closed(v->opaque);
        }
        v->dead = true;
    }
    con->delivering--;
    sweep(con);
    if (con->log_fd >= 0)
        close(con->log_fd);
    free(con->log_path);
    free(con);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char chunk[16384]; /* one loop thread: reused for every read */
    buf->base = chunk;
    buf->len = sizeof(chunk);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    kh_console *con = s->data;
    if (!con)
        return;
    if (n < 0) {
        /* QEMU closed the chardev (it is exiting): stop reading. */
        detach(con);
        return;
    }
    if (n == 0)
        return;
    log_append(con, buf->base, (size_t)n);
    con->delivering++;
    for (kh_console_viewer *v = con->viewers; v; v = v->next)
        if (!v->dead)
            v->cbs.on_output(buf->base, (size_t)n, v->opaque);
    con->delivering--;
    sweep(con);
}

int kh_console_attach_fd(kh_console *con, int fd, kh_err *err)
{
    detach(con);
    uv_pipe_t *p = xcalloc(1, sizeof(*p));
    uv_pipe_init(con->loop, p, 0);
    int rc = uv_pipe_open(p, fd);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)p, alloc_cb, read_cb);
    if (rc < 0) {
        kh_err_set(err, KH_E_INTERNAL, "console: %s", uv_strerror(rc));
        uv_close((uv_handle_t *)p, pipe_closed);
        return -1;
    }
    p->data = con;
    con->pipe = p;
    return 0;
}

void kh_console_note(kh_console *con, const char *text)
{
    log_append(con, text, strlen(text));
}

void kh_console_gap_text(char *buf, size_t size, time_t from, time_t to)
{
    struct tm a, b;
    gmtime_r(&from, &a);
    gmtime_r(&to, &b);
    /* Times of day, and the date too when the gap spans days. */
    const char *fmt = a.tm_yday == b.tm_yday && a.tm_year == b.tm_year ? "%H:%M:%S"
                                                                        : "%Y-%m-%d %H:%M:%S";
    char f[32], t[32];
    strftime(f, sizeof(f), fmt, &a);
    strftime(t, sizeof(t), fmt, &b);
    snprintf(buf, size,
             "\r\n[kvmhost: console output from %s to %s UTC was not captured: the daemon was "
             "not running]\r\n", f, t);
}

void kh_console_note_gap(kh_console *con, time_t now)
{
    struct stat st;
    if (stat(con->log_path, &st) < 0)
        return; /* nothing captured before either: no log yet */
    char line[192];
    kh_console_gap_text(line, sizeof(line), st.st_mtime, now);
    log_append(con, line, strlen(line));
}

typedef struct write_req {
    uv_write_t req;
    kh_console *con; /* NULL once the console is gone */
    size_t len;
    char data[];
} write_req;

static void write_done(uv_write_t *req, int status)
{
    (void)status;
    write_req *w = (write_req *)req;
    uv_pipe_t *p = (uv_pipe_t *)req->handle;
    kh_console *con = p->data;
    if (con && con->input_pending >= w->len)
        con->input_pending -= w->len;
    free(w);
}

int kh_console_write(kh_console *con, const void *data, size_t len)
{
    if (!con->pipe || con->input_pending + len > INPUT_MAX)
        return -1;
    write_req *w = xmalloc(sizeof(*w) + len);
    w->con = con;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)con->pipe, &buf, 1, write_done) < 0) {
        free(w);
        return -1;
    }
    con->input_pending += len;
    return 0;
}

kh_console_viewer *kh_console_add_viewer(kh_console *con, const kh_console_viewer_cbs *cbs,
                                         void *opaque)
{
    kh_console_viewer *v = xcalloc(1, sizeof(*v));
    v->cbs = *cbs;
    v->opaque = opaque;
    v->next = con->viewers;
    con->viewers = v;
    return v;
}

void kh_console_remove_viewer(kh_console *con, kh_console_viewer *v)
{
    if (!v)
        return;
    v->dead = true;
    sweep(con);
}

unsigned kh_console_viewer_count(const kh_console *con)
{
    unsigned n = 0;
    for (const kh_console_viewer *v = con->viewers; v; v = v->next)
        n += !v->dead;
    return n;
}

char *kh_console_log_read(const char *log_path, size_t tail, size_t *len, kh_err *err)
{
    int fd = open(log_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) {
            *len = 0;
            return xstrdup("");
        }
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot open console log");
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot stat console log");
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size, off = 0;
    if (tail && size > tail)
        off = size - tail;
    size_t want = size - off;
    char *buf = xmalloc(want + 1);
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}
