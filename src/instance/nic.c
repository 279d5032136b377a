/* nic.c - owns a VM's NIC changes one at a time: add, remove, link
 * up/down, live through the monitor or in the spec (instance/nic.h). */
#include "instance/nic.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "net/link.h"
#include "net/tap.h"
#include "qemu/argv.h"
#include "schema/schema.h"
#include "util/log.h"
#include "util/mem.h"
#include "instance/config.h"
#include "instance/hotplug.h"

#define POLL_MS 200
#define NIC_PORT_FIRST 4 /* hp4..hp7: NICs; hp0..hp3 belong to disks */

typedef enum op_kind { OP_ADD, OP_REMOVE, OP_LINK } op_kind;
static const char *const kind_names[] = { "nic.add", "nic.remove", "nic.link" };

typedef struct nic_op nic_op;

struct kh_nics {
    uv_loop_t *loop;
    kh_manager *mgr;
    kh_netmgr *net;
    kh_tasks *tasks;
    nic_op *ops;
};

struct nic_op {
    kh_nics *n;
    op_kind kind;
    char *vm, *vm_id;
    kh_task *task;
    json_t *old_nics; /* the spec's list before */
    json_t *new_nics; /* the list to commit */
    unsigned index;
    bool vhost;
    bool link_down;
    unsigned queues;
    unsigned waited_ms;
    unsigned timeout_ms; /* remove: how long the guest may take to release it */
    char mac[18], tap[16], netdev[24], dev[32], port[8];
    char *found; /* remove/link: the device id QEMU reports for the MAC */
    kh_err failure;
    uv_timer_t *timer;
    unsigned pending; /* QMP replies still owed to this op */
    bool finished;    /* the task is done; freed once pending is 0 */
    nic_op *link;
};

kh_nics *kh_nics_new(uv_loop_t *loop, kh_manager *mgr, kh_netmgr *net, kh_tasks *tasks)
{
    kh_nics *n = xcalloc(1, sizeof(*n));
    n->loop = loop;
    n->mgr = mgr;
    n->net = net;
    n->tasks = tasks;
    return n;
}

void kh_nics_free(kh_nics *n)
{
    free(n); /* operations still running end with the daemon */
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void op_unlink(nic_op *o)
{
    for (nic_op **pp = &o->n->ops; *pp; pp = &(*pp)->link) {
        if (*pp == o) {
            *pp = o->link;
            break;
        }
    }
}

/* Free now, or once the QMP replies still owed to it have come (each
 * on_reply frees it then). */
static void op_free(nic_op *o)
{
    op_unlink(o);
    o->finished = true;
    if (o->pending)
        return;
    if (o->timer)
        uv_close((uv_handle_t *)o->timer, timer_closed);
    json_decref(o->old_nics);
    json_decref(o->new_nics);
    free(o->vm);
    free(o->vm_id);
    free(o->found);
    free(o);
}

static void op_finish(nic_op *o, const kh_err *err)
{
    if (err) {
        kh_log(KH_LOG_WARN, kind_names[o->kind], "vm=%s index=%u error=\"%s\"", o->vm, o->index,
               err->msg);
        kh_task_fail(o->task, err);
    } else {
        kh_log(KH_LOG_INFO, kind_names[o->kind], "vm=%s index=%u mac=%s tap=%s port=%s", o->vm,
               o->index, o->mac, o->tap, o->port[0] ? o->port : "-");
        json_t *r = json_pack("{s:s, s:i, s:s, s:s}", "vm", o->vm, "index", (json_int_t)o->index,
                              "mac", o->mac, "tap", o->tap);
        if (o->port[0])
            json_object_set_new(r, "port", json_string(o->port));
        kh_task_succeed(o->task, r);
    }
    op_free(o);
}

static int removed_of(const nic_op *o)
{
    return o->kind == OP_REMOVE ? (int)o->index : -1;
}

static void op_commit_finish(nic_op *o)
{
    kh_err err = KH_ERR_INIT;
    if (kh_config_nics_commit(o->n->mgr, o->vm, o->new_nics, removed_of(o), &err) < 0)
        op_finish(o, &err);
    else
        op_finish(o, NULL);
}

/* What a reply does to its op; ret and err as for kh_qmp_reply_cb. */
typedef void (*op_reply_fn)(nic_op *o, json_t *ret, const kh_err *err);

typedef struct op_call {
    nic_op *o;
    op_reply_fn fn; /* NULL: the reply is only waited for */
} op_call;

/* Every reply of an op comes here. When the op has finished meanwhile, the
 * reply does nothing more (the op is freed with its last reply); else its
 * op_reply_fn runs. */
static void on_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    op_call c = *(op_call *)opaque;
    free(opaque);
    nic_op *o = c.o;
    o->pending--;
    if (o->finished) {
        op_free(o); /* frees once pending is 0 */
        return;
    }
    if (c.fn)
        c.fn(o, ret, err);
}

/* Send cmd (args stolen) with fd (-1: none; owned from the call on); fn
 * runs on the reply. -1 with err, and no reply, when it cannot be sent. */
static int qmp_fd(nic_op *o, const char *cmd, json_t *args, int fd, op_reply_fn fn, kh_err *err)
{
    op_call *c = xmalloc(sizeof(*c));
    c->o = o;
    c->fn = fn;
    int rc = fd >= 0 ? kh_manager_qmp_fd(o->n->mgr, o->vm_id, cmd, args, fd, on_reply, c, err)
                     : kh_manager_qmp(o->n->mgr, o->vm_id, cmd, args, on_reply, c, err);
    if (rc == 0)
        o->pending++;
    else
        free(c);
    return rc;
}

static int qmp(nic_op *o, const char *cmd, json_t *args, op_reply_fn fn, kh_err *err)
{
    return qmp_fd(o, cmd, args, -1, fn, err);
}

/* Record the first error of a batch; the batch's last reply acts on it. */
static void record_reply(nic_op *o, json_t *ret, const kh_err *err)
{
    (void)ret;
    if (err && !kh_err_isset(&o->failure))
        kh_err_copy(&o->failure, err);
}

/* ---- add ---- */

static void add_undo_netdev(nic_op *o)
{
    kh_err e = KH_ERR_INIT;
    qmp(o, "netdev_del", json_pack("{s:s}", "id", o->netdev), NULL, &e);
}

static void on_add_link(nic_op *o, json_t *ret, const kh_err *err)
{
    (void)ret;
    if (err) /* the NIC is there; its spec says down: say so */
        kh_log(KH_LOG_WARN, "nic.add", "vm=%s set_link: %s", o->vm, err->msg);
    op_finish(o, NULL);
}

static void on_device_add(nic_op *o, json_t *ret, const kh_err *err)
{
    (void)ret;
    if (err) {
        kh_err e = KH_ERR_INIT;
        add_undo_netdev(o);
        kh_config_nics_commit(o->n->mgr, o->vm, o->old_nics, -1, &e);
        kh_err f = KH_ERR_INIT;
        kh_err_set(&f, KH_E_QEMU, "device_add: %s", err->msg);
        op_finish(o, &f);
        return;
    }
    kh_err e = KH_ERR_INIT;
    if (o->link_down &&
        qmp(o, "set_link", json_pack("{s:s, s:b}", "name", o->dev, "up", 0), on_add_link, &e) == 0)
        return;
    op_finish(o, NULL);
}

static void on_netdev_add(nic_op *o, json_t *ret, const kh_err *err)
{
    (void)ret;
    if (err || kh_err_isset(&o->failure)) {
        kh_err f = KH_ERR_INIT;
        kh_err_set(&f, KH_E_QEMU, "%s: %s", err ? "netdev_add" : "getfd",
                   err ? err->msg : o->failure.msg);
        /* Named fds QEMU did not consume: close them. */
        for (unsigned i = 0; i < 2 * o->queues; i++) {
            char name[32];
            snprintf(name, sizeof(name), "%s%c%u", o->tap, i < o->queues ? 't' : 'v',
                     i % o->queues);
            kh_err e = KH_ERR_INIT;
            qmp(o, "closefd", json_pack("{s:s}", "fdname", name), NULL, &e);
        }
        op_finish(o, &f);
        return;
    }
    /* The rules for the tap (anti-spoofing, groups) before the guest sees it. */
    kh_err e = KH_ERR_INIT;
    if (kh_config_nics_commit(o->n->mgr, o->vm, o->new_nics, removed_of(o), &e) < 0) {
        add_undo_netdev(o);
        op_finish(o, &e);
        return;
    }
    json_t *dev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "driver", "virtio-net-pci", "id",
                            o->dev, "netdev", o->netdev, "mac", o->mac, "bus", o->port,
                            "romfile", "");
    if (o->queues > 1) {
        json_object_set_new(dev, "mq", json_true());
        json_object_set_new(dev, "vectors", json_integer(2 * o->queues + 2));
    }
    if (qmp(o, "device_add", dev, on_device_add, &e) < 0) {
        kh_err u = KH_ERR_INIT;
        kh_config_nics_commit(o->n->mgr, o->vm, o->old_nics, -1, &u);
        op_finish(o, &e);
    }
}

static void fd_names(char *buf, size_t size, const char *tap, char kind, unsigned queues)
{
    size_t off = 0;
    buf[0] = '\0';
    for (unsigned q = 0; q < queues && off < size; q++)
        off += (size_t)snprintf(buf + off, size - off, "%s%s%c%u", q ? ":" : "", tap, kind, q);
}

/* Open the tap, pass its fds, then netdev_add (replies come in order). */
static void add_plug(nic_op *o)
{
    kh_err err = KH_ERR_INIT;
    const char *network = json_string_value(
        json_object_get(json_array_get(o->new_nics, o->index), "network"));
    int tfd[KH_QEMU_NIC_QUEUES_MAX], vfd[KH_QEMU_NIC_QUEUES_MAX];
    if (kh_netmgr_tap_open(o->n->net, network, o->tap, o->queues, tfd, &err) < 0) {
        op_finish(o, &err);
        return;
    }
    o->vhost = true;
    for (unsigned q = 0; q < o->queues; q++) {
        vfd[q] = o->vhost ? open("/dev/vhost-net", O_RDWR | O_CLOEXEC) : -1;
        if (vfd[q] < 0 && o->vhost) {
            o->vhost = false;
            for (unsigned j = 0; j < q; j++)
                close(vfd[j]);
        }
    }
    /* Each getfd takes its fd (closed once sent, or on failure). */
    for (unsigned i = 0; i < 2 * o->queues; i++) {
        unsigned q = i % o->queues;
        bool v = i >= o->queues;
        if (v && !o->vhost)
            break;
        char name[32];
        snprintf(name, sizeof(name), "%s%c%u", o->tap, v ? 'v' : 't', q);
        kh_err e = KH_ERR_INIT;
        if (qmp_fd(o, "getfd", json_pack("{s:s}", "fdname", name), v ? vfd[q] : tfd[q],
                   record_reply, &e) < 0 &&
            !kh_err_isset(&o->failure))
            kh_err_copy(&o->failure, &e);
    }
    char fds[192], vfds[192];
    fd_names(fds, sizeof(fds), o->tap, 't', o->queues);
    json_t *nd = json_pack("{s:s, s:s, s:s, s:b}", "type", "tap", "id", o->netdev,
                           o->queues > 1 ? "fds" : "fd", fds, "vhost", o->vhost);
    if (o->vhost) {
        fd_names(vfds, sizeof(vfds), o->tap, 'v', o->queues);
        json_object_set_new(nd, o->queues > 1 ? "vhostfds" : "vhostfd", json_string(vfds));
    }
    if (qmp(o, "netdev_add", nd, on_netdev_add, &err) < 0)
        op_finish(o, &err);
}

static void on_query_pci(nic_op *o, json_t *ret, const kh_err *err)
{
    if (err) {
        op_finish(o, err);
        return;
    }
    bool used[KH_QEMU_HOTPLUG_PORTS] = { false };
    bool seen[KH_QEMU_HOTPLUG_PORTS] = { false };
    size_t bi, di;
    json_t *bus, *dev;
    json_array_foreach(ret, bi, bus) {
        json_array_foreach(json_object_get(bus, "devices"), di, dev) {
            const char *id = json_string_value(json_object_get(dev, "qdev_id"));
            unsigned p;
            char tail;
            if (!id || sscanf(id, "hp%u%c", &p, &tail) != 1 || p >= KH_QEMU_HOTPLUG_PORTS)
                continue;
            seen[p] = true;
            json_t *below = json_object_get(json_object_get(dev, "pci_bridge"), "devices");
            used[p] = json_array_size(below) > 0;
        }
    }
    int port = -1;
    for (unsigned p = NIC_PORT_FIRST; p < KH_QEMU_HOTPLUG_PORTS && port < 0; p++)
        if (seen[p] && !used[p])
            port = (int)p;
    if (port < 0) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_CONFLICT,
                   "vm %s has no free NIC hot-plug port (hp%d..hp%d): remove a hot-plugged NIC "
                   "or stop the VM to add it",
                   o->vm, NIC_PORT_FIRST, KH_QEMU_HOTPLUG_PORTS - 1);
        op_finish(o, &e);
        return;
    }
    kh_qemu_hotplug_port_id((unsigned)port, o->port, sizeof(o->port));
    add_plug(o);
}

/* ---- remove and link: find the device by its MAC ---- */

static void remove_poll_now(nic_op *o);

static void remove_poll(uv_timer_t *t)
{
    remove_poll_now(t->data);
}

static void on_netdev_del(nic_op *o, json_t *ret, const kh_err *err)
{
    (void)ret;
    if (err) /* a netdev that is not there (a daemon killed mid-add) is fine */
        kh_log(KH_LOG_DEBUG, "nic.remove", "vm=%s netdev_del: %s", o->vm, err->msg);
    op_commit_finish(o);
}

static void remove_netdev(nic_op *o)
{
    kh_err e = KH_ERR_INIT;
    if (qmp(o, "netdev_del", json_pack("{s:s}", "id", o->netdev), on_netdev_del, &e) < 0)
        op_finish(o, &e);
}

/* The device id QEMU gives the NIC with mac (a new string), or NULL. */
static char *rx_filter_find(json_t *ret, const char *mac)
{
    size_t i;
    json_t *f;
    json_array_foreach(ret, i, f) {
        const char *m = json_string_value(json_object_get(f, "main-mac"));
        const char *name = json_string_value(json_object_get(f, "name"));
        if (m && name && strcasecmp(m, mac) == 0)
            return xstrdup(name);
    }
    return NULL;
}

static void on_unplug_poll(nic_op *o, json_t *ret, const kh_err *err)
{
    if (err) {
        op_finish(o, err);
        return;
    }
    char *still = rx_filter_find(ret, o->mac);
    if (!still) {
        remove_netdev(o);
        return;
    }
    free(still);
    if (o->waited_ms >= o->timeout_ms) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_TIMEOUT,
                   "nics[%u]: the guest did not release the NIC within %u s (no DEVICE_DELETED; "
                   "is it up and handling PCIe hot-unplug?); the NIC stays (if the guest "
                   "releases it later, remove it again to finish)",
                   o->index, o->timeout_ms / 1000);
        op_finish(o, &e);
        return;
    }
    if (!o->timer) {
        o->timer = xcalloc(1, sizeof(*o->timer));
        uv_timer_init(o->n->loop, o->timer);
        o->timer->data = o;
    }
    o->waited_ms += POLL_MS;
    uv_timer_start(o->timer, remove_poll, POLL_MS, 0);
}

static void remove_poll_now(nic_op *o)
{
    kh_err e = KH_ERR_INIT;
    if (qmp(o, "query-rx-filter", NULL, on_unplug_poll, &e) < 0)
        op_finish(o, &e);
}

static void on_device_del(nic_op *o, json_t *ret, const kh_err *err)
{
    (void)ret;
    /* An unplug asked for earlier (one that timed out) is still pending:
     * wait for it like for a new one. */
    if (err && !strstr(err->msg, "in the process of unplug")) {
        kh_err e = KH_ERR_INIT;
        kh_err_set(&e, KH_E_QEMU, "device_del: %s", err->msg);
        op_finish(o, &e);
        return;
    }
    kh_task_progress(o->task, 40, "waiting for the guest to release the NIC");
    remove_poll_now(o);
}

static void on_link_set(nic_op *o, json_t *ret, const kh_err *err)
{
    (void)ret;
    if (err) {
        op_finish(o, err);
        return;
    }
    op_commit_finish(o);
}

static void on_rx_filter(nic_op *o, json_t *ret, const kh_err *err)
{
    if (err) {
        op_finish(o, err);
        return;
    }
    o->found = rx_filter_find(ret, o->mac);
    kh_err e = KH_ERR_INIT;
    if (o->kind == OP_LINK) {
        if (!o->found) {
            kh_err_set(&e, KH_E_CONFLICT, "nics[%u]: the running VM has no device with MAC %s",
                       o->index, o->mac);
            op_finish(o, &e);
        } else if (qmp(o, "set_link", json_pack("{s:s, s:b}", "name", o->found, "up", !o->link_down),
                       on_link_set, &e) < 0) {
            op_finish(o, &e);
        }
        return;
    }
    if (!o->found) { /* gone already (a daemon killed mid-way): tidy up */
        remove_netdev(o);
        return;
    }
    if (strcmp(o->found, o->dev) != 0) {
        kh_err_set(&e, KH_E_CONFLICT,
                   "nics[%u] was there when vm %s started: it sits on the root bus, which takes "
                   "no hot-unplug; stop the VM to remove it",
                   o->index, o->vm);
        op_finish(o, &e);
        return;
    }
    if (qmp(o, "device_del", json_pack("{s:s}", "id", o->dev), on_device_del, &e) < 0)
        op_finish(o, &e);
}

/* ---- entry points ---- */

static nic_op *busy(kh_nics *n, const char *vm)
{
    for (nic_op *o = n->ops; o; o = o->link)
        if (strcmp(o->vm, vm) == 0)
            return o;
    return NULL;
}

/* Common start: the VM's facts; o->old_nics filled. NULL with err. */
static nic_op *op_new(kh_nics *n, op_kind kind, const char *vm, json_t **vmj, kh_err *err)
{
    if (!n->net) {
        kh_err_set(err, KH_E_UNAVAILABLE, "networks are not available on this daemon");
        return NULL;
    }
    json_t *j = kh_manager_vm_json(n->mgr, vm, err);
    if (!j)
        return NULL;
    const char *state = json_string_value(json_object_get(j, "state"));
    if (strcmp(state, "stopped") != 0 && strcmp(state, "running") != 0 &&
        strcmp(state, "paused") != 0) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s is %s: its NICs cannot change now", vm, state);
        json_decref(j);
        return NULL;
    }
    if (busy(n, vm)) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s: another NIC change is in progress", vm);
        json_decref(j);
        return NULL;
    }
    nic_op *o = xcalloc(1, sizeof(*o));
    o->n = n;
    o->kind = kind;
    o->vm = xstrdup(vm);
    o->vm_id = xstrdup(json_string_value(json_object_get(j, "id")));
    json_t *nics = json_object_get(j, "nics");
    o->old_nics = nics ? json_deep_copy(nics) : json_array();
    size_t i;
    json_t *nic;
    json_array_foreach(o->old_nics, i, nic) {
        json_object_del(nic, "hotplugged"); /* runtime, not spec (vm_json) */
        json_object_del(nic, "addresses");
    }
    *vmj = j;
    return o;
}

static bool is_live(const json_t *vmj)
{
    return strcmp(json_string_value(json_object_get(vmj, "state")), "stopped") != 0;
}

static void op_ids(nic_op *o)
{
    /* the NIC that comes (add: its MAC was just assigned), goes or changes */
    const json_t *list = o->kind == OP_REMOVE ? o->old_nics : o->new_nics;
    const char *mac = json_string_value(json_object_get(json_array_get(list, o->index), "mac"));
    snprintf(o->mac, sizeof(o->mac), "%s", mac ? mac : "");
    kh_tap_name(o->mac, o->tap);
    snprintf(o->netdev, sizeof(o->netdev), "hn%s", o->tap + 2);
    snprintf(o->dev, sizeof(o->dev), "%s-dev", o->netdev);
}

/* Checked new list, the op registered and its task made. Stopped VMs are
 * done here. Returns the task or NULL (op freed). */
static kh_task *op_begin(nic_op *o, const json_t *vmj, json_t *candidate, kh_err *err)
{
    o->new_nics = kh_config_nics_check(o->n->mgr, o->vm, candidate, removed_of(o), err);
    json_decref(candidate);
    if (!o->new_nics) {
        op_free(o);
        return NULL;
    }
    bool live = is_live(vmj);
    if (live && o->kind != OP_LINK &&
        strcmp(json_string_value(json_object_get(vmj, "machine")), "q35") != 0) {
        kh_err_set(err, KH_E_UNSUPPORTED,
                   "vm %s is a microvm: NICs hot-plug on q35 only; stop it to change its NICs",
                   o->vm);
        op_free(o);
        return NULL;
    }
    if (live && o->kind == OP_ADD && kh_hotplug_device_check(o->n->mgr, o->vm, "a NIC", err) < 0) {
        op_free(o);
        return NULL;
    }
    op_ids(o);
    if (!live) {
        if (kh_config_nics_commit(o->n->mgr, o->vm, o->new_nics, removed_of(o), err) < 0) {
            op_free(o);
            return NULL;
        }
    }
    o->task = kh_task_new(o->n->tasks, kind_names[o->kind], o->vm);
    if (!live) {
        kh_task *t = o->task;
        op_finish(o, NULL);
        return t;
    }
    o->link = o->n->ops;
    o->n->ops = o;
    kh_task_progress(o->task, 10, "asking QEMU");
    kh_task *t = o->task;
    kh_err e = KH_ERR_INIT;
    if (o->kind == OP_ADD) {
        /* What a daemon killed in the middle of this same add may have left
         * in QEMU (named fds, a netdev without its device, holding the
         * tap): gone before the tap is made again. Errors are expected. */
        for (unsigned i = 0; i < 2 * o->queues; i++) {
            char name[32];
            snprintf(name, sizeof(name), "%s%c%u", o->tap, i < o->queues ? 't' : 'v',
                     i % o->queues);
            qmp(o, "closefd", json_pack("{s:s}", "fdname", name), NULL, &e);
        }
        qmp(o, "netdev_del", json_pack("{s:s}", "id", o->netdev), NULL, &e);
        kh_err_clear(&e);
    }
    int rc = o->kind == OP_ADD ? qmp(o, "query-pci", NULL, on_query_pci, &e)
                               : qmp(o, "query-rx-filter", NULL, on_rx_filter, &e);
    if (rc < 0)
        op_finish(o, &e);
    return t;
}

kh_task *kh_nics_add(kh_nics *n, const char *vm, const json_t *nic, kh_err *err)
{
    if (!json_is_object(nic)) {
        kh_err_set(err, KH_E_INVALID, "nic: must be a JSON object");
        return NULL;
    }
    json_t *vmj;
    nic_op *o = op_new(n, OP_ADD, vm, &vmj, err);
    if (!o)
        return NULL;
    if (json_array_size(o->old_nics) >= KH_VM_NICS_MAX) {
        kh_err_set(err, KH_E_CONFLICT, "vm %s has %d NICs already (the most)", vm,
                   KH_VM_NICS_MAX);
        json_decref(vmj);
        op_free(o);
        return NULL;
    }
    o->index = (unsigned)json_array_size(o->old_nics);
    json_int_t vcpus = json_integer_value(json_object_get(vmj, "vcpus"));
    o->queues = vcpus < KH_QEMU_NIC_QUEUES_MAX ? (unsigned)(vcpus > 0 ? vcpus : 1)
                                               : KH_QEMU_NIC_QUEUES_MAX;
    o->link_down = json_is_string(json_object_get(nic, "link")) &&
                   strcmp(json_string_value(json_object_get(nic, "link")), "down") == 0;
    json_t *cand = json_deep_copy(o->old_nics);
    json_array_append_new(cand, json_deep_copy(nic));
    kh_task *t = op_begin(o, vmj, cand, err);
    json_decref(vmj);
    return t;
}

kh_task *kh_nics_remove(kh_nics *n, const char *vm, unsigned index, unsigned timeout_s,
                        kh_err *err)
{
    if (timeout_s < 1 || timeout_s > KH_NICS_UNPLUG_TIMEOUT_MAX) {
        kh_err_set(err, KH_E_INVALID, "timeout: must be 1 to %d seconds",
                   KH_NICS_UNPLUG_TIMEOUT_MAX);
        return NULL;
    }
    json_t *vmj;
    nic_op *o = op_new(n, OP_REMOVE, vm, &vmj, err);
    if (!o)
        return NULL;
    o->timeout_ms = timeout_s * 1000;
    if (index >= json_array_size(o->old_nics)) {
        kh_err_set(err, KH_E_NOTFOUND, "vm %s has no NIC %u", vm, index);
        json_decref(vmj);
        op_free(o);
        return NULL;
    }
    o->index = index;
    json_t *cand = json_deep_copy(o->old_nics);
    json_array_remove(cand, index);
    kh_task *t = op_begin(o, vmj, cand, err);
    json_decref(vmj);
    return t;
}

kh_task *kh_nics_set(kh_nics *n, const char *vm, unsigned index, const json_t *body,
                     kh_err *err)
{
    if (!json_is_object(body)) {
        kh_err_set(err, KH_E_INVALID, "body: must be a JSON object");
        return NULL;
    }
    /* NICPatch.json: only link changes in place (remove and add to change the rest) */
    if (kh_schema_check("NICPatch", body, "", err) < 0)
        return NULL;
    json_t *link = json_object_get(body, "link");
    if (!link) {
        kh_err_set(err, KH_E_INVALID, "link is required");
        return NULL;
    }
    json_t *vmj;
    nic_op *o = op_new(n, OP_LINK, vm, &vmj, err);
    if (!o)
        return NULL;
    if (index >= json_array_size(o->old_nics)) {
        kh_err_set(err, KH_E_NOTFOUND, "vm %s has no NIC %u", vm, index);
        json_decref(vmj);
        op_free(o);
        return NULL;
    }
    o->index = index;
    o->link_down = json_is_string(link) && strcmp(json_string_value(link), "down") == 0;
    json_t *cand = json_deep_copy(o->old_nics);
    json_object_set(json_array_get(cand, index), "link", link);
    kh_task *t = op_begin(o, vmj, cand, err);
    json_decref(vmj);
    return t;
}
