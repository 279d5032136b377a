/* vm_routes.c - /api/v1/vms and the lifecycle actions.
 *
 * Actions are checked at once (409 changes nothing), then run as tasks; the
 * request waits for the task up to "wait" seconds and answers 200 with the
 * finished task, the task's error, or 202 with the running task.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "cluster/cluster.h"
#include "instance/config.h"
#include "instance/guest.h"
#include "instance/hotplug.h"
#include "instance/jsontext.h"
#include "instance/lifecycle.h"
#include "schema/schema.h"
#include "util/buf.h"
#include "util/mem.h"

#define WAIT_DEFAULT 30

static void reply_err(kh_http_req *req, const kh_err *err)
{
    kh_http_reply_error(req, err);
}

/* This host's VMs (each VM's text cached by the instance layer, built
 * again only when its view changed) then the other hosts' as the
 * cluster's cached text (built once per change of the view): a caller who
 * sees everything gets them without new JSON values or encodings. */
static void list_fast(kh_http_req *req, kh_api *api, const char *self, const char *remote)
{
    kh_buf b = { 0 };
    kh_buf_add(&b, "{\"vms\":[", 8);
    size_t n = kh_jsontext_list(api->mgr, self, &b);
    if (*remote) {
        if (n)
            kh_buf_add(&b, ",", 1);
        kh_buf_add(&b, remote, strlen(remote));
    }
    kh_buf_add(&b, "]}", 2);
    kh_http_reply_data(req, 200, "application/json", b.p, b.len);
    kh_buf_release(&b);
}

void kh_vm_routes_list(kh_http_req *req, void *app)
{
    kh_api *api = app;
    /* This host's VMs, then (in a cluster) the other hosts' from the etcd view;
     * each with its host, a single host's too (clients need no special case). */
    const char *only = kh_http_req_query(req, "host");
    const char *self = kh_cluster_host_name(api->cluster);
    if (!only && kh_auth_sees_all(req)) {
        list_fast(req, api, self, kh_cluster_vms_remote_text(api->cluster));
        return;
    }
    json_t *all = json_array();
    if (!only || strcmp(only, self) == 0) {
        json_t *mine = kh_manager_list_json(api->mgr);
        size_t i;
        json_t *vm;
        json_array_foreach(mine, i, vm) {
            json_object_set_new(vm, "host", json_string(self));
            json_array_append(all, vm);
        }
        json_decref(mine);
    }
    if (!only || strcmp(only, self) != 0) {
        json_t *remote = kh_cluster_vms_remote(api->cluster, only);
        json_array_extend(all, remote);
        json_decref(remote);
    }
    kh_auth_filter(req, all, "/vms/", KH_PRIV_VM_AUDIT);
    kh_http_reply_json(req, 200, json_pack("{s:o}", "vms", all));
}

static void created(void *opaque, json_t *vm, const kh_err *err)
{
    kh_api_later *l = opaque;
    kh_http_req *req = kh_api_later_req(l);
    if (vm && req) {
        char *loc = xasprintf("/api/v1/vms/%s", json_string_value(json_object_get(vm, "name")));
        kh_http_req_add_header(req, "Location", loc);
        free(loc);
    }
    kh_api_later_done(l, vm, err);
}

void kh_vm_routes_create(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    const char *tmpl = body ? json_string_value(json_object_get(body, "from_template")) : NULL;
    char tpath[KH_AUTH_PATH_MAX];
    snprintf(tpath, sizeof(tpath), "/vms/%s", tmpl ? tmpl : "");
    if (body && ((tmpl && kh_auth_need(req, tpath, KH_PRIV_VM_AUDIT, &err) < 0) ||
                 kh_guard_disks(req, json_object_get(body, "disks"), &err) < 0 ||
                 (!tmpl && kh_guard_vm_quota(req, api, body, &err) < 0))) {
        reply_err(req, &err);
        return;
    }
    if (body && json_object_get(body, "from_template")) {
        kh_template_routes_clone(req, api, body);
        return;
    }
    if (!kh_cluster_enabled(api->cluster)) { /* a single host: no claim, at once */
        json_t *vm = body ? kh_config_create(api->mgr, body, &err) : NULL;
        kh_api_later *l = vm ? kh_api_later_new(req, 201) : NULL;
        if (!vm)
            reply_err(req, &err);
        else
            created(l, vm, NULL);
        return;
    }
    /* the cluster claim (an etcd txn) is answered off the loop: other
     * requests go on meanwhile, even while etcd stalls (the callback runs
     * later: the claim is always sent) */
    kh_api_later *l = body ? kh_api_later_new(req, 201) : NULL;
    int rc = body ? kh_config_create_async(api->mgr, body, created, l, &err) : -1;
    if (!l)
        reply_err(req, &err);
    else
        kh_api_later_started(l, rc, &err);
}

void kh_vm_routes_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *vm = kh_manager_vm_json(api->mgr, kh_http_req_param(req, "name"), &err);
    if (!vm) {
        reply_err(req, &err);
        return;
    }
    json_object_set_new(vm, "host", json_string(kh_cluster_host_name(api->cluster)));
    kh_http_reply_json(req, 200, vm);
}

static void guest_done(json_t *info, const kh_err *err, void *opaque)
{
    kh_api_later_done(opaque, info ? json_incref(info) : NULL, err);
}

void kh_vm_routes_guest(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    kh_api_later *l = kh_api_later_new(req, 200);
    int rc = kh_guest_info(api->mgr, kh_http_req_param(req, "name"), guest_done, l, &err);
    kh_api_later_started(l, rc, &err);
}

#define HOTPLUG_TIMEOUT_S 20

static void vcpus_done(json_t *vm, const kh_err *err, void *opaque)
{
    kh_http_req *req = opaque;
    if (!vm) {
        reply_err(req, err);
        return;
    }
    kh_http_reply_json(req, 200, vm);
}

/* {"vcpus": N} alone on a running VM: hot-plug or unplug (instance/hotplug.h);
 * the reply waits for the result. True when the request was taken. */
static bool patch_live_vcpus(kh_http_req *req, kh_api *api, const json_t *body)
{
    const json_t *n = json_object_get(body, "vcpus");
    if (!n)
        return false;
    const char *name = kh_http_req_param(req, "name");
    kh_err err = KH_ERR_INIT;
    json_t *vm = kh_manager_vm_json(api->mgr, name, &err);
    if (!vm)
        return false; /* kh_config_patch reports it */
    char state[16];
    snprintf(state, sizeof(state), "%s", json_string_value(json_object_get(vm, "state")));
    bool live = strcmp(state, "running") == 0 || strcmp(state, "paused") == 0;
    json_decref(vm);
    if (!live)
        return false;
    if (json_object_size(body) != 1) {
        kh_err_set(&err, KH_E_CONFLICT, "vm %s is %s: change vcpus alone (in a PATCH of its "
                   "own)", name, state);
    } else if (!json_is_integer(n) || json_integer_value(n) < 1 ||
               json_integer_value(n) > KH_VM_VCPUS_MAX) {
        kh_err_set(&err, KH_E_INVALID, "vcpus: must be an integer between 1 and %d",
                   KH_VM_VCPUS_MAX);
    } else if (kh_hotplug_vcpus(api->mgr, api->loop, name, (unsigned)json_integer_value(n),
                                HOTPLUG_TIMEOUT_S, vcpus_done, req, &err) == 0) {
        return true;
    }
    reply_err(req, &err);
    return true;
}

void kh_vm_routes_patch(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    if (body && kh_guard_disks(req, json_object_get(body, "disks"), &err) < 0) {
        reply_err(req, &err);
        return;
    }
    if (body && patch_live_vcpus(req, api, body))
        return;
    json_t *vm = body ? kh_config_patch(api->mgr, kh_http_req_param(req, "name"), body, &err)
                      : NULL;
    if (!vm) {
        reply_err(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, vm);
}

void kh_vm_routes_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    const char *q = kh_http_req_query(req, "volumes"); /* ?volumes=true: its pool volumes too */
    if (q && strcmp(q, "true") != 0 && strcmp(q, "false") != 0) {
        kh_err_set(&err, KH_E_INVALID, "volumes: must be true or false");
        reply_err(req, &err);
        return;
    }
    if (kh_config_delete_with_volumes(api->mgr, kh_http_req_param(req, "name"),
                                      q && strcmp(q, "true") == 0, &err) < 0) {
        reply_err(req, &err);
        return;
    }
    kh_http_reply_data(req, 204, "application/json", "", 0);
}

/* ---- actions ---- */

typedef struct action_wait {
    kh_http_req *req;
    kh_task_waiter *waiter;
    uv_timer_t *timer;
    kh_task *task;
} action_wait;

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void action_wait_free(action_wait *w)
{
    kh_task_unwait(w->waiter);
    if (w->timer)
        uv_close((uv_handle_t *)w->timer, timer_closed);
    free(w);
}

/* Reply for a finished task: 200 with it, or its error (with the task id). */
static void reply_finished(kh_http_req *req, kh_task *task)
{
    if (kh_task_get_state(task) == KH_TASK_SUCCEEDED) {
        kh_http_reply_json(req, 200, kh_task_to_json(task));
        return;
    }
    const kh_err *e = kh_task_error(task);
    kh_http_reply_json(req, kh_code_http_status(e->code),
                       json_pack("{s:{s:s, s:s, s:s}}", "error", "code", kh_code_name(e->code),
                                 "message", e->msg, "task", kh_task_id(task)));
}

static void reply_running(kh_http_req *req, kh_task *task)
{
    char *loc = xasprintf("/api/v1/tasks/%s", kh_task_id(task));
    kh_http_req_add_header(req, "Location", loc);
    free(loc);
    kh_http_reply_json(req, 202, kh_task_to_json(task));
}

static void on_task_done(kh_task *task, void *opaque)
{
    action_wait *w = opaque;
    w->waiter = NULL; /* freed by the task after this callback */
    reply_finished(w->req, task);
    action_wait_free(w);
}

static void on_wait_timeout(uv_timer_t *t)
{
    action_wait *w = t->data;
    reply_running(w->req, w->task);
    action_wait_free(w);
}

static void on_client_gone(kh_http_req *req, void *opaque)
{
    (void)req;
    action_wait_free(opaque);
}

/* Run the action and answer with its task (req NULL: the client left). */
static void action_run(kh_http_req *req, kh_api *api, const char *name, kh_vm_action act,
                       const json_t *opts)
{
    kh_err err = KH_ERR_INIT;
    json_t *jw = json_object_get(opts, "wait"); /* 0 to 3600: ActionOptions.json */
    json_int_t wait = jw ? json_integer_value(jw) : WAIT_DEFAULT;
    kh_task *task = kh_lifecycle_action(api->mgr, name, act, opts, &err);
    if (!req)
        return;
    if (!task) {
        reply_err(req, &err);
        return;
    }
    kh_vm_routes_reply_task(req, api, task, (int)wait);
}

/* A start or resume in a cluster: the claim is read off the loop first
 * (kh_cluster_vm_may_run_async); the lifecycle's own check then uses that
 * read instead of a blocking one. */
typedef struct action_job {
    kh_api *api;
    kh_api_later *l;
    kh_vm_action act;
    char *name;
    json_t *opts;
} action_job;

static void on_may_run(void *opaque, const kh_err *err)
{
    action_job *j = opaque;
    if (err) {
        kh_api_later_done(j->l, NULL, err);
    } else {
        kh_http_req *req = kh_api_later_take(j->l);
        action_run(req, j->api, j->name, j->act, j->opts);
    }
    free(j->name);
    json_decref(j->opts);
    free(j);
}

static void action(kh_http_req *req, kh_api *api, kh_vm_action act)
{
    kh_err err = KH_ERR_INIT;
    json_t *opts = kh_http_req_json_or_empty(req, &err);
    if (!opts) {
        reply_err(req, &err);
        return;
    }
    if (kh_schema_check(act == KH_ACTION_STOP ? "StopOptions" : "ActionOptions", opts, "",
                        &err) < 0) {
        reply_err(req, &err);
        return;
    }
    const char *name = kh_http_req_param(req, "name");
    if ((act == KH_ACTION_START || act == KH_ACTION_RESUME) && kh_cluster_enabled(api->cluster)) {
        json_t *vm = kh_manager_vm_json(api->mgr, name, &err);
        if (!vm) {
            reply_err(req, &err);
            return;
        }
        action_job *j = xcalloc(1, sizeof(*j));
        *j = (action_job){ .api = api, .l = kh_api_later_new(req, 200), .act = act,
                           .name = xstrdup(name), .opts = json_incref(opts) };
        int rc = kh_cluster_vm_may_run_async(api->cluster,
                                             json_string_value(json_object_get(vm, "id")), name,
                                             on_may_run, j, &err);
        json_decref(vm);
        if (rc < 0) {
            kh_api_later_started(j->l, rc, &err);
            free(j->name);
            json_decref(j->opts);
            free(j);
        } else {
            kh_api_later_started(j->l, rc, &err);
        }
        return;
    }
    action_run(req, api, name, act, opts);
}

void kh_vm_routes_reply_task(kh_http_req *req, kh_api *api, kh_task *task, int wait)
{
    if (kh_task_get_state(task) != KH_TASK_RUNNING) {
        reply_finished(req, task);
        return;
    }
    if (wait == 0) {
        reply_running(req, task);
        return;
    }
    action_wait *w = xcalloc(1, sizeof(*w));
    w->req = req;
    w->task = task;
    w->waiter = kh_task_wait(task, on_task_done, w);
    w->timer = xcalloc(1, sizeof(*w->timer));
    uv_timer_init(api->loop, w->timer);
    w->timer->data = w;
    uv_timer_start(w->timer, on_wait_timeout, (uint64_t)wait * 1000, 0);
    kh_http_req_on_abort(req, on_client_gone, w);
}

void kh_vm_routes_start(kh_http_req *req, void *app) { action(req, app, KH_ACTION_START); }
void kh_vm_routes_stop(kh_http_req *req, void *app) { action(req, app, KH_ACTION_STOP); }
void kh_vm_routes_kill(kh_http_req *req, void *app) { action(req, app, KH_ACTION_KILL); }
void kh_vm_routes_reboot(kh_http_req *req, void *app) { action(req, app, KH_ACTION_REBOOT); }
void kh_vm_routes_pause(kh_http_req *req, void *app) { action(req, app, KH_ACTION_PAUSE); }
void kh_vm_routes_resume(kh_http_req *req, void *app) { action(req, app, KH_ACTION_RESUME); }
