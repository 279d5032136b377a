/* cgroup.h - one cgroup per VM, on cgroup v1 or v2.
 *
 * Each VM's QEMU runs in "<root>/vm-<uuid>" (root defaults to "kvmhost"):
 *   v2: /sys/fs/cgroup/<root>/vm-<uuid> with cpu, memory, io, pids enabled
 *       in the parent's subtree_control;
 *   v1: the same relative path in each of the cpu, cpuacct, memory, pids,
 *       blkio and devices hierarchies; devices denies everything but the
 *       handful of nodes QEMU needs.
 * Moving QEMU out of the daemon's own cgroup is what lets it outlive the
 * daemon when a service manager kills the daemon's cgroup.
 */
#ifndef KH_HOST_CGROUP_H
#define KH_HOST_CGROUP_H

#include <stddef.h>
#include <sys/types.h>

#include "util/err.h"

#define KH_CGROUP_V1_MAX 8

typedef struct kh_cgroups {
    int version;                 /* 1 or 2; 0 when unusable */
    char mount[256];             /* "/sys/fs/cgroup" */
    char root[64];               /* "kvmhost" */
    /* v1: controller mount points that exist, e.g. "/sys/fs/cgroup/memory" */
    char v1_dirs[KH_CGROUP_V1_MAX][256];
    size_t v1_count;
    char reason[256];            /* when version is 0 */
} kh_cgroups;

/* Detect the layout under mount (NULL: /sys/fs/cgroup). Never fails: an
 * unusable layout gives version 0 with a reason, and VMs run without their
 * own cgroup (with a warning). */
void kh_cgroups_detect(kh_cgroups *cg, const char *mount, const char *root);
/* Create the VM's cgroup(s). */
int kh_cgroups_vm_create(const kh_cgroups *cg, const char *vm_id, kh_err *err);
/* In a freshly forked child: move the calling process into the VM's
 * cgroup(s). Async-signal-safe (open/write/close only). Returns -1 and
 * errno on failure. */
int kh_cgroups_vm_enter_self(const kh_cgroups *cg, const char *vm_id);
/* The pids in the VM's cgroup (v2: cgroup.procs; v1: the memory or first
 * hierarchy). *out is allocated; returns the count or -1. */
int kh_cgroups_vm_pids(const kh_cgroups *cg, const char *vm_id, pid_t **out, kh_err *err);
/* Remove the (empty) cgroup(s); missing ones are fine. */
int kh_cgroups_vm_remove(const kh_cgroups *cg, const char *vm_id, kh_err *err);
/* The directory of the VM's cgroup in one hierarchy: v2 ignores ctrl; v1 takes
 * a controller name ("memory", "cpu", ...). Returns 0, or -1 if absent. */
int kh_cgroups_vm_dir(const kh_cgroups *cg, const char *vm_id, const char *ctrl, char *out,
                      size_t size);

#endif
