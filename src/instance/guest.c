/* guest.c - owns the daemon's questions and orders to a running guest's
 * agent (see guest.h): a job in the thread pool per call, holding copies
 * only (the VM may go away meanwhile). */
#include "instance/guest.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "instance/instance_int.h"
#include "qemu/qga.h"
#include "util/mem.h"

typedef struct guest_job {
    uv_work_t work;
    char *sock;
    char *name;
    json_t *info;
    kh_err err;
    kh_guest_info_cb cb;
    void *opaque;
    /* fsfreeze */
    bool freeze;
    unsigned timeout_ms;
    int count;
    kh_guest_fs_cb fcb;
} guest_job;

static void guest_job_free(guest_job *j);

static void info_work(uv_work_t *w)
{
    guest_job *j = w->data;
    j->info = kh_qga_guest_info(j->sock, KH_GUEST_AGENT_TIMEOUT_MS, &j->err);
}

static void info_done(uv_work_t *w, int status)
{
    guest_job *j = w->data;
    if (status < 0 && !j->info && j->err.code == KH_OK)
        kh_err_set(&j->err, KH_E_INTERNAL, "guest agent: job cancelled");
    if (j->info)
        json_object_set_new(j->info, "name", json_string(j->name));
    j->cb(j->info, j->info ? NULL : &j->err, j->opaque);
    json_decref(j->info);
    guest_job_free(j);
}

static void guest_job_free(guest_job *j)
{
    free(j->sock);
    free(j->name);
    free(j);
}

/* The running VM name's job (its agent's socket), or NULL with err. */
static guest_job *guest_job_new(kh_manager *mgr, const char *name, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    if (v->state != KH_INST_RUNNING || v->pid <= 0 || v->spec->machine != KH_MACHINE_Q35) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: %s", name,
                   v->spec->machine != KH_MACHINE_Q35 ? "a microvm has no guest agent channel"
                                                      : "not running");
        return NULL;
    }
    guest_job *j = xcalloc(1, sizeof(*j));
    j->work.data = j;
    j->sock = kh_runtime_run_path(v, "qga.sock");
    j->name = xstrdup(v->spec->name);
    return j;
}

static void fs_work(uv_work_t *w)
{
    guest_job *j = w->data;
    kh_qga *q = kh_qga_open(j->sock, j->timeout_ms, &j->err);
    if (!q)
        return;
    json_t *r = kh_qga_call(q, j->freeze ? "guest-fsfreeze-freeze" : "guest-fsfreeze-thaw",
                            NULL, false, &j->err);
    if (r)
        j->count = (int)json_integer_value(r);
    json_decref(r);
    kh_qga_close(q);
}

static void fs_done(uv_work_t *w, int status)
{
    guest_job *j = w->data;
    if (status < 0 && j->err.code == KH_OK)
        kh_err_set(&j->err, KH_E_INTERNAL, "guest agent: job cancelled");
    j->fcb(j->count, kh_err_isset(&j->err) ? &j->err : NULL, j->opaque);
    guest_job_free(j);
}

int kh_guest_fsfreeze(kh_manager *mgr, const char *name, bool freeze, unsigned timeout_ms,
                      kh_guest_fs_cb cb, void *opaque, kh_err *err)
{
    guest_job *j = guest_job_new(mgr, name, err);
    if (!j)
        return -1;
    j->freeze = freeze;
    j->timeout_ms = timeout_ms;
    j->fcb = cb;
    j->opaque = opaque;
    if (uv_queue_work(mgr->loop, &j->work, fs_work, fs_done) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "guest agent: cannot queue the job");
        guest_job_free(j);
        return -1;
    }
    return 0;
}

int kh_guest_info(kh_manager *mgr, const char *name, kh_guest_info_cb cb, void *opaque,
                  kh_err *err)
{
    guest_job *j = guest_job_new(mgr, name, err);
    if (!j)
        return -1;
    j->cb = cb;
    j->opaque = opaque;
    if (uv_queue_work(mgr->loop, &j->work, info_work, info_done) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "guest agent: cannot queue the job");
        guest_job_free(j);
        return -1;
    }
    return 0;
}
