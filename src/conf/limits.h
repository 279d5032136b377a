/* limits.h - a VM's resource limits (quotas), as the user sets them.
 *
 * Pure parse/validate/print, like vm_spec.c; applying them is instance/quota.c.
 * JSON form (every key optional; absent = no limit):
 *   "limits": {
 *     "cpu_weight": 1..10000        relative share (cgroup v2 cpu.weight; 100 is
 *                                   the default; v1 cpu.shares = weight*1024/100)
 *     "cpu_max_percent": 1..100*vcpus   hard cap in percent of one host CPU
 *     "memory_max_mib": N           hard limit of the QEMU cgroup, >= memory_mib
 *     "cpu_affinity": [0, 2, ...]   host CPUs the vCPU threads may run on
 *     "emulator_cpus": [1]          host CPUs QEMU's other threads run on (main
 *                                   loop, workers: neither vCPU nor iothread)
 *     "iothread_cpus": [1]          host CPUs the disks' iothreads run on
 *     "numa_nodes": [0]             host NUMA nodes guest memory comes from
 *                                   (cgroup cpuset.mems)
 *     "balloon_mib": N              balloon target: the RAM the guest keeps,
 *                                   16..memory_mib (q35 only)
 *     "disk": [ { "index": 0,       the disk (position in "disks")
 *                 "iops_total", "iops_read", "iops_write",
 *                 "bps_total", "bps_read", "bps_write",          (per second)
 *                 "iops_total_max", ..., "bps_write_max" } ]     (bursts)
 *     "nic": [ { "index": 0,        the NIC (position in "nics")
 *                "inbound_bps": N,  bytes/s to the guest (tbf on the tap's egress)
 *                "outbound_bps": N, bytes/s from the guest (policed as the
 *                                   frames enter the bridge)
 *                "inbound_burst", "outbound_burst": bytes (default
 *                                   max(rate/8, 128 KiB)) } ]
 *   }
 * (inbound/outbound as libvirt names them: from the guest's point of view.)
 * Total and read/write of one kind exclude each other (QEMU's rule); a burst
 * needs its base limit and must be at least as large.
 */
#ifndef KH_CONF_LIMITS_H
#define KH_CONF_LIMITS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define KH_LIMITS_WEIGHT_MAX 10000
#define KH_LIMITS_DISK_FIELDS 12
#define KH_LIMITS_CPU_MAX 1023 /* highest host CPU number accepted */
#define KH_LIMITS_NODE_MAX 1023 /* highest NUMA node number accepted */

/* Field order of kh_disk_limits.v: QEMU's block_set_io_throttle names. */
extern const char *const kh_disk_limit_names[KH_LIMITS_DISK_FIELDS];
extern const char *const kh_disk_limit_qmp[KH_LIMITS_DISK_FIELDS];

typedef struct kh_disk_limits {
    unsigned index;
    uint64_t v[KH_LIMITS_DISK_FIELDS]; /* 0 = unlimited */
} kh_disk_limits;

typedef struct kh_nic_limits {
    unsigned index;
    uint64_t inbound_bps, outbound_bps;     /* 0 = unlimited */
    uint64_t inbound_burst, outbound_burst; /* bytes; 0 = the default */
} kh_nic_limits;

#define KH_LIMITS_NIC_BPS_MIN 1000ULL
#define KH_LIMITS_NIC_BPS_MAX 125000000000ULL /* 1 Tbit/s */
#define KH_LIMITS_NIC_BURST_MIN 65536ULL      /* a GSO frame must fit */
#define KH_LIMITS_NIC_BURST_MAX (1ULL << 30)

typedef struct kh_limits {
    unsigned cpu_weight;       /* 0 = unset */
    unsigned cpu_max_percent;  /* 0 = unset */
    uint64_t memory_max_mib;   /* 0 = unset */
    uint64_t balloon_mib;      /* 0 = unset (the balloon stays deflated) */
    unsigned *cpus;            /* cpu_affinity, ascending; NULL = unset */
    size_t ncpus;
    unsigned *emu_cpus;        /* emulator_cpus, the same way */
    size_t nemu_cpus;
    unsigned *io_cpus;         /* iothread_cpus */
    size_t nio_cpus;
    unsigned *nodes;           /* numa_nodes */
    size_t nnodes;
    kh_disk_limits *disks;
    size_t ndisks;
    kh_nic_limits *nics;
    size_t nnics;
} kh_limits;

/* Parse a "limits" object (fields checked alone; kh_limits_check does the
 * checks against the rest of the spec). NULL with err set (KH_E_INVALID). */
kh_limits *kh_limits_from_json(const json_t *obj, kh_err *err);
/* Checks against the VM: cpu_max_percent <= 100 * vcpus, memory_max_mib >=
 * memory_mib, disk indexes exist and appear once. */
int kh_limits_check(const kh_limits *l, unsigned vcpus, uint64_t memory_mib, size_t ndisks,
                    kh_err *err);
json_t *kh_limits_to_json(const kh_limits *l);
kh_limits *kh_limits_dup(const kh_limits *l);
void kh_limits_free(kh_limits *l);
/* The limits of disk index (NULL when none). */
const kh_disk_limits *kh_limits_disk(const kh_limits *l, unsigned index);
/* NIC indexes exist and appear once (beside kh_limits_check). */
int kh_limits_check_nics(const kh_limits *l, size_t nnics, kh_err *err);
/* The limits of NIC index (NULL when none). */
const kh_nic_limits *kh_limits_nic(const kh_limits *l, unsigned index);
/* The burst that applies: the given one, else max(rate/8, 128 KiB). */
uint64_t kh_limits_nic_burst(uint64_t bps, uint64_t burst);
/* NIC index went away: its limits go, those of later NICs move down one. */
void kh_limits_nic_removed(kh_limits *l, unsigned index);
/* PATCH merge: top-level keys of patch replace those of base (null removes
 * one; "disk" is replaced whole). A new object. */
json_t *kh_limits_merge(const json_t *base, const json_t *patch);

#endif
