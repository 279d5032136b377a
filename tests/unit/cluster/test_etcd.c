/* test_etcd.c - the etcd client (src/cluster/etcd.h) against a real etcd:
 * this test starts one on 127.0.0.1 with free ports and a temp data dir,
 * and stops and removes it at the end. Skipped (exit 77) only when the etcd
 * binary is not installed (Debian: etcd-server).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>
#include <curl/curl.h>

#include "cluster/etcd.h"
#include "../kh_test.h"
#include "util/misc.h"

static pid_t etcd_pid;
static char etcd_dir[64];
static char client_url[64];
static char dead_url[64];

/* ---- the etcd under test ---- */

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) < 0) {
        perror("free_port");
        exit(1);
    }
    close(s);
    return ntohs(a.sin_port);
}

static const char *etcd_binary(void)
{
    static const char *const paths[] = { "/usr/bin/etcd", "/usr/local/bin/etcd" };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

static size_t sink(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static int healthy(const char *url)
{
    char u[128];
    snprintf(u, sizeof(u), "%s/health", url);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 500L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    long status = 0;
    int ok = curl_easy_perform(c) == CURLE_OK &&
             curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200;
    curl_easy_cleanup(c);
    return ok;
}

static void etcd_start(const char *bin)
{
    snprintf(etcd_dir, sizeof(etcd_dir), "/tmp/kh-test-etcd-XXXXXX");
    if (!mkdtemp(etcd_dir)) {
        perror("mkdtemp");
        exit(1);
    }
    int cport = free_port(), pport = free_port();
    snprintf(client_url, sizeof(client_url), "http://127.0.0.1:%d", cport);
    snprintf(dead_url, sizeof(dead_url), "http://127.0.0.1:%d", free_port());
    char peer[64], data[96], logp[96], cluster[96];
    snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", pport);
    snprintf(data, sizeof(data), "%s/data", etcd_dir);
    snprintf(logp, sizeof(logp), "%s/etcd.log", etcd_dir);
    snprintf(cluster, sizeof(cluster), "t=%s", peer);
    etcd_pid = fork();
    if (etcd_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, "etcd", "--name", "t", "--data-dir", data, "--listen-client-urls", client_url,
              "--advertise-client-urls", client_url, "--listen-peer-urls", peer,
              "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster,
              "--initial-cluster-state", "new", "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    uint64_t end = kh_now_ms() + 15000;
    while (!healthy(client_url)) {
        if (kh_now_ms() > end || waitpid(etcd_pid, NULL, WNOHANG) == etcd_pid) {
            fprintf(stderr, "etcd did not become healthy; see %s\n", logp);
            exit(1);
        }
        usleep(50000);
    }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void etcd_stop(void)
{
    if (etcd_pid > 0) {
        kill(etcd_pid, SIGTERM);
        for (int i = 0; i < 50 && waitpid(etcd_pid, NULL, WNOHANG) != etcd_pid; i++)
            usleep(100000);
        kill(etcd_pid, SIGKILL);
        waitpid(etcd_pid, NULL, 0);
        etcd_pid = 0;
    }
    if (etcd_dir[0])
        nftw(etcd_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static kh_etcd *client(uv_loop_t *loop)
{
    const char *eps[] = { client_url };
    kh_etcd_opts o = { .endpoints = eps, .n_endpoints = 1, .timeout_ms = 3000 };
    kh_err err = KH_ERR_INIT;
    kh_etcd *e = kh_etcd_new(&o, loop, &err);
    if (!e) {
        fprintf(stderr, "kh_etcd_new: %s\n", err.msg);
        exit(1);
    }
    return e;
}

/* Run the loop until *done or ms passed. */
static void tick(uv_timer_t *t)
{
    (void)t;
}

static void run_until(uv_loop_t *loop, const int *done, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 20, 20);
    uint64_t end = kh_now_ms() + ms;
    while (!(done && *done) && kh_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- tests ---- */

static void test_b64(void)
{
    static const char *const in[] = { "", "a", "ab", "abc", "abcd", "/kvmhost/vms/x/owner" };
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        char *enc = kh_etcd_b64_encode(in[i], strlen(in[i]));
        size_t len = 99;
        char *dec = kh_etcd_b64_decode(enc, &len);
        CHECK_STR(dec, in[i]);
        CHECK(len == strlen(in[i]));
        free(enc);
        free(dec);
    }
    char *enc = kh_etcd_b64_encode("a\0b\xff", 4);
    CHECK_STR(enc, "YQBi/w==");
    size_t len = 0;
    char *dec = kh_etcd_b64_decode(enc, &len);
    CHECK(len == 4 && dec && memcmp(dec, "a\0b\xff", 4) == 0);
    free(enc);
    free(dec);
    CHECK(kh_etcd_b64_decode("abc", &len) == NULL);
    CHECK(kh_etcd_b64_decode("a*c=", &len) == NULL);
}

static void test_kv(void)
{
    kh_etcd *e = client(NULL);
    kh_err err = KH_ERR_INIT;
    int64_t rev = 0, rev2 = 0, n = 0;
    CHECK(kh_etcd_put(e, "/t/kv/a", "1", (size_t)-1, 0, &rev, &err) == 0);
    CHECK(rev > 0);
    CHECK(kh_etcd_put(e, "/t/kv/c", "3", (size_t)-1, 0, NULL, &err) == 0);
    CHECK(kh_etcd_put(e, "/t/kv/b", "b\0x", 3, 0, NULL, &err) == 0);
    CHECK(kh_etcd_put(e, "/t/kw", "outside", (size_t)-1, 0, NULL, &err) == 0);
    kh_etcd_kv kv = { 0 };
    CHECK(kh_etcd_get(e, "/t/kv/a", &kv, &rev2, &err) == 1);
    CHECK_STR(kv.key, "/t/kv/a");
    CHECK_STR(kv.value, "1");
    CHECK(kv.mod_revision == rev && kv.create_revision == rev && kv.version == 1);
    CHECK(rev2 >= rev + 3);
    CHECK(kh_etcd_get(e, "/t/kv/b", &kv, NULL, &err) == 1);
    CHECK(kv.value_len == 3 && memcmp(kv.value, "b\0x", 3) == 0);
    CHECK(kh_etcd_get(e, "/t/kv/none", &kv, NULL, &err) == 0);
    CHECK(kv.key == NULL);

    kh_etcd_kvs kvs = { 0 };
    CHECK(kh_etcd_range(e, "/t/kv/", NULL, 0, &kvs, &err) == 0);
    CHECK(kvs.n == 3 && kvs.count == 3 && !kvs.more);
    if (kvs.n == 3) {
        CHECK_STR(kvs.kv[0].key, "/t/kv/a");
        CHECK_STR(kvs.kv[1].key, "/t/kv/b");
        CHECK_STR(kvs.kv[2].key, "/t/kv/c");
    }
    CHECK(kh_etcd_range(e, "/t/kv/", NULL, 2, &kvs, &err) == 0);
    CHECK(kvs.n == 2 && kvs.count == 3 && kvs.more);
    CHECK(kh_etcd_range(e, "/t/kv/b", "/t/kw", 0, &kvs, &err) == 0);
    CHECK(kvs.n == 2);

    CHECK(kh_etcd_delete(e, "/t/kv/a", false, &n, &err) == 0 && n == 1);
    CHECK(kh_etcd_delete(e, "/t/kv/a", false, &n, &err) == 0 && n == 0);
    CHECK(kh_etcd_delete(e, "/t/kv/", true, &n, &err) == 0 && n == 2);
    CHECK(kh_etcd_range(e, "/t/kv/", NULL, 0, &kvs, &err) == 0 && kvs.n == 0);
    CHECK(kh_etcd_get(e, "/t/kw", &kv, NULL, &err) == 1);
    CHECK(!kh_err_isset(&err));
    kh_etcd_kv_clear(&kv);
    kh_etcd_kvs_clear(&kvs);
    kh_etcd_free(e);
}

/* Two clients race to own each VM: exactly one wins each. */
typedef struct racer {
    const char *host;
    int wins, losses, errors;
    pthread_barrier_t *go;
} racer;

#define RACE_VMS 20

static void *race(void *arg)
{
    racer *r = arg;
    kh_etcd *e = client(NULL);
    for (int i = 0; i < RACE_VMS; i++) {
        char vm[32];
        snprintf(vm, sizeof(vm), "race%d", i);
        kh_err err = KH_ERR_INIT;
        pthread_barrier_wait(r->go);
        int rc = kh_etcd_set_owner(e, vm, r->host, 0, NULL, NULL, &err);
        if (rc == 1)
            r->wins++;
        else if (rc == 0)
            r->losses++;
        else
            r->errors++;
    }
    kh_etcd_free(e);
    return NULL;
}

static void test_txn(void)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    racer a = { .host = "hA", .go = &go }, b = { .host = "hB", .go = &go };
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race, &a);
    pthread_create(&tb, NULL, race, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&go);
    CHECK(a.errors == 0 && b.errors == 0);
    CHECK(a.wins + b.wins == RACE_VMS);
    CHECK(a.losses + b.losses == RACE_VMS);
    printf("# race: hA won %d, hB won %d\n", a.wins, b.wins);

    kh_etcd *e = client(NULL);
    kh_err err = KH_ERR_INIT;
    kh_etcd_kv cur = { 0 };
    int64_t rev = 0, rev2 = 0;
    /* the owner moves only from the revision one read */
    CHECK(kh_etcd_get(e, "/kvmhost/vms/race0/owner", &cur, NULL, &err) == 1);
    int64_t seen = cur.mod_revision;
    const char *other = strcmp(cur.value, "hA") == 0 ? "hB" : "hA";
    CHECK(kh_etcd_set_owner(e, "race0", other, seen - 1, &rev, &cur, &err) == 0);
    CHECK(cur.mod_revision == seen);
    CHECK(kh_etcd_set_owner(e, "race0", other, seen, &rev, NULL, &err) == 1);
    CHECK(rev > seen);
    CHECK(kh_etcd_set_owner(e, "race0", "hC", seen, &rev2, &cur, &err) == 0);
    CHECK_STR(cur.value, other);
    CHECK(cur.mod_revision == rev);
    CHECK(kh_etcd_set_owner(e, "no/slash", "hC", 0, NULL, NULL, &err) == -1 &&
          err.code == KH_E_INVALID);
    kh_err_clear(&err);
    /* CAS on a key that does not exist */
    CHECK(kh_etcd_cas(e, "/t/cas", 0, "v1", 0, &rev, NULL, &err) == 1);
    CHECK(kh_etcd_cas(e, "/t/cas", 0, "v2", 0, NULL, &cur, &err) == 0);
    CHECK_STR(cur.value, "v1");

    /* a general txn: value compare, put + get + delete in one */
    kh_etcd_cmp cmp = { .key = "/t/cas", .target = KH_ETCD_VALUE, .result = KH_ETCD_EQUAL,
                        .value = "v1" };
    kh_etcd_op ok[] = {
        { .type = KH_ETCD_OP_PUT, .key = "/t/txn/x", .value = "X" },
        { .type = KH_ETCD_OP_GET, .key = "/t/txn/", .prefix = true },
        { .type = KH_ETCD_OP_DELETE, .key = "/t/cas" },
    };
    kh_etcd_op fail[] = { { .type = KH_ETCD_OP_GET, .key = "/t/cas" } };
    kh_etcd_txn_result res = { 0 };
    CHECK(kh_etcd_txn(e, &cmp, 1, ok, 3, fail, 1, &res, &err) == 0);
    CHECK(res.succeeded && res.kvs.n == 1);
    if (res.kvs.n == 1)
        CHECK_STR(res.kvs.kv[0].value, "X");
    CHECK(kh_etcd_txn(e, &cmp, 1, ok, 3, fail, 1, &res, &err) == 0);
    CHECK(!res.succeeded && res.kvs.n == 0);
    CHECK(!kh_err_isset(&err));
    kh_etcd_txn_result_clear(&res);
    kh_etcd_kv_clear(&cur);
    kh_etcd_free(e);
}

typedef struct keep_state {
    int renewed, gone, failed;
    int done;
    kh_code last;
} keep_state;

static void on_keep(kh_etcd_keeper *k, int64_t ttl, const kh_err *err, void *opaque)
{
    keep_state *s = opaque;
    if (ttl > 0) {
        s->renewed++;
    } else if (err && err->code == KH_E_NOTFOUND) {
        s->gone++;
        s->done = 1;
    } else {
        s->failed++;
    }
    s->last = err ? err->code : KH_OK;
}

static void test_lease(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    kh_etcd *e = client(&loop);
    kh_err err = KH_ERR_INIT;
    int64_t id = 0, granted = 0, ttl = 0;
    kh_etcd_kv kv = { 0 };

    /* kept alive past its TTL, then revoked: its key goes */
    CHECK(kh_etcd_lease_grant(e, 2, &id, &granted, &err) == 0);
    CHECK(id != 0 && granted >= 2);
    CHECK(kh_etcd_put(e, "/t/lease/member", "h1", (size_t)-1, id, NULL, &err) == 0);
    CHECK(kh_etcd_get(e, "/t/lease/member", &kv, NULL, &err) == 1 && kv.lease == id);
    keep_state ks = { 0 };
    kh_etcd_keeper *k = kh_etcd_keeper_start(e, id, 500, on_keep, &ks, &err);
    CHECK(k != NULL);
    uint64_t t0 = kh_now_ms();
    run_until(&loop, NULL, (uint64_t)granted * 1000 + 1500);
    CHECK(ks.renewed >= 4 && ks.failed == 0 && ks.gone == 0);
    CHECK(kh_etcd_keeper_expiry_ms(k) > t0 + (uint64_t)granted * 1000);
    CHECK(kh_etcd_get(e, "/t/lease/member", &kv, NULL, &err) == 1);
    CHECK(kh_etcd_lease_ttl(e, id, &ttl, &err) == 1 && ttl > 0);
    CHECK(kh_etcd_lease_keepalive_once(e, id, &ttl, &err) == 1 && ttl == granted);
    CHECK(kh_etcd_lease_revoke(e, id, &err) == 0);
    CHECK(kh_etcd_get(e, "/t/lease/member", &kv, NULL, &err) == 0);
    CHECK(kh_etcd_lease_ttl(e, id, &ttl, &err) == 0);
    CHECK(kh_etcd_lease_keepalive_once(e, id, &ttl, &err) == 0);
    /* the keeper notices the lease is gone and stops */
    run_until(&loop, &ks.done, 3000);
    CHECK(ks.gone == 1 && ks.last == KH_E_NOTFOUND);
    kh_etcd_keeper_stop(k);
    CHECK(!kh_err_isset(&err));
    CHECK(kh_etcd_lease_revoke(e, id, &err) == -1 && err.code == KH_E_NOTFOUND);
    kh_err_clear(&err);

    /* not kept alive: it expires and takes its key with it */
    CHECK(kh_etcd_lease_grant(e, 1, &id, &granted, &err) == 0);
    CHECK(kh_etcd_put(e, "/t/lease/short", "x", (size_t)-1, id, NULL, &err) == 0);
    uint64_t end = kh_now_ms() + (uint64_t)granted * 1000 + 5000;
    int gone = 0;
    while (!gone && kh_now_ms() < end) {
        gone = kh_etcd_get(e, "/t/lease/short", &kv, NULL, &err) == 0;
        usleep(100000);
    }
    CHECK(gone);
    printf("# a %lld s lease expired after %.1f s\n", (long long)granted,
           (double)(kh_now_ms() - (end - (uint64_t)granted * 1000 - 5000)) / 1000.0);
    CHECK(!kh_err_isset(&err));
    kh_etcd_kv_clear(&kv);
    kh_etcd_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

#define MAX_EVENTS 16

typedef struct watch_state {
    int n;
    kh_etcd_event_type type[MAX_EVENTS];
    char key[MAX_EVENTS][32];
    char value[MAX_EVENTS][16];
    int64_t rev[MAX_EVENTS];
    int want;
    int done;
    int cancel_at;
    int errors;
} watch_state;

static void on_event(kh_etcd_watch *w, const kh_etcd_event *ev, const kh_err *err, void *opaque)
{
    watch_state *s = opaque;
    if (!ev) {
        s->errors++;
        s->done = 1;
        return;
    }
    if (s->n < MAX_EVENTS) {
        s->type[s->n] = ev->type;
        snprintf(s->key[s->n], sizeof(s->key[0]), "%s", ev->kv->key);
        snprintf(s->value[s->n], sizeof(s->value[0]), "%s", ev->kv->value);
        s->rev[s->n] = ev->kv->mod_revision;
        s->n++;
    }
    if (s->n == s->cancel_at)
        kh_etcd_watch_cancel(w); /* from inside the callback */
    if (s->n >= s->want)
        s->done = 1;
}

static void test_watch(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    kh_etcd *e = client(&loop);
    kh_err err = KH_ERR_INIT;
    int64_t r0 = 0, r = 0;
    CHECK(kh_etcd_put(e, "/t/w/x", "1", (size_t)-1, 0, &r0, &err) == 0);
    CHECK(kh_etcd_put(e, "/t/w/x", "2", (size_t)-1, 0, NULL, &err) == 0);
    CHECK(kh_etcd_put(e, "/t/wz", "outside", (size_t)-1, 0, NULL, &err) == 0);
    CHECK(kh_etcd_delete(e, "/t/w/x", false, NULL, &err) == 0);
    CHECK(kh_etcd_put(e, "/t/w/y", "3", (size_t)-1, 0, &r, &err) == 0);

    /* from a past revision: the history, in order, then live events */
    watch_state s = { .want = 4, .cancel_at = 6 };
    kh_etcd_watch *w = kh_etcd_watch_start(e, "/t/w/", true, r0, on_event, &s, &err);
    CHECK(w != NULL);
    run_until(&loop, &s.done, 5000);
    CHECK(s.n == 4 && s.errors == 0);
    if (s.n == 4) {
        CHECK(s.type[0] == KH_ETCD_EV_PUT && strcmp(s.key[0], "/t/w/x") == 0 &&
              strcmp(s.value[0], "1") == 0 && s.rev[0] == r0);
        CHECK(s.type[1] == KH_ETCD_EV_PUT && strcmp(s.value[1], "2") == 0);
        CHECK(s.type[2] == KH_ETCD_EV_DELETE && strcmp(s.key[2], "/t/w/x") == 0);
        CHECK(s.type[3] == KH_ETCD_EV_PUT && strcmp(s.key[3], "/t/w/y") == 0 && s.rev[3] == r);
        CHECK(s.rev[0] < s.rev[1] && s.rev[1] < s.rev[2] && s.rev[2] < s.rev[3]);
    }
    CHECK(kh_etcd_watch_next_revision(w) == r + 1);
    s.done = 0;
    s.want = 6;
    CHECK(kh_etcd_put(e, "/t/w/z", "4", (size_t)-1, 0, NULL, &err) == 0);
    CHECK(kh_etcd_delete(e, "/t/w/", true, NULL, &err) == 0);
    run_until(&loop, &s.done, 5000);
    CHECK(s.n == 6);
    CHECK(s.type[4] == KH_ETCD_EV_PUT && strcmp(s.key[4], "/t/w/z") == 0);
    CHECK(s.type[5] == KH_ETCD_EV_DELETE);
    /* cancelled in the callback at the 6th: nothing more arrives */
    CHECK(kh_etcd_put(e, "/t/w/after", "5", (size_t)-1, 0, NULL, &err) == 0);
    run_until(&loop, NULL, 300);
    CHECK(s.n == 6);

    /* from now (0): only what happens after */
    watch_state s2 = { .want = 1 };
    kh_etcd_watch *w2 = kh_etcd_watch_start(e, "/t/w/after", false, 0, on_event, &s2, &err);
    run_until(&loop, NULL, 300);
    CHECK(kh_etcd_put(e, "/t/w/after", "6", (size_t)-1, 0, NULL, &err) == 0);
    run_until(&loop, &s2.done, 5000);
    CHECK(s2.n == 1 && strcmp(s2.value[0], "6") == 0);
    CHECK(!kh_err_isset(&err));
    kh_etcd_watch_cancel(w2);
    kh_etcd_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_failover(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    kh_err err = KH_ERR_INIT;
    /* the first endpoint is dead: every call moves on to the second */
    const char *eps[] = { dead_url, client_url };
    kh_etcd_opts o = { .endpoints = eps, .n_endpoints = 2, .timeout_ms = 2000 };
    kh_etcd *e = kh_etcd_new(&o, &loop, &err);
    CHECK(e != NULL);
    kh_etcd_kv kv = { 0 };
    int64_t id = 0, r0 = 0;
    CHECK(kh_etcd_put(e, "/t/fo/a", "1", (size_t)-1, 0, &r0, &err) == 0);
    CHECK_STR(kh_etcd_endpoint(e), client_url);
    CHECK(kh_etcd_get(e, "/t/fo/a", &kv, NULL, &err) == 1);
    CHECK(kh_etcd_lease_grant(e, 5, &id, NULL, &err) == 0);
    kh_etcd_cmp cmp = { .key = "/t/fo/a", .target = KH_ETCD_MOD, .number = r0 };
    kh_etcd_op put = { .type = KH_ETCD_OP_PUT, .key = "/t/fo/b", .value = "2" };
    kh_etcd_txn_result res = { 0 };
    CHECK(kh_etcd_txn(e, &cmp, 1, &put, 1, NULL, 0, &res, &err) == 0 && res.succeeded);
    kh_etcd_txn_result_clear(&res);
    CHECK(!kh_err_isset(&err));
    kh_etcd_free(e);

    /* the watch and the keeper start on the dead one and move on by themselves */
    const char *eps2[] = { dead_url, client_url };
    o.endpoints = eps2;
    e = kh_etcd_new(&o, &loop, &err);
    watch_state s = { .want = 2 };
    kh_etcd_watch *w = kh_etcd_watch_start(e, "/t/fo/", true, r0, on_event, &s, &err);
    keep_state ks = { 0 };
    kh_etcd_keeper *k = kh_etcd_keeper_start(e, id, 300, on_keep, &ks, &err);
    run_until(&loop, &s.done, 5000);
    CHECK(s.n == 2 && strcmp(s.key[0], "/t/fo/a") == 0 && strcmp(s.key[1], "/t/fo/b") == 0);
    run_until(&loop, NULL, 1000);
    CHECK(ks.failed >= 1 && ks.renewed >= 1);
    kh_etcd_watch_cancel(w);
    kh_etcd_keeper_stop(k);
    kh_etcd_free(e);

    /* nothing alive: unavailable, quickly */
    const char *dead[] = { dead_url };
    o.endpoints = dead;
    o.n_endpoints = 1;
    e = kh_etcd_new(&o, NULL, &err);
    uint64_t t0 = kh_now_ms();
    CHECK(kh_etcd_put(e, "/t/fo/c", "3", (size_t)-1, 0, NULL, &err) == -1);
    CHECK(err.code == KH_E_UNAVAILABLE);
    CHECK(kh_now_ms() - t0 < 2000);
    kh_err_clear(&err);
    CHECK(kh_etcd_get(e, "/t/fo/a", &kv, NULL, &err) == -1 && err.code == KH_E_UNAVAILABLE);
    kh_err_clear(&err);
    kh_etcd_free(e);

    /* bad options */
    o.n_endpoints = 0;
    CHECK(kh_etcd_new(&o, NULL, &err) == NULL && err.code == KH_E_INVALID);
    kh_err_clear(&err);
    const char *bad[] = { "127.0.0.1:2379" };
    o.endpoints = bad;
    o.n_endpoints = 1;
    CHECK(kh_etcd_new(&o, NULL, &err) == NULL && err.code == KH_E_INVALID);
    kh_etcd_kv_clear(&kv);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void)
{
    const char *bin = etcd_binary();
    if (!bin) {
        printf("1..0 # SKIP etcd is not installed (apt-get install etcd-server)\n");
        return 77;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    etcd_start(bin);
    uint64_t t0 = kh_now_ms();
    RUN(test_b64);
    RUN(test_kv);
    RUN(test_txn);
    RUN(test_lease);
    RUN(test_watch);
    RUN(test_failover);
    printf("# %.1f s against etcd at %s\n", (double)(kh_now_ms() - t0) / 1000.0, client_url);
    etcd_stop();
    curl_global_cleanup();
    TEST_DONE();
}
