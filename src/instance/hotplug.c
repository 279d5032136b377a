/* hotplug.c - vCPU hot-plug and unplug over QMP (hotplug.h). */
#include "instance/hotplug.h"

#include "instance/config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/limits.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

#define POLL_MS 250
#define SLOTS_MAX 256

typedef enum { PH_FIRST, PH_ADDED, PH_REMOVING } phase;

typedef struct job {
    kh_manager *mgr;
    pid_t pid;
    bool tcg;
    uv_timer_t timer;
    char id[37];
    char name[80];
    unsigned target;
    double deadline;
    kh_hotplug_cb cb;
    void *opaque;
    phase ph;
    int pending;      /* device_add/device_del replies outstanding */
    int present;      /* from the last query, -1 = unknown */
    bool unplug_sent; /* a device_del went to QEMU */
    kh_err err;       /* the first failure */
    bool done;
    struct job *next;
} job;

static job *jobs; /* changes under way, one per VM (loop thread only) */

/* QEMUs under TCG that had a vCPU unplugged carry a mark: QEMU 7.2 crashes
 * (SIGSEGV) at the next device_add into such a process, so hot-plug of any
 * device is refused until the VM restarts. The mark is a file in the
 * QEMU's run dir: it survives a daemon restart and goes with the QEMU. */
#define SCAR_FILE "vcpu-unplugged"

typedef struct find_ctx {
    const char *name;
    bool found, running, q35;
    char id[37];
    pid_t pid;
    unsigned vcpus, max, cpu_max_percent;
} find_ctx;

static void find_vm(const kh_vm_info *info, void *opaque)
{
    find_ctx *c = opaque;
    if (strcmp(info->name, c->name) != 0)
        return;
    c->found = true;
    c->running = info->qmp_ready && info->pid > 0;
    c->q35 = info->spec->machine == KH_MACHINE_Q35;
    c->pid = info->pid;
    snprintf(c->id, sizeof(c->id), "%s", info->id);
    c->vcpus = info->spec->vcpus;
    c->max = info->spec->max_vcpus ? info->spec->max_vcpus : info->spec->vcpus;
    c->cpu_max_percent = info->spec->limits ? info->spec->limits->cpu_max_percent : 0;
}

static void job_closed(uv_handle_t *h)
{
    free(h->data);
}

static void finish(job *j)
{
    if (j->done)
        return;
    j->done = true;
    for (job **pp = &jobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    }
    if (j->tcg && j->unplug_sent) {
        char *mark = kh_manager_qemu_file(j->mgr, j->id, SCAR_FILE);
        kh_err me = KH_ERR_INIT;
        if (mark && kh_fs_write_atomic(mark, "", 0, 0600, &me) < 0)
            kh_log(KH_LOG_WARN, "vm.vcpus", "vm=%s error=\"%s\"", j->name, me.msg);
        free(mark);
    }
    json_t *vm = NULL;
    kh_err e2 = KH_ERR_INIT;
    if (j->present > 0)
        vm = kh_config_set_live_vcpus(j->mgr, j->id, (unsigned)j->present, &e2);
    if (j->err.code == KH_OK && j->present != (int)j->target)
        kh_err_set(&j->err, KH_E_QEMU, "vm %s has %d vCPUs, not %u", j->name, j->present,
                   j->target);
    if (j->err.code == KH_OK && !vm)
        j->err = e2;
    if (j->err.code != KH_OK) {
        kh_log(KH_LOG_WARN, "vm.vcpus_failed", "vm=%s target=%u present=%d error=\"%s\"",
               j->name, j->target, j->present, j->err.msg);
        json_decref(vm);
        j->cb(NULL, &j->err, j->opaque);
    } else {
        j->cb(vm, NULL, j->opaque);
    }
    uv_close((uv_handle_t *)&j->timer, job_closed);
}

static void query(job *j);

/* Slots sorted by their topology ids, lowest first. */
static long long prop(const json_t *entry, const char *key)
{
    const json_t *v = json_object_get(json_object_get(entry, "props"), key);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static int slot_cmp(const void *a, const void *b)
{
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    static const char *const keys[] = { "node-id", "socket-id", "die-id", "core-id",
                                        "thread-id" };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        long long p = prop(x, keys[i]), q = prop(y, keys[i]);
        if (p != q)
            return p < q ? -1 : 1;
    }
    return 0;
}

static void on_cmd(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    job *j = opaque;
    j->pending--;
    if (err && j->err.code == KH_OK)
        kh_err_set(&j->err, KH_E_QEMU, "%s", err->msg);
    if (j->pending == 0)
        query(j); /* count what QEMU has now */
}

static void send_cmd(job *j, const char *cmd, json_t *args)
{
    kh_err e = KH_ERR_INIT;
    if (kh_manager_qmp(j->mgr, j->id, cmd, args, on_cmd, j, &e) < 0) {
        if (j->err.code == KH_OK)
            j->err = e;
        return;
    }
    j->pending++;
}

static void plug(job *j, const json_t **free_slots, size_t nfree, int present)
{
    size_t want = j->target - (unsigned)present;
    if (want > nfree)
        want = nfree;
    qsort(free_slots, nfree, sizeof(const json_t *), slot_cmp);
    for (size_t i = 0; i < want; i++) {
        const json_t *s = free_slots[i];
        char id[64] = "vcpu";
        json_t *args = json_object();
        const char *key;
        json_t *val;
        json_object_foreach(json_object_get(s, "props"), key, val) {
            if (!json_is_integer(val))
                continue;
            size_t n = strlen(id);
            snprintf(id + n, sizeof(id) - n, "-%lld", (long long)json_integer_value(val));
            json_object_set(args, key, val);
        }
        json_object_set_new(args, "driver", json_string(json_string_value(
                                                json_object_get(s, "type"))));
        json_object_set_new(args, "id", json_string(id));
        send_cmd(j, "device_add", args);
    }
}

static void unplug(job *j, const json_t **ours, size_t nours, int present)
{
    size_t drop = (size_t)present - j->target;
    if (drop > nours) {
        kh_err_set(&j->err, KH_E_CONFLICT,
                   "vm %s: only vCPUs plugged while it runs can be unplugged, and it has %zu "
                   "(it started with %d); stop it to lower vcpus further", j->name, nours,
                   present - (int)nours);
        finish(j);
        return;
    }
    qsort(ours, nours, sizeof(const json_t *), slot_cmp);
    for (size_t i = 0; i < drop; i++) {
        const char *path = json_string_value(json_object_get(ours[nours - 1 - i], "qom-path"));
        int before = j->pending;
        send_cmd(j, "device_del", json_pack("{s:s}", "id", strrchr(path, '/') + 1));
        j->unplug_sent = j->unplug_sent || j->pending > before;
    }
}

static void on_poll(uv_timer_t *t)
{
    query(t->data);
}

static void on_query(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    job *j = opaque;
    if (j->done)
        return;
    if (err) {
        if (j->err.code == KH_OK)
            kh_err_set(&j->err, KH_E_QEMU, "%s", err->msg);
        j->present = -1; /* QEMU gone or refusing: record nothing */
        finish(j);
        return;
    }
    const json_t *free_slots[SLOTS_MAX], *ours[SLOTS_MAX];
    size_t nfree = 0, nours = 0;
    int present = 0;
    for (size_t i = 0; i < json_array_size(ret) && i < SLOTS_MAX; i++) {
        const json_t *s = json_array_get(ret, i);
        const char *path = json_string_value(json_object_get(s, "qom-path"));
        if (!path) {
            free_slots[nfree++] = s;
            continue;
        }
        present++;
        /* Devices we added have an id: /machine/peripheral/<id>. */
        if (strncmp(path, "/machine/peripheral/", 20) == 0 && strchr(path + 20, '/') == NULL)
            ours[nours++] = s;
    }
    j->present = present;
    if (j->ph == PH_FIRST) {
        if (present < (int)j->target) {
            j->ph = PH_ADDED;
            plug(j, free_slots, nfree, present);
        } else if (present > (int)j->target) {
            j->ph = PH_REMOVING;
            unplug(j, ours, nours, present);
            if (j->done)
                return;
        }
        if (j->pending == 0)
            finish(j); /* nothing to do, or nothing could be sent */
        return;
    }
    if (j->ph == PH_ADDED || present <= (int)j->target || j->err.code != KH_OK) {
        finish(j);
        return;
    }
    /* Unplugging: the guest releases the CPUs in its own time. */
    if (kh_wall_time() >= j->deadline) {
        kh_err_set(&j->err, KH_E_TIMEOUT,
                   "vm %s: the guest did not release %d vCPU(s) in time (it needs ACPI CPU "
                   "hot-unplug); it has %d vCPUs now, and QEMU removes the rest if the guest "
                   "lets them go later", j->name, present - (int)j->target, present);
        finish(j);
        return;
    }
    uv_timer_start(&j->timer, on_poll, POLL_MS, 0);
}

static void query(job *j)
{
    kh_err e = KH_ERR_INIT;
    if (kh_manager_qmp(j->mgr, j->id, "query-hotpluggable-cpus", NULL, on_query, j, &e) < 0) {
        if (j->err.code == KH_OK)
            j->err = e;
        j->present = -1;
        finish(j);
    }
}

/* Does the QEMU of VM id carry the mark of a vCPU unplug? Sets a 409
 * naming what would be plugged. */
static bool scarred(kh_manager *mgr, const char *id, const char *name, const char *what,
                    kh_err *err)
{
    char *mark = kh_manager_qemu_file(mgr, id, SCAR_FILE);
    bool hit = mark && access(mark, F_OK) == 0;
    free(mark);
    if (hit)
        kh_err_set(err, KH_E_CONFLICT, "vm %s: a vCPU was unplugged from this QEMU, and QEMU "
                   "under TCG crashes at the next device_add; restart the VM before adding %s",
                   name, what);
    return hit;
}

int kh_hotplug_device_check(kh_manager *mgr, const char *name, const char *what, kh_err *err)
{
    find_ctx c = { .name = name };
    kh_manager_foreach(mgr, find_vm, &c);
    if (!c.found || !c.running)
        return 0;
    return scarred(mgr, c.id, name, what, err) ? -1 : 0;
}

int kh_hotplug_vcpus(kh_manager *mgr, uv_loop_t *loop, const char *name, unsigned target,
                     double timeout_s, kh_hotplug_cb cb, void *opaque, kh_err *err)
{
    json_t *vmj = kh_manager_vm_json(mgr, name, err); /* checks the name */
    if (!vmj)
        return -1;
    const char *accel = json_string_value(json_object_get(vmj, "accelerator"));
    bool tcg = accel && strcmp(accel, "tcg") == 0;
    json_decref(vmj);
    find_ctx c = { .name = name };
    kh_manager_foreach(mgr, find_vm, &c);
    if (!c.found || !c.running) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is not running", name);
        return -1;
    }
    if (!c.q35) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is running: vCPU hot-plug needs machine "
                   "\"q35\"; stop it to change vcpus", name);
        return -1;
    }
    if (target < 1) {
        kh_err_set(err, KH_E_INVALID, "vcpus: must be at least 1");
        return -1;
    }
    if (target > c.max) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is running: it can have 1 to max_vcpus (%u) "
                   "vCPUs; stop it to change vcpus beyond that (and raise max_vcpus)", name,
                   c.max);
        return -1;
    }
    if (c.cpu_max_percent > 100 * target) {
        kh_err_set(err, KH_E_INVALID, "vcpus: limits.cpu_max_percent (%u) is more than %u vCPUs "
                   "can use; lower it first", c.cpu_max_percent, target);
        return -1;
    }
    if (target > c.vcpus && scarred(mgr, c.id, name, "a vCPU", err))
        return -1;
    for (const job *o = jobs; o; o = o->next) {
        if (strcmp(o->id, c.id) == 0) {
            kh_err_set(err, KH_E_CONFLICT, "vm %s: a vCPU change is under way", name);
            return -1;
        }
    }
    job *j = xcalloc(1, sizeof(*j));
    j->mgr = mgr;
    j->pid = c.pid;
    j->tcg = tcg;
    memcpy(j->id, c.id, sizeof(j->id));
    snprintf(j->name, sizeof(j->name), "%s", name);
    j->target = target;
    j->deadline = kh_wall_time() + timeout_s;
    j->cb = cb;
    j->opaque = opaque;
    j->present = -1;
    uv_timer_init(loop, &j->timer);
    j->timer.data = j;
    j->next = jobs;
    jobs = j;
    kh_log(KH_LOG_INFO, "vm.vcpus_change", "vm=%s from=%u to=%u", name, c.vcpus, target);
    query(j);
    return 0;
}
