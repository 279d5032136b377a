/* metrics.c - Prometheus exposition, history and the sampler (metrics.h). */
#include "instance/metrics.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/limits.h"
#include "host/proc.h"
#include "storage/storage.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/prom.h"
#include "util/series.h"
#include "instance/alert.h"

#define HISTORY_SECONDS 3600.0
#define HISTORY_MAX 3600
#define REQ_KEYS_MAX 512
#define VCPUS_MAX 256

/* History fields, per VM and for the host (the JSON "fields" list). */
enum { VF_CPU, VF_MEM, VF_RSS, VF_RD_BPS, VF_WR_BPS, VF_RD_IOPS, VF_WR_IOPS, VF_N };
static const char *const vm_fields[VF_N] = {
    "cpu_percent", "memory_bytes", "rss_bytes", "disk_read_bytes_per_second",
    "disk_write_bytes_per_second", "disk_read_ops_per_second", "disk_write_ops_per_second",
};
enum {
    HF_CPU, HF_MEM_USED, HF_MEM_TOTAL, HF_LOAD1, HF_RUNNING, HF_DISK_USED, HF_DISK_TOTAL,
    HF_DISK_RD_BPS, HF_DISK_WR_BPS, HF_NET_RX_BPS, HF_NET_TX_BPS, HF_N
};
static const char *const host_fields[HF_N] = {
    "cpu_percent", "memory_used_bytes", "memory_total_bytes", "load1", "vms_running",
    "disk_used_bytes", "disk_total_bytes", "disk_read_bytes_per_second",
    "disk_write_bytes_per_second", "net_rx_bytes_per_second", "net_tx_bytes_per_second",
};

static const double latency_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,   0.25,   0.5,   1,    2.5,   5,    10 };
#define NBOUNDS (sizeof(latency_bounds) / sizeof(latency_bounds[0]))

typedef struct disk_stat {
    char name[32];
    double rd_bytes, wr_bytes, rd_ops, wr_ops, rd_time_s, wr_time_s, flush_ops;
} disk_stat;

typedef struct vm_entry {
    char id[37];
    char *name;
    char state[16];
    bool seen;
    pid_t pid;               /* the QEMU the caches below belong to */
    disk_stat *disks;
    size_t ndisks;
    pid_t vcpu_tids[VCPUS_MAX];
    size_t nvcpus;
    double balloon_actual;   /* bytes, 0 = unknown */
    double guest_total, guest_free, guest_avail; /* balloon statistics, 0 = unknown */
    /* previous sample, for rates */
    double last_t, last_cpu, last_rd, last_wr, last_rdo, last_wro;
    kh_series *hist;
    struct vm_entry *next;
} vm_entry;

typedef struct req_key {
    char method[8];
    const char *route;
    unsigned status;
    uint64_t count;
} req_key;

typedef struct lat_key {
    const char *route;
    uint64_t buckets[NBOUNDS + 1];
    double sum;
} lat_key;

struct kh_metrics {
    uv_loop_t *loop;
    kh_manager *mgr;
    kh_tasks *tasks;
    kh_alerts *alerts;       /* optional, borrowed */
    const kh_cgroups *cg;
    uv_timer_t *timer;
    unsigned interval_ms;
    size_t slots;
    char accel[16];
    double started_at;
    vm_entry *vms;
    kh_series *host_hist;
    double last_host_t, last_busy, last_total;
    double last_disk_rd, last_disk_wr, last_net_rx, last_net_tx; /* host counters */
    char *state_dir;         /* its filesystem is the host's "disk" */
    kh_storage *storage;     /* optional, borrowed: pool paths */
    req_key reqs[REQ_KEYS_MAX];
    size_t nreqs;
    lat_key lats[REQ_KEYS_MAX];
    size_t nlats;
    uint64_t samples;
    double sample_seconds; /* time spent sampling, for the cost figure */
    int pending;           /* QMP replies in flight */
    bool dead;
};

/* ---- small readers ---- */

static bool read_u64_file(const char *path, unsigned long long *out)
{
    char buf[64];
    FILE *fp = fopen(path, "re");
    if (!fp)
        return false;
    bool ok = fgets(buf, sizeof(buf), fp) != NULL;
    fclose(fp);
    if (!ok || buf[0] < '0' || buf[0] > '9')
        return false;
    *out = strtoull(buf, NULL, 10);
    return true;
}

/* "key value" lines (cpu.stat, meminfo): the value of key, or false. */
static bool read_keyed(const char *path, const char *key, unsigned long long *out)
{
    char line[256];
    size_t kl = strlen(key);
    FILE *fp = fopen(path, "re");
    if (!fp)
        return false;
    bool found = false;
    while (fgets(line, sizeof(line), fp)) {
        if (strncmp(line, key, kl) == 0 && (line[kl] == ' ' || line[kl] == ':')) {
            const char *p = line + kl + 1;
            while (*p == ' ')
                p++;
            *out = strtoull(p, NULL, 10);
            found = true;
            break;
        }
    }
    fclose(fp);
    return found;
}

/* CPU seconds of the VM's cgroup (every thread of its QEMU). */
static bool vm_cpu_seconds(const kh_metrics *m, const char *id, double *out)
{
    char dir[600], p[700];
    unsigned long long v;
    if (!m->cg || m->cg->version == 0)
        return false;
    if (m->cg->version == 2) {
        if (kh_cgroups_vm_dir(m->cg, id, NULL, dir, sizeof(dir)) < 0)
            return false;
        kh_fmt(p, sizeof(p), "%s/cpu.stat", dir);
        if (!read_keyed(p, "usage_usec", &v))
            return false;
        *out = (double)v / 1e6;
        return true;
    }
    if (kh_cgroups_vm_dir(m->cg, id, "cpuacct", dir, sizeof(dir)) < 0 &&
        kh_cgroups_vm_dir(m->cg, id, "cpu", dir, sizeof(dir)) < 0)
        return false;
    kh_fmt(p, sizeof(p), "%s/cpuacct.usage", dir);
    if (!read_u64_file(p, &v))
        return false;
    *out = (double)v / 1e9;
    return true;
}

/* Memory usage and limit of the VM's cgroup; limit 0 = none. */
static bool vm_memory(const kh_metrics *m, const char *id, double *usage, double *limit)
{
    char dir[600], p[700];
    unsigned long long u, l = 0;
    if (!m->cg || m->cg->version == 0)
        return false;
    const char *cur = m->cg->version == 2 ? "memory.current" : "memory.usage_in_bytes";
    const char *max = m->cg->version == 2 ? "memory.max" : "memory.limit_in_bytes";
    if (kh_cgroups_vm_dir(m->cg, id, m->cg->version == 2 ? NULL : "memory", dir, sizeof(dir)) < 0)
        return false;
    kh_fmt(p, sizeof(p), "%s/%s", dir, cur);
    if (!read_u64_file(p, &u))
        return false;
    kh_fmt(p, sizeof(p), "%s/%s", dir, max);
    if (!read_u64_file(p, &l) || l >= (1ULL << 62)) /* "max", or v1's "unlimited" */
        l = 0;
    *usage = (double)u;
    *limit = (double)l;
    return true;
}

/* utime + stime of one thread, in seconds. */
static bool thread_cpu_seconds(pid_t pid, pid_t tid, double *out)
{
    char p[96], buf[1024];
    snprintf(p, sizeof(p), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    FILE *fp = fopen(p, "re");
    if (!fp)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *s = strrchr(buf, ')'); /* the command may hold spaces */
    if (!s)
        return false;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ... utime is field 14, stime 15 */
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    long hz = sysconf(_SC_CLK_TCK);
    *out = (double)(ut + st) / (double)(hz > 0 ? hz : 100);
    return true;
}

typedef struct host_cpu {
    unsigned long long v[8]; /* user nice system idle iowait irq softirq steal */
} host_cpu;

static const char *const cpu_modes[8] = { "user", "nice",    "system", "idle",
                                          "iowait", "irq", "softirq", "steal" };

static bool read_host_cpu(host_cpu *c)
{
    char line[512];
    FILE *fp = fopen("/proc/stat", "re");
    if (!fp)
        return false;
    bool ok = fgets(line, sizeof(line), fp) != NULL;
    fclose(fp);
    memset(c, 0, sizeof(*c));
    return ok && sscanf(line, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &c->v[0], &c->v[1],
                        &c->v[2], &c->v[3], &c->v[4], &c->v[5], &c->v[6], &c->v[7]) >= 4;
}

static void read_load(double load[3])
{
    load[0] = load[1] = load[2] = 0;
    FILE *fp = fopen("/proc/loadavg", "re");
    if (!fp)
        return;
    if (fscanf(fp, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
        load[0] = load[1] = load[2] = 0;
    fclose(fp);
}

/* Whole-disk bytes read and written, and network bytes received and sent
 * on every interface but lo, since boot. */
static void host_io_totals(double *drd, double *dwr, double *nrx, double *ntx)
{
    *drd = *dwr = *nrx = *ntx = 0;
    kh_proc_disk *d;
    size_t n = kh_proc_diskstats(&d);
    for (size_t i = 0; i < n; i++) {
        *drd += (double)d[i].read_bytes;
        *dwr += (double)d[i].write_bytes;
    }
    free(d);
    kh_proc_netdev *nd;
    n = kh_proc_netdevs(&nd);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(nd[i].name, "lo") == 0)
            continue;
        *nrx += (double)nd[i].rx_bytes;
        *ntx += (double)nd[i].tx_bytes;
    }
    free(nd);
}

/* ---- VM entries ---- */

static vm_entry *entry_find(kh_metrics *m, const char *id)
{
    for (vm_entry *e = m->vms; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

static vm_entry *entry_find_name(kh_metrics *m, const char *name)
{
    for (vm_entry *e = m->vms; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

static void entry_free(vm_entry *e)
{
    free(e->name);
    free(e->disks);
    kh_series_free(e->hist);
    free(e);
}

/* Make the entry match the VM: a new QEMU drops the old caches. */
static vm_entry *entry_sync(kh_metrics *m, const kh_vm_info *info)
{
    vm_entry *e = entry_find(m, info->id);
    if (!e) {
        e = xcalloc(1, sizeof(*e));
        memcpy(e->id, info->id, sizeof(e->id));
        e->hist = kh_series_new(m->slots, VF_N);
        e->next = m->vms;
        m->vms = e;
    }
    if (!e->name || strcmp(e->name, info->name) != 0) {
        free(e->name);
        e->name = xstrdup(info->name);
    }
    snprintf(e->state, sizeof(e->state), "%s", info->state);
    if (e->pid != info->pid) {
        e->pid = info->pid;
        free(e->disks);
        e->disks = NULL;
        e->ndisks = 0;
        e->nvcpus = 0;
        e->last_t = 0;
        e->balloon_actual = e->guest_total = e->guest_free = e->guest_avail = 0;
    }
    e->seen = true;
    return e;
}

/* ---- QMP replies ---- */

enum { Q_BLOCKSTATS, Q_CPUS, Q_BALLOON, Q_GSTATS };

typedef struct qmp_req {
    kh_metrics *m;
    char id[37];
    pid_t pid;
    int kind;
} qmp_req;

static double jnum(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

/* "disk<i>" from a blockstats entry: the qdev path holds our device id
 * ("/machine/peripheral/disk0-dev/virtio-backend"), else the node name. */
static void disk_name(const json_t *entry, char out[32])
{
    const char *qdev = json_string_value(json_object_get(entry, "qdev"));
    const char *node = json_string_value(json_object_get(entry, "node-name"));
    const char *dev = json_string_value(json_object_get(entry, "device"));
    out[0] = '\0';
    if (qdev) {
        const char *p = strstr(qdev, "/disk");
        if (p) {
            size_t n = strcspn(p + 1, "-/");
            snprintf(out, 32, "%.*s", (int)(n < 31 ? n : 31), p + 1);
            return;
        }
    }
    snprintf(out, 32, "%s", node && *node ? node : dev && *dev ? dev : "unknown");
}

static void on_blockstats(vm_entry *e, json_t *ret)
{
    size_t n = json_array_size(ret);
    disk_stat *d = n ? xcalloc(n, sizeof(*d)) : NULL;
    for (size_t i = 0; i < n; i++) {
        const json_t *entry = json_array_get(ret, i);
        const json_t *st = json_object_get(entry, "stats");
        disk_name(entry, d[i].name);
        d[i].rd_bytes = jnum(st, "rd_bytes");
        d[i].wr_bytes = jnum(st, "wr_bytes");
        d[i].rd_ops = jnum(st, "rd_operations");
        d[i].wr_ops = jnum(st, "wr_operations");
        d[i].flush_ops = jnum(st, "flush_operations");
        d[i].rd_time_s = jnum(st, "rd_total_time_ns") / 1e9;
        d[i].wr_time_s = jnum(st, "wr_total_time_ns") / 1e9;
    }
    free(e->disks);
    e->disks = d;
    e->ndisks = n;
}

static void on_cpus(vm_entry *e, json_t *ret)
{
    e->nvcpus = 0;
    for (size_t i = 0; i < json_array_size(ret) && e->nvcpus < VCPUS_MAX; i++) {
        const json_t *tid = json_object_get(json_array_get(ret, i), "thread-id");
        if (json_is_integer(tid))
            e->vcpu_tids[e->nvcpus++] = (pid_t)json_integer_value(tid);
    }
}

static void metrics_destroy(kh_metrics *m);

static void on_qmp_reply(kh_qmp *q, json_t *ret, const kh_err *err, void *opaque)
{
    (void)q;
    qmp_req *r = opaque;
    kh_metrics *m = r->m;
    m->pending--;
    vm_entry *e = m->dead ? NULL : entry_find(m, r->id);
    if (e && !err && e->pid == r->pid) {
        if (r->kind == Q_BLOCKSTATS) {
            on_blockstats(e, ret);
        } else if (r->kind == Q_CPUS) {
            on_cpus(e, ret);
        } else if (r->kind == Q_BALLOON) {
            e->balloon_actual = jnum(ret, "actual");
        } else {
            /* -1 means "not reported yet" in QEMU's stats. */
            const json_t *st = json_object_get(ret, "stats");
            double t = jnum(st, "stat-total-memory"), f = jnum(st, "stat-free-memory"),
                   a = jnum(st, "stat-available-memory");
            e->guest_total = t > 0 ? t : 0;
            e->guest_free = f > 0 ? f : 0;
            e->guest_avail = a > 0 ? a : 0;
        }
    }
    free(r);
    if (m->dead && m->pending == 0)
        metrics_destroy(m);
}

static void ask(kh_metrics *m, const vm_entry *e, const char *cmd, int kind)
{
    qmp_req *r = xcalloc(1, sizeof(*r));
    r->m = m;
    memcpy(r->id, e->id, sizeof(r->id));
    r->pid = e->pid;
    r->kind = kind;
    kh_err err = KH_ERR_INIT;
    json_t *args = NULL;
    if (kind == Q_BLOCKSTATS)
        args = json_pack("{s:b}", "query-nodes", 0);
    else if (kind == Q_GSTATS)
        args = json_pack("{s:s, s:s}", "path", "/machine/peripheral/balloon0", "property",
                         "guest-stats");
    if (kh_manager_qmp(m->mgr, e->id, cmd, args, on_qmp_reply, r, &err) < 0) {
        free(r);
        return;
    }
    m->pending++;
}

/* ---- the sampler ---- */

static void disk_totals(const vm_entry *e, double *rd, double *wr, double *rdo, double *wro)
{
    *rd = *wr = *rdo = *wro = 0;
    for (size_t i = 0; i < e->ndisks; i++) {
        *rd += e->disks[i].rd_bytes;
        *wr += e->disks[i].wr_bytes;
        *rdo += e->disks[i].rd_ops;
        *wro += e->disks[i].wr_ops;
    }
}

static void sample_vm(const kh_vm_info *info, void *opaque)
{
    kh_metrics *m = opaque;
    vm_entry *e = entry_sync(m, info);
    if (info->pid <= 0)
        return;
    if (info->qmp_ready) {
        ask(m, e, "query-blockstats", Q_BLOCKSTATS);
        if (e->nvcpus != info->spec->vcpus) /* new QEMU, or vCPUs hot-plugged */
            ask(m, e, "query-cpus-fast", Q_CPUS);
        if (info->spec->machine == KH_MACHINE_Q35) {
            ask(m, e, "query-balloon", Q_BALLOON);
            ask(m, e, "qom-get", Q_GSTATS);
        }
    }
    double now = kh_wall_time();
    double cpu = 0, mem = 0, limit = 0, rd, wr, rdo, wro;
    bool have_cpu = vm_cpu_seconds(m, e->id, &cpu);
    vm_memory(m, e->id, &mem, &limit);
    double rss = (double)kh_proc_rss_kib(info->pid) * 1024;
    disk_totals(e, &rd, &wr, &rdo, &wro);
    double row[VF_N] = { 0 };
    row[VF_MEM] = mem;
    row[VF_RSS] = rss;
    if (e->last_t > 0 && now > e->last_t) {
        double dt = now - e->last_t;
        row[VF_CPU] = have_cpu && cpu >= e->last_cpu ? (cpu - e->last_cpu) / dt * 100 : 0;
        /* disk counters come from the previous round's replies: rates over
         * the same interval, one sample late. */
        row[VF_RD_BPS] = rd >= e->last_rd ? (rd - e->last_rd) / dt : 0;
        row[VF_WR_BPS] = wr >= e->last_wr ? (wr - e->last_wr) / dt : 0;
        row[VF_RD_IOPS] = rdo >= e->last_rdo ? (rdo - e->last_rdo) / dt : 0;
        row[VF_WR_IOPS] = wro >= e->last_wro ? (wro - e->last_wro) / dt : 0;
        kh_series_push(e->hist, now, row);
        if (m->alerts) {
            /* Saturation: use over capacity (vCPUs, or the CPU cap when lower). */
            double cap = 100.0 * info->spec->vcpus;
            if (info->spec->limits && info->spec->limits->cpu_max_percent &&
                info->spec->limits->cpu_max_percent < cap)
                cap = info->spec->limits->cpu_max_percent;
            const char *fields[VF_N + 1];
            double vals[VF_N + 1];
            for (size_t k = 0; k < VF_N; k++) {
                fields[k] = vm_fields[k];
                vals[k] = row[k];
            }
            fields[VF_N] = "cpu_saturation_percent";
            vals[VF_N] = row[VF_CPU] / cap * 100;
            kh_alerts_feed(m->alerts, info->name, fields, vals, VF_N + 1, now);
        }
    }
    e->last_t = now;
    e->last_cpu = cpu;
    e->last_rd = rd;
    e->last_wr = wr;
    e->last_rdo = rdo;
    e->last_wro = wro;
}

static void sample(kh_metrics *m)
{
    uint64_t t0 = uv_hrtime();
    for (vm_entry *e = m->vms; e; e = e->next)
        e->seen = false;
    if (m->alerts)
        kh_alerts_begin(m->alerts);
    kh_manager_foreach(m->mgr, sample_vm, m);
    /* Forget deleted VMs. */
    for (vm_entry **pp = &m->vms; *pp;) {
        vm_entry *e = *pp;
        if (!e->seen) {
            *pp = e->next;
            entry_free(e);
        } else {
            pp = &e->next;
        }
    }
    host_cpu c;
    double now = kh_wall_time();
    double row[HF_N] = { 0 };
    if (read_host_cpu(&c)) {
        double total = 0, idle = (double)(c.v[3] + c.v[4]);
        for (int i = 0; i < 8; i++)
            total += (double)c.v[i];
        double busy = total - idle;
        if (m->last_total > 0 && total > m->last_total)
            row[HF_CPU] = (busy - m->last_busy) / (total - m->last_total) * 100;
        m->last_busy = busy;
        m->last_total = total;
    }
    double mt, ma, load[3];
    kh_proc_meminfo(&mt, &ma);
    read_load(load);
    row[HF_MEM_USED] = mt - ma;
    row[HF_MEM_TOTAL] = mt;
    row[HF_LOAD1] = load[0];
    unsigned total_vms, running;
    kh_manager_counts(m->mgr, &total_vms, &running);
    row[HF_RUNNING] = running;
    double fs_size, fs_avail, fs_used;
    if (m->state_dir && kh_proc_fs_usage(m->state_dir, &fs_size, &fs_used, &fs_avail)) {
        row[HF_DISK_USED] = fs_used;
        row[HF_DISK_TOTAL] = fs_size;
    }
    double drd, dwr, nrx, ntx;
    host_io_totals(&drd, &dwr, &nrx, &ntx);
    if (m->last_host_t > 0 && now > m->last_host_t) {
        double dt = now - m->last_host_t;
        row[HF_DISK_RD_BPS] = drd >= m->last_disk_rd ? (drd - m->last_disk_rd) / dt : 0;
        row[HF_DISK_WR_BPS] = dwr >= m->last_disk_wr ? (dwr - m->last_disk_wr) / dt : 0;
        row[HF_NET_RX_BPS] = nrx >= m->last_net_rx ? (nrx - m->last_net_rx) / dt : 0;
        row[HF_NET_TX_BPS] = ntx >= m->last_net_tx ? (ntx - m->last_net_tx) / dt : 0;
    }
    m->last_disk_rd = drd;
    m->last_disk_wr = dwr;
    m->last_net_rx = nrx;
    m->last_net_tx = ntx;
    if (m->last_host_t > 0) {
        kh_series_push(m->host_hist, now, row);
        if (m->alerts) {
            const char *fields[HF_N + 2];
            double vals[HF_N + 2];
            for (size_t k = 0; k < HF_N; k++) {
                fields[k] = host_fields[k];
                vals[k] = row[k];
            }
            fields[HF_N] = "memory_used_percent";
            vals[HF_N] = mt > 0 ? (mt - ma) / mt * 100 : 0;
            fields[HF_N + 1] = "disk_used_percent";
            vals[HF_N + 1] = row[HF_DISK_TOTAL] > 0 ? row[HF_DISK_USED] / row[HF_DISK_TOTAL] * 100
                                                    : 0;
            kh_alerts_feed(m->alerts, NULL, fields, vals, HF_N + 2, now);
        }
    }
    if (m->alerts)
        kh_alerts_end(m->alerts, now);
    m->last_host_t = now;
    m->samples++;
    m->sample_seconds += (double)(uv_hrtime() - t0) / 1e9;
}

static void on_timer(uv_timer_t *t)
{
    sample(t->data);
}

/* ---- lifetime ---- */

kh_metrics *kh_metrics_new(uv_loop_t *loop, kh_manager *mgr, kh_tasks *tasks,
                           const kh_cgroups *cg, unsigned interval_ms)
{
    kh_metrics *m = xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->mgr = mgr;
    m->tasks = tasks;
    m->cg = cg;
    m->interval_ms = interval_ms ? interval_ms : 10000;
    size_t slots = (size_t)(HISTORY_SECONDS * 1000 / m->interval_ms);
    m->slots = slots < 2 ? 2 : slots > HISTORY_MAX ? HISTORY_MAX : slots;
    m->host_hist = kh_series_new(m->slots, HF_N);
    m->started_at = kh_wall_time();
    snprintf(m->accel, sizeof(m->accel), "probing");
    m->timer = xcalloc(1, sizeof(*m->timer));
    uv_timer_init(loop, m->timer);
    m->timer->data = m;
    uv_timer_start(m->timer, on_timer, 0, m->interval_ms);
    return m;
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void metrics_destroy(kh_metrics *m)
{
    for (vm_entry *e = m->vms, *n; e; e = n) {
        n = e->next;
        entry_free(e);
    }
    kh_series_free(m->host_hist);
    free(m->state_dir);
    free(m);
}

void kh_metrics_free(kh_metrics *m)
{
    if (!m)
        return;
    uv_close((uv_handle_t *)m->timer, timer_closed);
    m->timer = NULL;
    m->dead = true;
    if (m->pending == 0)
        metrics_destroy(m);
}

void kh_metrics_set_alerts(kh_metrics *m, kh_alerts *alerts)
{
    m->alerts = alerts;
}

void kh_metrics_set_host(kh_metrics *m, const char *state_dir, kh_storage *storage)
{
    free(m->state_dir);
    m->state_dir = state_dir ? xstrdup(state_dir) : NULL;
    m->storage = storage;
}

void kh_metrics_set_accel(kh_metrics *m, const char *accel)
{
    snprintf(m->accel, sizeof(m->accel), "%s", accel ? accel : "none");
}

/* ---- API requests ---- */

void kh_metrics_observe_request(kh_metrics *m, const char *method, const char *route,
                                unsigned status, double seconds)
{
    if (!m)
        return;
    const char *r = route ? route : "none";
    req_key *k = NULL;
    for (size_t i = 0; i < m->nreqs && !k; i++)
        if (m->reqs[i].route == r && m->reqs[i].status == status &&
            strcmp(m->reqs[i].method, method) == 0)
            k = &m->reqs[i];
    if (!k && m->nreqs < REQ_KEYS_MAX) {
        k = &m->reqs[m->nreqs++];
        /* Unmatched requests may carry any method: only known ones are kept. */
        static const char *const known[] = { "GET", "POST", "PATCH", "PUT", "DELETE", "HEAD",
                                             "OPTIONS" };
        snprintf(k->method, sizeof(k->method), "other");
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strcmp(method, known[i]) == 0)
                snprintf(k->method, sizeof(k->method), "%s", known[i]);
        k->route = r;
        k->status = status;
    }
    if (k)
        k->count++;
    lat_key *l = NULL;
    for (size_t i = 0; i < m->nlats && !l; i++)
        if (m->lats[i].route == r)
            l = &m->lats[i];
    if (!l && m->nlats < REQ_KEYS_MAX) {
        l = &m->lats[m->nlats++];
        l->route = r;
    }
    if (!l)
        return;
    size_t b = 0;
    while (b < NBOUNDS && seconds > latency_bounds[b])
        b++;
    l->buckets[b]++;
    l->sum += seconds;
}

/* ---- rendering ---- */

typedef struct render_ctx {
    kh_metrics *m;
    kh_prom *p;
    const char *family;
    unsigned counts[5];
} render_ctx;

static const char *const states[5] = { "stopped", "starting", "running", "paused", "stopping" };

static void count_state(const kh_vm_info *info, void *opaque)
{
    render_ctx *c = opaque;
    for (int i = 0; i < 5; i++)
        if (strcmp(info->state, states[i]) == 0)
            c->counts[i]++;
}

#define VM_LABELS(info) "vm", (info)->name, "id", (info)->id

/* One family over all VMs: each call of emit_vm writes that family's
 * samples for one VM. */
static void emit_vm(const kh_vm_info *info, void *opaque)
{
    render_ctx *c = opaque;
    kh_metrics *m = c->m;
    kh_prom *p = c->p;
    const char *f = c->family;
    const char *l[] = { VM_LABELS(info), NULL };
    bool up = info->pid > 0;
    if (strcmp(f, "kvmhost_vm_state") == 0) {
        for (int i = 0; i < 5; i++) {
            const char *ls[] = { VM_LABELS(info), "state", states[i], NULL };
            kh_prom_sample(p, f, ls, strcmp(info->state, states[i]) == 0);
        }
    } else if (strcmp(f, "kvmhost_vm_vcpus") == 0) {
        kh_prom_sample(p, f, l, info->spec->vcpus);
    } else if (strcmp(f, "kvmhost_vm_memory_configured_bytes") == 0) {
        kh_prom_sample(p, f, l, (double)info->spec->memory_mib * 1048576.0);
    } else if (!up) {
        return;
    } else if (strcmp(f, "kvmhost_vm_cpu_seconds_total") == 0) {
        double s;
        if (vm_cpu_seconds(m, info->id, &s))
            kh_prom_sample(p, f, l, s);
    } else if (strcmp(f, "kvmhost_vm_memory_usage_bytes") == 0 ||
               strcmp(f, "kvmhost_vm_memory_limit_bytes") == 0) {
        double u, lim;
        if (vm_memory(m, info->id, &u, &lim)) {
            if (strcmp(f, "kvmhost_vm_memory_usage_bytes") == 0)
                kh_prom_sample(p, f, l, u);
            else if (lim > 0)
                kh_prom_sample(p, f, l, lim);
        }
    } else if (strcmp(f, "kvmhost_vm_cpu_max_ratio") == 0) {
        if (info->spec->limits && info->spec->limits->cpu_max_percent)
            kh_prom_sample(p, f, l, info->spec->limits->cpu_max_percent / 100.0);
    } else if (strcmp(f, "kvmhost_vm_rss_bytes") == 0) {
        kh_prom_sample(p, f, l, (double)kh_proc_rss_kib(info->pid) * 1024);
    } else if (strcmp(f, "kvmhost_vm_uptime_seconds") == 0) {
        if (info->started_at > 0)
            kh_prom_sample(p, f, l, kh_wall_time() - info->started_at);
    } else if (strcmp(f, "kvmhost_vm_qmp_rtt_seconds") == 0) {
        kh_prom_sample(p, f, l, (double)info->qmp_rtt_us / 1e6);
    } else {
        vm_entry *e = entry_find(m, info->id);
        if (!e || e->pid != info->pid)
            return;
        if (strncmp(f, "kvmhost_vm_balloon_", 19) == 0 || strncmp(f, "kvmhost_vm_guest_", 17) == 0) {
            double v = strcmp(f, "kvmhost_vm_balloon_actual_bytes") == 0 ? e->balloon_actual
                       : strcmp(f, "kvmhost_vm_guest_memory_total_bytes") == 0 ? e->guest_total
                       : strcmp(f, "kvmhost_vm_guest_memory_free_bytes") == 0 ? e->guest_free
                                                                              : e->guest_avail;
            if (v > 0)
                kh_prom_sample(p, f, l, v);
            return;
        }
        if (strcmp(f, "kvmhost_vm_vcpu_seconds_total") == 0) {
            for (size_t i = 0; i < e->nvcpus; i++) {
                double s;
                char idx[24];
                snprintf(idx, sizeof(idx), "%zu", i);
                const char *lv[] = { VM_LABELS(info), "vcpu", idx, NULL };
                if (thread_cpu_seconds(info->pid, e->vcpu_tids[i], &s))
                    kh_prom_sample(p, f, lv, s);
            }
            return;
        }
        for (size_t i = 0; i < e->ndisks; i++) {
            const disk_stat *d = &e->disks[i];
            const char *ld[] = { VM_LABELS(info), "disk", d->name, NULL };
            double v;
            if (strcmp(f, "kvmhost_vm_disk_read_bytes_total") == 0)
                v = d->rd_bytes;
            else if (strcmp(f, "kvmhost_vm_disk_written_bytes_total") == 0)
                v = d->wr_bytes;
            else if (strcmp(f, "kvmhost_vm_disk_read_ops_total") == 0)
                v = d->rd_ops;
            else if (strcmp(f, "kvmhost_vm_disk_write_ops_total") == 0)
                v = d->wr_ops;
            else if (strcmp(f, "kvmhost_vm_disk_flush_ops_total") == 0)
                v = d->flush_ops;
            else if (strcmp(f, "kvmhost_vm_disk_read_time_seconds_total") == 0)
                v = d->rd_time_s;
            else if (strcmp(f, "kvmhost_vm_disk_write_time_seconds_total") == 0)
                v = d->wr_time_s;
            else
                return;
            kh_prom_sample(p, f, ld, v);
        }
    }
}

static const struct {
    const char *name, *type, *help;
} vm_families[] = {
    { "kvmhost_vm_state", "gauge", "1 for the VM's current state, 0 for the others" },
    { "kvmhost_vm_vcpus", "gauge", "Configured vCPUs" },
    { "kvmhost_vm_memory_configured_bytes", "gauge", "Configured guest RAM" },
    { "kvmhost_vm_cpu_seconds_total", "counter", "CPU time of the VM's QEMU (cgroup)" },
    { "kvmhost_vm_vcpu_seconds_total", "counter", "CPU time of each vCPU thread" },
    { "kvmhost_vm_memory_usage_bytes", "gauge", "Memory charged to the VM's cgroup" },
    { "kvmhost_vm_memory_limit_bytes", "gauge", "Memory limit of the VM's cgroup" },
    { "kvmhost_vm_cpu_max_ratio", "gauge", "CPU cap in host CPUs (limits.cpu_max_percent/100)" },
    { "kvmhost_vm_rss_bytes", "gauge", "Resident memory of the VM's QEMU" },
    { "kvmhost_vm_balloon_actual_bytes", "gauge", "Guest RAM left by the balloon (query-balloon)" },
    { "kvmhost_vm_guest_memory_total_bytes", "gauge", "Guest-reported total memory (balloon stats)" },
    { "kvmhost_vm_guest_memory_free_bytes", "gauge", "Guest-reported free memory (balloon stats)" },
    { "kvmhost_vm_guest_memory_available_bytes", "gauge",
      "Guest-reported available memory (balloon stats)" },
    { "kvmhost_vm_uptime_seconds", "gauge", "Seconds since the VM started" },
    { "kvmhost_vm_qmp_rtt_seconds", "gauge", "Round trip of the last QMP command" },
    { "kvmhost_vm_disk_read_bytes_total", "counter", "Bytes read by the guest, per disk" },
    { "kvmhost_vm_disk_written_bytes_total", "counter", "Bytes written by the guest, per disk" },
    { "kvmhost_vm_disk_read_ops_total", "counter", "Read operations, per disk" },
    { "kvmhost_vm_disk_write_ops_total", "counter", "Write operations, per disk" },
    { "kvmhost_vm_disk_flush_ops_total", "counter", "Flush operations, per disk" },
    { "kvmhost_vm_disk_read_time_seconds_total", "counter", "Time spent reading, per disk" },
    { "kvmhost_vm_disk_write_time_seconds_total", "counter", "Time spent writing, per disk" },
};

static void fs_samples(kh_prom *p, const char *path, const char *pool, int which)
{
    double size, used, avail;
    if (!kh_proc_fs_usage(path, &size, &used, &avail))
        return;
    const char *l[] = { "path", path, pool ? "pool" : NULL, pool, NULL };
    kh_prom_sample(p, which ? "kvmhost_host_filesystem_avail_bytes"
                            : "kvmhost_host_filesystem_size_bytes",
                   l, which ? avail : size);
}

/* Host block devices (whole disks), filesystems (the state dir and each
 * pool) and network interfaces. */
static void render_host_io(kh_metrics *m, kh_prom *p)
{
    static const struct {
        const char *name, *help;
    } dfam[] = {
        { "kvmhost_host_disk_read_bytes_total", "Bytes read, per whole disk (/proc/diskstats)" },
        { "kvmhost_host_disk_written_bytes_total", "Bytes written, per whole disk" },
        { "kvmhost_host_disk_read_ops_total", "Reads completed, per whole disk" },
        { "kvmhost_host_disk_write_ops_total", "Writes completed, per whole disk" },
        { "kvmhost_host_disk_io_time_seconds_total", "Time spent doing I/O, per whole disk" },
    };
    kh_proc_disk *d;
    size_t nd = kh_proc_diskstats(&d);
    for (size_t f = 0; f < sizeof(dfam) / sizeof(dfam[0]); f++) {
        kh_prom_family(p, dfam[f].name, "counter", dfam[f].help);
        for (size_t i = 0; i < nd; i++) {
            const char *l[] = { "device", d[i].name, NULL };
            double v = f == 0   ? (double)d[i].read_bytes
                       : f == 1 ? (double)d[i].write_bytes
                       : f == 2 ? (double)d[i].reads
                       : f == 3 ? (double)d[i].writes
                                : (double)d[i].io_ms / 1000.0;
            kh_prom_sample(p, dfam[f].name, l, v);
        }
    }
    free(d);

    json_t *pools = m->storage ? kh_storage_pools_json(m->storage) : NULL;
    for (int which = 0; which < 2; which++) {
        if (which == 0)
            kh_prom_family(p, "kvmhost_host_filesystem_size_bytes", "gauge",
                           "Size of the filesystem holding the state dir (path) or a pool");
        else
            kh_prom_family(p, "kvmhost_host_filesystem_avail_bytes", "gauge",
                           "Bytes available to unprivileged users on that filesystem");
        if (m->state_dir)
            fs_samples(p, m->state_dir, NULL, which);
        size_t i;
        json_t *pl;
        json_array_foreach(pools, i, pl) {
            const char *name = json_string_value(json_object_get(pl, "name"));
            const char *path = json_string_value(json_object_get(pl, "path"));
            if (name && path)
                fs_samples(p, path, name, which);
        }
    }
    json_decref(pools);

    static const struct {
        const char *name, *help;
    } nfam[] = {
        { "kvmhost_host_network_receive_bytes_total", "Bytes received, per interface" },
        { "kvmhost_host_network_transmit_bytes_total", "Bytes sent, per interface" },
        { "kvmhost_host_network_receive_packets_total", "Packets received, per interface" },
        { "kvmhost_host_network_transmit_packets_total", "Packets sent, per interface" },
        { "kvmhost_host_network_receive_errs_total", "Receive errors, per interface" },
        { "kvmhost_host_network_transmit_errs_total", "Transmit errors, per interface" },
        { "kvmhost_host_network_receive_drop_total", "Received packets dropped, per interface" },
        { "kvmhost_host_network_transmit_drop_total", "Packets dropped on send, per interface" },
    };
    kh_proc_netdev *nv;
    size_t nn = kh_proc_netdevs(&nv);
    for (size_t f = 0; f < sizeof(nfam) / sizeof(nfam[0]); f++) {
        kh_prom_family(p, nfam[f].name, "counter", nfam[f].help);
        for (size_t i = 0; i < nn; i++) {
            const kh_proc_netdev *x = &nv[i];
            const char *l[] = { "device", x->name, NULL };
            const unsigned long long v[] = { x->rx_bytes, x->tx_bytes, x->rx_packets,
                                             x->tx_packets, x->rx_errs, x->tx_errs,
                                             x->rx_drop, x->tx_drop };
            kh_prom_sample(p, nfam[f].name, l, (double)v[f]);
        }
    }
    free(nv);
}

char *kh_metrics_render(kh_metrics *m, size_t *len)
{
    kh_prom *p = kh_prom_new();
    render_ctx c = { .m = m, .p = p };

    host_cpu hc;
    if (read_host_cpu(&hc)) {
        long hz = sysconf(_SC_CLK_TCK);
        kh_prom_family(p, "kvmhost_host_cpu_seconds_total", "counter",
                       "Host CPU time by mode, all CPUs (/proc/stat)");
        for (int i = 0; i < 8; i++) {
            const char *l[] = { "mode", cpu_modes[i], NULL };
            kh_prom_sample(p, "kvmhost_host_cpu_seconds_total", l,
                           (double)hc.v[i] / (double)(hz > 0 ? hz : 100));
        }
    }
    kh_prom_family(p, "kvmhost_host_cpus", "gauge", "Online host CPUs");
    kh_prom_sample(p, "kvmhost_host_cpus", NULL, (double)sysconf(_SC_NPROCESSORS_ONLN));
    double mt, ma, load[3];
    kh_proc_meminfo(&mt, &ma);
    kh_prom_family(p, "kvmhost_host_memory_total_bytes", "gauge", "Host RAM (MemTotal)");
    kh_prom_sample(p, "kvmhost_host_memory_total_bytes", NULL, mt);
    kh_prom_family(p, "kvmhost_host_memory_available_bytes", "gauge",
                   "Host RAM available (MemAvailable)");
    kh_prom_sample(p, "kvmhost_host_memory_available_bytes", NULL, ma);
    read_load(load);
    kh_prom_family(p, "kvmhost_host_load_average", "gauge", "Load average");
    static const char *const periods[3] = { "1m", "5m", "15m" };
    for (int i = 0; i < 3; i++) {
        const char *l[] = { "period", periods[i], NULL };
        kh_prom_sample(p, "kvmhost_host_load_average", l, load[i]);
    }
    render_host_io(m, p);
    kh_prom_family(p, "kvmhost_host_accelerator_info", "gauge",
                   "The accelerator VMs run under (label), always 1");
    const char *al[] = { "accelerator", m->accel, NULL };
    kh_prom_sample(p, "kvmhost_host_accelerator_info", al, 1);

    kh_manager_foreach(m->mgr, count_state, &c);
    kh_prom_family(p, "kvmhost_vms", "gauge", "VMs by state");
    for (int i = 0; i < 5; i++) {
        const char *l[] = { "state", states[i], NULL };
        kh_prom_sample(p, "kvmhost_vms", l, c.counts[i]);
    }
    unsigned trun = 0, tfin = 0;
    kh_tasks_counts(m->tasks, &trun, &tfin);
    kh_prom_family(p, "kvmhost_tasks", "gauge", "Tasks by state (finished: those kept)");
    const char *lr[] = { "state", "running", NULL }, *lf[] = { "state", "finished", NULL };
    kh_prom_sample(p, "kvmhost_tasks", lr, trun);
    kh_prom_sample(p, "kvmhost_tasks", lf, tfin);

    for (size_t i = 0; i < sizeof(vm_families) / sizeof(vm_families[0]); i++) {
        kh_prom_family(p, vm_families[i].name, vm_families[i].type, vm_families[i].help);
        c.family = vm_families[i].name;
        kh_manager_foreach(m->mgr, emit_vm, &c);
    }

    kh_prom_family(p, "kvmhost_http_requests_total", "counter",
                   "API requests by method, route and status");
    for (size_t i = 0; i < m->nreqs; i++) {
        char code[16];
        snprintf(code, sizeof(code), "%u", m->reqs[i].status);
        const char *l[] = { "method", m->reqs[i].method, "route", m->reqs[i].route, "code",
                            code, NULL };
        kh_prom_sample(p, "kvmhost_http_requests_total", l, (double)m->reqs[i].count);
    }
    kh_prom_family(p, "kvmhost_http_request_duration_seconds", "histogram",
                   "API request latency by route");
    for (size_t i = 0; i < m->nlats; i++) {
        const char *l[] = { "route", m->lats[i].route, NULL };
        kh_prom_histogram(p, "kvmhost_http_request_duration_seconds", l, latency_bounds,
                          m->lats[i].buckets, NBOUNDS, m->lats[i].sum);
    }
    if (m->alerts && kh_alerts_webhook(m->alerts)) {
        unsigned long long wv[3];
        kh_webhook_counts(kh_alerts_webhook(m->alerts), &wv[0], &wv[1], &wv[2]);
        static const char *const results[3] = { "sent", "failed", "dropped" };
        kh_prom_family(p, "kvmhost_alert_webhook_posts_total", "counter",
                       "Alert webhook POSTs by result (sent: 2xx; failed; dropped: queue full)");
        for (int i = 0; i < 3; i++) {
            const char *l[] = { "result", results[i], NULL };
            kh_prom_sample(p, "kvmhost_alert_webhook_posts_total", l, (double)wv[i]);
        }
    }
    kh_prom_family(p, "kvmhost_sampler_runs_total", "counter", "Sampler rounds");
    kh_prom_sample(p, "kvmhost_sampler_runs_total", NULL, (double)m->samples);
    kh_prom_family(p, "kvmhost_sampler_seconds_total", "counter",
                   "Time the sampler spent on the loop thread");
    kh_prom_sample(p, "kvmhost_sampler_seconds_total", NULL, m->sample_seconds);
    kh_prom_family(p, "kvmhost_start_time_seconds", "gauge", "Daemon start, Unix time");
    kh_prom_sample(p, "kvmhost_start_time_seconds", NULL, m->started_at);
    return kh_prom_steal(p, len);
}

/* ---- history ---- */

static json_t *series_json(const kh_series *s, const char *const *fields, size_t nf,
                           double range, unsigned interval_ms)
{
    json_t *o = json_object();
    json_object_set_new(o, "interval_seconds", json_real(interval_ms / 1000.0));
    json_t *fa = json_array();
    json_array_append_new(fa, json_string("time"));
    for (size_t i = 0; i < nf; i++)
        json_array_append_new(fa, json_string(fields[i]));
    json_object_set_new(o, "fields", fa);
    json_t *rows = json_array();
    size_t n = s ? kh_series_count(s) : 0;
    size_t from = s ? kh_series_first_since(s, kh_wall_time() - range) : 0;
    for (size_t i = from; i < n; i++) {
        double t;
        const double *v = kh_series_at(s, i, &t);
        json_t *row = json_array();
        json_array_append_new(row, json_real(t));
        for (size_t k = 0; k < nf; k++)
            json_array_append_new(row, json_real(v[k]));
        json_array_append_new(rows, row);
    }
    json_object_set_new(o, "samples", rows);
    return o;
}

json_t *kh_metrics_vm_history(kh_metrics *m, const char *name, double range, kh_err *err)
{
    /* Validate against the manager (a VM may exist before its first sample). */
    json_t *vmj = kh_manager_vm_json(m->mgr, name, err);
    if (!vmj)
        return NULL;
    json_decref(vmj);
    vm_entry *e = entry_find_name(m, name);
    json_t *o = series_json(e ? e->hist : NULL, vm_fields, VF_N, range, m->interval_ms);
    json_object_set_new(o, "vm", json_string(name));
    return o;
}

typedef struct latest_ctx {
    kh_metrics *m;
    json_t *vms;
} latest_ctx;

/* The latest sample of one VM (nulls before its first one, or when it is
 * not running). */
static void latest_vm(const kh_vm_info *info, void *opaque)
{
    latest_ctx *c = opaque;
    vm_entry *e = entry_find(c->m, info->id);
    json_t *v = json_object();
    json_object_set_new(v, "state", json_string(info->state));
    size_t n = e ? kh_series_count(e->hist) : 0;
    double t = 0;
    const double *last =
        info->pid > 0 && e && e->pid == info->pid && n ? kh_series_at(e->hist, n - 1, &t) : NULL;
    for (size_t k = 0; k < VF_N; k++)
        json_object_set_new(v, vm_fields[k], last ? json_real(last[k]) : json_null());
    json_object_set_new(v, "time", last ? json_real(t) : json_null());
    json_object_set_new(c->vms, info->name, v);
}

json_t *kh_metrics_host_history(kh_metrics *m, double range)
{
    json_t *o = series_json(m->host_hist, host_fields, HF_N, range, m->interval_ms);
    latest_ctx c = { m, json_object() };
    kh_manager_foreach(m->mgr, latest_vm, &c);
    json_object_set_new(o, "vms", c.vms);
    return o;
}
