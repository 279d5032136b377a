/* backup_routes.c - /api/v1/backup-stores and /api/v1/backups: stores,
 * backups (create, list, show, delete), restore, verify and prune (tasks). */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "schema/schema.h"

#define WAIT_DEFAULT 30

static int body_wait(const json_t *body)
{
    json_t *w = json_object_get(body, "wait");
    return w ? (int)json_integer_value(w) : WAIT_DEFAULT;
}

static void reply_json(kh_http_req *req, int status, json_t *j, const kh_err *err)
{
    if (!j)
        kh_http_reply_error(req, err);
    else
        kh_http_reply_json(req, status, j);
}

static kh_backups *backups(kh_http_req *req, kh_api *api)
{
    if (!api->backups) {
        kh_err err = KH_ERR_INIT;
        kh_err_set(&err, KH_E_UNAVAILABLE, "backups are not available");
        kh_http_reply_error(req, &err);
    }
    return api->backups;
}

void kh_backup_routes_stores(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (b)
        reply_json(req, 200, kh_backup_store_list(b, &err), &err);
}

void kh_backup_routes_store_add(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    json_t *body = kh_http_req_json(req, &err);
    /* the store's directory is a host path: confined to the allowed ones */
    const char *path = body ? json_string_value(json_object_get(body, "path")) : NULL;
    if (path && kh_auth_hostpath(req, path, "path", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    reply_json(req, 201, body ? kh_backup_store_add(b, body, &err) : NULL, &err);
}

void kh_backup_routes_store_get(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (b)
        reply_json(req, 200, kh_backup_store_get(b, kh_http_req_param(req, "store"), &err),
                   &err);
}

void kh_backup_routes_store_delete(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    if (kh_backup_store_delete(b, kh_http_req_param(req, "store"), &err) < 0)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_data(req, 204, "application/json", "", 0);
}

void kh_backup_routes_list(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (b)
        reply_json(req, 200, kh_backup_list(b, kh_http_req_query(req, "vm"),
                                            kh_http_req_query(req, "store"), &err), &err);
}

void kh_backup_routes_get(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (b)
        reply_json(req, 200, kh_backup_get(b, kh_http_req_param(req, "id"), &err), &err);
}

void kh_backup_routes_delete(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    if (kh_backup_delete(b, kh_http_req_param(req, "id"), &err) < 0)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_data(req, 204, "application/json", "", 0);
}

static void task_reply(kh_http_req *req, kh_api *api, kh_task *task, int wait,
                       const kh_err *err)
{
    if (!task)
        kh_http_reply_error(req, err);
    else
        kh_vm_routes_reply_task(req, api, task, wait);
}

void kh_backup_routes_create(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_backups *b = backups(req, api);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    json_t *body = kh_http_req_json_or_empty(req, &err);
    kh_task *t = body ? kh_backup_create(b, kh_http_req_param(req, "name"), body, &err) : NULL;
    task_reply(req, api, t, body_wait(body), &err);
}

void kh_backup_routes_restore(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_backups *b = backups(req, api);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    json_t *body = kh_http_req_json(req, &err);
    kh_task *t = body ? kh_backup_restore(b, kh_http_req_param(req, "id"), body, &err) : NULL;
    task_reply(req, api, t, body_wait(body), &err);
}

void kh_backup_routes_verify(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_backups *b = backups(req, api);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    json_t *body = kh_http_req_json_or_empty(req, &err);
    if (body && kh_schema_check("ActionOptions", body, "", &err) < 0)
        body = NULL;
    kh_task *t = body ? kh_backup_verify(b, kh_http_req_param(req, "id"), &err) : NULL;
    task_reply(req, api, t, body_wait(body), &err);
}

void kh_backup_routes_prune(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_backups *b = backups(req, api);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    json_t *body = kh_http_req_json(req, &err);
    kh_task *t = body ? kh_backup_prune(b, body, &err) : NULL;
    task_reply(req, api, t, body_wait(body), &err);
}

void kh_backup_routes_schedule_get(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (b)
        reply_json(req, 200, kh_backup_schedule_get(b, kh_http_req_param(req, "name"), &err),
                   &err);
}

void kh_backup_routes_schedule_set(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    json_t *body = kh_http_req_json(req, &err);
    reply_json(req, 200,
               body ? kh_backup_schedule_set(b, kh_http_req_param(req, "name"), body, &err)
                    : NULL,
               &err);
}

void kh_backup_routes_schedule_delete(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    if (kh_backup_schedule_delete(b, kh_http_req_param(req, "name"), &err) < 0)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_data(req, 204, "application/json", "", 0);
}
