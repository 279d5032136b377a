/* runtime.c - owns an instance's runtime files: the paths of its state dir
 * (STATE_DIR/vms/<id>: logs) and run dir (RUN_DIR/vms/<id>: sockets, pid,
 * boot.json, disks.json), the runtime fields of its store row, and the
 * removal of the run dir and cgroup once its process is gone. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "instance/instance_int.h"
#include "instance/vmuid.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"

char *kh_runtime_state_path(const kh_inst *v, const char *file)
{
    return xasprintf("%s/vms/%s%s%s", v->mgr->state_dir, v->id, file ? "/" : "", file ? file : "");
}

char *kh_runtime_run_path(const kh_inst *v, const char *file)
{
    return xasprintf("%s/vms/%s%s%s", v->mgr->run_dir, v->id, file ? "/" : "", file ? file : "");
}

void kh_runtime_persist(kh_inst *v)
{
    kh_vm_row row;
    memset(&row, 0, sizeof(row));
    memcpy(row.id, v->id, sizeof(row.id));
    row.state = (char *)(uintptr_t)kh_lifecycle_state_name(v->state);
    row.state_reason = v->reason;
    row.pid = v->pid;
    row.pid_start = v->pid_start;
    row.accel = v->pid > 0 ? (char *)(uintptr_t)kh_accel_name(v->accel) : NULL;
    row.started_at = v->started_at;
    kh_err err = KH_ERR_INIT;
    if (kh_store_vm_update_runtime(v->mgr->store, &row, &err) < 0)
        kh_log(KH_LOG_ERROR, "vm.persist", "vm=%s error=\"%s\"", v->spec->name, err.msg);
}

/* ---- disks.json: the QEMU node of each spec disk ---- */

void kh_runtime_disk_nodes_reset(kh_inst *v)
{
    for (int i = 0; i < KH_VM_DISKS_MAX; i++)
        v->disk_node[i] = i;
}

/* The node map a hot-plug left (disks.json), else the identity. */
void kh_runtime_disk_nodes_load(kh_inst *v)
{
    kh_runtime_disk_nodes_reset(v);
    char *path = kh_runtime_run_path(v, "disks.json");
    json_t *j = kh_fs_read_json(path, 65536, NULL);
    free(path);
    json_t *nodes = json_object_get(j, "nodes");
    if (json_is_array(nodes) && json_array_size(nodes) == v->spec->ndisks) {
        for (size_t i = 0; i < v->spec->ndisks; i++) {
            json_t *n = json_array_get(nodes, i);
            if (json_is_integer(n) && json_integer_value(n) >= 0 &&
                json_integer_value(n) < 1000)
                v->disk_node[i] = (int)json_integer_value(n);
        }
    } else if (j) {
        kh_log(KH_LOG_WARN, "vm.disks", "vm=%s disks.json does not match the spec",
               v->spec->name);
    }
    json_decref(j);
}

void kh_runtime_disk_nodes_save(kh_inst *v, const int *node)
{
    kh_runtime_disk_nodes_reset(v);
    json_t *arr = json_array();
    for (size_t i = 0; i < v->spec->ndisks; i++) {
        v->disk_node[i] = node[i];
        json_array_append_new(arr, json_integer(node[i]));
    }
    json_t *doc = json_pack("{s:o}", "nodes", arr);
    char *dtext = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *path = kh_runtime_run_path(v, "disks.json");
    kh_err werr = KH_ERR_INIT;
    if (kh_fs_write_replace(path, dtext, strlen(dtext), 0600, &werr) < 0)
        kh_log(KH_LOG_ERROR, "vm.disks", "vm=%s error=\"%s\"", v->spec->name, werr.msg);
    free(path);
    free(dtext);
}

/* ---- boot.json: what the process was started with ---- */

void kh_runtime_boot_reset(kh_inst *v)
{
    v->boot_disks = -1;
    v->boot_nics = -1;
    v->boot_cpu[0] = '\0';
}

bool kh_runtime_boot_has_mac(const kh_inst *v, const char *mac)
{
    for (int i = 0; mac && i < v->boot_nics; i++)
        if (strcmp(v->boot_macs[i], mac) == 0)
            return true;
    return false;
}

/* At start: what QEMU gets, in memory and in boot.json (boot_cpu set by
 * the driver). */
void kh_runtime_boot_record(kh_inst *v)
{
    v->boot_disks = (int)v->spec->ndisks;
    v->boot_nics = 0;
    json_t *macs = json_array();
    for (size_t i = 0; i < v->spec->nnics && i < KH_VM_NICS_MAX; i++) {
        const char *mac = v->spec->nics[i].mac ? v->spec->nics[i].mac : "";
        snprintf(v->boot_macs[v->boot_nics++], KH_MAC_STRLEN, "%s", mac);
        json_array_append_new(macs, json_string(mac));
    }
    json_t *doc = json_pack("{s:i, s:o, s:s}", "disks", v->boot_disks, "macs", macs, "cpu",
                            v->boot_cpu);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *path = kh_runtime_run_path(v, "boot.json");
    kh_err err = KH_ERR_INIT;
    if (kh_fs_write_replace(path, text, strlen(text), 0600, &err) < 0)
        kh_log(KH_LOG_ERROR, "vm.boot", "vm=%s error=\"%s\"", v->spec->name, err.msg);
    free(path);
    free(text);
}

/* After a daemon restart: boot.json, else unknown. */
void kh_runtime_boot_load(kh_inst *v)
{
    kh_runtime_boot_reset(v);
    char *path = kh_runtime_run_path(v, "boot.json");
    json_t *j = kh_fs_read_json(path, 65536, NULL);
    free(path);
    json_t *d = json_object_get(j, "disks"), *macs = json_object_get(j, "macs");
    if (json_is_integer(d) && json_integer_value(d) >= 0 &&
        json_integer_value(d) <= KH_VM_DISKS_MAX && json_is_array(macs) &&
        json_array_size(macs) <= KH_VM_NICS_MAX) {
        v->boot_disks = (int)json_integer_value(d);
        v->boot_nics = 0;
        size_t i;
        json_t *m;
        json_array_foreach(macs, i, m)
            snprintf(v->boot_macs[v->boot_nics++], KH_MAC_STRLEN, "%s",
                     json_string_value(m) ? json_string_value(m) : "");
        const char *cpu = json_string_value(json_object_get(j, "cpu"));
        snprintf(v->boot_cpu, sizeof(v->boot_cpu), "%s", cpu ? cpu : "");
    }
    json_decref(j);
}

/* ---- logs, run dir, cgroup ---- */

/* The last lines of qemu.log, for error messages. */
char *kh_runtime_log_tail(const kh_inst *v)
{
    char *path = kh_runtime_state_path(v, "qemu.log");
    size_t len = 0;
    kh_err err = KH_ERR_INIT;
    char *text = kh_console_log_read(path, 300, &len, &err);
    free(path);
    if (!text)
        return xstrdup("");
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    for (size_t n = strlen(text); n && text[n - 1] == ' '; n--)
        text[n - 1] = '\0';
    return text;
}

void kh_runtime_clear(kh_inst *v)
{
    char *run = kh_runtime_run_path(v, NULL);
    kh_fs_rm_rf(run, NULL);
    free(run);
}

void kh_runtime_cgroup_remove(kh_inst *v)
{
    const kh_cgroups *cg = v->mgr->cfg.cgroups;
    kh_err err = KH_ERR_INIT;
    if (cg && cg->version && kh_cgroups_vm_remove(cg, v->id, &err) < 0)
        kh_log(KH_LOG_WARN, "vm.cgroup", "vm=%s error=\"%s\"", v->spec->name, err.msg);
}

/* QEMU's copy of the live-migration TLS files (tls-creds-x509's layout,
 * made by cluster/pki.c in src) in its own run dir: the only part of the
 * daemon's directories its mount namespace sees, owned by the VM's uid so
 * that no other VM's QEMU can read the host key. */
char *kh_runtime_qemu_tls(kh_inst *v, const char *src, kh_err *err)
{
    static const char *const files[] = { "ca-cert.pem", "server-cert.pem", "server-key.pem",
                                         "client-cert.pem", "client-key.pem" };
    char *dir = kh_runtime_run_path(v, KH_RUNTIME_QEMU_DIR "/tls");
    kh_vmuid_identity id = { 0 };
    bool chown_it = v->mgr->cfg.drop_privileges;
    if ((chown_it && kh_vmuid_identity_get(v->mgr, v->id, &id, err) < 0) ||
        kh_fs_mkdir_p(dir, 0700, err) < 0)
        goto fail;
    if (chown_it && chown(dir, id.uid, id.gid) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "chown %s", dir);
        goto fail;
    }
    for (size_t i = 0; i < KH_ARRAY_LEN(files); i++) {
        char *from = xasprintf("%s/%s", src, files[i]), *to = xasprintf("%s/%s", dir, files[i]);
        char *pem = kh_fs_read(from, 1 << 20, NULL, err);
        int rc = pem ? kh_fs_write_atomic(to, pem, strlen(pem), 0600, err) : -1;
        if (rc == 0 && chown_it && chown(to, id.uid, id.gid) < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "chown %s", to);
            rc = -1;
        }
        free(pem);
        free(from);
        free(to);
        if (rc < 0)
            goto fail;
    }
    return dir;
fail:
    free(dir);
    return NULL;
}
