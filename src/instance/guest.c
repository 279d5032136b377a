/* guest.c - owns the daemon's questions to a running guest's agent (see
 * guest.h): a job in the thread pool per question, holding copies only (the
 * VM may go away meanwhile). */
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
} guest_job;

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
    free(j->sock);
    free(j->name);
    free(j);
}

int kh_guest_info(kh_manager *mgr, const char *name, kh_guest_info_cb cb, void *opaque,
                  kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return -1;
    if (v->state != KH_INST_RUNNING || v->pid <= 0 || v->spec->machine != KH_MACHINE_Q35) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: %s", name,
                   v->spec->machine != KH_MACHINE_Q35 ? "a microvm has no guest agent channel"
                                                      : "not running");
        return -1;
    }
    guest_job *j = xcalloc(1, sizeof(*j));
    j->work.data = j;
    j->sock = kh_runtime_run_path(v, "qga.sock");
    j->name = xstrdup(v->spec->name);
    j->cb = cb;
    j->opaque = opaque;
    if (uv_queue_work(mgr->loop, &j->work, info_work, info_done) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "guest agent: cannot queue the job");
        free(j->sock);
        free(j->name);
        free(j);
        return -1;
    }
    return 0;
}
