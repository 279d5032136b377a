/* nic.h - a VM's NICs one at a time: add, remove, link up/down.
 *
 * On a stopped VM each call edits the spec (the next start has the NIC as
 * any other). On a running or paused q35 VM it changes QEMU first, then the
 * spec, each change a task:
 *  - add: a free hot-plug root port among hp4..hp7 (asked of QEMU with
 *    query-pci, so nothing needs to survive a daemon restart), the tap (Q
 *    queues, vhost-net when the host has it) passed with getfd (SCM_RIGHTS),
 *    netdev_add, the spec committed (anti-spoofing and security-group rules
 *    for the tap exist before the device does), device_add, set_link when
 *    the NIC is "down". A failed device_add takes the netdev and the spec
 *    change back.
 *  - remove: the device found by its MAC (query-rx-filter); device_del,
 *    then query-rx-filter every 200 ms until the guest let it go (within
 *    timeout_s, else KH_E_TIMEOUT and nothing else changes), netdev_del
 *    (QEMU closes the tap: the link goes), the spec committed (its rules
 *    go). A NIC the VM started with sits on pcie.0, which takes no
 *    hot-unplug: 409, stop the VM to remove it. A NIC in the spec whose
 *    device is gone (a daemon killed mid-way) is just taken out.
 *  - link: set_link on the device, then the spec.
 * One NIC operation per VM at a time (409 otherwise). microvm: 422-style
 * KH_E_UNSUPPORTED for live changes.
 */
#ifndef KH_VM_NIC_H
#define KH_VM_NIC_H

#include <jansson.h>
#include <uv.h>

#include "net/netmgr.h"
#include "util/err.h"
#include "instance/manager.h"
#include "instance/task.h"

typedef struct kh_nics kh_nics;

kh_nics *kh_nics_new(uv_loop_t *loop, kh_manager *mgr, kh_netmgr *net, kh_tasks *tasks);
void kh_nics_free(kh_nics *n);

/* nic: one NIC object as in the spec. Returns the task, or NULL with err
 * (400 bad NIC, 404 no VM, 409 busy or a state that forbids it) and
 * nothing changed. */
kh_task *kh_nics_add(kh_nics *n, const char *vm, const json_t *nic, kh_err *err);
#define KH_NICS_UNPLUG_TIMEOUT_DEFAULT 30
#define KH_NICS_UNPLUG_TIMEOUT_MAX 300
kh_task *kh_nics_remove(kh_nics *n, const char *vm, unsigned index, unsigned timeout_s,
                        kh_err *err);
/* body: {"link": "up"|"down"}, the only NIC field that changes in place. */
kh_task *kh_nics_set(kh_nics *n, const char *vm, unsigned index, const json_t *body,
                     kh_err *err);

#endif
