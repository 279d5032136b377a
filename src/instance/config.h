/* config.h - what an instance is: create, patch (live limits included),
 * delete, and the spec changes of disk and NIC attach/detach and vCPU
 * hot-plug. Each checks, writes the store, then changes the instance. */
#ifndef KH_INSTANCE_CONFIG_H
#define KH_INSTANCE_CONFIG_H

#include <jansson.h>
#include <stdbool.h>

#include "conf/vm_spec.h"
#include "instance/manager.h"
#include "util/err.h"

/* Create from a spec object; returns the VM object. */
json_t *kh_config_create(kh_manager *mgr, const json_t *spec, kh_err *err);
/* migration: as kh_config_create with the id given (the VM keeps its id on
 * the target host). */
json_t *kh_config_create_id(kh_manager *mgr, const json_t *spec, const char *id, kh_err *err);
/* kh_config_create with the cluster claim (an etcd txn) off the loop: cb
 * gets the VM's JSON (the callback's to keep) or the error, once: later,
 * on the loop, in a cluster; before this returns when there is no cluster
 * claim to make. -1 with err (cb not called) when a check fails first. */
typedef void (*kh_config_created_cb)(void *opaque, json_t *vm, const kh_err *err);
int kh_config_create_async(kh_manager *mgr, const json_t *spec, kh_config_created_cb cb,
                           void *opaque, kh_err *err);
/* Change a VM's spec. Limits of a running VM change live; when the store
 * write fails afterwards, the old limits are put back. */
json_t *kh_config_patch(kh_manager *mgr, const char *name, const json_t *patch, kh_err *err);
int kh_config_delete(kh_manager *mgr, const char *name, kh_err *err);
/* Delete a stopped VM and, with with_volumes, the pool volumes its disks
 * refer to (host files given by path never go). All or none: when one of
 * the volumes cannot go (another VM uses it, a volume is based on it - a
 * template's base with clones -, an operation on it runs) it is
 * KH_E_CONFLICT naming it and nothing changes. The VM row goes first, in
 * one transaction; the volumes after it (a failure there leaves an unused
 * volume, logged, never a VM whose disk is missing). */
int kh_config_delete_with_volumes(kh_manager *mgr, const char *name, bool with_volumes,
                                  kh_err *err);
/* Record the vCPU count a running VM has after a hot-plug (instance/hotplug.c):
 * the spec's vcpus (max_vcpus is kept) in the store, the vCPU pinning
 * re-applied. Returns the VM object. */
json_t *kh_config_set_live_vcpus(kh_manager *mgr, const char *id, unsigned vcpus, kh_err *err);

/* ---- disk changes (instance/disk.c) ---- */

/* A VM's disks, taken for a change. */
typedef struct kh_vm_disks {
    char id[37];
    bool live;                    /* a QEMU runs it (running or paused, QMP up) */
    kh_vm_spec *spec;             /* a copy (owned by the caller) */
    int node[KH_VM_DISKS_MAX];    /* QEMU node "disk<N>" of each spec disk */
} kh_vm_disks;
/* Take a VM's disks for a change: 409 while an action or another disk
 * change runs, while it starts or stops, and for a template. Until
 * kh_config_disk_end the VM refuses actions (but kill) and disk PATCHes. */
int kh_config_disk_begin(kh_manager *mgr, const char *name, kh_vm_disks *out, kh_err *err);
void kh_config_disk_end(kh_manager *mgr, const char *id);
/* Store a new disk list: spec (stolen) becomes the VM's spec; for a VM
 * with a QEMU, node gives the QEMU node of each disk (kept across a daemon
 * restart). Returns the VM object, or NULL with err set and nothing
 * changed. */
json_t *kh_config_disk_commit(kh_manager *mgr, const char *id, kh_vm_spec *spec,
                              const int *node, kh_err *err);

/* ---- NIC changes (instance/nic.c) ---- */

/* Would the VM accept this NIC list (an array of NIC objects)? removed:
 * the index of the NIC that goes (its limits.nic entry goes too, later
 * ones move down), or -1. Returns it
 * checked and completed (MACs assigned), or NULL with err (400/404/409).
 * Nothing changes. */
json_t *kh_config_nics_check(kh_manager *mgr, const char *name, const json_t *nics,
                             int removed, kh_err *err);
/* Replace the VM's NIC list in its spec and the store, in any state but
 * starting/stopping (instance/nic.c changes a running QEMU first); the network
 * manager's bindings (reservations, anti-spoofing, security groups)
 * follow at once. */
int kh_config_nics_commit(kh_manager *mgr, const char *name, const json_t *nics, int removed,
                          kh_err *err);

#endif
