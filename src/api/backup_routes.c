/* backup_routes.c - /api/v1/backup-stores and /api/v1/backups: stores,
 * backups (create, list, show, delete), restore, verify and prune (tasks).
 *
 * Projects: a backup belongs to the project of its VM when it was made
 * (auth object "backup", recorded through the backup module's record hook,
 * also for scheduled backups); its ACL path is /backups/ID, so another
 * project's backup is 404 and the list shows only what the caller may see.
 * Stores are host resources (/backup-stores/NAME): every caller sees their
 * names, their paths and counts need Datastore.Audit there. A restore to a
 * new VM goes to the caller's project within its quotas. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "schema/schema.h"
#include "util/log.h"
#include "util/mem.h"

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

/* ---- the project of each backup ---- */

static void on_record(void *opaque, const char *id, const char *vm, bool added)
{
    kh_store *st = opaque;
    kh_err err = KH_ERR_INIT;
    if (!id)
        return;
    if (!added) {
        kh_projects_object_forget(st, "backup", id, NULL);
        return;
    }
    char *project = kh_projects_object_project(st, "vm", vm ? vm : "");
    if (kh_projects_object_set(st, "backup", id, project, &err) < 0)
        kh_log(KH_LOG_WARN, "auth.object", "kind=backup name=%s error=\"%s\"", id, err.msg);
    free(project);
}

void kh_backup_routes_watch(kh_backups *b, kh_store *auth_store)
{
    if (!b || !auth_store)
        return;
    kh_backup_set_record_hook(b, on_record, auth_store);
    /* backups from before projects: their VM's project (default without) */
    kh_err err = KH_ERR_INIT;
    json_t *l = kh_backup_list(b, NULL, NULL, &err);
    size_t i;
    json_t *bk;
    json_array_foreach(json_object_get(l, "backups"), i, bk) {
        const char *id = json_string_value(json_object_get(bk, "id"));
        char *have = id ? kh_projects_object_find(auth_store, "backup", id) : NULL;
        if (id && !have)
            on_record(auth_store, id, json_string_value(json_object_get(bk, "vm")), true);
        free(have);
    }
    json_decref(l);
}

static bool can_on(const kh_http_req *req, const char *prefix, const char *name, kh_privs need)
{
    char path[KH_AUTH_PATH_MAX];
    snprintf(path, sizeof(path), "%s%s", prefix, name ? name : "");
    return name && kh_auth_can(req, path, need);
}

/* A store as the caller may see it: its path and count need Datastore.Audit
 * on /backup-stores/NAME. */
static void store_redact(const kh_http_req *req, json_t *s)
{
    if (!can_on(req, "/backup-stores/", json_string_value(json_object_get(s, "name")),
                KH_PRIV_DATASTORE_AUDIT)) {
        json_object_del(s, "path");
        json_object_del(s, "backups");
    }
}

void kh_backup_routes_stores(kh_http_req *req, void *app)
{
    kh_backups *b = backups(req, app);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    json_t *l = kh_backup_store_list(b, &err);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(l, "stores"), i, s)
        store_redact(req, s);
    reply_json(req, 200, l, &err);
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
    if (!b)
        return;
    json_t *s = kh_backup_store_get(b, kh_http_req_param(req, "store"), &err);
    if (s)
        store_redact(req, s);
    reply_json(req, 200, s, &err);
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
    if (!b)
        return;
    json_t *l = kh_backup_list(b, kh_http_req_query(req, "vm"), kh_http_req_query(req, "store"),
                               &err);
    json_t *arr = json_object_get(l, "backups");
    for (size_t i = json_array_size(arr); i-- > 0;)
        if (!can_on(req, "/backups/",
                    json_string_value(json_object_get(json_array_get(arr, i), "id")),
                    KH_PRIV_DATASTORE_AUDIT))
            json_array_remove(arr, i);
    reply_json(req, 200, l, &err);
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

/* A restore to a new VM: the VM's name is recorded in the caller's project
 * before the task (a live restore runs it at once); when the task ends its
 * volumes join it, or on a failure the name goes. */
typedef struct restore_owner {
    kh_store *st;
    char *project, *vm;
    kh_task_waiter *waiter;
    struct restore_owner *next;
} restore_owner;

/* The restores whose end is awaited (kh_backup_routes_unwatch ends them). */
static restore_owner *pending;

static void restore_owner_free(restore_owner *o)
{
    for (restore_owner **pp = &pending; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    free(o->project);
    free(o->vm);
    free(o);
}

void kh_backup_routes_unwatch(void)
{
    while (pending) {
        kh_task_unwait(pending->waiter);
        restore_owner_free(pending);
    }
}

static void restore_done(kh_task *task, void *opaque)
{
    restore_owner *o = opaque;
    json_t *tj = kh_task_to_json(task);
    if (kh_task_get_state(task) == KH_TASK_SUCCEEDED) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(json_object_get(tj, "result"), "volumes"), i, v) {
            kh_err err = KH_ERR_INIT;
            if (json_is_string(v) &&
                kh_projects_object_set(o->st, "volume", json_string_value(v), o->project,
                                       &err) < 0)
                kh_log(KH_LOG_WARN, "auth.object", "kind=volume name=%s error=\"%s\"",
                       json_string_value(v), err.msg);
        }
    } else {
        kh_projects_object_forget(o->st, "vm", o->vm, NULL);
    }
    json_decref(tj);
    restore_owner_free(o);
}

/* What a restore needs beyond Datastore.Backup on the backup: over a VM,
 * VM.Config on it; as a new VM, VM.Allocate in the caller's project and
 * room in its quotas for the backup's VM (vCPUs, memory, the sizes of the
 * disks). *project: the new VM's (owned), or NULL. */
static int restore_checks(kh_http_req *req, kh_api *api, const json_t *body, const char *id,
                          char **project, kh_err *err)
{
    *project = NULL;
    const char *target = json_string_value(json_object_get(body, "vm"));
    const char *as = json_string_value(json_object_get(body, "as"));
    char path[KH_AUTH_PATH_MAX];
    if (target && !as) {
        snprintf(path, sizeof(path), "/vms/%s", target);
        return kh_auth_need(req, path, KH_PRIV_VM_CONFIG, err);
    }
    if (!as)
        return 0; /* kh_backup_restore refuses it */
    kh_store *st = kh_auth_store(kh_http_req_auth_data(req));
    if (!st)
        return 0;
    char *p = kh_auth_project(req, err);
    if (!p)
        return -1;
    snprintf(path, sizeof(path), "/projects/%s", p);
    kh_err nerr = KH_ERR_INIT;
    json_t *row = kh_backup_get(api->backups, id, &nerr);
    json_t *size = json_object();
    uint64_t bytes = 0;
    if (row) {
        json_t *spec = json_object_get(row, "spec");
        static const char *const keys[] = { "vcpus", "memory_mib" };
        for (size_t k = 0; k < KH_ARRAY_LEN(keys); k++)
            if (json_object_get(spec, keys[k]))
                json_object_set(size, keys[k], json_object_get(spec, keys[k]));
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(row, "disks"), i, d)
            bytes += (uint64_t)json_integer_value(json_object_get(d, "size"));
    }
    json_decref(row);
    int rc = kh_auth_need(req, path, KH_PRIV_VM_ALLOCATE, err);
    if (rc == 0)
        rc = kh_guard_vm_quota_in(st, api, p, size, err);
    if (rc == 0 && bytes)
        rc = kh_guard_disk_quota_in(st, api, p, bytes, NULL, err);
    json_decref(size);
    if (rc < 0) {
        free(p);
        return -1;
    }
    *project = p;
    return 0;
}

void kh_backup_routes_restore(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_backups *b = backups(req, api);
    kh_err err = KH_ERR_INIT;
    if (!b)
        return;
    const char *id = kh_http_req_param(req, "id");
    json_t *body = kh_http_req_json(req, &err);
    char *project = NULL;
    if (body && restore_checks(req, api, body, id, &project, &err) < 0)
        body = NULL;
    kh_store *st = kh_auth_store(kh_http_req_auth_data(req));
    const char *as = body ? json_string_value(json_object_get(body, "as")) : NULL;
    /* (a record of a VM that is not there is stale: replaced; a VM that is
     * there makes the restore a 409, its record untouched) */
    json_t *exists = project && as ? kh_manager_vm_json(api->mgr, as, NULL) : NULL;
    bool recorded = project && as && !exists && kh_projects_object_set(st, "vm", as, project,
                                                                          NULL) == 0;
    json_decref(exists);
    kh_task *t = body ? kh_backup_restore(b, id, body, &err) : NULL;
    if (recorded && !t)
        kh_projects_object_forget(st, "vm", as, NULL);
    if (t && project && as) {
        restore_owner *o = xcalloc(1, sizeof(*o));
        o->st = st;
        o->project = project;
        o->vm = xstrdup(as);
        project = NULL;
        if (kh_task_get_state(t) == KH_TASK_RUNNING) {
            o->waiter = kh_task_wait(t, restore_done, o);
            o->next = pending;
            pending = o;
        } else {
            restore_done(t, o);
        }
    }
    free(project);
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
    /* retention drops backups of every project: the store's allocator's */
    const char *store = body ? json_string_value(json_object_get(body, "store")) : NULL;
    char path[KH_AUTH_PATH_MAX];
    snprintf(path, sizeof(path), "/backup-stores/%s", store ? store : "");
    if (body && store && kh_auth_need(req, path, KH_PRIV_DATASTORE_ALLOCATE, &err) < 0)
        body = NULL;
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
