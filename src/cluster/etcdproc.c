/* etcdproc.c - the local etcd member a clustered kvmhostd supervises, as
 * net/netmgr.c supervises dnsmasq: started with kh_spawn (data in
 * STATE_DIR/etcd, output in STATE_DIR/etcd.log), watched through its pidfd,
 * restarted when it dies (after 1 s; 5 s when it keeps dying), stopped with
 * SIGTERM at daemon shutdown. It dies with the daemon (death signal): a
 * daemon killed with -9 leaves no etcd holding the ports, and the next
 * daemon starts the member again on its data dir (etcd then ignores the
 * --initial-cluster flags).
 */
#include "cluster/cluster_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/spawn.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define RESTART_MS 1000
#define RESTART_SLOW_MS 5000

struct kh_etcdproc {
    uv_loop_t *loop;
    char *binary, *name, *data_dir, *log_file, *peer_url, *client_url, *initial, *token;
    char *ca, *cert, *key;  /* TLS, peers and clients alike (NULL: plain HTTP) */
    char *crl;              /* the removed hosts' certificates (crl.c; NULL: none) */
    bool existing;
    pid_t pid;
    int pidfd;
    uv_poll_t *poll;
    uv_timer_t *timer;
    uint64_t started_ms;
    unsigned restarts;
};

static void handle_free(uv_handle_t *h)
{
    free(h);
}

static void unwatch(kh_etcdproc *p)
{
    if (p->poll) {
        uv_poll_stop(p->poll);
        uv_close((uv_handle_t *)p->poll, handle_free);
        p->poll = NULL;
    }
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->pidfd = -1;
}

static int start(kh_etcdproc *p, kh_err *err);

static void on_restart(uv_timer_t *t)
{
    kh_etcdproc *p = t->data;
    kh_err err = KH_ERR_INIT;
    if (start(p, &err) < 0) {
        kh_log(KH_LOG_ERROR, "cluster.etcd.start", "error=\"%s\"", err.msg);
        uv_timer_start(p->timer, on_restart, RESTART_SLOW_MS, 0);
    }
}

static void on_exit_poll(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    kh_etcdproc *p = h->data;
    int st = 0;
    waitpid(p->pid, &st, WNOHANG); /* the daemon's SIGCHLD reaper may have been first */
    unwatch(p);
    bool quick = kh_now_ms() - p->started_ms < 10000;
    kh_log(KH_LOG_WARN, "cluster.etcd.exit", "pid=%d note=\"restarting\"", (int)p->pid);
    p->pid = 0;
    p->restarts++;
    p->existing = true; /* the data dir exists now */
    uv_timer_start(p->timer, on_restart, quick ? RESTART_SLOW_MS : RESTART_MS, 0);
}

static int start(kh_etcdproc *p, kh_err *err)
{
    char *args[48];
    size_t n = 0;
#define ARG(s) (args[n++] = (char *)(uintptr_t)(s))
    /* Only the advertised address (not 127.0.0.1): several daemons, each with
     * its own member, may share one loopback. */
    ARG(p->binary);
    ARG("--name"); ARG(p->name);
    ARG("--data-dir"); ARG(p->data_dir);
    ARG("--listen-peer-urls"); ARG(p->peer_url);
    ARG("--initial-advertise-peer-urls"); ARG(p->peer_url);
    ARG("--listen-client-urls"); ARG(p->client_url);
    ARG("--advertise-client-urls"); ARG(p->client_url);
    ARG("--initial-cluster"); ARG(p->initial);
    ARG("--initial-cluster-state"); ARG(p->existing ? "existing" : "new");
    ARG("--initial-cluster-token"); ARG(p->token);
    /* a member back from a partition does not depose the leader */
    ARG("--pre-vote");
    if (p->ca) {
        /* mutual TLS from the cluster CA on both ports */
        ARG("--cert-file"); ARG(p->cert);
        ARG("--key-file"); ARG(p->key);
        ARG("--trusted-ca-file"); ARG(p->ca);
        ARG("--client-cert-auth");
        if (p->crl) {
            ARG("--client-crl-file"); ARG(p->crl);
        }
        ARG("--peer-cert-file"); ARG(p->cert);
        ARG("--peer-key-file"); ARG(p->key);
        ARG("--peer-trusted-ca-file"); ARG(p->ca);
        ARG("--peer-client-cert-auth");
    }
    args[n] = NULL;
#undef ARG
    int log_fd = open(p->log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    kh_spawn_spec ps = { .argv = args, .stdin_fd = -1, .stdout_fd = log_fd, .stderr_fd = log_fd,
                         .die_with_parent = true, .no_new_privs = true };
    kh_spawn_child child;
    int rc = kh_spawn(&ps, &child, err);
    if (log_fd >= 0)
        close(log_fd);
    if (rc < 0)
        return -1;
    p->pid = child.pid;
    p->pidfd = child.pidfd;
    p->started_ms = kh_now_ms();
    if (p->pidfd >= 0) {
        p->poll = xcalloc(1, sizeof(*p->poll));
        uv_poll_init(p->loop, p->poll, p->pidfd);
        p->poll->data = p;
        uv_poll_start(p->poll, UV_READABLE, on_exit_poll);
    }
    kh_log(KH_LOG_INFO, "cluster.etcd.start", "pid=%d name=%s peer=%s client=%s state=%s "
           "crl=%s", (int)p->pid, p->name, p->peer_url, p->client_url,
           p->existing ? "existing" : "new", p->crl ? p->crl : "none");
    return 0;
}

kh_etcdproc *kh_etcdproc_new(uv_loop_t *loop, const kh_etcdproc_spec *s, kh_err *err)
{
    if (access(s->binary, X_OK) != 0) {
        kh_err_set(err, KH_E_UNAVAILABLE, "etcd is not installed (%s): apt-get install "
                   "etcd-server, or pass --etcd-binary PATH", s->binary);
        return NULL;
    }
    if (kh_fs_mkdir_p(s->data_dir, 0700, err) < 0)
        return NULL;
    kh_etcdproc *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->binary = xstrdup(s->binary);
    p->name = xstrdup(s->name);
    p->data_dir = xstrdup(s->data_dir);
    p->log_file = xstrdup(s->log_file);
    p->peer_url = xstrdup(s->peer_url);
    p->client_url = xstrdup(s->client_url);
    p->initial = xstrdup(s->initial_cluster);
    p->token = xstrdup(s->cluster_token);
    p->existing = s->existing;
    if (s->ca && s->cert && s->key) {
        p->ca = xstrdup(s->ca);
        p->cert = xstrdup(s->cert);
        p->key = xstrdup(s->key);
        p->crl = s->crl ? xstrdup(s->crl) : NULL;
    }
    p->pidfd = -1;
    p->timer = xcalloc(1, sizeof(*p->timer));
    uv_timer_init(loop, p->timer);
    p->timer->data = p;
    if (start(p, err) < 0) {
        kh_etcdproc_free(p);
        return NULL;
    }
    return p;
}

void kh_etcdproc_free(kh_etcdproc *p)
{
    if (!p)
        return;
    uv_timer_stop(p->timer);
    uv_close((uv_handle_t *)p->timer, handle_free);
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        struct pollfd pf = { .fd = p->pidfd, .events = POLLIN };
        if (p->pidfd < 0 || poll(&pf, 1, 5000) <= 0) {
            if (p->pidfd < 0)
                usleep(500000);
            kill(p->pid, SIGKILL);
        }
        int st;
        while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
            ;
        kh_log(KH_LOG_INFO, "cluster.etcd.stop", "pid=%d", (int)p->pid);
    }
    unwatch(p);
    free(p->binary);
    free(p->name);
    free(p->data_dir);
    free(p->log_file);
    free(p->peer_url);
    free(p->client_url);
    free(p->initial);
    free(p->token);
    free(p->ca);
    free(p->cert);
    free(p->key);
    free(p->crl);
    free(p);
}

int kh_etcdproc_pid(const kh_etcdproc *p)
{
    return p ? (int)p->pid : 0;
}

unsigned kh_etcdproc_restarts(const kh_etcdproc *p)
{
    return p ? p->restarts : 0;
}
