/* qimg.c - owns running qemu-img (or any short helper) asynchronously
 * on the loop, with its output and progress, and the bounded line of jobs
 * waiting for a free slot (storage/qimg.h). */
#include "storage/qimg.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/spawn.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/strv.h"

#define OUT_MAX (4u * 1024 * 1024)
#define ERR_MAX (64u * 1024)

typedef struct job job;

typedef struct stream {
    uv_pipe_t pipe;
    char *buf;
    size_t len, cap, max;
    size_t line_start;
    bool open;
    job *j;
} stream;

struct job {
    kh_qimg *q;
    pid_t pid;
    bool exited, timed_out, cancelled;
    int status;
    stream out, err;
    uv_timer_t timer;
    int closing;
    kh_qimg_line_cb on_line;
    kh_qimg_done_cb done;
    void *opaque;
    job *next;
};

/* A job waiting for a free slot: what kh_qimg_run_fds was given, copied
 * (the fds dup'ed: the caller may close its own at once). */
typedef struct waiting {
    kh_strv *argv;
    int fds[KH_QIMG_FDS_MAX];
    size_t nfds;
    unsigned timeout_ms;
    kh_qimg_line_cb on_line;
    kh_qimg_done_cb done;
    void *opaque;
    struct waiting *next;
} waiting;

struct kh_qimg {
    uv_loop_t *loop;
    char *binary;
    job *jobs;
    unsigned running;
    unsigned max_running, max_waiting;
    waiting *wait_head, **wait_tail;
    unsigned nwaiting;
    unsigned in_done; /* inside a done callback: a job's next step */
    uv_idle_t *kick;  /* starts waiting jobs from the loop, not from job_finish */
    bool shutting_down; /* kh_qimg_shutdown: no new job starts */
};

kh_qimg *kh_qimg_new(uv_loop_t *loop, const char *binary)
{
    kh_qimg *q = xcalloc(1, sizeof(*q));
    q->loop = loop;
    q->binary = xstrdup(binary);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    q->max_running = ncpu > 0 ? (unsigned)ncpu : 1;
    q->max_waiting = 16 * q->max_running;
    q->wait_tail = &q->wait_head;
    return q;
}

void kh_qimg_set_limits(kh_qimg *q, unsigned max_running, unsigned max_waiting)
{
    q->max_running = max_running ? max_running : 1;
    q->max_waiting = max_waiting;
}

const char *kh_qimg_binary(const kh_qimg *q)
{
    return q->binary;
}

unsigned kh_qimg_running(const kh_qimg *q)
{
    return q->running;
}

unsigned kh_qimg_waiting(const kh_qimg *q)
{
    return q->nwaiting;
}

static void waiting_free(waiting *w)
{
    kh_strv_free(w->argv);
    for (size_t k = 0; k < w->nfds; k++)
        close(w->fds[k]);
    free(w);
}

static pid_t run_now(kh_qimg *q, char *const *argv, const int *fds, size_t nfds,
                     unsigned timeout_ms, kh_qimg_line_cb on_line, kh_qimg_done_cb done,
                     void *opaque, kh_err *err);

/* Start waiting jobs while slots are free. One that cannot start ends as
 * a failed job (its callback runs with the reason), as it would have had
 * it started at once. */
static void kick_run(uv_idle_t *h)
{
    kh_qimg *q = h->data;
    uv_idle_stop(h);
    while (q->wait_head && q->running < q->max_running) {
        waiting *w = q->wait_head;
        q->wait_head = w->next;
        if (!q->wait_head)
            q->wait_tail = &q->wait_head;
        q->nwaiting--;
        kh_err err = KH_ERR_INIT;
        if (run_now(q, w->argv->v, w->fds, w->nfds, w->timeout_ms, w->on_line, w->done,
                    w->opaque, &err) < 0) {
            kh_qimg_result res = { .status = -1, .out = "", .errtext = err.msg };
            q->in_done++;
            w->done(&res, w->opaque);
            q->in_done--;
        }
        waiting_free(w);
    }
}

static void kick_closed(uv_handle_t *h)
{
    free(h);
}

static void kick(kh_qimg *q)
{
    if (!q->wait_head)
        return;
    if (!q->kick) {
        q->kick = xcalloc(1, sizeof(*q->kick));
        uv_idle_init(q->loop, q->kick);
        q->kick->data = q;
    }
    uv_idle_start(q->kick, kick_run);
}

static void unlink_job(job *j)
{
    for (job **p = &j->q->jobs; *p; p = &(*p)->next) {
        if (*p == j) {
            *p = j->next;
            return;
        }
    }
}

static void handle_closed(uv_handle_t *h)
{
    job *j = h->data;
    if (--j->closing > 0)
        return;
    free(j->out.buf);
    free(j->err.buf);
    free(j);
}

static void job_finish(job *j)
{
    if (!j->exited || j->out.open || j->err.open)
        return;
    kh_qimg *q = j->q;
    unlink_job(j);
    q->running--;
    uv_timer_stop(&j->timer);
    if (!j->cancelled) {
        while (j->err.len && (j->err.buf[j->err.len - 1] == '\n' ||
                              j->err.buf[j->err.len - 1] == '\r'))
            j->err.buf[--j->err.len] = '\0';
        kh_qimg_result res = {
            .status = j->timed_out ? -1 : j->status,
            .timed_out = j->timed_out,
            .out = j->out.buf,
            .outlen = j->out.len,
            .errtext = j->err.buf,
        };
        q->in_done++;
        j->done(&res, j->opaque);
        q->in_done--;
    }
    kick(q);
    j->closing = 3;
    j->out.pipe.data = j->err.pipe.data = j; /* handle_closed takes the job */
    uv_close((uv_handle_t *)&j->timer, handle_closed);
    uv_close((uv_handle_t *)&j->out.pipe, handle_closed);
    uv_close((uv_handle_t *)&j->err.pipe, handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char scratch[65536];
    /* One loop thread: a static buffer is enough; data is copied at once. */
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void emit_lines(stream *s)
{
    job *j = s->j;
    for (size_t i = s->line_start; i < s->len; i++) {
        if (s->buf[i] == '\n' || s->buf[i] == '\r') {
            char save = s->buf[i];
            s->buf[i] = '\0';
            if (i > s->line_start && !j->cancelled)
                j->on_line(s->buf + s->line_start, j->opaque);
            s->buf[i] = save;
            s->line_start = i + 1;
        }
    }
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    stream *s = st->data;
    if (n > 0) {
        size_t take = (size_t)n;
        if (s->len + take > s->max)
            take = s->max - s->len;
        if (take) {
            if (s->len + take + 1 > s->cap) {
                s->cap = s->len + take + 1 > 2 * s->cap ? s->len + take + 1 : 2 * s->cap;
                s->buf = xrealloc(s->buf, s->cap);
            }
            memcpy(s->buf + s->len, buf->base, take);
            s->len += take;
            s->buf[s->len] = '\0';
        }
        if (s == &s->j->out && s->j->on_line)
            emit_lines(s);
        return;
    }
    if (n < 0) {
        uv_read_stop(st);
        s->open = false;
        job_finish(s->j);
    }
}

static void on_timeout(uv_timer_t *t)
{
    job *j = t->data;
    j->timed_out = true;
    kill(j->pid, SIGKILL);
}

bool kh_qimg_child_exited(kh_qimg *q, pid_t pid, int status)
{
    if (!q)
        return false;
    for (job *j = q->jobs; j; j = j->next) {
        if (j->pid == pid && !j->exited) {
            j->exited = true;
            j->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            job_finish(j);
            return true;
        }
    }
    return false;
}

static int stream_open(kh_qimg *q, stream *s, job *j, int fd, size_t max, kh_err *err)
{
    s->j = j;
    s->max = max;
    s->cap = 256;
    s->buf = xcalloc(1, s->cap);
    uv_pipe_init(q->loop, &s->pipe, 0);
    s->pipe.data = s;
    int rc = uv_pipe_open(&s->pipe, fd);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&s->pipe, on_alloc, on_read);
    if (rc < 0) {
        kh_err_set(err, KH_E_INTERNAL, "watching a helper's output: %s", uv_strerror(rc));
        return -1;
    }
    s->open = true;
    return 0;
}

pid_t kh_qimg_run(kh_qimg *q, char *const *argv, unsigned timeout_ms, kh_qimg_line_cb on_line,
                  kh_qimg_done_cb done, void *opaque, kh_err *err)
{
    return kh_qimg_run_fds(q, argv, NULL, 0, timeout_ms, on_line, done, opaque, err);
}

pid_t kh_qimg_run_fd(kh_qimg *q, char *const *argv, int fd3, unsigned timeout_ms,
                     kh_qimg_line_cb on_line, kh_qimg_done_cb done, void *opaque, kh_err *err)
{
    return kh_qimg_run_fds(q, argv, &fd3, fd3 >= 0 ? 1 : 0, timeout_ms, on_line, done, opaque,
                           err);
}

pid_t kh_qimg_run_fds(kh_qimg *q, char *const *argv, const int *fds, size_t nfds,
                      unsigned timeout_ms, kh_qimg_line_cb on_line, kh_qimg_done_cb done,
                      void *opaque, kh_err *err)
{
    if (nfds > KH_QIMG_FDS_MAX) {
        kh_err_set(err, KH_E_INTERNAL, "qemu-img: more than %d inherited fds", KH_QIMG_FDS_MAX);
        return -1;
    }
    if (q->shutting_down) {
        kh_err_set(err, KH_E_UNAVAILABLE, "the daemon is shutting down");
        return -1;
    }
    if (q->running < q->max_running && !q->wait_head)
        return run_now(q, argv, fds, nfds, timeout_ms, on_line, done, opaque, err);
    /* Full: wait in line, unless the line is full too. A job's next step
     * (started from its done callback) always gets in line: refusing it
     * would leave its operation half done. */
    if (q->nwaiting >= q->max_waiting && !q->in_done) {
        kh_err_set(err, KH_E_BUSY, "the host is busy: %u qemu-img jobs running and %u "
                   "waiting (the most); try again later", q->running, q->nwaiting);
        return -1;
    }
    waiting *w = xcalloc(1, sizeof(*w));
    w->argv = kh_strv_new();
    for (size_t k = 0; argv[k]; k++)
        kh_strv_add(w->argv, argv[k]);
    for (size_t k = 0; k < nfds; k++) {
        w->fds[k] = fcntl(fds[k], F_DUPFD_CLOEXEC, 3);
        if (w->fds[k] < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "qemu-img: keeping an fd for later");
            w->nfds = k;
            waiting_free(w);
            return -1;
        }
        w->nfds = k + 1;
    }
    w->timeout_ms = timeout_ms;
    w->on_line = on_line;
    w->done = done;
    w->opaque = opaque;
    *q->wait_tail = w;
    q->wait_tail = &w->next;
    q->nwaiting++;
    kick(q);
    return 0;
}

static pid_t run_now(kh_qimg *q, char *const *argv, const int *fds, size_t nfds,
                     unsigned timeout_ms, kh_qimg_line_cb on_line, kh_qimg_done_cb done,
                     void *opaque, kh_err *err)
{
    static char env_lc[] = "LC_ALL=C", env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
    static char *const envp[] = { env_lc, env_path, NULL };
    int outp[2] = { -1, -1 }, errp[2] = { -1, -1 };
    if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "running %s", argv[0]);
        goto fail;
    }
    /* fds[k] becomes 3 + k. A helper dies with the daemon (it is not
     * adopted by the next one). */
    kh_spawn_fd place[KH_QIMG_FDS_MAX];
    for (size_t k = 0; k < nfds; k++) {
        place[k].fd = fds[k];
        place[k].target = 3 + (int)k;
    }
    kh_spawn_spec spec = { .argv = argv, .envp = envp, .stdin_fd = -1, .stdout_fd = outp[1],
                           .stderr_fd = errp[1], .fds = place, .nfds = nfds,
                           .die_with_parent = true };
    kh_spawn_child child;
    if (kh_spawn(&spec, &child, err) < 0)
        goto fail;
    /* The daemon's reaper (kh_qimg_child_exited) takes the exit status. */
    if (child.pidfd >= 0)
        close(child.pidfd);
    pid_t pid = child.pid;
    close(outp[1]);
    close(errp[1]);
    job *j = xcalloc(1, sizeof(*j));
    j->q = q;
    j->pid = pid;
    j->on_line = on_line;
    j->done = done;
    j->opaque = opaque;
    j->next = q->jobs;
    q->jobs = j;
    q->running++;
    uv_timer_init(q->loop, &j->timer);
    j->timer.data = j;
    j->out.pipe.data = &j->out;
    j->err.pipe.data = &j->err;
    /* The handles exist from here on, so the job ends through job_finish. */
    kh_err serr = KH_ERR_INIT;
    if (stream_open(q, &j->out, j, outp[0], OUT_MAX, &serr) < 0)
        close(outp[0]);
    if (stream_open(q, &j->err, j, errp[0], ERR_MAX, &serr) < 0)
        close(errp[0]);
    uv_timer_start(&j->timer, on_timeout, timeout_ms ? timeout_ms : 60000, 0);
    if (kh_err_isset(&serr))
        kill(pid, SIGKILL); /* it ends as a failed job */
    return pid;

fail:
    for (int i = 0; i < 2; i++) {
        if (outp[i] >= 0)
            close(outp[i]);
        if (errp[i] >= 0)
            close(errp[i]);
    }
    return -1;
}

/* The job's handles close (and free it) when the loop runs next. */
static void job_close(job *j)
{
    j->closing = 3;
    j->out.pipe.data = j->err.pipe.data = j; /* handle_closed takes the job */
    uv_close((uv_handle_t *)&j->timer, handle_closed);
    uv_close((uv_handle_t *)&j->out.pipe, handle_closed);
    uv_close((uv_handle_t *)&j->err.pipe, handle_closed);
}

void kh_qimg_shutdown(kh_qimg *q)
{
    if (!q || q->shutting_down)
        return;
    q->shutting_down = true;
    kh_qimg_result res = { .status = -1, .out = "", .errtext = "the daemon is shutting down" };
    /* waiting jobs never start; their owners hear why */
    while (q->wait_head) {
        waiting *w = q->wait_head;
        q->wait_head = w->next;
        if (!q->wait_head)
            q->wait_tail = &q->wait_head;
        q->nwaiting--;
        q->in_done++;
        w->done(&res, w->opaque);
        q->in_done--;
        waiting_free(w);
    }
    /* running ones are killed and reaped here, then end as failed jobs: the
     * owner's failure path removes what the job was making */
    while (q->jobs) {
        job *j = q->jobs;
        q->jobs = j->next;
        q->running--;
        j->cancelled = true; /* no more output lines */
        if (!j->exited) {
            kill(j->pid, SIGKILL);
            while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
                ;
            j->exited = true;
        }
        uv_timer_stop(&j->timer);
        q->in_done++;
        j->done(&res, j->opaque);
        q->in_done--;
        job_close(j);
    }
}

void kh_qimg_free(kh_qimg *q)
{
    if (!q)
        return;
    /* Daemon shutdown: the jobs are killed and reaped here; their handles
     * close (and free the jobs) when the loop runs its last iteration. */
    for (job *j = q->jobs, *next; j; j = next) {
        next = j->next;
        j->cancelled = true;
        kill(j->pid, SIGKILL);
        waitpid(j->pid, NULL, 0);
        job_close(j);
    }
    for (waiting *w = q->wait_head, *next; w; w = next) {
        next = w->next;
        waiting_free(w); /* never started: their callbacks never run */
    }
    if (q->kick)
        uv_close((uv_handle_t *)q->kick, kick_closed);
    free(q->binary);
    free(q);
}
