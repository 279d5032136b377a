/* snapshot_routes.c - /api/v1/vms/{name}/snapshots: each change is a task. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "schema/schema.h"

#define WAIT_DEFAULT 30

/* "wait" from the body (0..3600, default 30); -1 with err when bad. */
static int body_wait(const json_t *body, kh_err *err)
{
    json_t *w = json_object_get(body, "wait");
    if (!w)
        return WAIT_DEFAULT;
    if (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > 3600) {
        kh_err_set(err, KH_E_INVALID, "wait: must be an integer from 0 to 3600 seconds");
        return -1;
    }
    return (int)json_integer_value(w);
}

static void reply(kh_http_req *req, kh_api *api, kh_task *task, int wait, const kh_err *err)
{
    if (!task)
        kh_http_reply_error(req, err);
    else
        kh_vm_routes_reply_task(req, api, task, wait);
}

void kh_snapshot_routes_list(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *l = kh_snapshot_list(api->snapshots, kh_http_req_param(req, "name"), &err);
    if (!l)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, l);
}

void kh_snapshot_routes_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *j = kh_snapshot_show(api->snapshots, kh_http_req_param(req, "name"),
                                 kh_http_req_param(req, "snap"), &err);
    if (!j)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, j);
}

void kh_snapshot_routes_create(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    int wait = body ? body_wait(body, &err) : -1;
    kh_task *task = wait >= 0 ? kh_snapshot_create(api->snapshots, kh_http_req_param(req, "name"),
                                                   body, &err)
                              : NULL;
    reply(req, api, task, wait, &err);
}

void kh_snapshot_routes_revert(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json_or_empty(req, &err);
    if (body && kh_schema_check("ActionOptions", body, "", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    int wait = body ? body_wait(body, &err) : -1;
    kh_task *task = wait >= 0 ? kh_snapshot_revert(api->snapshots, kh_http_req_param(req, "name"),
                                                   kh_http_req_param(req, "snap"), &err)
                              : NULL;
    reply(req, api, task, wait, &err);
}

void kh_snapshot_routes_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    const char *w = kh_http_req_query(req, "wait");
    int wait = WAIT_DEFAULT;
    if (w) {
        char *end = NULL;
        long n = strtol(w, &end, 10);
        if (!*w || *end || n < 0 || n > 3600) {
            kh_err_set(&err, KH_E_INVALID, "wait: must be an integer from 0 to 3600 seconds");
            kh_http_reply_error(req, &err);
            return;
        }
        wait = (int)n;
    }
    kh_task *task = kh_snapshot_delete(api->snapshots, kh_http_req_param(req, "name"),
                                       kh_http_req_param(req, "snap"), &err);
    reply(req, api, task, wait, &err);
}
