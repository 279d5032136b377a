/* cgroup.h - one cgroup per VM, on cgroup v1 or v2.
 *
 * Each VM's QEMU runs in "<root>/vm-<uuid>" (root defaults to "kvmhost"):
 *   v2: /sys/fs/cgroup/<root>/vm-<uuid> with cpu, memory, io, pids enabled
 *       in the parent's subtree_control, and a device program (devbpf.h)
 *       allowing the same nodes as v1's devices controller;
 *   v1: the same relative path in each of the cpu, cpuacct, memory, pids,
 *       blkio and devices hierarchies; devices denies everything but the
 *       handful of nodes QEMU needs.
 * Moving QEMU out of the daemon's own cgroup is what lets it outlive the
 * daemon when a service manager kills the daemon's cgroup.
 */
#ifndef KH_HOST_CGROUP_H
#define KH_HOST_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "host/devbpf.h"
#include "util/err.h"

#define KH_CGROUP_V1_MAX 8

/* The device nodes QEMU may open, both versions. */
extern const kh_devbpf_rule kh_cgroups_devices[];
extern const size_t kh_cgroups_ndevices;

typedef struct kh_cgroups {
    int version;                 /* 1 or 2; 0 when unusable */
    char mount[256];             /* "/sys/fs/cgroup" */
    char root[64];               /* "kvmhost" */
    /* v1: controller mount points that exist, e.g. "/sys/fs/cgroup/memory" */
    char v1_dirs[KH_CGROUP_V1_MAX][256];
    size_t v1_count;
    char reason[256];            /* when version is 0 */
    char controllers[160];       /* v2: <mount>/cgroup.controllers ("": not read, taken as all) */
    char missing[128];           /* controllers kvmhost uses that are absent: "cpu,memory" */
    bool mounted_private;        /* found through kh_cgroups_mount_private */
} kh_cgroups;

/* Detect the layout under mount (NULL: /sys/fs/cgroup). Never fails: an
 * unusable layout gives version 0 with a reason, and VMs run without their
 * own cgroup (with a warning). */
void kh_cgroups_detect(kh_cgroups *cg, const char *mount, const char *root);
/* When /sys/fs/cgroup shows no hierarchy (e.g. under `ip netns exec`,
 * which mounts a fresh /sys without the cgroup mounts), mount them at `at`
 * in a mount namespace of the daemon's own: unshare(CLONE_NEWNS), / made a
 * slave (nothing propagates back to the host), then a tmpfs with each v1
 * hierarchy of /proc/self/cgroup under its controller names (and cgroup2 at
 * "unified"), or cgroup2 at `at` on a pure v2 host. The hierarchies are the
 * kernel's, the same the host sees. Must run before any thread starts.
 * Returns 0, or -1 with err set. */
int kh_cgroups_mount_private(const char *at, kh_err *err);
/* Whether controller ctrl ("cpu", "memory", "cpuset", "io", "pids") can be
 * used: v1 its hierarchy; v2 listed in the root's cgroup.controllers. */
bool kh_cgroups_has(const kh_cgroups *cg, const char *ctrl);
/* Create the VM's cgroup(s). */
int kh_cgroups_vm_create(const kh_cgroups *cg, const char *vm_id, kh_err *err);
/* In a freshly forked child: move the calling process into the VM's
 * cgroup(s). Async-signal-safe (open/write/close only). Returns -1 and
 * errno on failure. The child has one thread, so on v1 it moves itself
 * through "tasks": the kernel then skips the global threadgroup lock,
 * whose writer waits for an RCU grace period (6-15 ms per start through
 * cgroup.procs). */
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
