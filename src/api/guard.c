/* guard.c - what a request body names beyond its route's object: host
 * paths (Sys.HostPath, confined to the allowed directories), other objects
 * (a template to clone, a volume to attach or back onto: 404 when in a
 * project the caller cannot see), and the project quotas of new VMs. The
 * route's own privilege was checked before the handler (api/auth.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

/* "pool/volume" (or "volume" in default_pool) -> its ACL path. */
static void volume_path(const char *ref, const char *default_pool, char *out, size_t outsz)
{
    const char *slash = strchr(ref, '/');
    if (slash)
        snprintf(out, outsz, "/pools/%.*s/volumes/%s", (int)(slash - ref), ref, slash + 1);
    else
        snprintf(out, outsz, "/pools/%s/volumes/%s", default_pool ? default_pool : "", ref);
}

int kh_guard_disks(const kh_http_req *req, const json_t *disks, kh_err *err)
{
    size_t i;
    const json_t *d;
    json_array_foreach(disks, i, d) {
        const char *path = json_string_value(json_object_get(d, "path"));
        const char *vol = json_string_value(json_object_get(d, "volume"));
        char what[48];
        snprintf(what, sizeof(what), "disks[%zu].path", i);
        if (path && kh_auth_hostpath(req, path, what, err) < 0)
            return -1;
        if (vol && kh_guard_volume(req, vol, NULL, err) < 0)
            return -1;
    }
    return 0;
}

int kh_guard_volume(const kh_http_req *req, const char *ref, const char *default_pool,
                    kh_err *err)
{
    char path[KH_AUTH_PATH_MAX];
    volume_path(ref, default_pool, path, sizeof(path));
    return kh_auth_need(req, path, KH_PRIV_DATASTORE_AUDIT, err);
}

typedef struct usage {
    int64_t vms, vcpus, memory_mib;
} usage;

int kh_guard_vm_quota(const kh_http_req *req, kh_api *api, const json_t *body, kh_err *err)
{
    kh_store *st = kh_auth_store(kh_http_req_auth_data(req));
    if (!st)
        return 0;
    char *project = kh_auth_project(req, err);
    if (!project)
        return -1;
    int rc = kh_guard_vm_quota_in(st, api, project, body, err);
    free(project);
    return rc;
}

int kh_guard_vm_quota_in(kh_store *st, kh_api *api, const char *project, const json_t *body,
                         kh_err *err)
{
    kh_quota q;
    if (!st)
        return 0;
    if (kh_projects_quota(st, project, &q, err) < 0)
        return -1;
    if (!q.vms && !q.vcpus && !q.memory_mib)
        return 0;
    usage u = { 0 };
    json_t *vms = kh_manager_list_json(api->mgr);
    size_t i;
    json_t *vm;
    json_array_foreach(vms, i, vm) {
        char *p = kh_projects_object_project(st, "vm", json_string_value(json_object_get(vm, "name")));
        if (strcmp(p, project) == 0) {
            u.vms++;
            u.vcpus += json_integer_value(json_object_get(vm, "vcpus"));
            u.memory_mib += json_integer_value(json_object_get(vm, "memory_mib"));
        }
        free(p);
    }
    json_decref(vms);
    /* the new VM's size: its spec, or the defaults when absent */
    int64_t vcpus = json_object_get(body, "vcpus") ? json_integer_value(json_object_get(body, "vcpus")) : 1;
    int64_t mem = json_object_get(body, "memory_mib")
                      ? json_integer_value(json_object_get(body, "memory_mib")) : 512;
    if (q.vms && u.vms + 1 > q.vms)
        kh_err_set(err, KH_E_FORBIDDEN, "quota of project %s: at most %lld VMs (it has %lld)",
                   project, (long long)q.vms, (long long)u.vms);
    else if (q.vcpus && u.vcpus + vcpus > q.vcpus)
        kh_err_set(err, KH_E_FORBIDDEN, "quota of project %s: at most %lld vCPUs (%lld in use, "
                   "%lld asked)", project, (long long)q.vcpus, (long long)u.vcpus,
                   (long long)vcpus);
    else if (q.memory_mib && u.memory_mib + mem > q.memory_mib)
        kh_err_set(err, KH_E_FORBIDDEN, "quota of project %s: at most %lld MiB of memory "
                   "(%lld in use, %lld asked)", project, (long long)q.memory_mib,
                   (long long)u.memory_mib, (long long)mem);
    else
        return 0;
    return -1;
}

int kh_guard_disk_room(const kh_http_req *req, kh_api *api, const char *project,
                       const char *except, uint64_t *left, char *words, size_t wsz, kh_err *err)
{
    return kh_guard_disk_room_in(kh_auth_store(kh_http_req_auth_data(req)), api, project,
                                 except, left, words, wsz, err);
}

int kh_guard_disk_room_in(kh_store *st, kh_api *api, const char *project, const char *except,
                          uint64_t *left, char *words, size_t wsz, kh_err *err)
{
    kh_quota q;
    *left = UINT64_MAX;
    if (words && wsz)
        words[0] = '\0';
    if (!st || !api->storage || !project)
        return 0;
    if (kh_projects_quota(st, project, &q, err) < 0)
        return -1;
    if (!q.disk_bytes)
        return 0;
    uint64_t used = 0;
    json_t *pools = kh_storage_pools_json(api->storage);
    size_t i, j;
    json_t *p, *v;
    json_array_foreach(pools, i, p) {
        json_t *vols = kh_storage_volumes_json(api->storage,
                                               json_string_value(json_object_get(p, "name")), NULL);
        json_array_foreach(vols, j, v) {
            const char *ref = json_string_value(json_object_get(v, "ref"));
            if (!ref || (except && strcmp(ref, except) == 0))
                continue;
            char *proj = kh_projects_object_project(st, "volume", ref);
            if (strcmp(proj, project) == 0)
                used += (uint64_t)json_integer_value(json_object_get(v, "capacity"));
            free(proj);
        }
        json_decref(vols);
    }
    json_decref(pools);
    *left = used < (uint64_t)q.disk_bytes ? (uint64_t)q.disk_bytes - used : 0;
    if (words && wsz)
        snprintf(words, wsz, "quota of project %s: at most %lld bytes of disk (%llu in use",
                 project, (long long)q.disk_bytes, (unsigned long long)used);
    return 0;
}

int kh_guard_disk_quota(const kh_http_req *req, kh_api *api, const char *project,
                        uint64_t more, const char *except, kh_err *err)
{
    return kh_guard_disk_quota_in(kh_auth_store(kh_http_req_auth_data(req)), api, project, more,
                                  except, err);
}

int kh_guard_disk_quota_in(kh_store *st, kh_api *api, const char *project, uint64_t more,
                           const char *except, kh_err *err)
{
    uint64_t left;
    char words[KH_GUARD_QUOTA_WORDS];
    if (kh_guard_disk_room_in(st, api, project, except, &left, words, sizeof(words), err) < 0)
        return -1;
    if (more <= left)
        return 0;
    kh_err_set(err, KH_E_FORBIDDEN, "%s, %llu asked)", words, (unsigned long long)more);
    return -1;
}
