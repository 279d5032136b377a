/* config.c - owns what an instance is: create (host-side checks: files,
 * qcow2 headers, volumes, host CPUs, cgroup controllers for the limits,
 * NICs; clones from templates come this way too), patch (limits of a running
 * instance go live, and come back if the store refuses the change), delete
 * (with the instance's pool volumes on request), and the spec changes behind
 * disk and NIC attach/detach and vCPU hot-plug. Each writes the store before
 * the instance changes. */
#include "instance/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf/limits.h"
#include "instance/instance_int.h"
#include "instance/vmuid.h"
#include "instance/quota.h"
#include "schema/schema.h"
#include "storage/qcow2.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

/* Host-side checks the pure spec validation cannot do: the files exist, are
 * what the spec says, and a qcow2 has no backing file of its own. */
static int check_files(const kh_vm_spec *spec, kh_err *err)
{
    struct stat st;
    const char *files[2] = { spec->kernel, spec->initrd };
    const char *what[2] = { "boot.kernel", "boot.initrd" };
    for (int i = 0; i < 2; i++) {
        if (!files[i])
            continue;
        if (stat(files[i], &st) < 0 || !S_ISREG(st.st_mode)) {
            kh_err_set(err, KH_E_INVALID, "%s: %s is not a readable file", what[i], files[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < spec->ndisks; i++) {
        const kh_disk_spec *d = &spec->disks[i];
        if (d->volume)
            continue; /* checked against the storage records */
        if (stat(d->path, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu].path: %s is not a file or block device", i,
                       d->path);
            return -1;
        }
        if (d->format != KH_DISK_QCOW2)
            continue;
        bool backing = false;
        if (kh_qcow2_probe(d->path, &backing) < 0) {
            kh_err_set(err, KH_E_INVALID, "disks[%zu]: %s is not a qcow2 image", i, d->path);
            return -1;
        }
        if (backing) {
            kh_err_set(err, KH_E_INVALID,
                       "disks[%zu]: %s has a backing file; images with backing files are "
                       "not accepted as plain disks", i, d->path);
            return -1;
        }
    }
    return 0;
}

/* Limits the host can enforce: CPU, memory and NUMA limits whose cgroup
 * controller the host lacks are refused (instance/quota.h) instead of
 * accepted and never enforced. No cgroups configured: not checked. */
static int check_cgroup_limits(const kh_manager *mgr, const kh_limits *l, kh_err *err)
{
    return mgr->cfg.cgroups ? kh_quota_check_cgroup(mgr->cfg.cgroups, l, err) : 0;
}

json_t *kh_config_create(kh_manager *mgr, const json_t *body, kh_err *err)
{
    return kh_config_create_id(mgr, body, NULL, err);
}

/* The checks of a create, before its claim: the spec (the caller's) and
 * its id in id; NULL with err. */
static kh_vm_spec *create_check(kh_manager *mgr, const json_t *body, const char *given_id,
                                char id[37], kh_err *err)
{
    kh_vm_spec *spec = kh_vm_spec_from_json(body, err);
    if (!spec)
        return NULL;
    if (check_cgroup_limits(mgr, spec->limits, err) < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    for (kh_inst *o = mgr->vms; o; o = o->next) {
        if (strcmp(o->spec->name, spec->name) == 0) {
            kh_err_set(err, KH_E_CONFLICT, "a vm named %s already exists", spec->name);
            kh_vm_spec_free(spec);
            return NULL;
        }
    }
    if (given_id && strlen(given_id) == 36 && !kh_manager_find_id(mgr, given_id)) {
        memcpy(id, given_id, 37);
    } else if (given_id) {
        kh_err_set(err, KH_E_CONFLICT, "vm id %s: bad or already here", given_id);
        kh_vm_spec_free(spec);
        return NULL;
    } else {
        kh_uuid_generate(id);
    }
    if (kh_quota_check_memory(spec->memory_mib, err) < 0 || check_files(spec, err) < 0 ||
        kh_bindings_check_volumes(mgr, spec, err) < 0 ||
        kh_quota_check_host(spec->limits, err) < 0 ||
        kh_bindings_nics_prepare(mgr, id, spec, err) < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    return spec;
}

/* The record and the instance of a create once its claim is made (spec
 * stolen; claimed: give the claim back if the store fails). */
static json_t *create_commit(kh_manager *mgr, kh_vm_spec *spec, const char *id, bool claimed,
                             kh_err *err)
{
    json_t *sj = kh_vm_spec_to_json(spec);
    char *text = json_dumps(sj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sj);
    double now = kh_wall_time();
    kh_vm_row row;
    memset(&row, 0, sizeof(row));
    memcpy(row.id, id, sizeof(row.id));
    row.name = spec->name;
    row.spec_json = text;
    row.state = (char *)(uintptr_t)"stopped";
    row.state_reason = (char *)(uintptr_t)"created";
    row.created_at = row.updated_at = now;
    int rc = kh_store_vm_insert(mgr->store, &row, err);
    free(text);
    if (rc < 0) {
        if (claimed)
            mgr->cluster->unclaim(mgr->cluster_opaque, id, spec->name);
        kh_vm_spec_free(spec);
        return NULL;
    }
    kh_inst *v = kh_manager_add(mgr, id, spec);
    v->reason = xstrdup("created");
    v->created_at = v->updated_at = now;
    kh_bindings_sync(mgr);
    kh_log(KH_LOG_INFO, "vm.create", "vm=%s id=%s", spec->name, id);
    json_t *j = kh_manager_json(v);
    kh_manager_cluster_changed(v);
    kh_events_publish(mgr->events, "vm.created", spec->name, json_incref(j));
    return j;
}

json_t *kh_config_create_id(kh_manager *mgr, const json_t *body, const char *given_id,
                            kh_err *err)
{
    char id[37];
    kh_vm_spec *spec = create_check(mgr, body, given_id, id, err);
    if (!spec)
        return NULL;
    /* A VM that arrives by migration (given_id) is still owned by its
     * source: the owner moves at the switch (instance/migrate.c), so the
     * target claims nothing here. */
    bool claim = !given_id && mgr->cluster;
    if (claim && mgr->cluster->claim(mgr->cluster_opaque, id, spec->name, err) < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    return create_commit(mgr, spec, id, claim, err);
}

typedef struct create_job {
    kh_manager *mgr;
    kh_vm_spec *spec;
    char id[37];
    kh_config_created_cb cb;
    void *opaque;
} create_job;

static void on_claimed(void *opaque, const kh_err *claim_err)
{
    create_job *j = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *vm = NULL;
    if (claim_err) {
        err = *claim_err;
        kh_vm_spec_free(j->spec);
    } else if (kh_manager_find(j->mgr, j->spec->name, NULL)) {
        /* made here meanwhile (its own claim won first): ours goes back */
        kh_err_set(&err, KH_E_CONFLICT, "a vm named %s already exists", j->spec->name);
        j->mgr->cluster->unclaim(j->mgr->cluster_opaque, j->id, j->spec->name);
        kh_vm_spec_free(j->spec);
    } else {
        vm = create_commit(j->mgr, j->spec, j->id, true, &err);
    }
    j->cb(j->opaque, vm, vm ? NULL : &err);
    free(j);
}

int kh_config_create_async(kh_manager *mgr, const json_t *body, kh_config_created_cb cb,
                           void *opaque, kh_err *err)
{
    char id[37];
    kh_vm_spec *spec = create_check(mgr, body, NULL, id, err);
    if (!spec)
        return -1;
    if (!mgr->cluster || !mgr->cluster->claim_async) { /* a single host: nothing to wait for */
        json_t *vm = create_commit(mgr, spec, id, false, err);
        if (!vm)
            return -1;
        cb(opaque, vm, NULL);
        return 0;
    }
    create_job *j = xcalloc(1, sizeof(*j));
    *j = (create_job){ .mgr = mgr, .spec = spec, .cb = cb, .opaque = opaque };
    memcpy(j->id, id, sizeof(j->id));
    if (mgr->cluster->claim_async(mgr->cluster_opaque, id, spec->name, on_claimed, j, err) < 0) {
        kh_vm_spec_free(spec);
        free(j);
        return -1;
    }
    return 0;
}

/* Persist next as v's spec, then make it v's spec (next is stolen: freed on
 * failure). The spec it replaces goes to *prev for the caller to free, or is
 * freed when prev is NULL. -1 with err (v unchanged) when the store fails. */
static int spec_store_swap(kh_manager *mgr, kh_inst *v, kh_vm_spec *next, kh_vm_spec **prev,
                           kh_err *err)
{
    json_t *sj = kh_vm_spec_to_json(next);
    char *text = json_dumps(sj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(sj);
    double now = kh_wall_time();
    int rc = kh_store_vm_update_spec(mgr->store, v->id, text, now, err);
    free(text);
    if (rc < 0) {
        kh_vm_spec_free(next);
        return -1;
    }
    if (prev)
        *prev = v->spec;
    else
        kh_vm_spec_free(v->spec);
    v->spec = next;
    v->updated_at = now;
    return 0;
}

json_t *kh_config_patch(kh_manager *mgr, const char *name, const json_t *patch, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    if (v->disk_busy && json_object_get(patch, "disks")) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: a disk attach or detach is in progress",
                   name);
        return NULL;
    }
    if (v->state != KH_INST_STOPPED || v->task) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)(uintptr_t)patch, key, val) {
            bool up = !v->task && (v->state == KH_INST_RUNNING || v->state == KH_INST_PAUSED);
            /* a new cloud-init seed is a new medium in the VM's CD-ROM */
            bool live = up && (strcmp(key, "limits") == 0 ||
                               (strcmp(key, "cloud_init") == 0 && v->spec->cloud_init &&
                                json_is_object(val)));
            if (strcmp(key, "description") != 0 && !live) {
                char q[256]; /* the key is the user's: quoted when odd */
                kh_schema_quote_key(q, sizeof(q), key, strlen(key));
                kh_err_set(err, KH_E_CONFLICT,
                           "vm %s is %s: only description%s can change now; stop it to "
                           "change %s", name, kh_lifecycle_state_name(v->state),
                           v->state == KH_INST_RUNNING || v->state == KH_INST_PAUSED
                               ? ", limits and cloud_init" : "",
                           q);
                return NULL;
            }
        }
    }
    kh_vm_spec *next = kh_vm_spec_dup(v->spec);
    if (kh_vm_spec_patch(next, patch, err) < 0 ||
        (json_object_get(patch, "memory_mib") &&
         kh_quota_check_memory(next->memory_mib, err) < 0) ||
        (json_object_get(patch, "limits") && check_cgroup_limits(mgr, next->limits, err) < 0) ||
        check_files(next, err) < 0 ||
        kh_bindings_check_volumes(mgr, next, err) < 0 ||
        kh_quota_check_host(next->limits, err) < 0 ||
        kh_bindings_nics_prepare(mgr, v->id, next, err) < 0) {
        kh_vm_spec_free(next);
        return NULL;
    }
    bool live_limits = v->pid > 0 && json_object_get(patch, "limits");
    if (live_limits && kh_live_apply(v, v->spec->limits, next->limits, err) < 0) {
        kh_vm_spec_free(next); /* the old limits are back; the spec stays */
        return NULL;
    }
    /* What went live, for an undo if the store refuses the change. */
    kh_limits *applied = live_limits ? kh_limits_dup(next->limits) : NULL;
    kh_vm_spec *prev = NULL;
    if (spec_store_swap(mgr, v, next, &prev, err) < 0) {
        if (live_limits) {
            kh_live_undo(v, applied, v->spec->limits);
            kh_log(KH_LOG_WARN, "vm.limits", "vm=%s undone=\"%s\"", name, err->msg);
        }
        kh_limits_free(applied);
        return NULL;
    }
    kh_limits_free(applied);
    kh_bindings_sync(mgr);
    if (live_limits) {
        v->drv->limits_changed(v, prev->limits);
        kh_log(KH_LOG_INFO, "vm.limits", "vm=%s live=true", name);
    }
    kh_err cerr = KH_ERR_INIT;
    if (v->pid > 0 && json_object_get(patch, "cloud_init") && v->drv->cidata_changed &&
        v->drv->cidata_changed(v, &cerr) < 0) /* stored: the next start uses it */
        kh_log(KH_LOG_WARN, "vm.cidata", "vm=%s error=\"%s\"", name, cerr.msg);
    kh_vm_spec_free(prev);
    json_t *j = kh_manager_json(v);
    kh_manager_cluster_changed(v);
    kh_events_publish(mgr->events, "vm.updated", name, json_incref(j));
    return j;
}

json_t *kh_config_set_live_vcpus(kh_manager *mgr, const char *id, unsigned vcpus, kh_err *err)
{
    kh_inst *v = mgr->vms;
    while (v && strcmp(v->id, id) != 0)
        v = v->next;
    if (!v) {
        kh_err_set(err, KH_E_NOTFOUND, "no vm with id %s", id);
        return NULL;
    }
    unsigned max = v->spec->max_vcpus ? v->spec->max_vcpus : v->spec->vcpus;
    if (vcpus < 1 || vcpus > max) {
        kh_err_set(err, KH_E_INVALID, "vcpus: must be from 1 to max_vcpus (%u)", max);
        return NULL;
    }
    kh_vm_spec *next = kh_vm_spec_dup(v->spec);
    if (!next->max_vcpus)
        next->max_vcpus = max;
    next->vcpus = vcpus;
    if (spec_store_swap(mgr, v, next, NULL, err) < 0)
        return NULL;
    const kh_limits *l = v->spec->limits;
    if (v->pid > 0 && l && (l->ncpus || l->nemu_cpus || l->nio_cpus))
        v->drv->vcpus_changed(v); /* new vCPU threads take the pinning too (they
                                   * are born with the emulator thread's affinity) */
    kh_log(KH_LOG_INFO, "vm.vcpus", "vm=%s vcpus=%u live=true", v->spec->name, vcpus);
    json_t *j = kh_manager_json(v);
    kh_events_publish(mgr->events, "vm.updated", v->spec->name, json_incref(j));
    return j;
}

/* The pool volumes of v's disks, each once, in disk order. */
static kh_strv *disk_volumes(const kh_inst *v)
{
    kh_strv *refs = kh_strv_new();
    for (size_t i = 0; i < v->spec->ndisks; i++) {
        const char *ref = v->spec->disks[i].volume;
        bool seen = false;
        for (size_t k = 0; ref && k < refs->n; k++)
            seen = seen || strcmp(refs->v[k], ref) == 0;
        if (ref && !seen)
            kh_strv_add(refs, ref);
    }
    return refs;
}

/* Delete v's volumes (refs), after v is gone. A failure here leaves the
 * volume in its pool, used by no VM, and says so in the log. */
static void volumes_delete(kh_manager *mgr, const char *name, const kh_strv *refs)
{
    for (size_t i = 0; i < refs->n; i++) {
        kh_err e = KH_ERR_INIT;
        char *pool = NULL, *vol = NULL;
        if (kh_volume_ref_parse(refs->v[i], &pool, &vol, &e) < 0 ||
            kh_storage_volume_delete(mgr->cfg.storage, pool, vol, &e) < 0) {
            kh_log(KH_LOG_WARN, "vm.delete", "vm=%s volume=%s kept=true error=\"%s\"", name,
                   refs->v[i], e.msg);
            kh_err_clear(&e);
        }
        free(pool);
        free(vol);
    }
}

int kh_config_delete_with_volumes(kh_manager *mgr, const char *name, bool with_volumes,
                                  kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return -1;
    if (v->state != KH_INST_STOPPED || v->task || v->pid > 0) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: stop it before deleting it", name,
                   kh_lifecycle_state_name(v->state));
        return -1;
    }
    if (with_volumes && v->disk_busy) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: a disk attach or detach is in progress",
                   name);
        return -1;
    }
    kh_strv *refs = with_volumes ? disk_volumes(v) : kh_strv_new();
    if (refs->n && !mgr->cfg.storage) {
        kh_err_set(err, KH_E_UNAVAILABLE, "storage is not available: its volumes cannot go");
        kh_strv_free(refs);
        return -1;
    }
    /* Every volume must be able to go before anything goes: all or none. */
    for (size_t i = 0; i < refs->n; i++) {
        if (kh_storage_volume_delete_check(mgr->cfg.storage, refs->v[i], name, err) < 0) {
            kh_err_prefix(err, "nothing deleted");
            kh_strv_free(refs);
            return -1;
        }
    }
    /* Its files go back to root before its uid is freed with its row. */
    kh_vmuid_release(mgr, v->id, v->spec);
    /* The VM row first (one transaction): from here no VM refers to the
     * volumes, so a failure below leaves unused volumes, never a VM whose
     * disk is missing. */
    if (kh_store_vm_delete(mgr->store, v->id, err) < 0) {
        kh_strv_free(refs);
        return -1;
    }
    char *dir = kh_runtime_state_path(v, NULL);
    kh_fs_rm_rf(dir, NULL);
    free(dir);
    kh_runtime_cgroup_remove(v); /* none should be left; after this no daemon knows the id */
    kh_manager_unlink(mgr, v);
    kh_bindings_sync(mgr);
    volumes_delete(mgr, name, refs);
    kh_log(KH_LOG_INFO, "vm.delete", "vm=%s id=%s volumes=%zu", name, v->id, refs->n);
    kh_events_publish(mgr->events, "vm.deleted", name, json_pack("{s:s}", "id", v->id));
    if (mgr->cluster)
        mgr->cluster->deleted(mgr->cluster_opaque, v->id, name);
    kh_manager_inst_free(v);
    kh_strv_free(refs);
    return 0;
}

int kh_config_delete(kh_manager *mgr, const char *name, kh_err *err)
{
    return kh_config_delete_with_volumes(mgr, name, false, err);
}

/* ---- disk changes (instance/disk.c) ---- */

int kh_config_disk_begin(kh_manager *mgr, const char *name, kh_vm_disks *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return -1;
    if (v->disk_busy || v->task) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is busy: %s is in progress", name,
                   v->disk_busy ? "a disk attach or detach" : kh_lifecycle_action_name(v->task_action));
        return -1;
    }
    bool live = v->pid > 0;
    if (live && (!v->drv->monitor_ready(v) || (v->state != KH_INST_RUNNING && v->state != KH_INST_PAUSED))) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: wait until it runs or stops", name,
                   kh_lifecycle_state_name(v->state));
        return -1;
    }
    int tpl = kh_storage_template_get(mgr->cfg.storage, v->id, err);
    if (tpl < 0)
        return -1;
    if (tpl) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is a template: its disks do not change", name);
        return -1;
    }
    snprintf(out->id, sizeof(out->id), "%s", v->id);
    out->live = live;
    out->spec = kh_vm_spec_dup(v->spec);
    memcpy(out->node, v->disk_node, sizeof(out->node));
    v->disk_busy = true;
    return 0;
}

void kh_config_disk_end(kh_manager *mgr, const char *id)
{
    kh_inst *v = kh_manager_find_id(mgr, id);
    if (v)
        v->disk_busy = false;
}

json_t *kh_config_disk_commit(kh_manager *mgr, const char *id, kh_vm_spec *spec,
                               const int *node, kh_err *err)
{
    kh_inst *v = kh_manager_find_id(mgr, id);
    if (!v) {
        kh_vm_spec_free(spec);
        kh_err_set(err, KH_E_NOTFOUND, "the vm is gone");
        return NULL;
    }
    if (kh_bindings_check_volumes(mgr, spec, err) < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    if (spec_store_swap(mgr, v, spec, NULL, err) < 0)
        return NULL;
    if (node && v->pid > 0)
        kh_runtime_disk_nodes_save(v, node);
    kh_bindings_sync(mgr);
    json_t *j = kh_manager_json(v);
    kh_events_publish(mgr->events, "vm.updated", v->spec->name, json_incref(j));
    return j;
}

/* ---- NIC changes (instance/nic.c) ---- */

/* The spec with its NIC list replaced and checked (MACs assigned). */
static kh_vm_spec *nics_replaced(kh_manager *mgr, kh_inst *v, const json_t *nics, int removed,
                                 kh_err *err)
{
    kh_vm_spec *next = kh_vm_spec_dup(v->spec);
    json_t *patch = json_pack("{s:O}", "nics", nics);
    if (removed >= 0 && v->spec->limits && v->spec->limits->nnics) {
        /* the NIC's bandwidth limit goes with it; later NICs move down */
        kh_limits *l = kh_limits_dup(v->spec->limits);
        kh_limits_nic_removed(l, (unsigned)removed);
        json_t *lj = kh_limits_to_json(l);
        json_t *nl = json_object_get(lj, "nic");
        json_object_set_new(patch, "limits",
                            json_pack("{s:O}", "nic", nl ? nl : json_null()));
        json_decref(lj);
        kh_limits_free(l);
    }
    int rc = kh_vm_spec_patch(next, patch, err);
    json_decref(patch);
    if (rc < 0 || kh_bindings_nics_prepare(mgr, v->id, next, err) < 0) {
        kh_vm_spec_free(next);
        return NULL;
    }
    return next;
}

json_t *kh_config_nics_check(kh_manager *mgr, const char *name, const json_t *nics,
                              int removed, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    kh_vm_spec *next = nics_replaced(mgr, v, nics, removed, err);
    if (!next)
        return NULL;
    json_t *sj = kh_vm_spec_to_json(next);
    json_t *out = json_object_get(sj, "nics");
    out = out ? json_incref(out) : json_array();
    json_decref(sj);
    kh_vm_spec_free(next);
    return out;
}

int kh_config_nics_commit(kh_manager *mgr, const char *name, const json_t *nics, int removed,
                           kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return -1;
    if (v->state == KH_INST_STARTING || v->state == KH_INST_STOPPING) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: its NICs cannot change now", name,
                   kh_lifecycle_state_name(v->state));
        return -1;
    }
    kh_vm_spec *next = nics_replaced(mgr, v, nics, removed, err);
    if (!next)
        return -1;
    if (spec_store_swap(mgr, v, next, NULL, err) < 0)
        return -1;
    kh_bindings_sync(mgr);
    kh_events_publish(mgr->events, "vm.updated", name, kh_manager_json(v));
    return 0;
}
