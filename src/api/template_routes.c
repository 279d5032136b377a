/* template_routes.c - templates, and POST /api/v1/vms with from_template:
 * the clone is checked against its project's quotas (the template's size
 * unless the body overrides it, the capacities of the volumes it will make)
 * and its new volumes are recorded in that project once it exists. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "schema/schema.h"
#include "util/mem.h"
#include "util/log.h"
#include "instance/template.h"

void kh_template_routes_make(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    /* TemplateOptions.json; the body is borrowed */
    const json_t *body = kh_http_req_json_or_empty(req, &err);
    if (!body || kh_schema_check("TemplateOptions", body, "", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    bool reset = json_is_true(json_object_get(body, "reset_identity"));
    json_t *vm = kh_template_make(api->mgr, api->storage, kh_http_req_param(req, "name"), reset,
                                  &err);
    if (!vm)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, vm);
}

void kh_template_routes_list(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *t = kh_template_list(api->mgr);
    kh_auth_filter(req, t, "/vms/", KH_PRIV_VM_AUDIT);
    kh_http_reply_json(req, 200, json_pack("{s:o}", "templates", t));
}

typedef struct clone_wait {
    kh_http_req *req; /* NULL once the client went away */
    bool in_call;     /* inside kh_template_clone: the caller frees */
    bool done;
    kh_store *st;     /* the auth store (NULL: no projects) */
    char *project;    /* the clone's project */
} clone_wait;

static void clone_wait_free(clone_wait *w)
{
    free(w->project);
    free(w);
}

/* The clone vm exists: its own volumes (the writable disks; read-only ones
 * are the template's, shared) go to its project. */
static void record_volumes(kh_store *st, const char *project, const json_t *vm)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(vm, "disks"), i, d) {
        const char *ref = json_string_value(json_object_get(d, "volume"));
        kh_err err = KH_ERR_INIT;
        if (ref && !json_is_true(json_object_get(d, "readonly")) &&
            kh_projects_object_set(st, "volume", ref, project, &err) < 0)
            kh_log(KH_LOG_WARN, "auth.object", "kind=volume name=%s error=\"%s\"", ref,
                   err.msg);
    }
}

/* The capacity of volume ref ("pool/name"), 0 when unknown. */
static uint64_t volume_capacity(kh_api *api, const char *ref)
{
    const char *slash = strchr(ref, '/');
    if (!slash)
        return 0;
    char *pool = xstrndup(ref, (size_t)(slash - ref));
    json_t *vols = kh_storage_volumes_json(api->storage, pool, NULL);
    free(pool);
    uint64_t cap = 0;
    size_t i;
    json_t *v;
    json_array_foreach(vols, i, v) {
        const char *r = json_string_value(json_object_get(v, "ref"));
        if (r && strcmp(r, ref) == 0)
            cap = (uint64_t)json_integer_value(json_object_get(v, "capacity"));
    }
    json_decref(vols);
    return cap;
}

/* The clone's size against its project's quotas: vCPUs and memory from the
 * body or else the template, and the capacities of the template's writable
 * disks (each gets a new volume of that capacity, linked or full). An
 * unknown template passes here: kh_template_clone refuses it. */
static int clone_quota(kh_http_req *req, kh_api *api, const json_t *body, const char *project,
                       kh_err *err)
{
    kh_err nerr = KH_ERR_INIT;
    json_t *t = kh_manager_vm_json(api->mgr,
                                   json_string_value(json_object_get(body, "from_template")),
                                   &nerr);
    if (!t)
        return 0;
    json_t *size = json_object();
    static const char *const keys[] = { "vcpus", "memory_mib" };
    for (size_t k = 0; k < KH_ARRAY_LEN(keys); k++) {
        json_t *v = json_object_get(body, keys[k]);
        json_object_set(size, keys[k], v ? v : json_object_get(t, keys[k]));
    }
    uint64_t bytes = 0;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(t, "disks"), i, d) {
        const char *ref = json_string_value(json_object_get(d, "volume"));
        if (ref && !json_is_true(json_object_get(d, "readonly")))
            bytes += volume_capacity(api, ref);
    }
    json_decref(t);
    int rc = kh_guard_vm_quota(req, api, size, err);
    json_decref(size);
    if (rc == 0 && bytes)
        rc = kh_guard_disk_quota(req, api, project, bytes, NULL, err);
    return rc;
}

/* A full clone's task ended: on success its volumes go to the project; on
 * a failure the VM's record (made when the 202 went out) goes. */
static void full_clone_done(kh_task *task, void *opaque)
{
    clone_wait *w = opaque;
    json_t *tj = kh_task_to_json(task);
    json_t *vm = json_object_get(tj, "result");
    if (kh_task_get_state(task) == KH_TASK_SUCCEEDED && json_is_object(vm))
        record_volumes(w->st, w->project, vm);
    else if (kh_task_get_state(task) == KH_TASK_FAILED)
        kh_projects_object_forget(w->st, "vm", json_string_value(json_object_get(tj, "vm")),
                                  NULL);
    json_decref(tj);
    clone_wait_free(w);
}

static void on_gone(kh_http_req *req, void *opaque)
{
    (void)req;
    clone_wait *w = opaque;
    w->req = NULL; /* on_cloned frees w when the clone ends */
}

static void on_cloned(json_t *vm, const kh_err *err, void *opaque)
{
    clone_wait *w = opaque;
    if (vm && w->st)
        record_volumes(w->st, w->project, vm);
    if (w->req) {
        if (vm) {
            char *loc = xasprintf("/api/v1/vms/%s",
                                  json_string_value(json_object_get(vm, "name")));
            kh_http_req_add_header(w->req, "Location", loc);
            free(loc);
            kh_http_reply_json(w->req, 201, vm);
            vm = NULL;
        } else {
            kh_http_reply_error(w->req, err);
        }
    }
    json_decref(vm);
    w->done = true;
    if (!w->in_call)
        clone_wait_free(w);
}

void kh_template_routes_clone(kh_http_req *req, kh_api *api, const json_t *body)
{
    kh_err err = KH_ERR_INIT;
    char *project = kh_auth_project(req, &err);
    if (!project || clone_quota(req, api, body, project, &err) < 0) {
        free(project);
        kh_http_reply_error(req, &err);
        return;
    }
    clone_wait *w = xcalloc(1, sizeof(*w));
    w->req = req;
    w->st = kh_auth_store(kh_http_req_auth_data(req));
    w->project = project;
    kh_task *task = NULL;
    w->in_call = true;
    int rc = kh_template_clone(api->mgr, api->storage, api->tasks, body, on_cloned, w, &task,
                               &err);
    w->in_call = false;
    if (rc < 0) {
        clone_wait_free(w);
        kh_http_reply_error(req, &err);
        return;
    }
    if (task) {
        /* a full clone: a task to follow; its end records the volumes */
        w->req = NULL;
        if (w->st && kh_task_get_state(task) == KH_TASK_RUNNING)
            kh_task_wait(task, full_clone_done, w);
        else if (w->st)
            full_clone_done(task, w);
        else
            clone_wait_free(w);
        char *loc = xasprintf("/api/v1/tasks/%s", kh_task_id(task));
        kh_http_req_add_header(req, "Location", loc);
        free(loc);
        kh_http_reply_json(req, 202, kh_task_to_json(task));
        return;
    }
    if (w->done) /* on_cloned already replied */
        clone_wait_free(w);
    else
        kh_http_req_on_abort(req, on_gone, w);
}
