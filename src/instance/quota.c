/* quota.c - owns how a VM's limits (conf/limits.h) reach its cgroup
 * and QEMU, and the checks that the host can enforce them
 * (instance/quota.h). */
#include "instance/quota.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "host/proc.h"
#include "util/fs.h"
#include "util/mem.h"

#define CFS_PERIOD_US 100000ULL

static int write_file(const char *dir, const char *file, const char *value, kh_err *err)
{
    char p[700];
    kh_fmt(p, sizeof(p), "%s/%s", dir, file);
    /* O_TRUNC as a shell's ">" does: cgroupfs ignores it, a plain file
     * (the unit test's stand-in tree) needs it. */
    int fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
    ssize_t n = -1;
    int saved = errno;
    if (fd >= 0) {
        n = write(fd, value, strlen(value));
        saved = errno;
        close(fd);
    }
    if (n != (ssize_t)strlen(value)) {
        kh_err_set(err, saved == EBUSY || saved == EINVAL ? KH_E_CONFLICT : KH_E_INTERNAL,
                   "cannot set %s to %s: %s", file, value, strerror(saved ? saved : EIO));
        return -1;
    }
    return 0;
}

static int apply_v2(const kh_cgroups *cg, const char *vm_id, const kh_limits *l, kh_err *err)
{
    char dir[600], val[64];
    if (kh_cgroups_vm_dir(cg, vm_id, NULL, dir, sizeof(dir)) < 0) {
        kh_err_set(err, KH_E_UNSUPPORTED, "the VM has no cgroup");
        return -1;
    }
    snprintf(val, sizeof(val), "%u", l && l->cpu_weight ? l->cpu_weight : 100);
    if (write_file(dir, "cpu.weight", val, err) < 0)
        return -1;
    if (l && l->cpu_max_percent)
        snprintf(val, sizeof(val), "%llu %llu", l->cpu_max_percent * 1000ULL, CFS_PERIOD_US);
    else
        snprintf(val, sizeof(val), "max %llu", CFS_PERIOD_US);
    if (write_file(dir, "cpu.max", val, err) < 0)
        return -1;
    if (l && l->memory_max_mib)
        snprintf(val, sizeof(val), "%llu", (unsigned long long)l->memory_max_mib << 20);
    else
        snprintf(val, sizeof(val), "max");
    return write_file(dir, "memory.max", val, err);
}

static int apply_v1(const kh_cgroups *cg, const char *vm_id, const kh_limits *l, kh_err *err)
{
    char dir[600], val[64];
    if (kh_cgroups_vm_dir(cg, vm_id, "cpu", dir, sizeof(dir)) == 0) {
        unsigned long long shares = l && l->cpu_weight ? l->cpu_weight * 1024ULL / 100 : 1024;
        snprintf(val, sizeof(val), "%llu", shares < 2 ? 2 : shares);
        if (write_file(dir, "cpu.shares", val, err) < 0)
            return -1;
        snprintf(val, sizeof(val), "%llu", CFS_PERIOD_US);
        if (write_file(dir, "cpu.cfs_period_us", val, err) < 0)
            return -1;
        if (l && l->cpu_max_percent)
            snprintf(val, sizeof(val), "%llu", l->cpu_max_percent * 1000ULL);
        else
            snprintf(val, sizeof(val), "-1");
        if (write_file(dir, "cpu.cfs_quota_us", val, err) < 0)
            return -1;
    } else if (l && (l->cpu_weight || l->cpu_max_percent)) {
        kh_err_set(err, KH_E_UNSUPPORTED, "CPU limits need the cgroup v1 cpu controller");
        return -1;
    }
    if (kh_cgroups_vm_dir(cg, vm_id, "memory", dir, sizeof(dir)) == 0) {
        if (l && l->memory_max_mib)
            snprintf(val, sizeof(val), "%llu", (unsigned long long)l->memory_max_mib << 20);
        else
            snprintf(val, sizeof(val), "-1");
        if (write_file(dir, "memory.limit_in_bytes", val, err) < 0)
            return -1;
    } else if (l && l->memory_max_mib) {
        kh_err_set(err, KH_E_UNSUPPORTED, "memory limits need the cgroup v1 memory controller");
        return -1;
    }
    return 0;
}

/* numa_nodes -> cpuset.mems. Unset: v2 "" (the parent's), v1 the parent's
 * list (v1 has no inheritance). */
static int apply_mems(const kh_cgroups *cg, const char *vm_id, const kh_limits *l, kh_err *err)
{
    char dir[600], val[512] = "";
    if (kh_cgroups_vm_dir(cg, vm_id, cg->version == 2 ? NULL : "cpuset", dir, sizeof(dir)) < 0) {
        if (l && l->nnodes) {
            kh_err_set(err, KH_E_UNSUPPORTED, "limits.numa_nodes needs the cpuset cgroup "
                       "controller");
            return -1;
        }
        return 0;
    }
    char p[700];
    kh_fmt(p, sizeof(p), "%s/cpuset.mems", dir);
    if (access(p, F_OK) < 0) {
        if (l && l->nnodes) {
            kh_err_set(err, KH_E_UNSUPPORTED, "limits.numa_nodes needs the cpuset cgroup "
                       "controller (no %s)", p);
            return -1;
        }
        return 0;
    }
    if (l && l->nnodes) {
        size_t off = 0;
        for (size_t i = 0; i < l->nnodes && off < sizeof(val) - 12; i++)
            off += (size_t)snprintf(val + off, sizeof(val) - off, "%s%u", i ? "," : "",
                                    l->nodes[i]);
    } else if (cg->version == 1) {
        kh_fmt(p, sizeof(p), "%s/../cpuset.mems", dir);
        FILE *f = fopen(p, "re");
        if (!f || !fgets(val, sizeof(val), f))
            val[0] = '\0';
        if (f)
            fclose(f);
        val[strcspn(val, "\n")] = '\0';
        if (!val[0])
            return 0;
    }
    return write_file(dir, "cpuset.mems", val[0] ? val : "\n", err);
}

int kh_quota_apply_cgroup(const kh_cgroups *cg, const char *vm_id, const kh_limits *l,
                          kh_err *err)
{
    if (!cg || cg->version == 0) {
        if (l && (l->cpu_weight || l->cpu_max_percent || l->memory_max_mib || l->nnodes)) {
            kh_err_set(err, KH_E_UNSUPPORTED, "CPU, memory and NUMA limits need cgroups: %s",
                       cg ? cg->reason : "none");
            return -1;
        }
        return 0;
    }
    int rc = cg->version == 2 ? apply_v2(cg, vm_id, l, err) : apply_v1(cg, vm_id, l, err);
    return rc < 0 ? -1 : apply_mems(cg, vm_id, l, err);
}

int kh_quota_check_cgroup(const kh_cgroups *cg, const kh_limits *l, kh_err *err)
{
    if (!l)
        return 0;
    static const struct {
        const char *ctrl, *what;
    } need[] = { { "cpu", "cpu_weight and cpu_max_percent" },
                 { "memory", "memory_max_mib" },
                 { "cpuset", "numa_nodes" } };
    bool set[] = { l->cpu_weight || l->cpu_max_percent, l->memory_max_mib != 0, l->nnodes != 0 };
    for (size_t i = 0; i < KH_ARRAY_LEN(need); i++) {
        if (!set[i] || kh_cgroups_has(cg, need[i].ctrl))
            continue;
        if (!cg || cg->version == 0)
            kh_err_set(err, KH_E_UNSUPPORTED, "limits.%s need the cgroup %s controller, and "
                       "this host has no cgroups (%s)", need[i].what, need[i].ctrl,
                       cg ? cg->reason : "none");
        else
            kh_err_set(err, KH_E_UNSUPPORTED, "limits.%s need the cgroup %s controller, which "
                       "this host's cgroup v%d lacks", need[i].what, need[i].ctrl, cg->version);
        return -1;
    }
    return 0;
}

static int check_cpus(const char *key, const unsigned *cpus, size_t n, kh_err *err)
{
    long have = sysconf(_SC_NPROCESSORS_CONF);
    for (size_t i = 0; i < n; i++) {
        if (have > 0 && cpus[i] >= (unsigned long)have) {
            kh_err_set(err, KH_E_INVALID, "limits.%s: the host has no CPU %u (CPUs 0 to %ld)",
                       key, cpus[i], have - 1);
            return -1;
        }
    }
    return 0;
}

int kh_quota_check_host(const kh_limits *l, kh_err *err)
{
    if (!l)
        return 0;
    if (check_cpus("cpu_affinity", l->cpus, l->ncpus, err) < 0 ||
        check_cpus("emulator_cpus", l->emu_cpus, l->nemu_cpus, err) < 0 ||
        check_cpus("iothread_cpus", l->io_cpus, l->nio_cpus, err) < 0)
        return -1;
    for (size_t i = 0; i < l->nnodes; i++) {
        char p[96];
        snprintf(p, sizeof(p), "/sys/devices/system/node/node%u", l->nodes[i]);
        if (access(p, F_OK) < 0) {
            kh_err_set(err, KH_E_INVALID, "limits.numa_nodes: the host has no NUMA node %u "
                       "(see /sys/devices/system/node)", l->nodes[i]);
            return -1;
        }
    }
    return 0;
}

int kh_quota_check_memory(unsigned long long memory_mib, kh_err *err)
{
    double total = 0, avail = 0;
    kh_proc_meminfo(&total, &avail);
    unsigned long long host_mib = (unsigned long long)(total / (1024.0 * 1024.0));
    if (host_mib && memory_mib > host_mib) {
        kh_err_set(err, KH_E_INVALID, "memory_mib: %llu MiB is more than this host's RAM "
                   "(%llu MiB)", memory_mib, host_mib);
        return -1;
    }
    return 0;
}

/* The set of cpus, or every host CPU when n is 0. */
static void cpu_set_of(cpu_set_t *set, const unsigned *cpus, size_t n)
{
    CPU_ZERO(set);
    if (n) {
        for (size_t i = 0; i < n; i++)
            if (cpus[i] < CPU_SETSIZE)
                CPU_SET(cpus[i], set);
        return;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_CONF);
    for (long c = 0; c < ncpu && c < CPU_SETSIZE; c++)
        CPU_SET((size_t)c, set);
}

static int pin_tid(pid_t pid, pid_t tid, const cpu_set_t *set, const char *what, kh_err *err)
{
    if (sched_setaffinity(tid, sizeof(*set), set) < 0 && errno != ESRCH) {
        kh_err_set(err, errno == EINVAL ? KH_E_INVALID : KH_E_INTERNAL,
                   "cannot pin %s thread %d of QEMU %d: %s", what, (int)tid, (int)pid,
                   strerror(errno));
        return -1;
    }
    return 0;
}

int kh_quota_pin(pid_t pid, const pid_t *tids, size_t n, const kh_limits *l, kh_err *err)
{
    cpu_set_t set;
    cpu_set_of(&set, l ? l->cpus : NULL, l ? l->ncpus : 0);
    for (size_t i = 0; i < n; i++)
        if (pin_tid(pid, tids[i], &set, "vCPU", err) < 0)
            return -1;
    return 0;
}

static bool has_tid(const pid_t *tids, size_t n, pid_t t)
{
    for (size_t i = 0; i < n; i++)
        if (tids[i] == t)
            return true;
    return false;
}

int kh_quota_pin_others(pid_t pid, const pid_t *vcpus, size_t nv, const pid_t *io, size_t ni,
                        const kh_limits *l, kh_err *err)
{
    cpu_set_t ioset, emuset;
    cpu_set_of(&ioset, l ? l->io_cpus : NULL, l ? l->nio_cpus : 0);
    cpu_set_of(&emuset, l ? l->emu_cpus : NULL, l ? l->nemu_cpus : 0);
    for (size_t i = 0; i < ni; i++)
        if (pin_tid(pid, io[i], &ioset, "iothread", err) < 0)
            return -1;
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/task", (int)pid);
    DIR *d = opendir(p);
    if (!d) {
        kh_err_set(err, KH_E_INTERNAL, "cannot list %s: %s", p, strerror(errno));
        return -1;
    }
    int rc = 0;
    const struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        char *end;
        long t = strtol(de->d_name, &end, 10);
        if (*end || t <= 0 || has_tid(vcpus, nv, (pid_t)t) || has_tid(io, ni, (pid_t)t))
            continue;
        rc = pin_tid(pid, (pid_t)t, &emuset, "emulator", err);
    }
    closedir(d);
    return rc;
}

size_t kh_quota_vcpu_threads(const json_t *reply, pid_t *tids, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(reply) && n < max; i++) {
        const json_t *tid = json_object_get(json_array_get(reply, i), "thread-id");
        if (json_is_integer(tid) && json_integer_value(tid) > 0)
            tids[n++] = (pid_t)json_integer_value(tid);
    }
    return n;
}

json_t *kh_quota_throttle_args(unsigned index, bool pci, const kh_disk_limits *d)
{
    char id[64];
    /* QEMU finds the BlockBackend on the virtio device itself: behind a PCI
     * proxy that is its "virtio-backend" child. */
    if (pci)
        snprintf(id, sizeof(id), "/machine/peripheral/disk%u-dev/virtio-backend", index);
    else
        snprintf(id, sizeof(id), "disk%u-dev", index);
    json_t *a = json_object();
    json_object_set_new(a, "id", json_string(id));
    /* The six base values are mandatory in QMP; bursts only when set. */
    for (size_t f = 0; f < KH_LIMITS_DISK_FIELDS; f++) {
        json_int_t v = d ? (json_int_t)d->v[f] : 0;
        if (f < 6 || v)
            json_object_set_new(a, kh_disk_limit_qmp[f], json_integer(v));
    }
    return a;
}
