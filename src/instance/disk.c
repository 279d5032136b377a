/* disk.c - attach and detach a VM's disks, hot-plugged when it runs (see disk.h). */
#include "instance/disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/limits.h"
#include "schema/schema.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "instance/config.h"
#include "instance/hotplug.h"
#include "instance/vmuid.h"

#define DISK_PORTS 4 /* hp0..hp3; NICs have hp4..hp7 */
#define DETACH_TIMEOUT_DEFAULT_S 30
#define DETACH_TIMEOUT_MAX_S 600
#define FDSET_BASE 10000
#define NODE_MAX 999

typedef struct step {
    char *cmd;
    json_t *args;      /* owned */
    int fd;            /* passed with the command (owned), or -1 */
    char *undo_cmd;    /* run when a later step fails, or NULL */
    json_t *undo_args; /* owned */
    bool secret_fd;    /* add-fd of the secret: its reply gives QEMU's fd number */
    bool secret_obj;   /* object-add of the secret: "file" from that fd number */
} step;

typedef struct disk_op disk_op;
struct disk_op {
    kh_disks *d;
    bool attach;
    char *vm;
    kh_vm_disks vd;     /* spec is the new disk list once built */
    kh_disk_cb cb;
    void *opaque;
    /* attach */
    char *volume;
    bool readonly;
    int node;           /* QEMU node index of the disk attached or detached */
    int port;           /* hot-plug port */
    /* detach */
    size_t index;
    unsigned timeout_ms;
    char dev_id[40];
    bool waiting;       /* for DEVICE_DELETED */
    bool deleted;       /* DEVICE_DELETED seen */
    uint64_t wait_start; /* loop time the wait began */
    uv_timer_t *timer;
    /* the QMP script */
    step *steps;
    size_t n, cap, next;
    bool tolerant;      /* detach cleanup: errors are logged, not fatal */
    bool orphans;       /* after a daemon restart: removes what no disk uses, no commit */
    int secret_qemu_fd;
    unsigned busy_tries;
    size_t undo_pending;
    kh_err failure;
    disk_op *link;
};

/* An attach or detach that came while the after-restart sweep of its VM
 * held the VM's disks: it runs when the sweep ends (a few QMP round trips)
 * instead of failing with a 409 the user could not have avoided. */
typedef struct deferred {
    bool attach;
    char *vm;
    json_t *body;     /* attach */
    char *index;      /* detach */
    unsigned timeout_s;
    kh_disk_cb cb;
    void *opaque;
    struct deferred *next;
} deferred;

struct kh_disks {
    uv_loop_t *loop;
    kh_manager *mgr;
    kh_storage *st;
    kh_qemu_caps caps;
    disk_op *ops;
    deferred *deferred;
};

static void on_qmp_event(void *opaque, const char *vm_id, const char *event, json_t *data);

kh_disks *kh_disks_new(uv_loop_t *loop, kh_manager *mgr, kh_storage *st,
                       const kh_qemu_caps *caps)
{
    kh_disks *d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->mgr = mgr;
    d->st = st;
    d->caps = *caps;
    if (kh_manager_add_event_hook(mgr, on_qmp_event, d) < 0)
        kh_log(KH_LOG_ERROR, "vm.disk", "reason=\"no free event hook: hot-unplug waits time "
                                        "out\"");
    return d;
}

void kh_disks_free(kh_disks *d)
{
    if (!d)
        return;
    kh_manager_remove_event_hook(d->mgr, on_qmp_event, d);
    for (disk_op *o = d->ops; o; o = o->link)
        o->d = NULL; /* operations still running end with the daemon */
    while (d->deferred) {
        deferred *q = d->deferred;
        d->deferred = q->next;
        free(q->vm);
        json_decref(q->body);
        free(q->index);
        free(q);
    }
    free(d);
}

static bool sweeping(const kh_disks *d, const char *vm)
{
    for (const disk_op *o = d->ops; o; o = o->link)
        if (o->orphans && strcmp(o->vm, vm) == 0)
            return true;
    return false;
}

static void defer(kh_disks *d, bool attach, const char *vm, const json_t *body,
                  const char *index, unsigned timeout_s, kh_disk_cb cb, void *opaque)
{
    deferred *q = xcalloc(1, sizeof(*q));
    q->attach = attach;
    q->vm = xstrdup(vm);
    q->body = body ? json_deep_copy(body) : NULL;
    q->index = index ? xstrdup(index) : NULL;
    q->timeout_s = timeout_s;
    q->cb = cb;
    q->opaque = opaque;
    deferred **pp = &d->deferred; /* keep arrival order */
    while (*pp)
        pp = &(*pp)->next;
    *pp = q;
}

/* The sweep of vm ended: start what waited for it, in order. */
static void run_deferred(kh_disks *d, const char *vm)
{
    deferred *mine = NULL, **tail = &mine;
    for (deferred **pp = &d->deferred; *pp;) {
        deferred *q = *pp;
        if (strcmp(q->vm, vm) == 0) {
            *pp = q->next;
            q->next = NULL;
            *tail = q;
            tail = &q->next;
        } else {
            pp = &q->next;
        }
    }
    while (mine) {
        deferred *q = mine;
        mine = q->next;
        kh_err e = KH_ERR_INIT;
        int rc = q->attach ? kh_disk_attach(d, q->vm, q->body, q->cb, q->opaque, &e)
                           : kh_disk_detach(d, q->vm, q->index, q->timeout_s, q->cb, q->opaque,
                                            &e);
        if (rc < 0)
            q->cb(NULL, &e, q->opaque);
        free(q->vm);
        json_decref(q->body);
        free(q->index);
        free(q);
    }
}

/* ---- the operation ---- */

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void op_free(disk_op *o)
{
    if (o->d) {
        for (disk_op **pp = &o->d->ops; *pp; pp = &(*pp)->link) {
            if (*pp == o) {
                *pp = o->link;
                break;
            }
        }
    }
    if (o->timer)
        uv_close((uv_handle_t *)o->timer, timer_closed);
    for (size_t i = 0; i < o->n; i++) {
        free(o->steps[i].cmd);
        json_decref(o->steps[i].args);
        if (o->steps[i].fd >= 0)
            close(o->steps[i].fd);
        free(o->steps[i].undo_cmd);
        json_decref(o->steps[i].undo_args);
    }
    free(o->steps);
    kh_vm_spec_free(o->vd.spec);
    free(o->vm);
    free(o->volume);
    free(o);
}

/* Report and end: the VM is released for other changes. */
static void op_finish(disk_op *o, json_t *result, const kh_err *err)
{
    kh_disks *d = o->d;
    char *swept = d && o->orphans ? xstrdup(o->vm) : NULL;
    if (d)
        kh_config_disk_end(d->mgr, o->vd.id);
    if (err)
        kh_log(KH_LOG_WARN, o->attach ? "vm.disk_attach" : "vm.disk_detach",
               "vm=%s error=\"%s\"", o->vm, err->msg);
    o->cb(result, err, o->opaque);
    op_free(o);
    if (swept)
        run_deferred(d, swept);
    free(swept);
}

static void add_step(disk_op *o, const char *cmd, json_t *args, int fd, const char *undo_cmd,
                     json_t *undo_args)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->steps = xreallocarray(o->steps, o->cap, sizeof(*o->steps));
    }
    step *s = &o->steps[o->n++];
    memset(s, 0, sizeof(*s));
    s->cmd = xstrdup(cmd);
    s->args = args;
    s->fd = fd;
    s->undo_cmd = undo_cmd ? xstrdup(undo_cmd) : NULL;
    s->undo_args = undo_args;
}

static void run_next(disk_op *o);
static void commit(disk_op *o);
static void detach_timeout(disk_op *o);

static void on_undo(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    disk_op *o = opaque;
    if (err)
        kh_log(KH_LOG_WARN, "vm.disk_undo", "vm=%s error=\"%s\"", o->vm, err->msg);
    if (--o->undo_pending == 0)
        op_finish(o, NULL, &o->failure);
}

/* Undo steps [0, o->next) in reverse (QMP runs them in order), then fail. */
static void rollback(disk_op *o, const kh_err *err)
{
    kh_err_copy(&o->failure, err);
    o->undo_pending = 1; /* held until every undo is queued */
    for (size_t i = o->next; o->d && i-- > 0;) {
        step *s = &o->steps[i];
        if (!s->undo_cmd)
            continue;
        kh_err e = KH_ERR_INIT;
        if (kh_manager_qmp(o->d->mgr, o->vd.id, s->undo_cmd, s->undo_args, on_undo, o, &e) < 0) {
            s->undo_args = NULL;
            break; /* QEMU is gone: nothing left to undo */
        }
        s->undo_args = NULL;
        o->undo_pending++;
    }
    if (--o->undo_pending == 0)
        op_finish(o, NULL, &o->failure);
}

static bool already_gone(const kh_err *err)
{
    return strstr(err->msg, "not found") || strstr(err->msg, "No such") ||
           strstr(err->msg, "Cannot find");
}

static uv_timer_t *op_timer(disk_op *o)
{
    if (!o->timer) {
        o->timer = xcalloc(1, sizeof(*o->timer));
        uv_timer_init(o->d->loop, o->timer);
        o->timer->data = o;
    }
    return o->timer;
}

static void retry_step(uv_timer_t *t)
{
    run_next(t->data);
}

/* QEMU finishes a device's removal a moment after the guest let it go:
 * until then its nodes are still in use. */
static bool node_busy(const kh_err *err)
{
    return strstr(err->msg, "is in use") || strstr(err->msg, "is busy");
}

#define BUSY_RETRY_MS 100
#define BUSY_TRIES 100

static void on_step(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    disk_op *o = opaque;
    step *s = &o->steps[o->next];
    if (err && o->tolerant && node_busy(err)) {
        if (o->busy_tries++ < BUSY_TRIES && o->d) {
            uv_timer_start(op_timer(o), retry_step, BUSY_RETRY_MS, 0);
            return;
        }
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "vm %s: QEMU still uses disk %zu (%s); try again", o->vm,
                   o->index, err->msg);
        op_finish(o, NULL, &e); /* the disk stays in the spec */
        return;
    }
    if (err && o->tolerant) {
        if (!already_gone(err))
            kh_log(KH_LOG_WARN, "vm.disk_detach", "vm=%s step=%s error=\"%s\"", o->vm, s->cmd,
                   err->msg);
    } else if (err) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "%s: %s", s->cmd, err->msg);
        rollback(o, &e);
        return;
    }
    if (!err && s->secret_fd)
        o->secret_qemu_fd = (int)json_integer_value(json_object_get(ret, "fd"));
    o->next++;
    run_next(o);
}

static void run_next(disk_op *o)
{
    if (!o->d) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_UNAVAILABLE, "the daemon is shutting down");
        op_finish(o, NULL, &e);
        return;
    }
    if (o->next == o->n) {
        if (o->orphans && o->n)
            kh_log(KH_LOG_WARN, "vm.disk_orphans", "vm=%s removed=%zu (left by an attach "
                   "a daemon restart interrupted)", o->vm, o->n);
        if (o->orphans)
            op_finish(o, NULL, NULL);
        else
            commit(o);
        return;
    }
    step *s = &o->steps[o->next];
    if (s->secret_obj) {
        char *file = xasprintf("/proc/self/fd/%d", o->secret_qemu_fd);
        json_object_set_new(s->args, "file", json_string(file));
        free(file);
    }
    /* a step without an fd keeps its arguments: it may be run again */
    json_t *args = s->fd >= 0 ? s->args : json_incref(s->args);
    int fd = s->fd;
    if (fd >= 0)
        s->args = NULL;
    s->fd = -1;
    kh_err e = KH_ERR_INIT;
    if (kh_manager_qmp_fd(o->d->mgr, o->vd.id, s->cmd, args, fd, on_step, o, &e) < 0)
        rollback(o, &e);
}

static void commit(disk_op *o)
{
    kh_err err = KH_ERR_INIT;
    kh_vm_spec *spec = o->vd.spec;
    o->vd.spec = NULL;
    json_t *vm = kh_config_disk_commit(o->d->mgr, o->vd.id, spec, o->vd.live ? o->vd.node : NULL,
                                        &err);
    if (vm)
        kh_log(KH_LOG_INFO, o->attach ? "vm.disk_attach" : "vm.disk_detach",
               "vm=%s live=%s node=disk%d port=hp%d", o->vm, o->vd.live ? "true" : "false",
               o->node, o->port);
    op_finish(o, vm, vm ? NULL : &err);
}

static void deferred_commit(uv_timer_t *t)
{
    commit(t->data);
}

/* A stopped VM's change completes from the loop, so cb never runs before
 * the call that started it has returned. */
static void defer_commit(disk_op *o)
{
    o->timer = xcalloc(1, sizeof(*o->timer));
    uv_timer_init(o->d->loop, o->timer);
    o->timer->data = o;
    uv_timer_start(o->timer, deferred_commit, 0, 0);
}

static disk_op *op_new(kh_disks *d, const char *vm, bool attach, kh_disk_cb cb, void *opaque)
{
    disk_op *o = xcalloc(1, sizeof(*o));
    o->d = d;
    o->vm = xstrdup(vm);
    o->attach = attach;
    o->cb = cb;
    o->opaque = opaque;
    o->node = -1;
    o->port = -1;
    o->secret_qemu_fd = -1;
    return o;
}

/* ---- attach ---- */

static int check_volume(kh_disks *d, const kh_vm_disks *vd, const char *vm, const char *ref,
                        bool readonly, kh_volume_chain *c, kh_err *err)
{
    if (kh_storage_resolve(d->st, ref, c, err) < 0) {
        kh_err_prefix(err, "volume");
        return -1;
    }
    int rc = -1;
    if (!readonly && c->readonly) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s is a read-only base (a template's); attach it "
                                       "readonly or use a clone", ref);
    } else if (!readonly && c->dependents) {
        kh_err_set(err, KH_E_CONFLICT, "volume %s is the base of %u other volume(s); attach it "
                                       "readonly", ref, c->dependents);
    } else if (vd->spec->ndisks >= KH_VM_DISKS_MAX) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has %d disks already", vm, KH_VM_DISKS_MAX);
    } else {
        rc = 0;
        json_t *users = kh_manager_volume_users(d->mgr, ref);
        size_t i;
        json_t *u;
        json_array_foreach(users, i, u) {
            const char *who = json_string_value(json_object_get(u, "vm"));
            if (who && strcmp(who, vm) == 0) {
                kh_err_set(err, KH_E_CONFLICT, "vm %s already has volume %s", vm, ref);
                rc = -1;
                break;
            }
            if (!readonly || !json_is_true(json_object_get(u, "readonly"))) {
                kh_err_set(err, KH_E_CONFLICT, "volume %s is attached to vm %s; a volume is "
                                               "shared only read-only by all", ref, who);
                rc = -1;
                break;
            }
        }
        json_decref(users);
    }
    if (rc < 0)
        kh_volume_chain_clear(c);
    return rc;
}

static void append_disk(kh_vm_spec *spec, const char *ref, bool readonly)
{
    spec->disks = xreallocarray(spec->disks, spec->ndisks + 1, sizeof(*spec->disks));
    kh_disk_spec *nd = &spec->disks[spec->ndisks++];
    memset(nd, 0, sizeof(*nd));
    nd->volume = xstrdup(ref);
    nd->readonly = readonly;
    nd->format = KH_DISK_QCOW2;
}

static json_t *fdset_args(int set)
{
    return json_pack("{s:i}", "fdset-id", set);
}

/* Build the attach script for node N on port P from the volume's chain. */
static int build_attach(disk_op *o, kh_err *err)
{
    kh_volume_chain c;
    if (kh_storage_resolve(o->d->st, o->volume, &c, err) < 0)
        return -1;
    int k = o->node;
    char node[32], file_node[48], next[32], opaque[48];
    int rc = -1;
    bool direct = true; /* cache=none when every layer takes O_DIRECT */
    for (size_t j = 0; j < c.n && direct; j++)
        direct = kh_fs_direct_ok(c.layer[j].path);
    /* Deepest layer first: a node exists before the node that names it. */
    for (size_t j = c.n; j-- > 0;) {
        bool top = j == 0;
        bool ro = !top || o->readonly;
        int fd = open(c.layer[j].path,
                      (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct ? O_DIRECT : 0));
        if (fd < 0) {
            kh_err_errno(err, KH_E_INTERNAL, errno, "cannot open layer %zu of %s", j,
                         o->volume);
            goto out;
        }
        kh_vmuid_identity id;
        if (top && !ro && kh_vmuid_identity_get(o->d->mgr, o->vd.id, &id, NULL) == 0)
            kh_vmuid_own_fd(&id, fd, c.layer[j].path); /* the VM's own, as at start */
        int set = FDSET_BASE + 16 * k + (int)j;
        if (top) {
            snprintf(node, sizeof(node), "disk%d", k);
            snprintf(file_node, sizeof(file_node), "disk%d-file", k);
        } else {
            snprintf(node, sizeof(node), "disk%d-b%zu", k, j);
            snprintf(file_node, sizeof(file_node), "disk%d-b%zu-file", k, j);
        }
        snprintf(opaque, sizeof(opaque), "%s", node);
        add_step(o, "add-fd", json_pack("{s:i, s:s}", "fdset-id", set, "opaque", opaque), fd,
                 "remove-fd", fdset_args(set));
        char fdpath[32];
        snprintf(fdpath, sizeof(fdpath), "/dev/fdset/%d", set);
        add_step(o, "blockdev-add",
                 kh_qemu_blockdev_file(&o->d->caps, file_node, fdpath, ro, direct),
                 -1, "blockdev-del", json_pack("{s:s}", "node-name", file_node));
        const char *secret = NULL;
        char secret_id[64];
        if (c.layer[j].encrypted) {
            /* every encrypted layer has its own key and secret object */
            snprintf(secret_id, sizeof(secret_id), "%s-secret", node);
            int sfd = kh_storage_volume_secret_fd(o->d->st, c.layer[j].id, err);
            if (sfd < 0)
                goto out;
            int sset = FDSET_BASE + 16 * k + 8 + (int)j;
            add_step(o, "add-fd", json_pack("{s:i, s:s}", "fdset-id", sset, "opaque", secret_id),
                     sfd, "remove-fd", fdset_args(sset));
            o->steps[o->n - 1].secret_fd = true;
            add_step(o, "object-add",
                     json_pack("{s:s, s:s, s:s}", "qom-type", "secret", "id", secret_id,
                               "format", "raw"),
                     -1, "object-del", json_pack("{s:s}", "id", secret_id));
            o->steps[o->n - 1].secret_obj = true;
            /* the key was read: the fd goes (the undo above stays harmless) */
            add_step(o, "remove-fd", fdset_args(sset), -1, NULL, NULL);
            secret = secret_id;
        }
        if (j + 1 < c.n)
            snprintf(next, sizeof(next), "disk%d-b%zu", k, j + 1);
        add_step(o, "blockdev-add",
                 kh_qemu_blockdev_format(c.layer[j].format, node, file_node, ro,
                                         j + 1 < c.n ? next : NULL, secret),
                 -1, "blockdev-del", json_pack("{s:s}", "node-name", node));
    }
    char iothread[48], dev_id[40], port[16];
    snprintf(iothread, sizeof(iothread), "iothread-disk%d", k);
    snprintf(dev_id, sizeof(dev_id), "disk%d-dev", k);
    kh_qemu_hotplug_port_id((unsigned)o->port, port, sizeof(port));
    add_step(o, "object-add", json_pack("{s:s, s:s}", "qom-type", "iothread", "id", iothread), -1,
             "object-del", json_pack("{s:s}", "id", iothread));
    add_step(o, "device_add",
             json_pack("{s:s, s:s, s:s, s:s, s:s}", "driver", "virtio-blk-pci", "drive", node,
                       "id", dev_id, "bus", port, "iothread", iothread),
             -1, NULL, NULL);
    rc = 0;
out:
    kh_volume_chain_clear(&c);
    return rc;
}

/* The free hot-plug ports (bit i: hp<i> has no device), from query-pci. */
static unsigned free_ports(json_t *ret)
{
    unsigned mask = 0;
    size_t i, j;
    json_t *bus, *dev;
    json_array_foreach(ret, i, bus) {
        json_array_foreach(json_object_get(bus, "devices"), j, dev) {
            const char *qid = json_string_value(json_object_get(dev, "qdev_id"));
            json_t *br = json_object_get(dev, "pci_bridge");
            for (unsigned p = 0; qid && br && p < DISK_PORTS; p++) {
                char id[16];
                kh_qemu_hotplug_port_id(p, id, sizeof(id));
                if (strcmp(qid, id) == 0 && json_array_size(json_object_get(br, "devices")) == 0)
                    mask |= 1u << p;
            }
        }
    }
    return mask;
}

/* Where device dev_id sits: 1 behind a hot-plug port, 0 elsewhere, -1 absent. */
static int device_place(json_t *ret, const char *dev_id)
{
    size_t i, j, k;
    json_t *bus, *dev, *sub;
    json_array_foreach(ret, i, bus) {
        json_array_foreach(json_object_get(bus, "devices"), j, dev) {
            const char *qid = json_string_value(json_object_get(dev, "qdev_id"));
            if (qid && strcmp(qid, dev_id) == 0)
                return 0;
            json_t *br = json_object_get(json_object_get(dev, "pci_bridge"), "devices");
            json_array_foreach(br, k, sub) {
                const char *sid = json_string_value(json_object_get(sub, "qdev_id"));
                if (sid && strcmp(sid, dev_id) == 0)
                    return qid && strncmp(qid, "hp", 2) == 0 ? 1 : 0;
            }
        }
    }
    return -1;
}

static bool node_used(json_t *nodes, const kh_vm_disks *vd, int k)
{
    for (size_t i = 0; i < vd->spec->ndisks; i++)
        if (vd->node[i] == k)
            return true;
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "disk%d", k);
    size_t i;
    json_t *e;
    json_array_foreach(nodes, i, e) {
        const char *name = json_string_value(json_object_get(e, "node-name"));
        if (name && strncmp(name, prefix, (size_t)n) == 0 && (name[n] == '\0' || name[n] == '-'))
            return true;
    }
    return false;
}

static void on_nodes(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    disk_op *o = opaque;
    kh_err e = KH_ERR_INIT;
    if (err) {
        kh_err_set(&e, KH_E_QEMU, "query-named-block-nodes: %s", err->msg);
        op_finish(o, NULL, &e);
        return;
    }
    for (int k = 0; k <= NODE_MAX && o->node < 0; k++)
        if (!node_used(ret, &o->vd, k))
            o->node = k;
    if (o->node < 0) {
        kh_err_set(&e, KH_E_CONFLICT, "vm %s: no free disk node", o->vm);
        op_finish(o, NULL, &e);
        return;
    }
    if (build_attach(o, &e) < 0) {
        op_finish(o, NULL, &e);
        return;
    }
    o->vd.node[o->vd.spec->ndisks] = o->node;
    append_disk(o->vd.spec, o->volume, o->readonly);
    run_next(o);
}

static void on_pci_attach(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    disk_op *o = opaque;
    kh_err e = KH_ERR_INIT;
    if (err) {
        kh_err_set(&e, KH_E_QEMU, "query-pci: %s", err->msg);
        op_finish(o, NULL, &e);
        return;
    }
    unsigned mask = free_ports(ret);
    for (int p = 0; p < DISK_PORTS && o->port < 0; p++)
        if (mask & (1u << p))
            o->port = p;
    if (o->port < 0) {
        kh_err_set(&e, KH_E_CONFLICT, "vm %s: no free hot-plug port for a disk (%d disks are "
                                      "hot-plugged); stop the vm to attach more", o->vm,
                   DISK_PORTS);
        op_finish(o, NULL, &e);
        return;
    }
    if (kh_manager_qmp(o->d->mgr, o->vd.id, "query-named-block-nodes",
                       json_pack("{s:b}", "flat", 1), on_nodes, o, &e) < 0)
        op_finish(o, NULL, &e);
}

static int parse_attach(const json_t *body, const char **ref, bool *readonly, kh_err *err)
{
    if (!json_is_object(body)) {
        kh_err_set(err, KH_E_INVALID, "the body must be an object {\"volume\", \"readonly\"}");
        return -1;
    }
    if (kh_schema_check("DiskAttach", body, "", err) < 0)
        return -1;
    *ref = json_string_value(json_object_get(body, "volume"));
    if (!*ref) {
        kh_err_set(err, KH_E_INVALID, "volume: required, a string \"pool/name\"");
        return -1;
    }
    json_t *ro = json_object_get(body, "readonly");
    if (ro && !json_is_boolean(ro)) {
        kh_err_set(err, KH_E_INVALID, "readonly: must be a boolean");
        return -1;
    }
    *readonly = json_is_true(ro);
    char *pool = NULL, *name = NULL;
    int rc = kh_volume_ref_parse(*ref, &pool, &name, err);
    free(pool);
    free(name);
    return rc;
}

int kh_disk_attach(kh_disks *d, const char *vm, const json_t *body, kh_disk_cb cb, void *opaque,
                   kh_err *err)
{
    const char *ref = NULL;
    bool readonly = false;
    if (!d || !d->st) {
        kh_err_set(err, KH_E_UNAVAILABLE, "storage is not available");
        return -1;
    }
    if (parse_attach(body, &ref, &readonly, err) < 0)
        return -1;
    if (sweeping(d, vm)) {
        defer(d, true, vm, body, NULL, 0, cb, opaque);
        return 0;
    }
    disk_op *o = op_new(d, vm, true, cb, opaque);
    if (kh_config_disk_begin(d->mgr, vm, &o->vd, err) < 0) {
        op_free(o);
        return -1;
    }
    kh_volume_chain c;
    if (check_volume(d, &o->vd, vm, ref, readonly, &c, err) < 0)
        goto fail;
    kh_volume_chain_clear(&c);
    o->volume = xstrdup(ref);
    o->readonly = readonly;
    if (!o->vd.live) {
        append_disk(o->vd.spec, ref, readonly);
        o->link = d->ops;
        d->ops = o;
        defer_commit(o);
        return 0;
    }
    if (o->vd.spec->machine != KH_MACHINE_Q35) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is a running microvm: it has no PCI hot-plug; stop "
                                       "it to attach a disk", vm);
        goto fail;
    }
    if (kh_hotplug_device_check(d->mgr, vm, "a disk", err) < 0 ||
        kh_manager_qmp(d->mgr, o->vd.id, "query-pci", NULL, on_pci_attach, o, err) < 0)
        goto fail;
    o->link = d->ops;
    d->ops = o;
    return 0;
fail:
    kh_config_disk_end(d->mgr, o->vd.id);
    op_free(o);
    return -1;
}

/* ---- detach ---- */

static void remove_disk(kh_vm_disks *vd, size_t i)
{
    kh_vm_spec *spec = vd->spec;
    kh_disk_spec *ds = &spec->disks[i];
    free(ds->path);
    free(ds->volume);
    kh_disk_spec_clear_backing(ds);
    memmove(ds, ds + 1, (spec->ndisks - i - 1) * sizeof(*ds));
    memmove(&vd->node[i], &vd->node[i + 1], (spec->ndisks - i - 1) * sizeof(int));
    spec->ndisks--;
    /* per-disk limits follow their disks: the detached one's go, the later
     * ones move down one index */
    kh_limits *l = spec->limits;
    for (size_t k = 0; l && k < l->ndisks;) {
        if (l->disks[k].index == i) {
            memmove(&l->disks[k], &l->disks[k + 1], (l->ndisks - k - 1) * sizeof(*l->disks));
            l->ndisks--;
            continue;
        }
        if (l->disks[k].index > i)
            l->disks[k].index--;
        k++;
    }
}

static bool named(const json_t *nodes, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(nodes, i, e) {
        const char *n = json_string_value(json_object_get(e, "node-name"));
        if (n && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

/* "disk<k>" for layer 0, "disk<k>-b<j>" below, then suffix. */
static void layer_name(char *buf, size_t size, int k, size_t j, const char *suffix)
{
    if (j == 0)
        snprintf(buf, size, "disk%d%s", k, suffix);
    else
        snprintf(buf, size, "disk%d-b%zu%s", k, j, suffix);
}

/* Steps that take node k's layers out of QEMU (tolerant ops: what is not
 * there is skipped): blockdev-del of each layer's format then file node,
 * top first (a format node holds the nodes below it), only those listed in
 * present (query-named-block-nodes) when it is not NULL; object-del of its
 * iothread and secrets. The fd sets are the caller's. */
static void add_teardown(disk_op *o, int k, size_t layers, const json_t *present)
{
    char name[48];
    for (size_t j = 0; j < layers; j++) {
        for (int file = 0; file < 2; file++) {
            layer_name(name, sizeof(name), k, j, file ? "-file" : "");
            if (!present || named(present, name))
                add_step(o, "blockdev-del", json_pack("{s:s}", "node-name", name), -1, NULL,
                         NULL);
        }
    }
    snprintf(name, sizeof(name), "iothread-disk%d", k);
    add_step(o, "object-del", json_pack("{s:s}", "id", name), -1, NULL, NULL);
    for (size_t j = 0; j < layers; j++) {
        layer_name(name, sizeof(name), k, j, "-secret");
        add_step(o, "object-del", json_pack("{s:s}", "id", name), -1, NULL, NULL);
    }
}

/* After the device is gone: every node, the iothread and the fd sets. */
static void build_cleanup(disk_op *o)
{
    int k = o->node;
    o->tolerant = true;
    kh_volume_chain c;
    size_t layers = KH_VOLUME_CHAIN_MAX;
    const char *ref = o->vd.spec->disks[o->index].volume;
    if (ref && kh_storage_resolve(o->d->st, ref, &c, NULL) == 0) {
        layers = c.n;
        kh_volume_chain_clear(&c);
    }
    add_teardown(o, k, layers, NULL);
    for (size_t j = 0; j < layers; j++)
        add_step(o, "remove-fd", fdset_args(FDSET_BASE + 16 * k + (int)j), -1, NULL, NULL);
    kh_vmuid_disown_disk(o->d->mgr, o->vd.id, &o->vd.spec->disks[o->index]); /* not its own now */
    remove_disk(&o->vd, o->index);
    run_next(o);
}

#define WAIT_TICK_MS 250

/* While waiting for the guest: every tick, whether QEMU is still there. A
 * VM that stopped meanwhile (killed, powered off) has no device left to
 * release: the detach completes as an edit of the stopped VM's spec. */
static void detach_tick(uv_timer_t *t)
{
    disk_op *o = t->data;
    if (!o->waiting)
        return;
    if (kh_manager_qmp(o->d->mgr, o->vd.id, "query-status", NULL, NULL, NULL, NULL) < 0) {
        o->waiting = false;
        o->vd.live = false;
        remove_disk(&o->vd, o->index);
        commit(o);
        return;
    }
    uint64_t waited = (uint64_t)(uv_now(o->d->loop) - o->wait_start);
    if (waited >= o->timeout_ms) {
        detach_timeout(o);
        return;
    }
    uv_timer_start(o->timer, detach_tick, WAIT_TICK_MS, 0);
}

static void detach_timeout(disk_op *o)
{
    o->waiting = false;
    kh_err e = KH_ERR_INIT;
    kh_err_set(&e, KH_E_TIMEOUT, "vm %s: the guest did not release disk %zu within %u s; it "
                                 "stays attached (detach again later, or stop the vm)",
               o->vm, o->index, o->timeout_ms / 1000);
    op_finish(o, NULL, &e);
}

/* ---- after a daemon restart: what an interrupted attach left ---- */

/* A daemon killed in the middle of an attach leaves in QEMU the fd sets and
 * block nodes (and iothread, secret) it had added for node N, which no spec
 * disk uses: the restarted daemon never learns of them, and a later attach
 * that picks N collides with them. So on reattach, query both and remove
 * what belongs to a node index no disk of the spec has. A device already
 * added for such a node holds its nodes: blockdev-del then fails and is
 * logged (the guest sees a disk the spec does not have until the VM stops). */

/* "disk<N>" or "disk<N>-..." -> N; -1 for other names. */
static int node_index(const char *name)
{
    int n = -1, len = 0;
    if (!name || sscanf(name, "disk%d%n", &n, &len) != 1 || n < 0 || n > NODE_MAX ||
        (name[len] != '\0' && name[len] != '-'))
        return -1;
    return n;
}

static bool node_in_spec(const disk_op *o, int n)
{
    for (size_t i = 0; i < o->vd.spec->ndisks; i++)
        if (o->vd.node[i] == n)
            return true;
    return false;
}

static void orphans_done(json_t *result, const kh_err *err, void *opaque)
{
    (void)err; /* op_finish logged it */
    (void)opaque;
    json_decref(result);
}

static void on_orphan_fdsets(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    disk_op *o = opaque;
    size_t i;
    json_t *e;
    json_array_foreach(err ? NULL : ret, i, e) {
        int set = (int)json_integer_value(json_object_get(e, "fdset-id"));
        int n = set >= FDSET_BASE ? (set - FDSET_BASE) / 16 : -1;
        if (n >= 0 && n <= NODE_MAX && !node_in_spec(o, n))
            add_step(o, "remove-fd", fdset_args(set), -1, NULL, NULL);
    }
    run_next(o); /* op_finish at once when there is nothing to remove */
}

static void on_orphan_nodes(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    disk_op *o = opaque;
    bool orphan[NODE_MAX + 1] = { false };
    size_t i;
    json_t *e;
    json_array_foreach(err ? NULL : ret, i, e) {
        int n = node_index(json_string_value(json_object_get(e, "node-name")));
        if (n >= 0 && !node_in_spec(o, n))
            orphan[n] = true;
    }
    for (int n = 0; n <= NODE_MAX; n++)
        if (orphan[n])
            add_teardown(o, n, KH_VOLUME_CHAIN_MAX, ret);
    kh_err qe = KH_ERR_INIT;
    if (!o->d || kh_manager_qmp(o->d->mgr, o->vd.id, "query-fdsets", NULL, on_orphan_fdsets, o,
                                &qe) < 0)
        op_finish(o, NULL, kh_err_isset(&qe) ? &qe : NULL);
}

static void orphans_begin(kh_disks *d, const char *vm)
{
    disk_op *o = op_new(d, vm, false, orphans_done, NULL);
    o->orphans = true;
    o->tolerant = true;
    kh_err e = KH_ERR_INIT;
    if (kh_config_disk_begin(d->mgr, vm, &o->vd, &e) < 0 || !o->vd.live ||
        o->vd.spec->machine != KH_MACHINE_Q35) {
        if (o->vd.spec)
            kh_config_disk_end(d->mgr, o->vd.id);
        op_free(o);
        return;
    }
    if (kh_manager_qmp(d->mgr, o->vd.id, "query-named-block-nodes",
                       json_pack("{s:b}", "flat", 1), on_orphan_nodes, o, &e) < 0) {
        kh_config_disk_end(d->mgr, o->vd.id);
        op_free(o);
        return;
    }
    o->link = d->ops;
    d->ops = o;
}

static void on_qmp_event(void *opaque, const char *vm_id, const char *event, json_t *data)
{
    kh_disks *d = opaque;
    if (strcmp(event, KH_MANAGER_EVENT_REATTACHED) == 0 && d->st) {
        const char *vm = json_string_value(json_object_get(data, "vm"));
        if (vm)
            orphans_begin(d, vm);
        return;
    }
    if (strcmp(event, "DEVICE_DELETED") != 0)
        return;
    const char *dev = json_string_value(json_object_get(data, "device"));
    for (disk_op *o = d->ops; dev && o; o = o->link) {
        if (o->attach || strcmp(o->vd.id, vm_id) != 0 || strcmp(o->dev_id, dev) != 0)
            continue;
        o->deleted = true;
        if (o->waiting) {
            o->waiting = false;
            uv_timer_stop(o->timer);
            build_cleanup(o);
        }
        return;
    }
}

static void on_device_del(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    disk_op *o = opaque;
    if (err && already_gone(err)) {
        build_cleanup(o); /* released after an earlier timeout */
        return;
    }
    if (err && !strstr(err->msg, "in the process of unplug")) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "device_del: %s", err->msg);
        op_finish(o, NULL, &e);
        return;
    }
    if (o->deleted) {
        build_cleanup(o);
        return;
    }
    o->waiting = true;
    o->wait_start = uv_now(o->d->loop);
    uv_timer_start(op_timer(o), detach_tick, WAIT_TICK_MS, 0);
}

static void on_pci_detach(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    disk_op *o = opaque;
    kh_err e = KH_ERR_INIT;
    if (err) {
        kh_err_set(&e, KH_E_QEMU, "query-pci: %s", err->msg);
        op_finish(o, NULL, &e);
        return;
    }
    int place = device_place(ret, o->dev_id);
    if (place == 0) {
        kh_err_set(&e, KH_E_CONFLICT, "vm %s: disk %zu was attached at start, on a slot without "
                                      "hot-unplug; stop the vm to detach it", o->vm, o->index);
        op_finish(o, NULL, &e);
        return;
    }
    if (place < 0) {
        build_cleanup(o); /* the guest released it after an earlier timeout */
        return;
    }
    if (kh_manager_qmp(o->d->mgr, o->vd.id, "device_del", json_pack("{s:s}", "id", o->dev_id),
                       on_device_del, o, &e) < 0)
        op_finish(o, NULL, &e);
}

int kh_disk_detach(kh_disks *d, const char *vm, const char *index, unsigned timeout_s,
                   kh_disk_cb cb, void *opaque, kh_err *err)
{
    if (!d) {
        kh_err_set(err, KH_E_UNAVAILABLE, "disks are not available");
        return -1;
    }
    char *end = NULL;
    errno = 0;
    unsigned long idx = index && *index >= '0' && *index <= '9' ? strtoul(index, &end, 10) : 0;
    if (!end || *end || errno || idx >= KH_VM_DISKS_MAX * 1000UL) {
        kh_err_set(err, KH_E_INVALID, "disk index: must be a number (0 is the first disk)");
        return -1;
    }
    if (timeout_s > DETACH_TIMEOUT_MAX_S) {
        kh_err_set(err, KH_E_INVALID, "timeout: at most %d seconds", DETACH_TIMEOUT_MAX_S);
        return -1;
    }
    if (sweeping(d, vm)) {
        defer(d, false, vm, NULL, index, timeout_s, cb, opaque);
        return 0;
    }
    disk_op *o = op_new(d, vm, false, cb, opaque);
    o->timeout_ms = (timeout_s ? timeout_s : DETACH_TIMEOUT_DEFAULT_S) * 1000u;
    if (kh_config_disk_begin(d->mgr, vm, &o->vd, err) < 0) {
        op_free(o);
        return -1;
    }
    if (idx >= o->vd.spec->ndisks) {
        kh_err_set(err, KH_E_NOTFOUND, "vm %s has no disk %lu (it has %zu)", vm, idx,
                   o->vd.spec->ndisks);
        goto fail;
    }
    o->index = idx;
    o->node = o->vd.node[idx];
    snprintf(o->dev_id, sizeof(o->dev_id), "disk%d-dev", o->node);
    o->link = d->ops;
    d->ops = o;
    if (!o->vd.live) {
        kh_vmuid_disown_disk(d->mgr, o->vd.id, &o->vd.spec->disks[idx]);
        remove_disk(&o->vd, idx);
        defer_commit(o);
        return 0;
    }
    if (kh_manager_qmp(d->mgr, o->vd.id, "query-pci", NULL, on_pci_detach, o, err) < 0) {
        kh_config_disk_end(d->mgr, o->vd.id);
        op_free(o);
        return -1;
    }
    return 0;
fail:
    kh_config_disk_end(d->mgr, o->vd.id);
    op_free(o);
    return -1;
}
