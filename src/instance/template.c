/* template.c - templates (stopped VMs whose volumes become read-only bases)
 * and clones of them: the clone's spec from the template's, a volume per
 * writable disk, then the VM. */
#include "instance/template.h"

#include "instance/config.h"
#include "instance/vmuid.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/schema.h"
#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

json_t *kh_template_make(kh_manager *mgr, kh_storage *st, const char *name, bool reset_identity,
                         kh_err *err)
{
    json_t *vm = kh_manager_vm_json(mgr, name, err);
    if (!vm)
        return NULL;
    json_t *out = NULL;
    const char *state = json_string_value(json_object_get(vm, "state"));
    json_t *disks = json_object_get(vm, "disks");
    size_t i;
    json_t *d;
    if (!st) {
        kh_err_set(err, KH_E_UNAVAILABLE, "storage is not available");
        goto done;
    }
    if (json_is_true(json_object_get(vm, "template"))) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is already a template", name);
        goto done;
    }
    if (!state || strcmp(state, "stopped") != 0) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: stop it before making it a template", name,
                   state ? state : "busy");
        goto done;
    }
    if (json_array_size(disks) == 0) {
        kh_err_set(err, KH_E_INVALID, "vm %s has no disks to make bases of", name);
        goto done;
    }
    json_array_foreach(disks, i, d) {
        if (!json_object_get(d, "volume")) {
            kh_err_set(err, KH_E_INVALID,
                       "disks[%zu] is a host file; only volumes can become template bases", i);
            goto done;
        }
    }
    /* A volume some running VM writes to cannot become a base. */
    json_array_foreach(disks, i, d) {
        const char *ref = json_string_value(json_object_get(d, "volume"));
        kh_volume_chain c;
        if (kh_storage_resolve(st, ref, &c, err) < 0)
            goto done;
        kh_volume_chain_clear(&c);
    }
    if (reset_identity) {
        /* before anything is marked: a failure leaves the VM as it was */
        uint64_t t0 = kh_now_ms();
        unsigned keys = 0;
        int found = 0;
        json_array_foreach(disks, i, d) {
            if (json_is_true(json_object_get(d, "readonly")))
                continue; /* shared, not the template's own */
            int rc = kh_storage_identity_reset(st, json_string_value(json_object_get(d, "volume")),
                                               &keys, err);
            if (rc < 0) {
                kh_err_prefix(err, "reset_identity: disks[%zu]", i);
                goto done;
            }
            found += rc;
        }
        if (!found) {
            kh_err_set(err, KH_E_INVALID,
                       "reset_identity: no ext2/3/4 filesystem with /etc on the writable disks "
                       "of vm %s; reset it in the guest, or make the template without it", name);
            goto done;
        }
        kh_log(KH_LOG_INFO, "template.identity", "vm=%s filesystems=%d ssh_host_keys=%u ms=%llu",
               name, found, keys, (unsigned long long)(kh_now_ms() - t0));
    }
    uid_t vm_uid = kh_vmuid_lookup(mgr, json_string_value(json_object_get(vm, "id")));
    json_array_foreach(disks, i, d) {
        if (json_is_true(json_object_get(d, "readonly")))
            continue; /* shared as it is */
        const char *ref = json_string_value(json_object_get(d, "volume"));
        if (kh_storage_volume_set_readonly(st, ref, true, err) < 0)
            goto done;
        /* a base is no VM's own: back to root, so no VM uid can write it
         * (clones read it through the fd the daemon passes) */
        kh_volume_chain c;
        if (vm_uid && kh_storage_resolve(st, ref, &c, NULL) == 0) {
            kh_vmuid_disown_path(vm_uid, c.layer[0].path);
            kh_volume_chain_clear(&c);
        }
    }
    if (kh_storage_template_mark(st, json_string_value(json_object_get(vm, "id")), err) < 0)
        goto done;
    kh_log(KH_LOG_INFO, "template.create", "vm=%s", name);
    out = kh_manager_vm_json(mgr, name, err);
done:
    json_decref(vm);
    return out;
}

json_t *kh_template_list(kh_manager *mgr)
{
    json_t *all = kh_manager_list_json(mgr), *out = json_array();
    size_t i;
    json_t *vm;
    json_array_foreach(all, i, vm) {
        if (json_is_true(json_object_get(vm, "template")))
            json_array_append(out, vm);
    }
    json_decref(all);
    return out;
}

/* ---- clones ---- */

typedef struct clone_op {
    kh_manager *mgr;
    kh_storage *st;
    kh_task *task;          /* full clones */
    kh_template_clone_cb cb;
    void *opaque;
    char *name;
    bool full;
    json_t *spec;           /* the new VM's spec, disks filled in as volumes are made */
    json_t *tdisks;         /* the template's disks */
    size_t next;            /* the disk being made */
    kh_strv *made;          /* refs of volumes made, for the clean-up */
} clone_op;

static void clone_free(clone_op *c)
{
    free(c->name);
    json_decref(c->spec);
    json_decref(c->tdisks);
    kh_strv_free(c->made);
    free(c);
}

static void clone_finish(clone_op *c, json_t *vm, const kh_err *err)
{
    if (!vm) {
        /* nothing half-made stays: the volumes made so far go */
        for (size_t i = 0; i < c->made->n; i++) {
            const char *ref = c->made->v[i];
            const char *slash = strchr(ref, '/');
            char *pool = xstrndup(ref, (size_t)(slash - ref));
            kh_storage_volume_delete(c->st, pool, slash + 1, NULL);
            free(pool);
        }
        kh_log(KH_LOG_WARN, "template.clone", "vm=%s error=\"%s\"", c->name, err->msg);
    } else {
        kh_log(KH_LOG_INFO, "template.clone", "vm=%s mode=%s", c->name,
               c->full ? "full" : "linked");
    }
    if (c->task) {
        if (vm)
            kh_task_succeed(c->task, vm);
        else
            kh_task_fail(c->task, err);
    } else {
        c->cb(vm, err, c->opaque);
    }
    clone_free(c);
}

static void clone_step(clone_op *c);

static void on_volume(json_t *vol, const kh_err *err, void *opaque)
{
    clone_op *c = opaque;
    if (!vol) {
        kh_err e = KH_ERR_INIT;
        kh_err_copy(&e, err);
        kh_err_prefix(&e, "disks[%zu]", c->next);
        clone_finish(c, NULL, &e);
        return;
    }
    const char *ref = json_string_value(json_object_get(vol, "ref"));
    kh_strv_add(c->made, ref);
    json_array_append_new(json_object_get(c->spec, "disks"),
                          json_pack("{s:s, s:b}", "volume", ref, "readonly", 0));
    json_decref(vol);
    c->next++;
    clone_step(c);
}

static void on_progress(int percent, void *opaque)
{
    clone_op *c = opaque;
    size_t n = json_array_size(c->tdisks);
    int overall = (int)((c->next * 100 + (size_t)percent) / (n ? n : 1));
    if (c->task)
        kh_task_progress(c->task, overall > 99 ? 99 : overall, "copying the volumes");
}

static void on_created(void *opaque, json_t *vm, const kh_err *err)
{
    clone_finish(opaque, vm, err);
}

static void clone_step(clone_op *c)
{
    kh_err err = KH_ERR_INIT;
    while (c->next < json_array_size(c->tdisks)) {
        json_t *d = json_array_get(c->tdisks, c->next);
        const char *ref = json_string_value(json_object_get(d, "volume"));
        if (json_is_true(json_object_get(d, "readonly"))) {
            json_array_append(json_object_get(c->spec, "disks"), d);
            c->next++;
            continue;
        }
        char *vname = xasprintf("%s-disk%zu", c->name, c->next);
        int rc;
        if (c->full) {
            rc = kh_storage_volume_copy(c->st, ref, vname, on_progress, on_volume, c, &err);
        } else {
            const char *slash = strchr(ref, '/');
            char *pool = xstrndup(ref, (size_t)(slash - ref));
            json_t *body = json_pack("{s:s, s:s}", "name", vname, "backing", ref);
            rc = kh_storage_volume_create(c->st, pool, body, on_volume, c, &err);
            json_decref(body);
            free(pool);
        }
        free(vname);
        if (rc < 0) {
            kh_err_prefix(&err, "disks[%zu]", c->next);
            clone_finish(c, NULL, &err);
        }
        return; /* on_volume goes on */
    }
    /* the cluster claim (an etcd txn) is answered off the loop */
    if (kh_config_create_async(c->mgr, c->spec, on_created, c, &err) < 0)
        clone_finish(c, NULL, &err);
}

/* The new VM's spec: everything of the template's a clone should have, with
 * the request's fields over it. NICs get new MACs (kh_config_create makes
 * them) and no static ip (the template's reservation is the template's);
 * network, security groups and link stay. */
static json_t *clone_spec(const json_t *t, const json_t *body)
{
    static const char *const copy_keys[] = { "vcpus",  "max_vcpus", "hugepages", "memory_mib",
                                             "machine", "boot",     "serial",    "graphics",
                                             "description", "limits", "nics" };
    json_t *spec = json_object();
    for (size_t i = 0; i < KH_ARRAY_LEN(copy_keys); i++) {
        json_t *v = json_object_get(body, copy_keys[i]);
        if (!v)
            v = json_object_get(t, copy_keys[i]);
        if (v && !json_is_null(v))
            json_object_set_new(spec, copy_keys[i], json_deep_copy(v));
    }
    if (!json_object_get(body, "nics")) {
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(spec, "nics"), i, n) {
            static const char *const drop[] = { "mac", "ip", "hotplugged", "addresses" };
            for (size_t k = 0; k < KH_ARRAY_LEN(drop); k++)
                json_object_del(n, drop[k]);
        }
    } else if (!json_object_get(body, "limits")) {
        /* the template's per-NIC limits only for NICs the clone has */
        json_t *nl = json_object_get(json_object_get(spec, "limits"), "nic");
        size_t nn = json_array_size(json_object_get(spec, "nics"));
        for (size_t i = json_array_size(nl); i-- > 0;) {
            json_int_t idx = json_integer_value(json_object_get(json_array_get(nl, i), "index"));
            if (idx < 0 || (size_t)idx >= nn)
                json_array_remove(nl, i);
        }
    }
    /* more vCPUs than the template's max_vcpus: the max follows */
    json_t *bv = json_object_get(body, "vcpus"), *mx = json_object_get(spec, "max_vcpus");
    if (bv && mx && !json_object_get(body, "max_vcpus") &&
        json_integer_value(mx) < json_integer_value(bv))
        json_object_del(spec, "max_vcpus");
    return spec;
}

int kh_template_clone(kh_manager *mgr, kh_storage *st, kh_tasks *tasks, const json_t *body,
                      kh_template_clone_cb cb, void *opaque, kh_task **task, kh_err *err)
{
    /* CloneSpec.json: the template gives everything else */
    if (kh_schema_check("CloneSpec", body, "", err) < 0)
        return -1;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *tpl = json_string_value(json_object_get(body, "from_template"));
    json_t *jmode = json_object_get(body, "clone");
    const char *mode = jmode ? json_string_value(jmode) : "linked";
    if (kh_check_name(name, "name", err) < 0 || kh_check_name(tpl, "from_template", err) < 0)
        return -1;
    if (!mode || (strcmp(mode, "linked") != 0 && strcmp(mode, "full") != 0)) {
        kh_err_set(err, KH_E_INVALID, "clone: must be \"linked\" or \"full\"");
        return -1;
    }
    if (!st) {
        kh_err_set(err, KH_E_UNAVAILABLE, "storage is not available");
        return -1;
    }
    kh_err nerr = KH_ERR_INIT;
    json_t *exists = kh_manager_vm_json(mgr, name, &nerr);
    if (exists) {
        json_decref(exists);
        kh_err_set(err, KH_E_CONFLICT, "a vm named %s already exists", name);
        return -1;
    }
    json_t *t = kh_manager_vm_json(mgr, tpl, err);
    if (!t) {
        if (err && err->code == KH_E_NOTFOUND)
            err->code = KH_E_INVALID;
        return -1;
    }
    if (!json_is_true(json_object_get(t, "template"))) {
        kh_err_set(err, KH_E_INVALID, "from_template: vm %s is not a template", tpl);
        json_decref(t);
        return -1;
    }
    json_t *spec = clone_spec(t, body);
    json_t *boot = json_object_get(spec, "boot");
    if (json_is_object(boot) && json_object_size(boot) == 0)
        json_object_del(spec, "boot");
    json_object_set_new(spec, "name", json_string(name));
    json_object_set_new(spec, "disks", json_array());

    clone_op *c = xcalloc(1, sizeof(*c));
    c->mgr = mgr;
    c->st = st;
    c->cb = cb;
    c->opaque = opaque;
    c->name = xstrdup(name);
    c->full = strcmp(mode, "full") == 0;
    c->spec = spec;
    c->tdisks = json_incref(json_object_get(t, "disks"));
    c->made = kh_strv_new();
    json_decref(t);
    if (c->full) {
        c->task = kh_task_new(tasks, "clone", name);
        kh_task_progress(c->task, 0, "copying the volumes");
        *task = c->task;
    } else {
        *task = NULL;
    }
    clone_step(c);
    return 0;
}
