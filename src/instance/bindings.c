/* bindings.c - owns what ties an instance to storage and network: disks
 * given as volumes (resolution, sharing rules, who uses a volume, growing
 * one a running VM writes to) and NICs (the network manager's bindings,
 * MACs, tap rates). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/limits.h"
#include "instance/instance_int.h"
#include "net/link.h"
#include "net/mac.h"
#include "net/tap.h"
#include "util/log.h"
#include "util/mem.h"

/* ---- disks given as volumes (storage/storage.h) ---- */

/* Resolve the volume disks of spec in place: file, format and backing
 * chain from the storage records. A writable disk may not be a read-only
 * base or the base of other volumes (writing it would corrupt them), and
 * when `self` is given (a start), a volume used by another VM with a QEMU
 * is refused unless both use it read-only (security case 23). code is the
 * error code for those refusals (400 at create, 409 at start). */
int kh_bindings_resolve_volumes(kh_manager *mgr, const kh_inst *self, kh_vm_spec *spec,
                                kh_code code, kh_err *err)
{
    for (size_t i = 0; i < spec->ndisks; i++) {
        kh_disk_spec *d = &spec->disks[i];
        if (!d->volume)
            continue;
        if (!mgr->cfg.storage) {
            kh_err_set(err, KH_E_UNAVAILABLE, "disks[%zu]: storage is not available", i);
            return -1;
        }
        kh_volume_chain c;
        kh_err rerr = KH_ERR_INIT;
        if (kh_storage_resolve(mgr->cfg.storage, d->volume, &c, &rerr) < 0) {
            kh_err_set(err, rerr.code == KH_E_NOTFOUND ? KH_E_INVALID : rerr.code,
                       "disks[%zu].volume: %s", i, rerr.msg);
            return -1;
        }
        int rc = 0;
        if (!d->readonly && c.readonly) {
            kh_err_set(err, code, "disks[%zu]: volume %s is a read-only base; attach it "
                                  "readonly or use a clone", i, d->volume);
            rc = -1;
        } else if (!d->readonly && c.dependents) {
            kh_err_set(err, code, "disks[%zu]: volume %s is the base of %u other volume(s); "
                                  "attach it readonly", i, d->volume, c.dependents);
            rc = -1;
        }
        for (const kh_inst *o = mgr->vms; rc == 0 && self && o; o = o->next) {
            if (o == self || !kh_inst_active(o))
                continue;
            for (size_t k = 0; k < o->spec->ndisks; k++) {
                const kh_disk_spec *od = &o->spec->disks[k];
                if (od->volume && strcmp(od->volume, d->volume) == 0 &&
                    !(od->readonly && d->readonly)) {
                    kh_err_set(err, KH_E_CONFLICT,
                               "disks[%zu]: volume %s is in use by the running vm %s; a "
                               "volume is shared only read-only", i, d->volume, o->spec->name);
                    rc = -1;
                    break;
                }
            }
        }
        if (rc == 0) {
            free(d->path);
            d->path = xstrdup(c.layer[0].path);
            d->format = c.layer[0].format;
            d->encrypted = c.encrypted;
            kh_disk_spec_clear_backing(d);
            if (c.n > 1) {
                d->nbacking = c.n - 1;
                d->backing = xcalloc(d->nbacking, sizeof(*d->backing));
                for (size_t j = 1; j < c.n; j++) {
                    d->backing[j - 1].path = xstrdup(c.layer[j].path);
                    d->backing[j - 1].format = c.layer[j].format;
                    d->backing[j - 1].encrypted = c.layer[j].encrypted;
                }
            }
        }
        kh_volume_chain_clear(&c);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Volume disks must exist and be attachable as asked (checked on a copy:
 * the stored spec keeps the references, never the files). */
int kh_bindings_check_volumes(kh_manager *mgr, const kh_vm_spec *spec, kh_err *err)
{
    kh_vm_spec *copy = kh_vm_spec_dup(spec);
    int rc = kh_bindings_resolve_volumes(mgr, NULL, copy, KH_E_INVALID, err);
    kh_vm_spec_free(copy);
    return rc;
}

/* The storage layer asks which VMs refer to a volume. */
json_t *kh_bindings_volume_users(kh_manager *mgr, const char *ref)
{
    json_t *arr = json_array();
    for (const kh_inst *v = mgr->vms; v; v = v->next) {
        for (size_t i = 0; i < v->spec->ndisks; i++) {
            const kh_disk_spec *d = &v->spec->disks[i];
            if (d->volume && strcmp(d->volume, ref) == 0) {
                json_array_append_new(arr, json_pack("{s:s, s:b, s:b}", "vm", v->spec->name,
                                                     "running", kh_inst_active(v), "readonly",
                                                     d->readonly));
                break;
            }
        }
    }
    return arr;
}

static json_t *volume_users(void *opaque, const char *ref)
{
    return kh_bindings_volume_users(opaque, ref);
}

typedef struct live_resize {
    kh_volume_resize_done done;
    void *opaque;
} live_resize;

static void on_block_resize(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    (void)ret;
    live_resize *lr = opaque;
    lr->done(err, lr->opaque);
    free(lr);
}

/* The storage layer grows a volume that a running VM writes to. */
static int volume_live_resize(void *opaque, const char *ref, uint64_t size,
                              kh_volume_resize_done done, void *done_opaque, kh_err *err)
{
    kh_manager *mgr = opaque;
    for (kh_inst *v = mgr->vms; v; v = v->next) {
        if (!v->drv->monitor_ready(v) ||
            (v->state != KH_INST_RUNNING && v->state != KH_INST_PAUSED))
            continue;
        for (size_t i = 0; i < v->spec->ndisks; i++) {
            const kh_disk_spec *d = &v->spec->disks[i];
            if (!d->volume || strcmp(d->volume, ref) != 0 || d->readonly)
                continue;
            char node[32];
            snprintf(node, sizeof(node), "disk%d", v->disk_node[i]);
            live_resize *lr = xcalloc(1, sizeof(*lr));
            lr->done = done;
            lr->opaque = done_opaque;
            if (v->drv->command(v, "block_resize",
                               json_pack("{s:s, s:I}", "node-name", node, "size",
                                         (json_int_t)size),
                                -1, on_block_resize, lr, err) < 0) {
                free(lr);
                return -1;
            }
            kh_log(KH_LOG_INFO, "volume.resize_online", "vm=%s volume=%s size=%llu",
                   v->spec->name, ref, (unsigned long long)size);
            return 0;
        }
    }
    kh_err_set(err, KH_E_CONFLICT, "volume %s: no running VM writes to it now", ref);
    return -1;
}

void kh_bindings_attach(kh_manager *mgr)
{
    if (mgr->cfg.storage) {
        kh_storage_set_users(mgr->cfg.storage, volume_users, mgr);
        kh_storage_set_live_resize(mgr->cfg.storage, volume_live_resize, mgr);
    }
}

void kh_bindings_detach(kh_manager *mgr)
{
    if (mgr->cfg.storage) {
        kh_storage_set_users(mgr->cfg.storage, NULL, NULL);
        kh_storage_set_live_resize(mgr->cfg.storage, NULL, NULL);
    }
}

/* ---- NICs ---- */

/* Tell the network manager every VM's NICs (reservations, "in use"). */
void kh_bindings_sync(kh_manager *mgr)
{
    if (!mgr->cfg.net)
        return;
    size_t n = 0;
    for (kh_inst *v = mgr->vms; v; v = v->next)
        n += v->spec->nnics;
    kh_net_binding *b = xcalloc(n + 1, sizeof(*b));
    char (*taps)[16] = xcalloc(n + 1, sizeof(*taps));
    size_t k = 0;
    for (kh_inst *v = mgr->vms; v; v = v->next) {
        for (size_t i = 0; i < v->spec->nnics; i++) {
            const kh_nic_spec *nic = &v->spec->nics[i];
            kh_tap_name(nic->mac, taps[k]);
            const kh_nic_limits *nl = kh_limits_nic(v->spec->limits, (unsigned)i);
            uint64_t out = nl ? nl->outbound_bps : 0;
            b[k] = (kh_net_binding){ v->spec->name, nic->network, nic->mac, nic->ip, taps[k],
                                     nic->security_groups, out,
                                     out ? kh_limits_nic_burst(out, nl->outbound_burst) : 0 };
            k++;
        }
    }
    kh_netmgr_set_bindings(mgr->cfg.net, b, k);
    free(b);
    free(taps);
}

static bool mac_taken(kh_manager *mgr, const char *vm_id, const kh_vm_spec *spec, size_t upto,
                      const char *mac)
{
    for (kh_inst *o = mgr->vms; o; o = o->next) {
        if (strcmp(o->id, vm_id) == 0)
            continue;
        for (size_t i = 0; i < o->spec->nnics; i++)
            if (o->spec->nics[i].mac && strcmp(o->spec->nics[i].mac, mac) == 0)
                return true;
    }
    for (size_t i = 0; i < spec->nnics; i++)
        if (i != upto && spec->nics[i].mac && strcmp(spec->nics[i].mac, mac) == 0)
            return true;
    return false;
}

typedef struct mac_query {
    kh_manager *mgr;
    const char *vm_id;
    const kh_vm_spec *spec;
    size_t upto;
} mac_query;

static bool mac_taken_by(const char *mac, void *opaque)
{
    const mac_query *q = opaque;
    return mac_taken(q->mgr, q->vm_id, q->spec, q->upto, mac);
}

/* Check a spec's NICs against the networks and give each a MAC: the
 * user's (unique on this host) or a stable one from the VM id. */
int kh_bindings_nics_prepare(kh_manager *mgr, const char *vm_id, kh_vm_spec *spec, kh_err *err)
{
    if (spec->nnics && !mgr->cfg.net) {
        kh_err_set(err, KH_E_UNAVAILABLE, "nics: networks are not available on this daemon");
        return -1;
    }
    for (size_t i = 0; i < spec->nnics; i++) {
        kh_nic_spec *nic = &spec->nics[i];
        if (kh_netmgr_nic_check(mgr->cfg.net, spec->name, nic->network, nic->ip, err) < 0 ||
            kh_netmgr_groups_check(mgr->cfg.net, nic->security_groups, err) < 0) {
            kh_err_prefix(err, "nics[%zu]", i);
            return -1;
        }
        for (size_t j = 0; j < i && nic->ip; j++) {
            if (spec->nics[j].ip && strcmp(spec->nics[j].ip, nic->ip) == 0 &&
                strcmp(spec->nics[j].network, nic->network) == 0) {
                kh_err_set(err, KH_E_INVALID, "nics[%zu].ip: same address as nics[%zu]", i, j);
                return -1;
            }
        }
        if (nic->mac) {
            if (mac_taken(mgr, vm_id, spec, i, nic->mac)) {
                kh_err_set(err, KH_E_CONFLICT, "nics[%zu].mac: %s is used by another NIC", i,
                           nic->mac);
                return -1;
            }
            continue;
        }
        char mac[KH_MAC_STRLEN];
        mac_query q = { mgr, vm_id, spec, i };
        kh_mac_pick(vm_id, (unsigned)i, mac_taken_by, &q, mac);
        nic->mac = xstrdup(mac);
    }
    return 0;
}

/* limits.nic inbound_bps: a tbf qdisc on each tap's egress (what the
 * guest receives); NICs whose limit went away get their default qdisc
 * back. (outbound_bps is policed in nftables: kh_bindings_sync.) */
int kh_bindings_nic_rates(kh_inst *v, const kh_limits *old, const kh_limits *now, kh_err *err)
{
    for (size_t i = 0; i < v->spec->nnics; i++) {
        const kh_nic_limits *o = kh_limits_nic(old, (unsigned)i);
        const kh_nic_limits *n = kh_limits_nic(now, (unsigned)i);
        char tap[16];
        kh_tap_name(v->spec->nics[i].mac, tap);
        int rc = 0;
        if (n && n->inbound_bps) {
            if (!o || o->inbound_bps != n->inbound_bps || o->inbound_burst != n->inbound_burst)
                rc = kh_link_rate_set(tap, n->inbound_bps,
                                      kh_limits_nic_burst(n->inbound_bps, n->inbound_burst), err);
        } else if (o && o->inbound_bps) {
            rc = kh_link_rate_clear(tap, err);
        }
        if (rc < 0) {
            kh_err_prefix(err, "limits.nic[%zu]", i);
            return -1;
        }
    }
    return 0;
}
