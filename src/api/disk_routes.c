/* disk_routes.c - /api/v1/vms/{name}/disks: attach and detach (instance/disk.h).
 *
 * Both answer when the change is done (a hot-unplug waits for the guest);
 * a client that leaves meanwhile does not stop it. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static void on_done(json_t *result, const kh_err *err, void *opaque)
{
    kh_api_later_done(opaque, result, err);
}

void kh_disk_routes_attach(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    const char *vol = body ? json_string_value(json_object_get(body, "volume")) : NULL;
    if (!body || (vol && kh_guard_volume(req, vol, NULL, &err) < 0)) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_api_later *l = kh_api_later_new(req, 200);
    int rc = kh_disk_attach(api->disks, kh_http_req_param(req, "name"), body, on_done, l, &err);
    kh_api_later_started(l, rc, &err);
}

void kh_disk_routes_detach(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    unsigned timeout = 0;
    const char *t = kh_http_req_query(req, "timeout");
    if (t) {
        char *end = NULL;
        unsigned long v = strtoul(t, &end, 10);
        if (!*t || *end || v == 0 || v > 600) {
            kh_err_set(&err, KH_E_INVALID, "timeout: seconds, from 1 to 600");
            kh_http_reply_error(req, &err);
            return;
        }
        timeout = (unsigned)v;
    }
    kh_api_later *l = kh_api_later_new(req, 200);
    int rc = kh_disk_detach(api->disks, kh_http_req_param(req, "name"),
                            kh_http_req_param(req, "index"), timeout, on_done, l, &err);
    kh_api_later_started(l, rc, &err);
}
