/* guest.c - owns the daemon's questions to a running guest's agent (see
 * guest.h): a job in the thread pool per question, holding copies only (the
 * VM may go away meanwhile); the answer cached in the VM view (v->guest),
 * refreshed by a poller and by every question; the filesystem freeze and
 * thaw around disk-only copies. */
#include "instance/guest.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "instance/instance_int.h"
#include "qemu/qga.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* The poller: one VM asked per tick at most, each VM every POLL_EVERY_S. */
#define POLL_TICK_MS 5000
#define POLL_EVERY_S 60.0
#define POLL_TIMEOUT_MS 3000

struct kh_guest_poll {
    kh_manager *mgr;
    uv_timer_t *timer;
    struct guest_job *busy; /* the poller's job in flight (NULL: none) */
};

typedef enum job_kind { JOB_INFO, JOB_FREEZE, JOB_THAW } job_kind;

typedef struct guest_job {
    uv_work_t work;
    job_kind kind;
    kh_manager *mgr; /* NULL once the manager is gone (a poller job) */
    bool poll;       /* the poller's */
    char *sock;
    char *name;
    char id[37];
    unsigned timeout_ms;
    json_t *info;
    long long frozen; /* freeze/thaw: the agent's count */
    kh_err err;
    kh_guest_info_cb cb;
    kh_guest_freeze_cb fcb;
    void *opaque;
} guest_job;

static double mono_s(void)
{
    return (double)kh_now_ms() / 1000.0;
}

/* The view's "guest" from an agent answer (GuestInfo): os, hostname and a
 * flat address list, with when it was asked. */
static json_t *view_of(const json_t *info)
{
    json_t *g = json_object();
    json_t *os = json_object_get(info, "os");
    if (os)
        json_object_set(g, "os", os);
    json_t *h = json_object_get(info, "hostname");
    if (h)
        json_object_set(g, "hostname", h);
    json_t *addrs = json_array();
    size_t i, k;
    json_t *nic, *a;
    json_array_foreach(json_object_get(info, "interfaces"), i, nic) {
        json_array_foreach(json_object_get(nic, "addresses"), k, a) {
            json_t *o = json_deep_copy(a);
            json_object_set(o, "interface", json_object_get(nic, "name"));
            if (json_object_get(nic, "mac"))
                json_object_set(o, "mac", json_object_get(nic, "mac"));
            json_array_append_new(addrs, o);
        }
    }
    json_object_set_new(g, "addresses", addrs);
    char t[32];
    kh_time_format(kh_wall_time(), t);
    json_object_set_new(g, "updated_at", json_string(t));
    return g;
}

/* Keep an answer in the VM's view (still the same running VM). */
static void cache(kh_manager *mgr, const char *id, const json_t *info)
{
    kh_inst *v = kh_manager_find_id(mgr, id);
    if (!v || v->pid <= 0)
        return;
    json_t *g = view_of(info);
    json_t *was = v->guest ? json_copy(v->guest) : NULL, *now = json_copy(g);
    json_object_del(was, "updated_at");
    json_object_del(now, "updated_at");
    bool changed = !was || !json_equal(was, now);
    json_decref(was);
    json_decref(now);
    json_decref(v->guest);
    v->guest = g;
    v->guest_due = mono_s() + POLL_EVERY_S;
    if (changed) /* a cluster's copy of the view follows changes only */
        kh_manager_cluster_changed(v);
}

static void job_work(uv_work_t *w)
{
    guest_job *j = w->data;
    if (j->kind == JOB_INFO) {
        j->info = kh_qga_guest_info(j->sock, j->timeout_ms, &j->err);
        return;
    }
    kh_qga *q = kh_qga_open(j->sock, KH_GUEST_AGENT_TIMEOUT_MS, &j->err);
    if (!q)
        return;
    /* freezing syncs every filesystem: it may take longer than a question */
    kh_qga_deadline(q, j->timeout_ms);
    json_t *r = kh_qga_call(q, j->kind == JOB_FREEZE ? "guest-fsfreeze-freeze"
                                                     : "guest-fsfreeze-thaw",
                            NULL, false, &j->err);
    if (r)
        j->frozen = json_integer_value(r);
    json_decref(r);
    kh_qga_close(q);
}

static void job_free(guest_job *j)
{
    json_decref(j->info);
    free(j->sock);
    free(j->name);
    free(j);
}

static void job_done(uv_work_t *w, int status)
{
    guest_job *j = w->data;
    bool ok = j->kind == JOB_INFO ? j->info != NULL : j->err.code == KH_OK;
    if (status < 0 && !ok && j->err.code == KH_OK)
        kh_err_set(&j->err, KH_E_INTERNAL, "guest agent: job cancelled");
    if (j->poll) {
        if (j->mgr) {
            j->mgr->guest_poll->busy = NULL;
            if (ok)
                cache(j->mgr, j->id, j->info);
        }
        job_free(j);
        return;
    }
    if (j->kind == JOB_INFO) {
        if (j->info) {
            cache(j->mgr, j->id, j->info);
            json_object_set_new(j->info, "name", json_string(j->name));
        }
        j->cb(j->info, j->info ? NULL : &j->err, j->opaque);
    } else {
        kh_log(ok ? KH_LOG_INFO : KH_LOG_WARN,
               j->kind == JOB_FREEZE ? "vm.fsfreeze" : "vm.fsthaw", "vm=%s count=%lld%s%s%s",
               j->name, ok ? j->frozen : -1LL, ok ? "" : " error=\"", ok ? "" : j->err.msg,
               ok ? "" : "\"");
        if (j->fcb)
            j->fcb(ok ? (int)j->frozen : -1, ok ? NULL : &j->err, j->opaque);
    }
    job_free(j);
}

/* A job for running q35 VM v, queued; NULL with err. */
static guest_job *job_start(kh_inst *v, job_kind kind, unsigned timeout_ms, bool poll,
                            kh_err *err)
{
    if (v->state != KH_INST_RUNNING || v->pid <= 0 || v->spec->machine != KH_MACHINE_Q35) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: %s", v->spec->name,
                   v->spec->machine != KH_MACHINE_Q35 ? "a microvm has no guest agent channel"
                                                      : "not running");
        return NULL;
    }
    guest_job *j = xcalloc(1, sizeof(*j));
    j->work.data = j;
    j->kind = kind;
    j->mgr = v->mgr;
    j->poll = poll;
    j->timeout_ms = timeout_ms;
    j->sock = kh_runtime_run_path(v, "qga.sock");
    j->name = xstrdup(v->spec->name);
    memcpy(j->id, v->id, sizeof(j->id));
    if (uv_queue_work(v->mgr->loop, &j->work, job_work, job_done) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "guest agent: cannot queue the job");
        job_free(j);
        return NULL;
    }
    return j;
}

int kh_guest_info(kh_manager *mgr, const char *name, kh_guest_info_cb cb, void *opaque,
                  kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return -1;
    guest_job *j = job_start(v, JOB_INFO, KH_GUEST_AGENT_TIMEOUT_MS, false, err);
    if (!j)
        return -1;
    j->cb = cb; /* its end runs on this (the loop) thread, later */
    j->opaque = opaque;
    return 0;
}

static int fs_job(kh_manager *mgr, const char *name, job_kind kind, unsigned timeout_ms,
                  kh_guest_freeze_cb cb, void *opaque, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return -1;
    guest_job *j = job_start(v, kind, timeout_ms ? timeout_ms : KH_GUEST_FREEZE_TIMEOUT_MS,
                             false, err);
    if (!j)
        return -1;
    j->fcb = cb;
    j->opaque = opaque;
    return 0;
}

int kh_guest_freeze(kh_manager *mgr, const char *name, unsigned timeout_ms,
                    kh_guest_freeze_cb cb, void *opaque, kh_err *err)
{
    return fs_job(mgr, name, JOB_FREEZE, timeout_ms, cb, opaque, err);
}

int kh_guest_thaw(kh_manager *mgr, const char *name, kh_guest_freeze_cb cb, void *opaque,
                  kh_err *err)
{
    return fs_job(mgr, name, JOB_THAW, KH_GUEST_FREEZE_TIMEOUT_MS, cb, opaque, err);
}

/* ---- the poller ---- */

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void poll_tick(uv_timer_t *t)
{
    struct kh_guest_poll *p = t->data;
    if (p->busy)
        return;
    double now = mono_s();
    for (kh_inst *v = p->mgr->vms; v; v = v->next) {
        if (v->state != KH_INST_RUNNING || v->pid <= 0 ||
            v->spec->machine != KH_MACHINE_Q35 || v->guest_due > now)
            continue;
        /* asked or not, the next turn is a period away: a guest without an
         * agent costs one blocked pool thread for POLL_TIMEOUT_MS a period */
        v->guest_due = now + POLL_EVERY_S;
        kh_err err = KH_ERR_INIT;
        p->busy = job_start(v, JOB_INFO, POLL_TIMEOUT_MS, true, &err);
        return;
    }
}

void kh_guest_poll_start(kh_manager *mgr)
{
    struct kh_guest_poll *p = xcalloc(1, sizeof(*p));
    p->mgr = mgr;
    p->timer = xcalloc(1, sizeof(*p->timer));
    uv_timer_init(mgr->loop, p->timer);
    p->timer->data = p;
    uv_timer_start(p->timer, poll_tick, POLL_TICK_MS, POLL_TICK_MS);
    uv_unref((uv_handle_t *)p->timer);
    mgr->guest_poll = p;
}

void kh_guest_poll_stop(kh_manager *mgr)
{
    struct kh_guest_poll *p = mgr->guest_poll;
    if (!p)
        return;
    if (p->busy)
        p->busy->mgr = NULL; /* its end finds no manager */
    uv_close((uv_handle_t *)p->timer, timer_closed);
    free(p);
    mgr->guest_poll = NULL;
}
