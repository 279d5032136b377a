/* manager.c - owns the registry of the instances of this host: loading
 * them from the store at start (then reattach), lookups by name and id,
 * the JSON view (the spec plus runtime facts: state, pid, hot-plugged
 * devices, each NIC's known addresses), and the ways in for observers
 * (foreach, counts, console, monitor commands, event hooks). Actions are in lifecycle.c, create,
 * patch and delete in config.c. */
#include "instance/manager.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "instance/instance_int.h"
#include "instance/migrate.h"
#include "qemu/driver.h"
#include "util/check.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

kh_inst *kh_manager_find(kh_manager *mgr, const char *name, kh_err *err)
{
    if (kh_check_name(name, "vm name", err) < 0)
        return NULL;
    for (kh_inst *v = mgr->vms; v; v = v->next)
        if (strcmp(v->spec->name, name) == 0)
            return v;
    kh_err_set(err, KH_E_NOTFOUND, "no vm named %s", name);
    return NULL;
}

kh_inst *kh_manager_find_id(kh_manager *mgr, const char *id)
{
    for (kh_inst *v = mgr->vms; v; v = v->next)
        if (strcmp(v->id, id) == 0)
            return v;
    return NULL;
}

/* ---- the JSON view ---- */

static json_t *time_json(double t)
{
    if (t <= 0)
        return json_null();
    char s[32];
    kh_time_format(t, s);
    return json_string(s);
}

/* "hotplugged" on each disk and NIC while a QEMU runs and boot.json says
 * what it started with: true for what can be unplugged live. Runtime only,
 * never part of the stored spec. */
static void hotplugged_json(const kh_inst *v, json_t *j)
{
    if (v->pid <= 0)
        return;
    json_t *disks = json_object_get(j, "disks");
    for (size_t i = 0; v->boot_disks >= 0 && i < v->spec->ndisks && i < KH_VM_DISKS_MAX; i++)
        json_object_set_new(json_array_get(disks, i), "hotplugged",
                            json_boolean(v->disk_node[i] >= v->boot_disks));
    json_t *nics = json_object_get(j, "nics");
    for (size_t i = 0; v->boot_nics >= 0 && i < v->spec->nnics; i++)
        json_object_set_new(json_array_get(nics, i), "hotplugged",
                            json_boolean(!kh_runtime_boot_has_mac(v, v->spec->nics[i].mac)));
}

/* Each NIC's read-only "addresses": what the network manager knows for its
 * MAC (its reservation and current DHCPv4 leases); absent when it knows
 * none, so a NIC reads back as it was given. Not part of the spec. */
static void addresses_json(const kh_inst *v, json_t *j)
{
    kh_netmgr *net = v->mgr->cfg.net;
    if (!net)
        return;
    size_t i;
    json_t *nic;
    json_array_foreach(json_object_get(j, "nics"), i, nic) {
        const char *mac = json_string_value(json_object_get(nic, "mac"));
        if (!mac)
            continue;
        json_t *addrs =
            kh_netmgr_addresses_of(net, json_string_value(json_object_get(nic, "network")), mac);
        if (json_array_size(addrs) > 0)
            json_object_set_new(nic, "addresses", addrs);
        else
            json_decref(addrs);
    }
}

json_t *kh_manager_json(const kh_inst *v)
{
    json_t *j = kh_vm_spec_to_json(v->spec);
    hotplugged_json(v, j);
    addresses_json(v, j);
    json_object_set_new(j, "id", json_string(v->id));
    json_object_set_new(j, "state", json_string(kh_lifecycle_state_name(v->state)));
    json_object_set_new(j, "state_reason", v->reason ? json_string(v->reason) : json_null());
    json_object_set_new(j, "pid", v->pid > 0 ? json_integer(v->pid) : json_null());
    json_object_set_new(j, "accelerator",
                        v->pid > 0 ? json_string(kh_accel_name(v->accel)) : json_null());
    json_object_set_new(j, "created_at", time_json(v->created_at));
    json_object_set_new(j, "updated_at", time_json(v->updated_at));
    json_object_set_new(j, "started_at", v->pid > 0 ? time_json(v->started_at) : json_null());
    json_object_set_new(j, "console_viewers",
                        json_integer(v->console ? kh_console_viewer_count(v->console) : 0));
    json_object_set_new(j, "template",
                        json_boolean(kh_storage_is_template(v->mgr->cfg.storage, v->id)));
    if (v->guest && v->pid > 0)
        json_object_set(j, "guest", v->guest);
    return j;
}

void kh_manager_set_cluster(kh_manager *mgr, const kh_manager_cluster_ops *ops, void *opaque)
{
    mgr->cluster = ops;
    mgr->cluster_opaque = opaque;
}

void kh_manager_cluster_changed(const kh_inst *v)
{
    if (!v->mgr->cluster || !v->mgr->cluster->changed)
        return;
    json_t *j = kh_manager_json(v);
    v->mgr->cluster->changed(v->mgr->cluster_opaque, v->id, j);
    json_decref(j);
}

json_t *kh_manager_list_json(kh_manager *mgr)
{
    json_t *arr = json_array();
    for (kh_inst *v = mgr->vms; v; v = v->next)
        json_array_append_new(arr, kh_manager_json(v));
    return arr;
}

json_t *kh_manager_vm_json(kh_manager *mgr, const char *name, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    return v ? kh_manager_json(v) : NULL;
}

/* ---- the registry ---- */

kh_inst *kh_manager_add(kh_manager *mgr, const char *id, kh_vm_spec *spec)
{
    kh_inst *v = xcalloc(1, sizeof(*v));
    v->mgr = mgr;
    v->drv = mgr->driver;
    snprintf(v->id, sizeof(v->id), "%s", id);
    v->spec = spec;
    v->pidfd = -1;
    kh_runtime_disk_nodes_reset(v);
    kh_runtime_boot_reset(v);
    /* Keep the list in name order. */
    kh_inst **pp = &mgr->vms;
    while (*pp && strcmp((*pp)->spec->name, spec->name) < 0)
        pp = &(*pp)->next;
    v->next = *pp;
    *pp = v;
    mgr->count++;
    return v;
}

static void nbd_backing_drop(kh_inst *v)
{
    if (!v->nbd_backing)
        return;
    for (size_t i = 0; i < KH_VM_DISKS_MAX; i++)
        if (v->nbd_backing[i] >= 0)
            close(v->nbd_backing[i]);
    free(v->nbd_backing);
    v->nbd_backing = NULL;
}

void kh_manager_inst_free(kh_inst *v)
{
    kh_lifecycle_release(v);
    kh_vm_spec_free(v->spec);
    free(v->reason);
    free(v->going_down);
    free(v->start_err);
    free(v->stop_forced);
    free(v->incoming_host);
    free(v->incoming_tls_dir);
    nbd_backing_drop(v);
    kh_jsontext_free(v->jtext);
    free(v);
}

void kh_manager_unlink(kh_manager *mgr, kh_inst *v)
{
    for (kh_inst **pp = &mgr->vms; *pp; pp = &(*pp)->next) {
        if (*pp == v) {
            *pp = v->next;
            break;
        }
    }
    mgr->count--;
}

static int load_row(const kh_vm_row *row, void *opaque)
{
    kh_manager *mgr = opaque;
    kh_err err = KH_ERR_INIT;
    json_t *j = json_loads(row->spec_json, 0, NULL);
    kh_vm_spec *spec = j ? kh_vm_spec_from_json(j, &err) : NULL;
    json_decref(j);
    if (!spec) {
        kh_log(KH_LOG_ERROR, "vm.load", "id=%s error=\"%s\"", row->id,
               err.msg[0] ? err.msg : "unreadable spec");
        return 0;
    }
    kh_inst *v = kh_manager_add(mgr, row->id, spec);
    for (int s = 0; s < KH_INST_STATES; s++)
        if (row->state && strcmp(row->state, kh_lifecycle_state_name((kh_inst_state)s)) == 0)
            v->state = (kh_inst_state)s;
    v->reason = xstrdup(row->state_reason);
    v->pid = (pid_t)row->pid;
    v->pid_start = row->pid_start;
    v->accel = row->accel && strcmp(row->accel, "kvm") == 0 ? KH_ACCEL_KVM : KH_ACCEL_TCG;
    v->created_at = row->created_at;
    v->updated_at = row->updated_at;
    v->started_at = row->started_at;
    return 0;
}

kh_manager *kh_manager_new(uv_loop_t *loop, kh_store *store, kh_events *events,
                           kh_tasks *tasks, const kh_manager_config *cfg, kh_err *err)
{
    kh_manager *mgr = xcalloc(1, sizeof(*mgr));
    mgr->loop = loop;
    mgr->store = store;
    mgr->events = events;
    mgr->tasks = tasks;
    mgr->cfg = *cfg;
    mgr->driver = &kh_qemu_driver;
    if (!mgr->cfg.start_timeout_ms)
        mgr->cfg.start_timeout_ms = 30000;
    mgr->state_dir = xstrdup(cfg->state_dir);
    mgr->run_dir = xstrdup(cfg->run_dir);
    mgr->qemu_binary = xstrdup(cfg->qemu_binary);
    mgr->kernel_cache = xasprintf("%s/cache/kernels", cfg->state_dir);
    if (cfg->ngroups) {
        mgr->groups = xcalloc(cfg->ngroups, sizeof(gid_t));
        memcpy(mgr->groups, cfg->groups, cfg->ngroups * sizeof(gid_t));
    }
    mgr->cfg.state_dir = mgr->state_dir;
    mgr->cfg.run_dir = mgr->run_dir;
    mgr->cfg.qemu_binary = mgr->qemu_binary;
    mgr->cfg.groups = mgr->groups;

    char *vms_dir = xasprintf("%s/vms", mgr->run_dir);
    int rc = kh_fs_mkdir_p(vms_dir, 0711, err);
    if (rc == 0 && chmod(vms_dir, 0711) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "chmod %s", vms_dir);
        rc = -1;
    }
    free(vms_dir);
    if (rc < 0 || mgr->driver->init(mgr, err) < 0 ||
        kh_store_vm_foreach(store, load_row, mgr, err) < 0) {
        kh_manager_free(mgr);
        return NULL;
    }
    for (kh_inst *v = mgr->vms; v; v = v->next)
        kh_reattach(v);
    kh_bindings_attach(mgr);
    kh_bindings_sync(mgr);
    kh_guest_poll_start(mgr);
    return mgr;
}

void kh_manager_free(kh_manager *mgr)
{
    if (!mgr)
        return;
    kh_bindings_detach(mgr);
    kh_guest_poll_stop(mgr);
    kh_migrate_shutdown(mgr); /* its timers, before the VMs go */
    for (kh_inst *v = mgr->vms, *n; v; v = n) {
        n = v->next;
        /* Tasks in flight end with the daemon; the store marks them failed
         * at the next start. QEMU keeps running. */
        kh_manager_inst_free(v);
    }
    mgr->driver->fini(mgr);
    free(mgr->state_dir);
    free(mgr->run_dir);
    free(mgr->qemu_binary);
    free(mgr->kernel_cache);
    free(mgr->groups);
    free(mgr);
}

/* ---- for observers ---- */

kh_console *kh_manager_console(kh_manager *mgr, const char *name, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    if (!v->console || v->pid <= 0) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has no console now: it is %s%s", name,
                   kh_lifecycle_state_name(v->state), v->spec->serial ? "" : " (serial is off)");
        return NULL;
    }
    return v->console;
}

char *kh_manager_console_log(kh_manager *mgr, const char *name, size_t tail, size_t *len,
                             kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    char *path = kh_runtime_state_path(v, "console.log");
    char *text = kh_console_log_read(path, tail, len, err);
    free(path);
    return text;
}

char *kh_manager_qemu_file(kh_manager *mgr, const char *id, const char *file)
{
    kh_inst *v = kh_manager_find_id(mgr, id);
    return v && v->pid > 0 ? kh_runtime_run_path(v, file) : NULL;
}

char *kh_manager_state_file(kh_manager *mgr, const char *id, const char *file)
{
    return xasprintf("%s/vms/%s%s%s", mgr->cfg.state_dir, id, file ? "/" : "", file ? file : "");
}

char *kh_manager_vnc_path(kh_manager *mgr, const char *name, kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (!v)
        return NULL;
    if (v->spec->graphics != KH_GRAPHICS_VNC) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has no display (graphics is \"none\")", name);
        return NULL;
    }
    if (v->pid <= 0 || (v->state != KH_INST_RUNNING && v->state != KH_INST_PAUSED)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has no display now: it is %s", name,
                   kh_lifecycle_state_name(v->state));
        return NULL;
    }
    char *path = kh_runtime_run_path(v, KH_RUNTIME_QEMU_DIR "/vnc.sock");
    if (access(path, F_OK) < 0) {
        /* a QEMU started by an older daemon has it in the run dir itself */
        char *old = kh_runtime_run_path(v, "vnc.sock");
        if (access(old, F_OK) == 0) {
            free(path);
            return old;
        }
        free(old);
    }
    return path;
}

void kh_manager_counts(const kh_manager *mgr, unsigned *total, unsigned *running)
{
    *total = mgr->count;
    *running = 0;
    for (const kh_inst *v = mgr->vms; v; v = v->next)
        *running += v->state == KH_INST_RUNNING || v->state == KH_INST_PAUSED;
}

void kh_manager_foreach(kh_manager *mgr, kh_manager_vm_fn fn, void *opaque)
{
    for (const kh_inst *v = mgr->vms; v; v = v->next) {
        bool monitor = v->drv->monitor_ready(v);
        kh_vm_info info = {
            .name = v->spec->name,
            .id = v->id,
            .state = kh_lifecycle_state_name(v->state),
            .pid = v->pid,
            .started_at = v->pid > 0 ? v->started_at : 0,
            .spec = v->spec,
            .qmp_ready = monitor && (v->state == KH_INST_RUNNING || v->state == KH_INST_PAUSED),
            .qmp_rtt_us = monitor ? v->drv->monitor_rtt_us(v) : 0,
        };
        fn(&info, opaque);
    }
}

int kh_manager_qmp(kh_manager *mgr, const char *id, const char *command, json_t *args,
                   kh_qmp_reply_cb cb, void *opaque, kh_err *err)
{
    kh_inst *v = kh_manager_find_id(mgr, id);
    if (!v) {
        json_decref(args);
        kh_err_set(err, KH_E_NOTFOUND, "no vm with id %s", id);
        return -1;
    }
    if (!v->drv->monitor_ready(v) ||
        (v->state != KH_INST_RUNNING && v->state != KH_INST_PAUSED)) {
        json_decref(args);
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s", v->spec->name,
                   kh_lifecycle_state_name(v->state));
        return -1;
    }
    return v->drv->command(v, command, args, -1, cb, opaque, err);
}

int kh_manager_qmp_fd(kh_manager *mgr, const char *id, const char *command, json_t *args,
                      int fd, kh_qmp_reply_cb cb, void *opaque, kh_err *err)
{
    kh_inst *v = kh_manager_find_id(mgr, id);
    if (!v || !v->drv->monitor_ready(v) ||
        (v->state != KH_INST_RUNNING && v->state != KH_INST_PAUSED)) {
        json_decref(args);
        if (fd >= 0)
            close(fd);
        kh_err_set(err, KH_E_CONFLICT, "vm %s is not running", v ? v->spec->name : id);
        return -1;
    }
    return v->drv->command(v, command, args, fd, cb, opaque, err);
}

int kh_manager_add_event_hook(kh_manager *mgr, kh_manager_event_fn fn, void *opaque)
{
    for (size_t i = 0; i < KH_MANAGER_EVENT_HOOKS; i++) {
        if (!mgr->event_hooks[i].fn) {
            mgr->event_hooks[i].fn = fn;
            mgr->event_hooks[i].opaque = opaque;
            return 0;
        }
    }
    return -1;
}

void kh_manager_remove_event_hook(kh_manager *mgr, kh_manager_event_fn fn, void *opaque)
{
    for (size_t i = 0; i < KH_MANAGER_EVENT_HOOKS; i++)
        if (mgr->event_hooks[i].fn == fn && mgr->event_hooks[i].opaque == opaque)
            mgr->event_hooks[i].fn = NULL;
}

void kh_manager_hooks_call(kh_inst *v, const char *event, json_t *data)
{
    for (size_t i = 0; i < KH_MANAGER_EVENT_HOOKS; i++)
        if (v->mgr->event_hooks[i].fn)
            v->mgr->event_hooks[i].fn(v->mgr->event_hooks[i].opaque, v->id, event, data);
}

int kh_manager_disk_node(kh_manager *mgr, const char *id, size_t i)
{
    kh_inst *v = kh_manager_find_id(mgr, id);
    return v && i < KH_VM_DISKS_MAX ? v->disk_node[i] : (int)i;
}

int kh_manager_nbd_backing(kh_manager *mgr, const char *name, const int *fds, size_t n,
                           kh_err *err)
{
    kh_inst *v = kh_manager_find(mgr, name, err);
    if (v)
        nbd_backing_drop(v);
    if (!fds)
        return v ? 0 : -1;
    if (!v || n > KH_VM_DISKS_MAX) {
        for (size_t i = 0; i < n; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        if (v)
            kh_err_set(err, KH_E_INVALID, "too many disks");
        return -1;
    }
    v->nbd_backing = xcalloc(KH_VM_DISKS_MAX, sizeof(int));
    for (size_t i = 0; i < KH_VM_DISKS_MAX; i++)
        v->nbd_backing[i] = i < n ? fds[i] : -1;
    return 0;
}

json_t *kh_manager_volume_users(kh_manager *mgr, const char *ref)
{
    return kh_bindings_volume_users(mgr, ref);
}
