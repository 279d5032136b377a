/* porting_routes.c - import and export of VMs: PUT /api/v1/vms/import (an
 * OVA as the body), POST /api/v1/vms/import (an OVA on the host),
 * POST /api/v1/vms/import-libvirt, GET /api/v1/vms/{name}/export. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "cluster/cluster.h"
#include "instance/config.h"
#include "net/netmgr.h"
#include "porting/libvirt_xml.h"
#include "porting/porting.h"
#include "schema/schema.h"
#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"

#define IMPORT_WAIT_DEFAULT 30

/* ---- an import's project: its quotas, and the records of what it made ---- */

typedef struct import_owner {
    kh_api *api;
    kh_store *st; /* the auth store */
    char *project;
    kh_ova_owner hooks; /* opaque: this */
} import_owner;

static void record(kh_store *st, const char *kind, const char *name, const char *project)
{
    kh_err err = KH_ERR_INIT;
    if (name && kh_projects_object_set(st, kind, name, project, &err) < 0)
        kh_log(KH_LOG_WARN, "auth.object", "kind=%s name=%s error=\"%s\"", kind, name, err.msg);
}

static int owner_admit(void *opaque, const json_t *size, kh_err *err)
{
    import_owner *o = opaque;
    if (kh_guard_vm_quota_in(o->st, o->api, o->project, size, err) < 0)
        return -1;
    json_int_t bytes = json_integer_value(json_object_get(size, "disk_bytes"));
    return kh_guard_disk_quota_in(o->st, o->api, o->project, bytes > 0 ? (uint64_t)bytes : 0,
                                  NULL, err);
}

/* The new VM and its volumes go to the caller's project. */
static void owner_made(void *opaque, const json_t *vm)
{
    import_owner *o = opaque;
    record(o->st, "vm", json_string_value(json_object_get(vm, "name")), o->project);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(vm, "disks"), i, d)
        record(o->st, "volume", json_string_value(json_object_get(d, "volume")), o->project);
}

static void owner_done(void *opaque)
{
    import_owner *o = opaque;
    free(o->project);
    free(o);
}

/* The owner of an import by this request (NULL without projects: nothing
 * to check or record), or -1 with err: an unknown ?project=, or no room
 * for one more VM in it (checked before the archive is read; the VM's
 * size is checked once the OVF is read). */
static int import_owner_new(kh_http_req *req, kh_api *api, import_owner **out, kh_err *err)
{
    *out = NULL;
    kh_store *st = kh_auth_store(kh_http_req_auth_data(req));
    if (!st)
        return 0;
    char *project = kh_auth_project(req, err);
    if (!project)
        return -1;
    json_t *none = json_pack("{s:i, s:i}", "vcpus", 0, "memory_mib", 0);
    int rc = kh_guard_vm_quota_in(st, api, project, none, err);
    json_decref(none);
    if (rc < 0) {
        free(project);
        return -1;
    }
    import_owner *o = xcalloc(1, sizeof(*o));
    o->api = api;
    o->st = st;
    o->project = project;
    o->hooks = (kh_ova_owner){ owner_admit, owner_made, owner_done, o };
    *out = o;
    return 0;
}

static kh_porting porting_of(const kh_api *api)
{
    kh_porting pt = { api->loop, api->storage, api->mgr, api->tasks };
    return pt;
}

/* The ?name=, ?pool=, ?network= of an upload; -1 with err when one is bad. */
static int query_opts(kh_http_req *req, kh_ova_opts *o, int *wait, kh_err *err)
{
    memset(o, 0, sizeof(*o));
    o->name = kh_http_req_query(req, "name");
    o->pool = kh_http_req_query(req, "pool");
    o->network = kh_http_req_query(req, "network");
    const char *w = kh_http_req_query(req, "wait");
    *wait = IMPORT_WAIT_DEFAULT;
    if (w) {
        char *end = NULL;
        long v = strtol(w, &end, 10);
        if (!*w || *end || v < 0 || v > 3600) {
            kh_err_set(err, KH_E_INVALID, "wait: seconds, 0 to 3600");
            return -1;
        }
        *wait = (int)v;
    }
    if ((o->name && kh_check_name(o->name, "name", err) < 0) ||
        (o->pool && kh_check_name(o->pool, "pool", err) < 0) ||
        (o->network && kh_check_name(o->network, "network", err) < 0))
        return -1;
    return 0;
}

typedef struct upload {
    kh_api *api;
    kh_ova_spool *s; /* NULL once the body is in */
    kh_ova_opts o;
    import_owner *owner; /* until the import takes it */
    int wait;
} upload;

static void upload_gone(kh_http_req *req, void *opaque)
{
    (void)req;
    upload *up = opaque;
    kh_ova_spool_abort(up->s);
    if (up->owner)
        owner_done(up->owner);
    free(up);
}

static int upload_data(kh_http_req *req, const char *data, size_t len, void *opaque)
{
    upload *up = opaque;
    kh_err err = KH_ERR_INIT;
    if (kh_ova_spool_write(up->s, data, len, &err) == 0)
        return 0;
    kh_http_req_on_abort(req, NULL, NULL);
    upload_gone(req, up);
    kh_http_reply_error(req, &err);
    return -1;
}

static void upload_end(kh_http_req *req, void *opaque)
{
    upload *up = opaque;
    kh_err err = KH_ERR_INIT;
    kh_http_req_on_abort(req, NULL, NULL);
    /* the query strings live as long as the request: still valid here */
    kh_porting pt = porting_of(up->api);
    up->o.owner = up->owner ? &up->owner->hooks : NULL;
    up->owner = NULL; /* the import ends it */
    kh_task *t = kh_ova_import_spool(&pt, up->s, &up->o, &err);
    kh_api *api = up->api;
    int wait = up->wait;
    free(up);
    if (!t)
        kh_http_reply_error(req, &err);
    else
        kh_vm_routes_reply_task(req, api, t, wait);
}

void kh_porting_routes_import_upload(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    upload *up = xcalloc(1, sizeof(*up));
    up->api = api;
    kh_porting pt = porting_of(api);
    if (!api->storage) {
        kh_err_set(&err, KH_E_UNAVAILABLE, "storage is not available");
    } else if (query_opts(req, &up->o, &up->wait, &err) == 0 &&
               import_owner_new(req, api, &up->owner, &err) == 0) {
        up->s = kh_ova_spool_begin(&pt, up->o.pool, kh_http_req_content_length(req), &err);
    }
    if (!up->s) {
        if (up->owner)
            owner_done(up->owner);
        free(up);
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_req_on_abort(req, upload_gone, up);
    kh_http_req_stream(req, upload_data, upload_end, up);
}

void kh_porting_routes_import_path(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    if (!body || kh_schema_check("VMImport", body, "", &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    const char *path = json_string_value(json_object_get(body, "path"));
    if (!api->storage) {
        kh_err_set(&err, KH_E_UNAVAILABLE, "storage is not available");
        kh_http_reply_error(req, &err);
        return;
    }
    import_owner *owner = NULL;
    if (kh_auth_hostpath(req, path, "path", &err) < 0 ||
        kh_check_abs_path(path, "path", &err) < 0 ||
        import_owner_new(req, api, &owner, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_ova_opts o = {
        json_string_value(json_object_get(body, "name")),
        json_string_value(json_object_get(body, "pool")),
        json_string_value(json_object_get(body, "network")),
        owner ? &owner->hooks : NULL,
    };
    json_t *jw = json_object_get(body, "wait");
    int wait = jw ? (int)json_integer_value(jw) : IMPORT_WAIT_DEFAULT;
    kh_porting pt = porting_of(api);
    kh_task *t = kh_ova_import_path(&pt, path, &o, &err);
    if (!t)
        kh_http_reply_error(req, &err);
    else
        kh_vm_routes_reply_task(req, api, t, wait);
}

/* ---- GET /api/v1/vms/{name}/export ---- */

typedef struct export_req {
    kh_http_req *req; /* NULL once the client went away */
} export_req;

static void export_gone(kh_http_req *req, void *opaque)
{
    (void)req;
    export_req *x = opaque;
    x->req = NULL;
}

static void export_done(int fd, uint64_t size, const kh_err *err, void *opaque)
{
    export_req *x = opaque;
    if (!x->req) {
        if (fd >= 0)
            close(fd);
    } else {
        kh_http_req_on_abort(x->req, NULL, NULL);
        if (fd < 0) {
            kh_http_reply_error(x->req, err);
        } else {
            kh_http_req_add_header(x->req, "Content-Disposition", "attachment");
            kh_http_reply_fd(x->req, 200, "application/x-tar", fd, size);
        }
    }
    free(x);
}

void kh_porting_routes_export(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    if (!api->storage) {
        kh_err_set(&err, KH_E_UNAVAILABLE, "storage is not available");
        kh_http_reply_error(req, &err);
        return;
    }
    export_req *x = xcalloc(1, sizeof(*x));
    x->req = req;
    kh_http_req_on_abort(req, export_gone, x);
    kh_porting pt = porting_of(api);
    if (kh_ova_export(&pt, kh_http_req_param(req, "name"), export_done, x, &err) < 0) {
        kh_http_req_on_abort(req, NULL, NULL);
        free(x);
        kh_http_reply_error(req, &err);
    }
}

/* ---- POST /api/v1/vms/import-libvirt ---- */

/* The host paths of a spec (disks, boot files) and of the state the
 * domain brings (its UEFI variable store, its TPM's state: "tpm_file" set
 * in state when allowed) are allowed to this user; the networks of its
 * NICs exist. */
static int libvirt_checks(kh_http_req *req, kh_api *api, const json_t *spec, json_t *state,
                          json_t *warnings, kh_err *err)
{
    size_t i;
    json_t *d;
    const char *nvram = json_string_value(json_object_get(state, "nvram"));
    if (nvram && (kh_check_abs_path(nvram, "os/nvram", err) < 0 ||
                  kh_auth_hostpath(req, nvram, "os/nvram", err) < 0))
        return -1;
    char *tpm = kh_libvirt_state_tpm_file(state, spec, warnings);
    if (tpm) {
        /* a dir the XML names is a host path as a disk is; libvirt's
         * default one, when not allowed, leaves the VM a fresh TPM */
        bool named = json_object_get(json_object_get(state, "tpm"), "dir") != NULL;
        kh_err e = KH_ERR_INIT;
        if (kh_check_abs_path(tpm, "tpm state", &e) < 0 ||
            kh_auth_hostpath(req, tpm, "tpm state", &e) < 0) {
            if (named) {
                kh_err_copy(err, &e);
                free(tpm);
                return -1;
            }
            char msg[512];
            snprintf(msg, sizeof(msg), "tpm: its state is not imported, the VM gets a fresh "
                     "TPM: %.400s", e.msg);
            json_array_append_new(warnings, json_string(msg));
        } else {
            json_object_set_new(state, "tpm_file", json_string(tpm));
        }
        free(tpm);
    }
    json_array_foreach(json_object_get(spec, "disks"), i, d) {
        const char *p = json_string_value(json_object_get(d, "path"));
        if (p && kh_auth_hostpath(req, p, "disk", err) < 0)
            return -1;
    }
    const json_t *boot = json_object_get(spec, "boot");
    const char *keys[] = { "kernel", "initrd" };
    for (size_t k = 0; k < 2; k++) {
        const char *p = json_string_value(json_object_get(boot, keys[k]));
        if (p && kh_auth_hostpath(req, p, keys[k], err) < 0)
            return -1;
    }
    json_array_foreach(json_object_get(spec, "nics"), i, d) {
        const char *net = json_string_value(json_object_get(d, "network"));
        kh_err e = KH_ERR_INIT;
        json_t *n = net ? kh_netmgr_get_json(api->net, net, &e) : NULL;
        if (!n) {
            kh_err_set(err, KH_E_INVALID, "interface %zu: network %s is not a kvmhost network; "
                                          "create it (kvmhost network create %s ...) or change "
                                          "<source network=...> in the XML", i,
                       net ? net : "?", net ? net : "NAME");
            return -1;
        }
        json_decref(n);
    }
    return kh_guard_disks(req, json_object_get(spec, "disks"), err);
}

/* The libvirt import's reply once the VM is made (its cluster claim, an
 * etcd txn, is answered off the loop). */
typedef struct lv_import {
    kh_api_later *later;
    kh_store *st;
    char *project;
    json_t *warnings;
    kh_libvirt_state *ls; /* the UEFI variables and TPM state it brings */
    kh_api *api;
} lv_import;

static void lv_created(void *opaque, json_t *vm, const kh_err *err)
{
    lv_import *li = opaque;
    kh_err werr = KH_ERR_INIT;
    if (vm && kh_libvirt_state_write(li->ls, li->api->mgr, li->api->storage,
                                     json_string_value(json_object_get(vm, "id")), &werr) < 0) {
        kh_err e = KH_ERR_INIT; /* the VM goes with its half-made state */
        kh_config_delete(li->api->mgr, json_string_value(json_object_get(vm, "name")), &e);
        json_decref(vm);
        vm = NULL;
        err = &werr;
    }
    kh_libvirt_state_free(li->ls);
    if (vm && li->st) /* its disks are host files (Sys.HostPath), not volumes */
        record(li->st, "vm", json_string_value(json_object_get(vm, "name")), li->project);
    kh_http_req *req = kh_api_later_req(li->later);
    if (vm && req) {
        char *loc = xasprintf("/api/v1/vms/%s", json_string_value(json_object_get(vm, "name")));
        kh_http_req_add_header(req, "Location", loc);
        free(loc);
    }
    kh_api_later_done(li->later, vm ? json_pack("{s:o, s:O}", "vm", vm, "warnings",
                                                li->warnings) : NULL, err);
    json_decref(li->warnings);
    free(li->project);
    free(li);
}

void kh_porting_routes_import_libvirt(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    size_t len = 0;
    const char *xml = kh_http_req_body(req, &len);
    json_t *warnings = NULL, *state = NULL;
    json_t *spec = kh_libvirt_xml_parse(xml ? xml : "", xml ? len : 0, &warnings, &state, &err);
    const char *name = kh_http_req_query(req, "name");
    if (spec && name) {
        if (kh_check_name(name, "name", &err) == 0)
            json_object_set_new(spec, "name", json_string(name));
    }
    char *project = NULL;
    kh_libvirt_state *ls = NULL;
    kh_store *st = kh_auth_store(kh_http_req_auth_data(req));
    if (!spec || kh_err_isset(&err) ||
        libvirt_checks(req, api, spec, state, warnings, &err) < 0 ||
        (st && (project = kh_auth_project(req, &err)) == NULL) ||
        kh_guard_vm_quota(req, api, spec, &err) < 0 ||
        (ls = kh_libvirt_state_read(state, spec, warnings, &err)) == NULL) {
        json_decref(spec);
        json_decref(state);
        json_decref(warnings);
        free(project);
        kh_http_reply_error(req, &err);
        return;
    }
    json_decref(state);
    lv_import *li = xcalloc(1, sizeof(*li));
    *li = (lv_import){ kh_api_later_new(req, 201), st, project, warnings, ls, api };
    if (!kh_cluster_enabled(api->cluster)) { /* a single host: no claim, at once */
        json_t *vm = kh_config_create(api->mgr, spec, &err);
        json_decref(spec);
        lv_created(li, vm, vm ? NULL : &err);
        return;
    }
    kh_api_later *l = li->later;
    int rc = kh_config_create_async(api->mgr, spec, lv_created, li, &err);
    json_decref(spec);
    if (rc < 0) {
        json_decref(li->warnings);
        kh_libvirt_state_free(li->ls);
        free(li->project);
        free(li);
    }
    kh_api_later_started(l, rc, &err);
}
