/* nic_routes.c - /api/v1/vms/{name}/nics: add, remove, link; each a task. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

#define WAIT_DEFAULT 30

/* ?wait=SECONDS (0..3600, default 30); -1 with err when bad. */
static int query_wait(kh_http_req *req, kh_err *err)
{
    const char *w = kh_http_req_query(req, "wait");
    if (!w)
        return WAIT_DEFAULT;
    char *end = NULL;
    long n = strtol(w, &end, 10);
    if (!*w || *end || n < 0 || n > 3600) {
        kh_err_set(err, KH_E_INVALID, "wait: must be an integer from 0 to 3600 seconds");
        return -1;
    }
    return (int)n;
}

/* {index}: a decimal below KH_VM_NICS_MAX; -1 with err otherwise. */
static int path_index(kh_http_req *req, kh_err *err)
{
    const char *s = kh_http_req_param(req, "index");
    char *end = NULL;
    long n = s ? strtol(s, &end, 10) : -1;
    if (!s || !*s || *end || n < 0 || n >= KH_VM_NICS_MAX || (s[0] == '0' && s[1])) {
        kh_err_set(err, KH_E_NOTFOUND, "no NIC %s (NICs are numbered 0 to %d)", s ? s : "",
                   KH_VM_NICS_MAX - 1);
        return -1;
    }
    return (int)n;
}

static void reply(kh_http_req *req, kh_api *api, kh_task *task, int wait, const kh_err *err)
{
    if (!task)
        kh_http_reply_error(req, err);
    else
        kh_vm_routes_reply_task(req, api, task, wait);
}

void kh_nic_routes_add(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    int wait = query_wait(req, &err);
    json_t *body = wait >= 0 ? kh_http_req_json(req, &err) : NULL;
    kh_task *task = body ? kh_nics_add(api->nics, kh_http_req_param(req, "name"), body, &err)
                         : NULL;
    reply(req, api, task, wait, &err);
}

void kh_nic_routes_remove(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    int wait = query_wait(req, &err);
    int index = wait >= 0 ? path_index(req, &err) : -1;
    long timeout = KH_NICS_UNPLUG_TIMEOUT_DEFAULT;
    const char *t = kh_http_req_query(req, "timeout");
    if (index >= 0 && t) {
        char *end = NULL;
        timeout = strtol(t, &end, 10);
        if (!*t || *end || timeout < 1 || timeout > KH_NICS_UNPLUG_TIMEOUT_MAX) {
            kh_err_set(&err, KH_E_INVALID, "timeout: must be 1 to %d seconds",
                       KH_NICS_UNPLUG_TIMEOUT_MAX);
            index = -1;
        }
    }
    kh_task *task = index >= 0 ? kh_nics_remove(api->nics, kh_http_req_param(req, "name"),
                                                (unsigned)index, (unsigned)timeout, &err)
                               : NULL;
    reply(req, api, task, wait, &err);
}

void kh_nic_routes_patch(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    int wait = query_wait(req, &err);
    int index = wait >= 0 ? path_index(req, &err) : -1;
    json_t *body = index >= 0 ? kh_http_req_json(req, &err) : NULL;
    kh_task *task = body ? kh_nics_set(api->nics, kh_http_req_param(req, "name"),
                                       (unsigned)index, body, &err)
                         : NULL;
    reply(req, api, task, wait, &err);
}
