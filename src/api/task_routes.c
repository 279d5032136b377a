/* task_routes.c - GET /api/v1/tasks[/{id}], POST /api/v1/tasks/{id}/cancel. */
#include <stdio.h>

#include "api/api.h"
#include "util/check.h"

void kh_task_routes_list(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *arr = kh_tasks_list_json(api->tasks, 100, &err);
    if (!arr) {
        kh_http_reply_error(req, &err);
        return;
    }
    /* a task of a VM is seen by those who see the VM; others by root */
    for (size_t i = json_array_size(arr); i-- > 0;) {
        const char *vm = json_string_value(json_object_get(json_array_get(arr, i), "vm"));
        char path[KH_AUTH_PATH_MAX];
        snprintf(path, sizeof(path), "/vms/%s", vm ? vm : "");
        if (!kh_auth_can(req, vm ? path : "/", vm ? KH_PRIV_VM_AUDIT : KH_PRIV_SYS_AUDIT))
            json_array_remove(arr, i);
    }
    kh_http_reply_json(req, 200, json_pack("{s:o}", "tasks", arr));
}

void kh_task_routes_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    const char *id = kh_http_req_param(req, "id");
    if (!kh_check_uuid(id)) {
        kh_err_set(&err, KH_E_NOTFOUND, "no task %s", id ? id : "");
        kh_http_reply_error(req, &err);
        return;
    }
    json_t *j = kh_tasks_get_json(api->tasks, id, &err);
    if (!j) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, j);
}

void kh_task_routes_cancel(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    const char *id = kh_http_req_param(req, "id");
    if (!kh_check_uuid(id)) {
        kh_err_set(&err, KH_E_NOTFOUND, "no task %s", id ? id : "");
        kh_http_reply_error(req, &err);
        return;
    }
    json_t *j = NULL;
    if (kh_tasks_cancel(api->tasks, id, &err) < 0 ||
        !(j = kh_tasks_get_json(api->tasks, id, &err))) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 202, j);
}
