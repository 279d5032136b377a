/* storage_routes.c - /api/v1/pools and /api/v1/pools/{pool}/volumes.
 *
 * Volume operations that run qemu-img answer when it finishes; a client
 * that leaves meanwhile does not stop the operation (it completes and is
 * recorded, or fails and leaves nothing behind).
 */
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "api/api.h"
#include "util/mem.h"

static void on_done(json_t *result, const kh_err *err, void *opaque)
{
    kh_api_later_done(opaque, result, err);
}

/* A new volume (201) also says where it is. */
static void on_created(json_t *result, const kh_err *err, void *opaque)
{
    kh_http_req *req = kh_api_later_req(opaque);
    if (req && result) {
        char *loc = xasprintf("/api/v1/pools/%s/volumes/%s",
                              json_string_value(json_object_get(result, "pool")),
                              json_string_value(json_object_get(result, "name")));
        kh_http_req_add_header(req, "Location", loc);
        free(loc);
    }
    kh_api_later_done(opaque, result, err);
}

static bool storage_ready(kh_http_req *req, kh_api *api)
{
    if (api->storage)
        return true;
    kh_err err = KH_ERR_INIT;
    kh_err_set(&err, KH_E_UNAVAILABLE, "storage is not available on this host");
    kh_http_reply_error(req, &err);
    return false;
}

void kh_storage_routes_pools(kh_http_req *req, void *app)
{
    kh_api *api = app;
    if (!storage_ready(req, api))
        return;
    kh_http_reply_json(req, 200, json_pack("{s:o}", "pools", kh_storage_pools_json(api->storage)));
}

void kh_storage_routes_pool_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    json_t *p = kh_storage_pool_json(api->storage, kh_http_req_param(req, "pool"), &err);
    if (!p)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, p);
}

void kh_storage_routes_pool_create(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    json_t *body = kh_http_req_json(req, &err);
    const char *path = body ? json_string_value(json_object_get(body, "path")) : NULL;
    if (path && kh_auth_hostpath(req, path, "path", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    json_t *p = body ? kh_storage_pool_create(api->storage, body, &err) : NULL;
    if (!p) {
        kh_http_reply_error(req, &err);
        return;
    }
    char *loc = xasprintf("/api/v1/pools/%s", json_string_value(json_object_get(p, "name")));
    kh_http_req_add_header(req, "Location", loc);
    free(loc);
    kh_http_reply_json(req, 201, p);
}

void kh_storage_routes_pool_patch(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    json_t *body = kh_http_req_json(req, &err);
    json_t *p = body ? kh_storage_pool_patch(api->storage, kh_http_req_param(req, "pool"), body,
                                             &err)
                     : NULL;
    if (!p) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, p);
}

void kh_storage_routes_pool_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    if (kh_storage_pool_delete(api->storage, kh_http_req_param(req, "pool"), &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_data(req, 204, "application/json", "", 0);
}

void kh_storage_routes_volumes(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    json_t *v = kh_storage_volumes_json(api->storage, kh_http_req_param(req, "pool"), &err);
    if (v) {
        char prefix[KH_AUTH_PATH_MAX];
        snprintf(prefix, sizeof(prefix), "/pools/%s/volumes/", kh_http_req_param(req, "pool"));
        kh_auth_filter(req, v, prefix, KH_PRIV_DATASTORE_AUDIT);
    }
    if (!v)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_json(req, 200, json_pack("{s:o}", "volumes", v));
}

void kh_storage_routes_volume_create(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    json_t *body = kh_http_req_json(req, &err);
    const char *imp = body ? json_string_value(json_object_get(body, "import")) : NULL;
    const char *backing = body ? json_string_value(json_object_get(body, "backing")) : NULL;
    if (!body || (imp && kh_auth_hostpath(req, imp, "import", &err) < 0) ||
        (backing && kh_guard_volume(req, backing, kh_http_req_param(req, "pool"), &err) < 0)) {
        kh_http_reply_error(req, &err);
        return;
    }
    uint64_t size = 0;
    if (json_object_get(body, "size") &&
        kh_volume_size_parse(json_object_get(body, "size"), &size, NULL) == 0) {
        char *project = kh_auth_project(req, &err);
        int rc = project ? kh_guard_disk_quota(req, api, project, size, NULL, &err) : -1;
        free(project);
        if (rc < 0) {
            kh_http_reply_error(req, &err);
            return;
        }
    }
    kh_api_later *l = kh_api_later_new(req, 201);
    int rc = kh_storage_volume_create(api->storage, kh_http_req_param(req, "pool"), body,
                                      on_created, l, &err);
    kh_api_later_started(l, rc, &err);
}

void kh_storage_routes_volume_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    kh_api_later *l = kh_api_later_new(req, 200);
    int rc = kh_storage_volume_show(api->storage, kh_http_req_param(req, "pool"),
                                    kh_http_req_param(req, "volume"), on_done, l, &err);
    kh_api_later_started(l, rc, &err);
}

void kh_storage_routes_volume_resize(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    json_t *body = kh_http_req_json(req, &err);
    if (!body) {
        kh_http_reply_error(req, &err);
        return;
    }
    uint64_t size = 0;
    if (kh_volume_size_parse(json_object_get(body, "size"), &size, NULL) == 0) {
        /* the new size replaces the volume's in its project's disk quota */
        char ref[2 * KH_AUTH_NAME_MAX + 2];
        snprintf(ref, sizeof(ref), "%s/%s", kh_http_req_param(req, "pool"),
                 kh_http_req_param(req, "volume"));
        kh_store *st = kh_auth_store(kh_http_req_auth_data(req));
        char *project = st ? kh_projects_object_project(st, "volume", ref) : NULL;
        int qrc = kh_guard_disk_quota(req, api, project, size, ref, &err);
        free(project);
        if (qrc < 0) {
            kh_http_reply_error(req, &err);
            return;
        }
    }
    kh_api_later *l = kh_api_later_new(req, 200);
    int rc = kh_storage_volume_resize(api->storage, kh_http_req_param(req, "pool"),
                                      kh_http_req_param(req, "volume"), body, on_done, l, &err);
    kh_api_later_started(l, rc, &err);
}

void kh_storage_routes_volume_delete(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    if (kh_storage_volume_delete(api->storage, kh_http_req_param(req, "pool"),
                                 kh_http_req_param(req, "volume"), &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_data(req, 204, "application/json", "", 0);
}

/* ---- upload and download: PUT/GET /api/v1/pools/{pool}/volumes/{volume}/data ---- */

typedef struct upload {
    kh_http_req *req; /* NULL once the client went away */
    kh_volume_upload *u;
} upload;

static void upload_gone(kh_http_req *req, void *opaque)
{
    (void)req;
    upload *up = opaque;
    up->req = NULL;
    if (up->u) { /* still receiving: nothing is kept */
        kh_storage_upload_abort(up->u);
        free(up);
    }
}

static int upload_data(kh_http_req *req, const char *data, size_t len, void *opaque)
{
    upload *up = opaque;
    kh_err err = KH_ERR_INIT;
    if (kh_storage_upload_write(up->u, data, len, &err) == 0)
        return 0;
    kh_storage_upload_abort(up->u);
    free(up);
    kh_http_req_on_abort(req, NULL, NULL);
    kh_http_reply_error(req, &err);
    return -1;
}

static void upload_done(json_t *result, const kh_err *err, void *opaque)
{
    upload *up = opaque;
    if (up->req) {
        kh_http_req_on_abort(up->req, NULL, NULL);
        if (result) {
            char *loc = xasprintf("/api/v1/pools/%s/volumes/%s",
                                  json_string_value(json_object_get(result, "pool")),
                                  json_string_value(json_object_get(result, "name")));
            kh_http_req_add_header(up->req, "Location", loc);
            free(loc);
            kh_http_reply_json(up->req, 201, result);
            result = NULL;
        } else {
            kh_http_reply_error(up->req, err);
        }
    }
    json_decref(result);
    free(up);
}

static void upload_end(kh_http_req *req, void *opaque)
{
    upload *up = opaque;
    kh_err err = KH_ERR_INIT;
    kh_volume_upload *u = up->u;
    up->u = NULL; /* checked and recorded from here; the client may leave */
    if (kh_storage_upload_finish(u, upload_done, up, &err) < 0) {
        kh_http_req_on_abort(req, NULL, NULL);
        free(up);
        kh_http_reply_error(req, &err);
    }
}

void kh_storage_routes_volume_upload(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    /* the project's disk quota bounds the bytes sent and the image's size:
     * an announced length over it is refused before a byte is written */
    uint64_t room = UINT64_MAX, len = kh_http_req_content_length(req);
    char words[KH_GUARD_QUOTA_WORDS];
    char *project = kh_auth_project(req, &err);
    int rc = project ? kh_guard_disk_room(req, api, project, NULL, &room, words, sizeof(words),
                                          &err) : -1;
    free(project);
    if (rc == 0 && len != UINT64_MAX && len > room) {
        kh_err_set(&err, KH_E_FORBIDDEN, "%s, an upload of %llu bytes asked)", words,
                   (unsigned long long)len);
        rc = -1;
    }
    kh_volume_upload *u = rc < 0 ? NULL : kh_storage_upload_begin(
        api->storage, kh_http_req_param(req, "pool"), kh_http_req_param(req, "volume"),
        kh_http_req_query(req, "format"), len, &err);
    if (!u) {
        kh_http_reply_error(req, &err);
        return;
    }
    if (room != UINT64_MAX)
        kh_storage_upload_limit(u, room, words);
    upload *up = xcalloc(1, sizeof(*up));
    up->req = req;
    up->u = u;
    kh_http_req_on_abort(req, upload_gone, up);
    kh_http_req_stream(req, upload_data, upload_end, up);
}

void kh_storage_routes_volume_download(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!storage_ready(req, api))
        return;
    uint64_t size = 0;
    int fd = kh_storage_volume_open(api->storage, kh_http_req_param(req, "pool"),
                                    kh_http_req_param(req, "volume"), &size, &err);
    if (fd < 0)
        kh_http_reply_error(req, &err);
    else
        kh_http_reply_fd(req, 200, "application/octet-stream", fd, size);
}
