/* quota.h - apply a VM's limits (conf/limits.h) to its cgroup and QEMU.
 *
 * CPU and memory go to the VM's cgroup, on v1 or v2:
 *   weight   v2 cpu.weight            v1 cpu.shares = max(2, weight*1024/100)
 *   max %    v2 cpu.max "Q 100000"    v1 cpu.cfs_period_us 100000,
 *                                        cpu.cfs_quota_us Q  (Q = percent*1000)
 *   memory   v2 memory.max            v1 memory.limit_in_bytes
 * An unset limit writes the kernel's default (100 / 1024, "max" / -1), so
 * removing a limit on a running VM takes effect too.
 * cpu_affinity pins every vCPU thread (sched_setaffinity on the thread ids
 * QEMU reports in query-cpus-fast), at start before `cont` and live;
 * iothread_cpus the iothreads (query-iothreads), emulator_cpus every other
 * QEMU thread. numa_nodes goes to the cgroup's cpuset.mems (v1 cpuset
 * hierarchy, v2 cpuset controller).
 * Disk limits go to QEMU: block_set_io_throttle on the disk's device
 * "disk<i>-dev" (the argv builder's ids; on q35 its virtio-backend child),
 * at start before `cont` and live.
 */
#ifndef KH_VM_QUOTA_H
#define KH_VM_QUOTA_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "conf/limits.h"
#include "host/cgroup.h"
#include "util/err.h"

/* Write the CPU and memory limits (l may be NULL: all defaults). Returns 0,
 * or -1 with err set (KH_E_CONFLICT when the kernel refuses, e.g. a memory
 * limit below what QEMU already uses). Without cgroups: 0 if l sets no CPU
 * or memory limit, else KH_E_UNSUPPORTED. */
int kh_quota_apply_cgroup(const kh_cgroups *cg, const char *vm_id, const kh_limits *l,
                          kh_err *err);
/* The cgroup controllers l's CPU, memory and NUMA limits need exist
 * (KH_E_UNSUPPORTED naming the missing one if not): a limit is refused
 * rather than accepted and not enforced. */
int kh_quota_check_cgroup(const kh_cgroups *cg, const kh_limits *l, kh_err *err);
/* The host has every CPU of l's cpu_affinity (KH_E_INVALID if not). */
int kh_quota_check_host(const kh_limits *l, kh_err *err);
/* A guest's memory_mib fits this host's RAM (MemTotal): a single VM larger
 * than the host could never run (KH_E_INVALID naming both figures).
 * Several VMs may together overcommit the host; one alone may not. */
int kh_quota_check_memory(unsigned long long memory_mib, kh_err *err);
/* Pin threads (the vCPU threads of QEMU pid) to l's cpu_affinity, or to
 * every CPU when l has none. Returns 0, or -1 with err set. */
int kh_quota_pin(pid_t pid, const pid_t *tids, size_t n, const kh_limits *l, kh_err *err);
/* Pin QEMU pid's iothreads (io, from query-iothreads) to l's
 * iothread_cpus and every other thread that is neither a vCPU (vcpus) nor
 * an iothread (the main loop, RCU, workers: /proc/PID/task) to
 * emulator_cpus; unset lists mean every CPU. Threads that end meanwhile
 * are skipped. Returns 0, or -1 with err set. */
int kh_quota_pin_others(pid_t pid, const pid_t *vcpus, size_t nv, const pid_t *io, size_t ni,
                        const kh_limits *l, kh_err *err);
/* The thread ids in a query-cpus-fast reply (at most max). */
size_t kh_quota_vcpu_threads(const json_t *reply, pid_t *tids, size_t max);

/* The arguments of block_set_io_throttle for disk index (d NULL: no limits);
 * pci: the disk is a virtio-blk-pci (q35), else a virtio-blk-device. A new
 * object. */
json_t *kh_quota_throttle_args(unsigned index, bool pci, const kh_disk_limits *d);

#endif
