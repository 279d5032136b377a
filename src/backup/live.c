/* live.c - owns the QEMU side of a running VM's backup: the point in time
 * (one QMP transaction: a new persistent dirty bitmap per disk, a frozen
 * copy of the base bitmap, and a fleecing job - blockdev-backup sync=none
 * into a temporary qcow2 overlay whose backing is the disk, so the guest's
 * writes after the point in time copy the old data aside and a slow store
 * never stalls the guest; around it the guest's filesystems frozen and
 * thawed when its agent has the channel open), the NBD export of each
 * fleecing view with its frozen bitmap, and their teardown
 * (backup/backup_int.h). */
#include "backup/backup_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "host/spawn.h"
#include "instance/guest.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

#define QIMG_TIMEOUT_MS (60u * 1000)
/* the guest agent's freeze and thaw (a freeze syncs the guest's caches) */
#define FREEZE_TIMEOUT_MS 10000u
#define FROZEN_MARK "backup-frozen"
/* in the VM's run dir from the start of a live backup until its job ends:
 * a daemon killed in between cleans the VM's QEMU up when it reattaches */
#define LIVE_MARK "backup-live"
#define QGA_CHARDEV "qga0"

#define FDSET_BASE 20000

/* ---- a chain of QMP commands, one after another ---- */

typedef struct chain {
    kh_job *j;
    json_t *steps; /* [{"cmd", "args", "fd" (index into fds), "ignore"}] */
    int fds[64];
    size_t nfds;
    size_t next;
    int qemu_fd; /* the fd number of the last add-fd marked "fd_reply" */
    kh_live_done done;
    void (*then)(kh_job *j, const kh_err *err, kh_live_done done); /* instead of done */
} chain;

static void chain_next(chain *c);

/* The daemon is stopping (kh_backup_free ran): no more QMP, no more files
 * in the VM's run dir; what waits on QEMU ends with this error. */
static bool stopping(const kh_job *j, kh_err *err)
{
    if (!j->op.b->closing)
        return false;
    kh_err_set(err, KH_E_UNAVAILABLE, "the daemon is stopping");
    return true;
}

static void chain_end(chain *c, const kh_err *err)
{
    for (size_t i = 0; i < c->nfds; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    kh_job *j = c->j;
    kh_live_done done = c->done;
    void (*then)(kh_job *, const kh_err *, kh_live_done) = c->then;
    json_decref(c->steps);
    free(c);
    if (then)
        then(j, err, done);
    else
        done(j, err);
}

static void chain_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    chain *c = opaque;
    json_t *st = json_array_get(c->steps, c->next - 1);
    if (err && !json_is_true(json_object_get(st, "ignore"))) {
        kh_err e = KH_ERR_INIT;
        kh_err_copy(&e, err);
        kh_err_prefix(&e, "%s", json_string_value(json_object_get(st, "cmd")));
        chain_end(c, &e);
        return;
    }
    if (err)
        kh_log(KH_LOG_DEBUG, "backup.live", "vm=%s %s: %s (ignored)", c->j->vm,
               json_string_value(json_object_get(st, "cmd")), err->msg);
    else if (json_is_true(json_object_get(st, "fd_reply")))
        c->qemu_fd = (int)json_integer_value(json_object_get(ret, "fd"));
    chain_next(c);
}

static void chain_next(chain *c)
{
    kh_job *j = c->j;
    while (c->next < json_array_size(c->steps)) {
        json_t *st = json_array_get(c->steps, c->next++);
        const char *cmd = json_string_value(json_object_get(st, "cmd"));
        json_t *args = json_incref(json_object_get(st, "args"));
        json_t *fdj = json_object_get(st, "fd");
        if (json_is_true(json_object_get(st, "file_from_fd"))) {
            /* a secret object reads the memfd QEMU got from the add-fd before */
            char file[40];
            snprintf(file, sizeof(file), "/proc/self/fd/%d", c->qemu_fd);
            json_object_set_new(args, "file", json_string(file));
        }
        kh_err err = KH_ERR_INIT;
        int rc;
        if (stopping(j, &err)) {
            json_decref(args);
            chain_end(c, &err);
            return;
        }
        if (fdj) {
            size_t k = (size_t)json_integer_value(fdj);
            int fd = c->fds[k];
            c->fds[k] = -1; /* owned by the call from here on */
            rc = kh_manager_qmp_fd(j->op.b->mgr, j->vm_id, cmd, args, fd, chain_reply, c, &err);
        } else {
            rc = kh_manager_qmp(j->op.b->mgr, j->vm_id, cmd, args, chain_reply, c, &err);
        }
        if (rc == 0)
            return;
        if (!json_is_true(json_object_get(st, "ignore"))) {
            kh_err_prefix(&err, "%s", cmd);
            chain_end(c, &err);
            return;
        }
    }
    chain_end(c, NULL);
}

/* Drop a chain that never ran (its fds closed). */
static void chain_end_silent(chain *c)
{
    for (size_t i = 0; i < c->nfds; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    json_decref(c->steps);
    free(c);
}

static chain *chain_new(kh_job *j, kh_live_done done)
{
    chain *c = xcalloc(1, sizeof(*c));
    c->j = j;
    c->qemu_fd = -1;
    c->steps = json_array();
    c->done = done;
    return c;
}

/* args stolen; fd (>= 0) is owned by the chain. */
static void chain_add(chain *c, const char *cmd, json_t *args, int fd, bool ignore)
{
    json_t *st = json_pack("{s:s, s:o, s:b}", "cmd", cmd, "args", args ? args : json_object(),
                           "ignore", ignore);
    if (fd >= 0 && c->nfds < sizeof(c->fds) / sizeof(c->fds[0])) {
        c->fds[c->nfds] = fd;
        json_object_set_new(st, "fd", json_integer((json_int_t)c->nfds++));
    } else if (fd >= 0) {
        close(fd);
    }
    json_array_append_new(c->steps, st);
}

/* ---- names ---- */

static const char *nget(kh_job *j, size_t i, const char *key)
{
    return json_string_value(json_object_get(json_array_get(j->nodes, i), key));
}

static int fdset(kh_job *j, size_t i)
{
    return FDSET_BASE + (int)(j->seq % 500) * 32 + (int)i;
}

/* the fd set of the fleecing overlay's key (disks < KH_VM_DISKS_MAX = 16) */
static int key_fdset(kh_job *j, size_t i)
{
    return fdset(j, i) + 16;
}

/* ---- teardown ---- */

typedef struct jobwait {
    kh_job *j;
    kh_live_done done;
    int tries;
    uv_timer_t *timer;
} jobwait;

static void teardown_rest(kh_job *j, kh_live_done done)
{
    chain *c = chain_new(j, done);
    for (size_t i = 0; i < j->ndisks; i++) {
        json_t *n = json_array_get(j->nodes, i);
        if (json_is_true(json_object_get(n, "added_node")))
            chain_add(c, "blockdev-del", json_pack("{s:s}", "node-name", nget(j, i, "fleece")),
                      -1, true);
        chain_add(c, "remove-fd", json_pack("{s:i}", "fdset-id", fdset(j, i)), -1, true);
        if (j->disks[i].encrypted) { /* when the start failed half-way */
            chain_add(c, "remove-fd", json_pack("{s:i}", "fdset-id", key_fdset(j, i)), -1, true);
            chain_add(c, "object-del", json_pack("{s:s}", "id", nget(j, i, "key")), -1, true);
        }
        if (json_is_true(json_object_get(n, "frozen")))
            chain_add(c, "block-dirty-bitmap-remove",
                      json_pack("{s:s, s:s}", "node", nget(j, i, "node"), "name",
                                nget(j, i, "snap")), -1, true);
    }
    chain_next(c);
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void timer_closed_j(uv_handle_t *h)
{
    free(h);
}

static void jobs_polled(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque);

static void jobwait_tick(uv_timer_t *t)
{
    jobwait *w = t->data;
    kh_err err = KH_ERR_INIT;
    if (stopping(w->j, &err) ||
        kh_manager_qmp(w->j->op.b->mgr, w->j->vm_id, "query-block-jobs", NULL, jobs_polled, w,
                       &err) < 0)
        jobs_polled(NULL, NULL, &err, w);
}

static void jobs_polled(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    jobwait *w = opaque;
    bool ours = false;
    size_t i;
    json_t *jb;
    json_array_foreach(ret, i, jb) {
        const char *dev = json_string_value(json_object_get(jb, "device"));
        for (size_t k = 0; dev && k < w->j->ndisks; k++)
            ours |= strcmp(dev, nget(w->j, k, "job")) == 0;
    }
    if (!err && ours && ++w->tries < 200) {
        uv_timer_start(w->timer, jobwait_tick, 50, 0);
        return;
    }
    kh_job *j = w->j;
    kh_live_done done = w->done;
    uv_close((uv_handle_t *)w->timer, timer_closed);
    free(w);
    teardown_rest(j, done);
}

static void cancelled(kh_job *j, const kh_err *err, kh_live_done done)
{
    (void)err;
    jobwait *w = xcalloc(1, sizeof(*w));
    w->j = j;
    w->done = done;
    w->timer = xcalloc(1, sizeof(*w->timer));
    uv_timer_init(j->op.b->loop, w->timer);
    w->timer->data = w;
    jobwait_tick(w->timer);
}

void kh_live_stop(kh_job *j, kh_live_done done)
{
    chain *c = chain_new(j, done);
    c->then = cancelled;
    for (size_t i = 0; i < j->ndisks; i++)
        chain_add(c, "block-export-del", json_pack("{s:s, s:s}", "id", nget(j, i, "export"),
                                                   "mode", "hard"), -1, true);
    if (j->server)
        chain_add(c, "nbd-server-stop", NULL, -1, true);
    j->server = false;
    for (size_t i = 0; i < j->ndisks; i++)
        chain_add(c, "block-job-cancel", json_pack("{s:s, s:b}", "device", nget(j, i, "job"),
                                                   "force", true), -1, true);
    chain_next(c);
}

void kh_live_bitmap_remove(kh_job *j, size_t d, const char *name, kh_live_done done)
{
    chain *c = chain_new(j, done);
    chain_add(c, "block-dirty-bitmap-remove", json_pack("{s:s, s:s}", "node", nget(j, d, "node"),
                                                        "name", name), -1, false);
    chain_next(c);
}

/* ---- the connections and their keeper ----
 *
 * QEMU 7.2 aborts when an NBD client of an export whose node runs in an
 * iothread (every kvmhost disk has one) disconnects by itself
 * (blockdev-nbd.c: nbd_blockdev_client_closed asserts it runs in the main
 * thread). So kvmhost never lets a connection close first: the exports are
 * deleted (mode hard, from the monitor, in the main thread) before the
 * connections are closed, and a keeper process (sleep, in its own session)
 * holds a copy of every connection, so a daemon killed mid-backup leaves
 * them open. The next backup of the VM (the janitor below) deletes what a
 * killed daemon left in QEMU first, then kills the keeper. */

static char *keeper_file(kh_job *j)
{
    return kh_manager_qemu_file(j->op.b->mgr, j->vm_id, "backup-keeper.pid");
}

/* Kill the keeper named in the VM's run dir (a sleep of ours), if any. */
static void keeper_kill_file(kh_job *j)
{
    char *pf = keeper_file(j);
    if (!pf)
        return;
    kh_err e = KH_ERR_INIT;
    char *text = kh_fs_read(pf, 64, NULL, &e);
    long pid = text ? strtol(text, NULL, 10) : 0;
    free(text);
    if (pid > 1) {
        char comm[64], *cp = xasprintf("/proc/%ld/comm", pid);
        char *c = kh_fs_read(cp, sizeof(comm), NULL, &e);
        free(cp);
        if (c && strncmp(c, "sleep", 5) == 0)
            kill((pid_t)pid, SIGKILL);
        free(c);
    }
    unlink(pf);
    free(pf);
}

int kh_live_connect(kh_job *j, kh_err *err)
{
    kh_spawn_fd fds[KH_SPAWN_FDS_MAX];
    size_t nfds = 0;
    for (size_t i = 0; i < j->ndisks; i++) {
        jdisk *d = &j->disks[i];
        d->nbd = kh_nbd_connect(j->sock, nget(j, i, "export"),
                                d->have_base ? nget(j, i, "snap") : NULL, 5000, err);
        if (!d->nbd)
            return -1;
        if (nfds < KH_SPAWN_FDS_MAX) {
            fds[nfds].fd = kh_nbd_fd(d->nbd);
            fds[nfds].target = 3 + (int)nfds;
            nfds++;
        }
    }
    char *argv[] = { (char *)(uintptr_t)"/bin/sleep", (char *)(uintptr_t)"infinity", NULL };
    kh_spawn_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1,
                           .fds = fds, .nfds = nfds, .new_session = true };
    kh_spawn_child child;
    if (kh_spawn(&spec, &child, err) < 0)
        return -1;
    if (child.pidfd >= 0)
        close(child.pidfd);
    j->keeper = child.pid;
    char *pf = keeper_file(j);
    if (pf) {
        char text[32];
        snprintf(text, sizeof(text), "%d\n", (int)child.pid);
        kh_err e = KH_ERR_INIT;
        kh_fs_write_replace(pf, text, strlen(text), 0600, &e);
        free(pf);
    }
    return 0;
}

void kh_live_release(kh_job *j)
{
    if (j->keeper > 0) {
        kill(j->keeper, SIGKILL);
        j->keeper = 0;
        char *pf = keeper_file(j);
        if (pf)
            unlink(pf);
        free(pf);
    }
    for (size_t i = 0; i < j->ndisks; i++) {
        kh_nbd_close(j->disks[i].nbd);
        j->disks[i].nbd = NULL;
    }
}

/* ---- the janitor: what a killed daemon left in QEMU ---- */

static bool ours(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

typedef struct janitor {
    kh_job *j;
    kh_live_done done;
    int tries;
    uv_timer_t *timer;
} janitor;

static void janitor_nodes(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque);

static void janitor_end(janitor *w, const kh_err *err)
{
    kh_job *j = w->j;
    kh_live_done done = w->done;
    if (w->timer)
        uv_close((uv_handle_t *)w->timer, timer_closed_j);
    free(w);
    done(j, err);
}

static void janitor_done_chain(kh_job *j, const kh_err *err)
{
    (void)err;
    janitor *w = (janitor *)j->live_janitor;
    j->live_janitor = NULL;
    janitor_end(w, NULL);
}

static void janitor_fdsets(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    janitor *w = opaque;
    kh_job *j = w->j;
    chain *c = chain_new(j, janitor_done_chain);
    size_t i;
    json_t *s;
    json_array_foreach(err ? NULL : ret, i, s) {
        json_int_t id = json_integer_value(json_object_get(s, "fdset-id"));
        if (id >= FDSET_BASE && id < FDSET_BASE + 500 * 32)
            chain_add(c, "remove-fd", json_pack("{s:I}", "fdset-id", id), -1, true);
    }
    j->live_janitor = w;
    chain_next(c);
}

static void janitor_nodes_chain(kh_job *j, const kh_err *err)
{
    (void)err;
    janitor *w = (janitor *)j->live_janitor;
    j->live_janitor = NULL;
    kh_err e = KH_ERR_INIT;
    if (stopping(j, &e) ||
        kh_manager_qmp(j->op.b->mgr, j->vm_id, "query-fdsets", NULL, janitor_fdsets, w, &e) < 0)
        janitor_end(w, &e);
}

static void janitor_nodes(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    janitor *w = opaque;
    kh_job *j = w->j;
    if (err) {
        janitor_end(w, err);
        return;
    }
    chain *c = chain_new(j, janitor_nodes_chain);
    size_t i;
    json_t *n;
    json_array_foreach(ret, i, n) {
        const char *name = json_string_value(json_object_get(n, "node-name"));
        if (ours(name, "khf")) {
            chain_add(c, "blockdev-del", json_pack("{s:s}", "node-name", name), -1, true);
            kh_log(KH_LOG_INFO, "backup.janitor", "vm=%s node=%s", j->vm, name);
        }
        size_t k;
        json_t *bm;
        json_array_foreach(json_object_get(n, "dirty-bitmaps"), k, bm) {
            const char *bn = json_string_value(json_object_get(bm, "name"));
            if (ours(bn, "khs"))
                chain_add(c, "block-dirty-bitmap-remove",
                          json_pack("{s:s, s:s}", "node", name, "name", bn), -1, true);
        }
    }
    j->live_janitor = w;
    chain_next(c);
}

static void janitor_tick(uv_timer_t *t);

static void janitor_jobs(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    janitor *w = opaque;
    kh_job *j = w->j;
    if (err) {
        janitor_end(w, err);
        return;
    }
    bool left = false;
    size_t i;
    json_t *jb;
    kh_err e = KH_ERR_INIT;
    if (stopping(j, &e)) {
        janitor_end(w, &e);
        return;
    }
    json_array_foreach(ret, i, jb) {
        const char *dev = json_string_value(json_object_get(jb, "device"));
        if (ours(dev, "khj")) {
            left = true;
            if (w->tries == 0)
                kh_manager_qmp(j->op.b->mgr, j->vm_id, "block-job-cancel",
                               json_pack("{s:s, s:b}", "device", dev, "force", true), NULL,
                               NULL, NULL);
        }
    }
    if (left && ++w->tries < 200) {
        uv_timer_start(w->timer, janitor_tick, 50, 0);
        return;
    }
    if (kh_manager_qmp(j->op.b->mgr, j->vm_id, "query-named-block-nodes",
                       json_pack("{s:b}", "flat", true), janitor_nodes, w, &e) < 0)
        janitor_end(w, &e);
}

static void janitor_tick(uv_timer_t *t)
{
    janitor *w = t->data;
    kh_err e = KH_ERR_INIT;
    if (stopping(w->j, &e) ||
        kh_manager_qmp(w->j->op.b->mgr, w->j->vm_id, "query-block-jobs", NULL, janitor_jobs, w,
                       &e) < 0)
        janitor_end(w, &e);
}

static void janitor_server_chain(kh_job *j, const kh_err *err)
{
    (void)err;
    janitor *w = (janitor *)j->live_janitor;
    j->live_janitor = NULL;
    janitor_tick(w->timer);
}

static void janitor_exports_chain(kh_job *j, const kh_err *err)
{
    (void)err;
    kh_err e = KH_ERR_INIT;
    if (stopping(j, &e)) { /* the keeper stays: the next daemon's janitor */
        janitor *w = (janitor *)j->live_janitor;
        j->live_janitor = NULL;
        janitor_end(w, &e);
        return;
    }
    /* The exports are gone: the connections may close now, and must before
     * nbd-server-stop, which waits until every NBD export has no client
     * left (a client whose replies no one read - the keeper holds the
     * sockets, the killed daemon read them - can hold it there for good). */
    keeper_kill_file(j);
    chain *c = chain_new(j, janitor_server_chain);
    chain_add(c, "nbd-server-stop", NULL, -1, true);
    chain_next(c);
}

static void janitor_exports(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    janitor *w = opaque;
    kh_job *j = w->j;
    if (err) {
        janitor_end(w, err);
        return;
    }
    chain *c = chain_new(j, janitor_exports_chain);
    size_t i;
    json_t *x;
    json_array_foreach(ret, i, x) {
        const char *id = json_string_value(json_object_get(x, "id"));
        if (ours(id, "khe")) {
            chain_add(c, "block-export-del", json_pack("{s:s, s:s}", "id", id, "mode", "hard"),
                      -1, true);
            kh_log(KH_LOG_INFO, "backup.janitor", "vm=%s export=%s", j->vm, id);
        }
    }
    j->live_janitor = w;
    chain_next(c);
}

/* Remove what a killed daemon's backup left in the VM's QEMU: exports
 * (before the keeper goes), fleecing jobs and nodes, frozen bitmaps, fd
 * sets; then done(j, err). */
static void janitor_run(kh_job *j, kh_live_done done)
{
    janitor *w = xcalloc(1, sizeof(*w));
    w->j = j;
    w->done = done;
    w->timer = xcalloc(1, sizeof(*w->timer));
    uv_timer_init(j->op.b->loop, w->timer);
    w->timer->data = w;
    kh_err e = KH_ERR_INIT;
    if (stopping(j, &e) ||
        kh_manager_qmp(j->op.b->mgr, j->vm_id, "query-block-exports", NULL, janitor_exports, w,
                       &e) < 0)
        janitor_end(w, &e);
}

/* ---- start ---- */

typedef struct starter {
    kh_job *j;
    kh_live_done done;
    size_t made;
    kh_err failure;
    int *keyfd; /* per disk: its overlay's ephemeral key (memfd), or -1 */
    int tries;  /* of a LUKS overlay's create */
} starter;

static void starter_free(starter *s)
{
    for (size_t i = 0; s->keyfd && i < s->j->ndisks; i++)
        if (s->keyfd[i] >= 0)
            close(s->keyfd[i]);
    free(s->keyfd);
    free(s);
}

static void start_failed(kh_job *j, const kh_err *err, kh_live_done done);

static void start_failed_end(kh_job *j, const kh_err *err)
{
    (void)err; /* the teardown's own errors are logged and ignored */
    kh_live_done done = j->live_done;
    kh_err cause = j->live_err;
    j->live_done = NULL;
    done(j, &cause);
}

static void start_failed(kh_job *j, const kh_err *err, kh_live_done done)
{
    if (!err) {
        done(j, NULL);
        return;
    }
    /* keep the cause and the caller's callback while everything goes */
    kh_err_copy(&j->live_err, err);
    j->live_done = done;
    kh_live_stop(j, start_failed_end);
}

static void exported(kh_job *j, const kh_err *err, kh_live_done done)
{
    if (!err)
        j->exported = true;
    start_failed(j, err, done);
}

static int listen_socket(kh_job *j, kh_err *err)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (kh_fmt(a.sun_path, sizeof(a.sun_path), "%s", j->sock) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "the state directory's path is too long");
        return -1;
    }
    unlink(j->sock);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 8) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "NBD socket %s", j->sock);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* After the transaction: the NBD server and one export per disk. */
static void transacted(kh_job *j, const kh_err *err, kh_live_done done)
{
    if (err) {
        start_failed(j, err, done);
        return;
    }
    for (size_t i = 0; i < j->ndisks; i++) {
        json_t *n = json_array_get(j->nodes, i);
        j->disks[i].added = j->disks[i].qcow2;
        if (j->disks[i].base_bitmap)
            json_object_set_new(n, "frozen", json_true());
    }
    kh_err e = KH_ERR_INIT;
    int lfd = listen_socket(j, &e);
    if (lfd < 0) {
        start_failed(j, &e, done);
        return;
    }
    char fdname[32];
    snprintf(fdname, sizeof(fdname), "khnbd%s", j->tag);
    chain *c = chain_new(j, done);
    c->then = exported;
    chain_add(c, "getfd", json_pack("{s:s}", "fdname", fdname), lfd, false);
    chain_add(c, "nbd-server-start",
              json_pack("{s:{s:s, s:{s:s}}}", "addr", "type", "fd", "data", "str", fdname), -1,
              false);
    j->server = true;
    for (size_t i = 0; i < j->ndisks; i++) {
        json_t *args = json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "nbd", "id",
                                 nget(j, i, "export"), "node-name", nget(j, i, "fleece"), "name",
                                 nget(j, i, "export"), "writable", false);
        if (j->disks[i].base_bitmap)
            json_object_set_new(args, "bitmaps", json_pack("[s]", nget(j, i, "snap")));
        chain_add(c, "block-export-add", args, -1, false);
    }
    chain_next(c);
}

/* ---- the guest's filesystems around the point in time ----
 * When the agent's channel is open in the guest (query-chardev: the
 * frontend is open), guest-fsfreeze-freeze before the transaction and
 * guest-fsfreeze-thaw after it, whatever its outcome (and after a freeze
 * that failed or timed out too: it may have half happened). A mark file in
 * the VM's run dir says a thaw is owed: a daemon killed in between thaws
 * the guest when it starts again (kh_backup_reattach). */

static void run_transaction(kh_job *j, kh_live_done done);

static void mark_file(kh_backups *b, const char *vm_id, const char *name, bool set);
static bool mark_exists(kh_backups *b, const char *vm_id, const char *name);

static void frozen_mark(kh_job *j, bool set)
{
    mark_file(j->op.b, j->vm_id, FROZEN_MARK, set);
}

static void froze(int count, const kh_err *err, void *opaque)
{
    kh_job *j = opaque;
    j->frozen = !err && count > 0;
    kh_log(err ? KH_LOG_WARN : KH_LOG_INFO, "backup.freeze", "vm=%s frozen=%d error=\"%s\"",
           j->vm, count, err ? err->msg : "");
    kh_live_done done = j->held_done;
    j->held_done = NULL;
    run_transaction(j, done);
}

static void chardevs_listed(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    kh_job *j = opaque;
    kh_live_done done = j->held_done;
    bool open = false;
    size_t i;
    json_t *c;
    json_array_foreach(err ? NULL : ret, i, c) {
        const char *label = json_string_value(json_object_get(c, "label"));
        if (label && strcmp(label, QGA_CHARDEV) == 0)
            open = json_is_true(json_object_get(c, "frontend-open"));
    }
    kh_err e = KH_ERR_INIT;
    if (open) {
        frozen_mark(j, true);
        j->thaw = true;
        if (kh_guest_freeze(j->op.b->mgr, j->vm, FREEZE_TIMEOUT_MS, froze, j, &e) == 0)
            return;
        kh_log(KH_LOG_WARN, "backup.freeze", "vm=%s error=\"%s\"", j->vm, e.msg);
    }
    j->held_done = NULL;
    run_transaction(j, done);
}

static void transacted(kh_job *j, const kh_err *err, kh_live_done done);

static void thawed(int count, const kh_err *err, void *opaque)
{
    kh_job *j = opaque;
    kh_log(err ? KH_LOG_WARN : KH_LOG_INFO, "backup.thaw", "vm=%s thawed=%d error=\"%s\"",
           j->vm, count, err ? err->msg : "");
    if (!err)
        frozen_mark(j, false);
    kh_live_done done = j->held_done;
    j->held_done = NULL;
    kh_err cause = j->held_err;
    transacted(j, j->held_failed ? &cause : NULL, done);
}

/* After the transaction: the thaw first, when a freeze was asked. */
static void transacted_thaw(kh_job *j, const kh_err *err, kh_live_done done)
{
    if (!j->thaw) {
        transacted(j, err, done);
        return;
    }
    j->thaw = false;
    j->held_done = done;
    j->held_failed = err != NULL;
    kh_err_clear(&j->held_err);
    if (err)
        kh_err_copy(&j->held_err, err);
    kh_err e = KH_ERR_INIT;
    if (kh_guest_thaw(j->op.b->mgr, j->vm, thawed, j, &e) < 0)
        thawed(0, &e, j);
}

/* The overlays are in QEMU: one transaction makes the point in time
 * (between a freeze and a thaw when the guest has an agent). */
static void overlays_added(kh_job *j, const kh_err *err, kh_live_done done)
{
    for (size_t i = 0; i < j->ndisks; i++) {
        char *p = xasprintf("%s/fl-%s-%zu.qcow2", j->op.b->tmp_dir, j->tag, i);
        unlink(p); /* QEMU holds it open */
        free(p);
    }
    if (err) {
        start_failed(j, err, done);
        return;
    }
    j->held_done = done;
    kh_err e = KH_ERR_INIT;
    if (kh_manager_qmp(j->op.b->mgr, j->vm_id, "query-chardev", NULL, chardevs_listed, j,
                       &e) < 0) {
        j->held_done = NULL;
        run_transaction(j, done);
    }
}

static void run_transaction(kh_job *j, kh_live_done done)
{
    json_t *actions = json_array();
    for (size_t i = 0; i < j->ndisks; i++) {
        jdisk *d = &j->disks[i];
        const char *node = nget(j, i, "node");
        if (d->qcow2)
            json_array_append_new(actions, json_pack("{s:s, s:{s:s, s:s, s:b}}", "type",
                                                     "block-dirty-bitmap-add", "data", "node",
                                                     node, "name", j->bitmap, "persistent",
                                                     true));
        if (d->base_bitmap) {
            json_array_append_new(actions, json_pack("{s:s, s:{s:s, s:s, s:b, s:b}}", "type",
                                                     "block-dirty-bitmap-add", "data", "node",
                                                     node, "name", nget(j, i, "snap"),
                                                     "persistent", false, "disabled", true));
            json_array_append_new(actions, json_pack("{s:s, s:{s:s, s:s, s:[s]}}", "type",
                                                     "block-dirty-bitmap-merge", "data", "node",
                                                     node, "target", nget(j, i, "snap"),
                                                     "bitmaps", d->base_bitmap));
        }
        json_array_append_new(actions, json_pack("{s:s, s:{s:s, s:s, s:s, s:s}}", "type",
                                                 "blockdev-backup", "data", "job-id",
                                                 nget(j, i, "job"), "device", node, "target",
                                                 nget(j, i, "fleece"), "sync", "none"));
    }
    chain *c = chain_new(j, done);
    c->then = transacted_thaw;
    chain_add(c, "transaction", json_pack("{s:o}", "actions", actions), -1, false);
    chain_next(c);
}

static void create_overlay(starter *s);

static void overlay_made(const kh_qimg_result *r, void *opaque)
{
    starter *s = opaque;
    if (r->status != 0 && s->keyfd[s->made] >= 0 && r->errtext &&
        strstr(r->errtext, "Unable to get accurate CPU usage") && ++s->tries < 30) {
        /* LUKS times its PBKDF on this CPU and, loaded, sometimes cannot
         * measure (as volume creates, storage/volume.c): again, a new key */
        close(s->keyfd[s->made]);
        s->keyfd[s->made] = -1;
        create_overlay(s);
        return;
    }
    if (r->status != 0) {
        kh_err err = KH_ERR_INIT;
        kh_err_set(&err, KH_E_QEMU, "qemu-img create (fleecing overlay): %s",
                   r->errtext && *r->errtext ? r->errtext : "failed");
        kh_job *j = s->j;
        kh_live_done done = s->done;
        starter_free(s);
        start_failed(j, &err, done);
        return;
    }
    s->made++;
    create_overlay(s);
}

static void create_overlay(starter *s)
{
    kh_job *j = s->j;
    kh_err err = KH_ERR_INIT;
    if (s->made == j->ndisks) {
        chain *c = chain_new(j, s->done);
        c->then = overlays_added;
        for (size_t i = 0; i < j->ndisks; i++) {
            char *p = xasprintf("%s/fl-%s-%zu.qcow2", j->op.b->tmp_dir, j->tag, i);
            int fd = open(p, O_RDWR | O_CLOEXEC);
            free(p);
            if (fd < 0) {
                kh_err_errno(&err, KH_E_INTERNAL, errno, "fleecing overlay");
                kh_live_done done = c->done;
                chain_end_silent(c);
                starter_free(s);
                start_failed(j, &err, done);
                return;
            }
            char dev[40];
            snprintf(dev, sizeof(dev), "/dev/fdset/%d", fdset(j, i));
            chain_add(c, "add-fd", json_pack("{s:i, s:s}", "fdset-id", fdset(j, i), "opaque",
                                             nget(j, i, "fleece")), fd, false);
            json_t *node = json_pack("{s:s, s:s, s:{s:s, s:s}, s:s}", "driver", "qcow2",
                                     "node-name", nget(j, i, "fleece"), "file", "driver", "file",
                                     "filename", dev, "backing", nget(j, i, "node"));
            if (s->keyfd[i] >= 0) {
                /* an encrypted disk's overlay is LUKS too, with its own key:
                 * the memfd goes to QEMU (add-fd), a secret object reads it,
                 * the overlay opens with it; then fd and object go (the key
                 * lives on only in the open image) */
                const char *key = nget(j, i, "key");
                chain_add(c, "add-fd", json_pack("{s:i, s:s}", "fdset-id", key_fdset(j, i),
                                                 "opaque", key), s->keyfd[i], false);
                s->keyfd[i] = -1;
                json_object_set_new(json_array_get(c->steps, json_array_size(c->steps) - 1),
                                    "fd_reply", json_true());
                chain_add(c, "object-del", json_pack("{s:s}", "id", key), -1, true);
                chain_add(c, "object-add", json_pack("{s:s, s:s, s:s}", "qom-type", "secret",
                                                     "id", key, "format", "raw"), -1, false);
                json_object_set_new(json_array_get(c->steps, json_array_size(c->steps) - 1),
                                    "file_from_fd", json_true());
                chain_add(c, "remove-fd", json_pack("{s:i}", "fdset-id", key_fdset(j, i)), -1,
                          true);
                json_object_set_new(node, "encrypt", json_pack("{s:s, s:s}", "format", "luks",
                                                              "key-secret", key));
            }
            chain_add(c, "blockdev-add", node, -1, false);
            if (j->disks[i].encrypted)
                chain_add(c, "object-del", json_pack("{s:s}", "id", nget(j, i, "key")), -1,
                          true);
            json_object_set_new(json_array_get(j->nodes, i), "added_node", json_true());
        }
        starter_free(s);
        chain_next(c);
        return;
    }
    char *p = xasprintf("%s/fl-%s-%zu.qcow2", j->op.b->tmp_dir, j->tag, s->made);
    char size[32];
    snprintf(size, sizeof(size), "%llu", (unsigned long long)j->disks[s->made].size);
    const char *qimg = kh_qimg_binary(kh_storage_qimg(j->op.b->st));
    pid_t pid = -1;
    if (j->disks[s->made].encrypted) {
        /* a LUKS overlay: the old data it receives is encrypted on disk */
        int kfd = s->keyfd[s->made] = kh_key_ephemeral_fd(&err);
        char *argv[] = { (char *)(uintptr_t)qimg, (char *)(uintptr_t)"create",
                         (char *)(uintptr_t)"-q", (char *)(uintptr_t)"-f",
                         (char *)(uintptr_t)"qcow2", (char *)(uintptr_t)"--object",
                         (char *)(uintptr_t)"secret,id=sec0,file=/proc/self/fd/3,format=raw",
                         (char *)(uintptr_t)"-o",
                         (char *)(uintptr_t)"encrypt.format=luks,encrypt.key-secret=sec0,"
                                            "encrypt.iter-time=10",
                         p, size, NULL };
        if (kfd >= 0)
            pid = kh_qimg_run_fd(kh_storage_qimg(j->op.b->st), argv, kfd, QIMG_TIMEOUT_MS, NULL,
                                 overlay_made, s, &err);
    } else {
        char *argv[] = { (char *)(uintptr_t)qimg, (char *)(uintptr_t)"create",
                         (char *)(uintptr_t)"-q", (char *)(uintptr_t)"-f",
                         (char *)(uintptr_t)"qcow2", p, size, NULL };
        pid = kh_qimg_run(kh_storage_qimg(j->op.b->st), argv, QIMG_TIMEOUT_MS, NULL,
                          overlay_made, s, &err);
    }
    free(p);
    if (pid < 0) {
        kh_live_done done = s->done;
        starter_free(s);
        start_failed(j, &err, done);
    }
}

/* query-named-block-nodes: sizes, bitmaps; full or incremental per disk. */
static void nodes_listed(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    starter *s = opaque;
    kh_job *j = s->j;
    if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_copy(&e, err);
        kh_live_done done = s->done;
        starter_free(s);
        done(j, &e);
        return;
    }
    for (size_t i = 0; i < j->ndisks; i++) {
        jdisk *d = &j->disks[i];
        const char *want = NULL;
        json_t *bd = j->base ? json_array_get(json_object_get(j->base, "disks"), i) : NULL;
        size_t k;
        json_t *n;
        json_array_foreach(ret, k, n) {
            const char *nn = json_string_value(json_object_get(n, "node-name"));
            if (!nn || strcmp(nn, nget(j, i, "node")) != 0)
                continue;
            d->size = (uint64_t)json_integer_value(
                json_object_get(json_object_get(n, "image"), "virtual-size"));
            if (bd && strcmp(json_string_value(json_object_get(bd, "volume_id")),
                             d->volume_id) == 0 &&
                (uint64_t)json_integer_value(json_object_get(bd, "size")) == d->size)
                want = json_string_value(json_object_get(bd, "bitmap"));
            size_t m;
            json_t *bm;
            json_array_foreach(json_object_get(n, "dirty-bitmaps"), m, bm) {
                const char *name = json_string_value(json_object_get(bm, "name"));
                if (!name || strncmp(name, KH_BACKUP_BITMAP_PREFIX,
                                     strlen(KH_BACKUP_BITMAP_PREFIX)) != 0)
                    continue;
                bool bad = json_is_true(json_object_get(bm, "inconsistent")) ||
                           !json_is_true(json_object_get(bm, "recording"));
                kh_log(KH_LOG_DEBUG, "backup.bitmap", "vm=%s node=%s bitmap=%s dirty=%lld "
                       "recording=%d", j->vm, nn, name,
                       (long long)json_integer_value(json_object_get(bm, "count")), !bad);
                if (d->qcow2 && want && strcmp(name, want) == 0 && !bad)
                    d->base_bitmap = xstrdup(name);
                else
                    json_array_append_new(d->stale, json_string(name));
            }
        }
        if (want && !d->base_bitmap)
            kh_log(KH_LOG_INFO, "backup.create", "vm=%s disk=%zu bitmap %s is gone or "
                   "inconsistent: a full read", j->vm, d->index, want);
        j->op.total += d->size;
        if (!d->size) {
            kh_err e = KH_ERR_INIT;
            kh_err_set(&e, KH_E_QEMU, "vm %s: QEMU has no node %s", j->vm, nget(j, i, "node"));
            kh_live_done done = s->done;
            starter_free(s);
            done(j, &e);
            return;
        }
    }
    create_overlay(s);
}

static void janitor_then_start(kh_job *j, const kh_err *err)
{
    kh_live_done done = j->live_done;
    j->live_done = NULL;
    if (err) {
        done(j, err);
        return;
    }
    starter *s = xcalloc(1, sizeof(*s));
    s->j = j;
    s->done = done;
    s->keyfd = xcalloc(j->ndisks + 1, sizeof(*s->keyfd));
    for (size_t i = 0; i < j->ndisks; i++)
        s->keyfd[i] = -1;
    kh_err e = KH_ERR_INIT;
    if (kh_manager_qmp(j->op.b->mgr, j->vm_id, "query-named-block-nodes",
                       json_pack("{s:b}", "flat", true), nodes_listed, s, &e) < 0) {
        starter_free(s);
        done(j, &e);
    }
}

static void mark_file(kh_backups *b, const char *vm_id, const char *name, bool set)
{
    char *p = kh_manager_qemu_file(b->mgr, vm_id, name);
    if (!p)
        return;
    if (set) {
        kh_err e = KH_ERR_INIT;
        kh_fs_write_replace(p, "1\n", 2, 0600, &e);
    } else {
        unlink(p);
    }
    free(p);
}

static bool mark_exists(kh_backups *b, const char *vm_id, const char *name)
{
    char *p = kh_manager_qemu_file(b->mgr, vm_id, name);
    bool there = p && access(p, F_OK) == 0;
    free(p);
    return there;
}

void kh_live_unmark(kh_job *j)
{
    mark_file(j->op.b, j->vm_id, LIVE_MARK, false);
}

void kh_live_start(kh_job *j, kh_live_done done)
{
    mark_file(j->op.b, j->vm_id, LIVE_MARK, true);
    j->nodes = json_array();
    for (size_t i = 0; i < j->ndisks; i++) {
        char node[32], name[48];
        snprintf(node, sizeof(node), "disk%d",
                 kh_manager_disk_node(j->op.b->mgr, j->vm_id, j->disks[i].index));
        json_t *n = json_pack("{s:s}", "node", node);
        snprintf(name, sizeof(name), "khf%sd%zu", j->tag, i);
        json_object_set_new(n, "fleece", json_string(name));
        snprintf(name, sizeof(name), "khj%sd%zu", j->tag, i);
        json_object_set_new(n, "job", json_string(name));
        snprintf(name, sizeof(name), "khe%sd%zu", j->tag, i);
        json_object_set_new(n, "export", json_string(name));
        snprintf(name, sizeof(name), "khk%sd%zu", j->tag, i);
        json_object_set_new(n, "key", json_string(name));
        snprintf(name, sizeof(name), "khs%s", j->tag);
        json_object_set_new(n, "snap", json_string(name));
        json_array_append_new(j->nodes, n);
    }
    kh_err err = KH_ERR_INIT;
    if (kh_fmt(j->sock, sizeof(j->sock), "%s/l%s.sock", j->op.b->tmp_dir, j->tag) < 0) {
        kh_err_set(&err, KH_E_INTERNAL, "the state directory's path is too long");
        done(j, &err);
        return;
    }
    j->live_done = done;
    janitor_run(j, janitor_then_start);
}

/* ---- after a daemon restart ----
 * A VM whose QEMU outlived a daemon killed mid-backup: its guest thawed if
 * a thaw was owed, then the janitor removes the export, the fleecing job
 * and node, the frozen bitmap copy and the fd sets. The uncommitted
 * backup's own persistent bitmap stays in the image: no row names it, so
 * the next backup counts it as stale (incremental from the last committed
 * backup, whose bitmap went on recording) and removes it after its commit.
 * It runs as an operation on the VM: a backup asked meanwhile waits (409). */

static void reattach_done(kh_job *j, const kh_err *err)
{
    kh_log(err ? KH_LOG_WARN : KH_LOG_INFO, "backup.reattach", "vm=%s cleaned=%s error=\"%s\"",
           j->vm, err ? "no" : "yes", err ? err->msg : "");
    if (!err)
        kh_live_unmark(j);
    json_t *res = err ? NULL : json_pack("{s:s, s:b}", "vm", j->vm, "thawed", j->frozen);
    free(j->vm);
    free(j->vm_id);
    j->vm = j->vm_id = NULL;
    kh_backup_op_end(&j->op, res, err);
}

static void reattach_thawed(int count, const kh_err *err, void *opaque)
{
    kh_job *j = opaque;
    kh_log(err ? KH_LOG_WARN : KH_LOG_INFO, "backup.thaw", "vm=%s thawed=%d error=\"%s\" "
           "(owed by a daemon killed mid-backup)", j->vm, count, err ? err->msg : "");
    if (!err) {
        frozen_mark(j, false);
        j->frozen = true;
    }
    janitor_run(j, reattach_done);
}

void kh_live_reattach(kh_backups *b, const char *vm_id, const char *vm_name)
{
    bool live = mark_exists(b, vm_id, LIVE_MARK), frozen = mark_exists(b, vm_id, FROZEN_MARK);
    if (!live && !frozen)
        return;
    kh_err err = KH_ERR_INIT;
    kh_bop *op = kh_backup_op_begin(b, sizeof(kh_job), "backup.cleanup", vm_name, vm_id, NULL,
                                    false, &err);
    if (!op) {
        kh_log(KH_LOG_WARN, "backup.reattach", "vm=%s error=\"%s\"", vm_name, err.msg);
        return;
    }
    kh_job *j = (kh_job *)op;
    j->vm = xstrdup(vm_name);
    j->vm_id = xstrdup(vm_id);
    j->live = true;
    kh_task_progress(op->task, 10, "cleaning up after a backup a daemon restart cut short");
    if (frozen && kh_guest_thaw(b->mgr, vm_name, reattach_thawed, j, &err) == 0)
        return;
    if (frozen)
        kh_log(KH_LOG_WARN, "backup.thaw", "vm=%s error=\"%s\"", vm_name, err.msg);
    janitor_run(j, reattach_done);
}
