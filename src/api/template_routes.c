/* template_routes.c - templates, and POST /api/v1/vms with from_template. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "schema/schema.h"
#include "util/mem.h"
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
} clone_wait;

static void on_gone(kh_http_req *req, void *opaque)
{
    (void)req;
    clone_wait *w = opaque;
    w->req = NULL; /* on_cloned frees w when the clone ends */
}

static void on_cloned(json_t *vm, const kh_err *err, void *opaque)
{
    clone_wait *w = opaque;
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
        free(w);
}

void kh_template_routes_clone(kh_http_req *req, kh_api *api, const json_t *body)
{
    kh_err err = KH_ERR_INIT;
    clone_wait *w = xcalloc(1, sizeof(*w));
    w->req = req;
    kh_task *task = NULL;
    w->in_call = true;
    int rc = kh_template_clone(api->mgr, api->storage, api->tasks, body, on_cloned, w, &task,
                               &err);
    w->in_call = false;
    if (rc < 0) {
        free(w);
        kh_http_reply_error(req, &err);
        return;
    }
    if (task) {
        /* a full clone: a task to follow */
        free(w);
        char *loc = xasprintf("/api/v1/tasks/%s", kh_task_id(task));
        kh_http_req_add_header(req, "Location", loc);
        free(loc);
        kh_http_reply_json(req, 202, kh_task_to_json(task));
        return;
    }
    if (w->done) /* on_cloned already replied */
        free(w);
    else
        kh_http_req_on_abort(req, on_gone, w);
}
