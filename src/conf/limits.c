/* limits.c - parse, check and print a VM's resource limits. */
#include "conf/limits.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/schema.h"
#include "util/mem.h"

const char *const kh_disk_limit_names[KH_LIMITS_DISK_FIELDS] = {
    "iops_total",     "iops_read",     "iops_write",     "bps_total",     "bps_read",
    "bps_write",      "iops_total_max", "iops_read_max", "iops_write_max", "bps_total_max",
    "bps_read_max",   "bps_write_max",
};
const char *const kh_disk_limit_qmp[KH_LIMITS_DISK_FIELDS] = {
    "iops",     "iops_rd",     "iops_wr",     "bps",     "bps_rd",     "bps_wr",
    "iops_max", "iops_rd_max", "iops_wr_max", "bps_max", "bps_rd_max", "bps_wr_max",
};

static json_t *unconst(const json_t *j)
{
    return (json_t *)(uintptr_t)j;
}

/* A number the schema (Limits.json) has checked: an integer in its range. */
static unsigned long long uint_of(const json_t *v)
{
    return (unsigned long long)json_integer_value(v);
}

/* The part every per-device entry shares: the "index" key (required; an
 * object, index 0..255 and the other keys are the schema's, Limits.json,
 * checked already). prefix ends with '.'. */
static int parse_entry(const json_t *obj, const char *prefix, unsigned *index, kh_err *err)
{
    const json_t *v = json_object_get(obj, "index");
    if (!v) {
        kh_err_set(err, KH_E_INVALID, "%sindex is required", prefix);
        return -1;
    }
    *index = (unsigned)uint_of(v);
    return 0;
}

static int parse_disk(kh_disk_limits *d, const json_t *obj, size_t i, kh_err *err)
{
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "limits.disk[%zu].", i);
    if (parse_entry(obj, prefix, &d->index, err) < 0)
        return -1;
    for (size_t f = 0; f < KH_LIMITS_DISK_FIELDS; f++) /* each 1..1e15, QEMU's cap */
        d->v[f] = uint_of(json_object_get(obj, kh_disk_limit_names[f]));
    /* QEMU's rules: total excludes read/write; a burst needs its base and
     * is not below it. */
    for (size_t k = 0; k < 12; k += 3) {
        if (d->v[k] && (d->v[k + 1] || d->v[k + 2])) {
            kh_err_set(err, KH_E_INVALID, "%s%s cannot be combined with %s or %s", prefix,
                       kh_disk_limit_names[k], kh_disk_limit_names[k + 1],
                       kh_disk_limit_names[k + 2]);
            return -1;
        }
    }
    for (size_t f = 0; f < 6; f++) {
        uint64_t base = d->v[f], burst = d->v[f + 6];
        if (burst && !base) {
            kh_err_set(err, KH_E_INVALID, "%s%s needs %s", prefix, kh_disk_limit_names[f + 6],
                       kh_disk_limit_names[f]);
            return -1;
        }
        if (burst && burst < base) {
            kh_err_set(err, KH_E_INVALID, "%s%s must be at least %s", prefix,
                       kh_disk_limit_names[f + 6], kh_disk_limit_names[f]);
            return -1;
        }
    }
    return 0;
}

/* An optional key holding a non-empty list of numbers 0..max (the schema
 * checked the numbers): kept ascending, duplicates refused. */
static int parse_list(const json_t *obj, const char *key, const char *what, unsigned max,
                      unsigned **out, size_t *n, kh_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > max + 1) {
        kh_err_set(err, KH_E_INVALID, "limits.%s: must be a non-empty array of %s", key, what);
        return -1;
    }
    *n = json_array_size(v);
    *out = xcalloc(*n, sizeof(**out));
    unsigned *a = *out;
    for (size_t i = 0; i < *n; i++) {
        char field[64];
        unsigned long long u = uint_of(json_array_get(v, i));
        snprintf(field, sizeof(field), "limits.%s[%zu]", key, i);
        size_t j = i;
        while (j > 0 && a[j - 1] > u) {
            a[j] = a[j - 1];
            j--;
        }
        if (j > 0 && a[j - 1] == u) {
            kh_err_set(err, KH_E_INVALID, "%s: %llu appears twice", field, u);
            return -1;
        }
        a[j] = (unsigned)u;
    }
    return 0;
}

/* ---- per-NIC bandwidth ---- */

static const char *const nic_limit_keys[] = { "index", "inbound_bps", "outbound_bps",
                                              "inbound_burst", "outbound_burst", NULL };

static int parse_nic_limit(kh_nic_limits *n, const json_t *obj, size_t i, kh_err *err)
{
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "limits.nic[%zu].", i);
    if (parse_entry(obj, prefix, &n->index, err) < 0)
        return -1;
    uint64_t *dst[] = { &n->inbound_bps, &n->outbound_bps, &n->inbound_burst,
                        &n->outbound_burst };
    /* rates KH_LIMITS_NIC_BPS_MIN..MAX, bursts KH_LIMITS_NIC_BURST_MIN..MAX */
    for (size_t k = 1; nic_limit_keys[k]; k++)
        *dst[k - 1] = uint_of(json_object_get(obj, nic_limit_keys[k]));
    if ((n->inbound_burst && !n->inbound_bps) || (n->outbound_burst && !n->outbound_bps)) {
        kh_err_set(err, KH_E_INVALID, "%s%s needs %s", prefix,
                   n->inbound_burst && !n->inbound_bps ? "inbound_burst" : "outbound_burst",
                   n->inbound_burst && !n->inbound_bps ? "inbound_bps" : "outbound_bps");
        return -1;
    }
    return 0;
}

static void list_to_json(json_t *o, const char *key, const unsigned *a, size_t n)
{
    if (!n)
        return;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(a[i]));
    json_object_set_new(o, key, arr);
}

static unsigned *list_dup(const unsigned *a, size_t n)
{
    if (!n)
        return NULL;
    unsigned *d = xcalloc(n, sizeof(*d));
    memcpy(d, a, n * sizeof(*d));
    return d;
}

int kh_limits_check_nics(const kh_limits *l, size_t nnics, kh_err *err)
{
    for (size_t i = 0; l && i < l->nnics; i++) {
        if (l->nics[i].index >= nnics) {
            kh_err_set(err, KH_E_INVALID, "limits.nic[%zu].index: the VM has no NIC %u", i,
                       l->nics[i].index);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (l->nics[j].index == l->nics[i].index) {
                kh_err_set(err, KH_E_INVALID, "limits.nic[%zu].index: NIC %u appears twice", i,
                           l->nics[i].index);
                return -1;
            }
        }
    }
    return 0;
}

const kh_nic_limits *kh_limits_nic(const kh_limits *l, unsigned index)
{
    for (size_t i = 0; l && i < l->nnics; i++)
        if (l->nics[i].index == index)
            return &l->nics[i];
    return NULL;
}

uint64_t kh_limits_nic_burst(uint64_t bps, uint64_t burst)
{
    if (burst)
        return burst;
    return bps / 8 > 131072 ? bps / 8 : 131072;
}

void kh_limits_nic_removed(kh_limits *l, unsigned index)
{
    if (!l)
        return;
    size_t k = 0;
    for (size_t i = 0; i < l->nnics; i++) {
        if (l->nics[i].index == index)
            continue;
        l->nics[k] = l->nics[i];
        if (l->nics[k].index > index)
            l->nics[k].index--;
        k++;
    }
    l->nnics = k;
}

static json_t *nic_limits_json(const kh_limits *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < l->nnics; i++) {
        const kh_nic_limits *n = &l->nics[i];
        json_t *o = json_pack("{s:i}", "index", (json_int_t)n->index);
        const uint64_t vals[] = { n->inbound_bps, n->outbound_bps, n->inbound_burst,
                                  n->outbound_burst };
        for (size_t k = 0; k < 4; k++)
            if (vals[k])
                json_object_set_new(o, nic_limit_keys[k + 1], json_integer((json_int_t)vals[k]));
        json_array_append_new(arr, o);
    }
    return arr;
}

kh_limits *kh_limits_from_json(const json_t *obj, kh_err *err)
{
    /* keys, types and ranges: src/schema/Limits.json */
    if (kh_schema_check("Limits", obj, "limits", err) < 0)
        return NULL;
    kh_limits *l = xcalloc(1, sizeof(*l));
    const json_t *v;
    l->cpu_weight = (unsigned)uint_of(json_object_get(obj, "cpu_weight"));
    l->cpu_max_percent = (unsigned)uint_of(json_object_get(obj, "cpu_max_percent"));
    l->memory_max_mib = uint_of(json_object_get(obj, "memory_max_mib"));
    l->balloon_mib = uint_of(json_object_get(obj, "balloon_mib"));
    if (parse_list(obj, "cpu_affinity", "host CPU numbers", KH_LIMITS_CPU_MAX, &l->cpus,
                   &l->ncpus, err) < 0 ||
        parse_list(obj, "emulator_cpus", "host CPU numbers", KH_LIMITS_CPU_MAX, &l->emu_cpus,
                   &l->nemu_cpus, err) < 0 ||
        parse_list(obj, "iothread_cpus", "host CPU numbers", KH_LIMITS_CPU_MAX, &l->io_cpus,
                   &l->nio_cpus, err) < 0 ||
        parse_list(obj, "numa_nodes", "host NUMA node numbers", KH_LIMITS_NODE_MAX, &l->nodes,
                   &l->nnodes, err) < 0)
        goto fail;
    if ((v = json_object_get(obj, "disk"))) {
        l->ndisks = json_array_size(v);
        l->disks = l->ndisks ? xcalloc(l->ndisks, sizeof(*l->disks)) : NULL;
        for (size_t i = 0; i < l->ndisks; i++)
            if (parse_disk(&l->disks[i], json_array_get(v, i), i, err) < 0)
                goto fail;
    }
    if ((v = json_object_get(obj, "nic"))) {
        l->nnics = json_array_size(v);
        l->nics = l->nnics ? xcalloc(l->nnics, sizeof(*l->nics)) : NULL;
        for (size_t i = 0; i < l->nnics; i++)
            if (parse_nic_limit(&l->nics[i], json_array_get(v, i), i, err) < 0)
                goto fail;
    }
    return l;
fail:
    kh_limits_free(l);
    return NULL;
}

int kh_limits_check(const kh_limits *l, unsigned vcpus, uint64_t memory_mib, size_t ndisks,
                    kh_err *err)
{
    if (!l)
        return 0;
    if (l->cpu_max_percent > 100U * vcpus) {
        kh_err_set(err, KH_E_INVALID,
                   "limits.cpu_max_percent: must be at most %u (100 per vCPU, %u vCPUs)",
                   100U * vcpus, vcpus);
        return -1;
    }
    if (l->memory_max_mib && l->memory_max_mib < memory_mib) {
        kh_err_set(err, KH_E_INVALID,
                   "limits.memory_max_mib: must be at least memory_mib (%llu): the guest's "
                   "RAM lives in the QEMU process",
                   (unsigned long long)memory_mib);
        return -1;
    }
    if (l->balloon_mib > memory_mib) {
        kh_err_set(err, KH_E_INVALID, "limits.balloon_mib: must be at most memory_mib (%llu)",
                   (unsigned long long)memory_mib);
        return -1;
    }
    for (size_t i = 0; i < l->ndisks; i++) {
        if (l->disks[i].index >= ndisks) {
            kh_err_set(err, KH_E_INVALID, "limits.disk[%zu].index: the VM has no disk %u", i,
                       l->disks[i].index);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (l->disks[j].index == l->disks[i].index) {
                kh_err_set(err, KH_E_INVALID, "limits.disk[%zu].index: disk %u appears twice",
                           i, l->disks[i].index);
                return -1;
            }
        }
    }
    return 0;
}

json_t *kh_limits_to_json(const kh_limits *l)
{
    json_t *o = json_object();
    if (!l)
        return o;
    if (l->cpu_weight)
        json_object_set_new(o, "cpu_weight", json_integer(l->cpu_weight));
    if (l->cpu_max_percent)
        json_object_set_new(o, "cpu_max_percent", json_integer(l->cpu_max_percent));
    if (l->memory_max_mib)
        json_object_set_new(o, "memory_max_mib", json_integer((json_int_t)l->memory_max_mib));
    if (l->balloon_mib)
        json_object_set_new(o, "balloon_mib", json_integer((json_int_t)l->balloon_mib));
    list_to_json(o, "cpu_affinity", l->cpus, l->ncpus);
    list_to_json(o, "emulator_cpus", l->emu_cpus, l->nemu_cpus);
    list_to_json(o, "iothread_cpus", l->io_cpus, l->nio_cpus);
    list_to_json(o, "numa_nodes", l->nodes, l->nnodes);
    if (l->ndisks) {
        json_t *arr = json_array();
        for (size_t i = 0; i < l->ndisks; i++) {
            json_t *d = json_object();
            json_object_set_new(d, "index", json_integer(l->disks[i].index));
            for (size_t f = 0; f < KH_LIMITS_DISK_FIELDS; f++)
                if (l->disks[i].v[f])
                    json_object_set_new(d, kh_disk_limit_names[f],
                                        json_integer((json_int_t)l->disks[i].v[f]));
            json_array_append_new(arr, d);
        }
        json_object_set_new(o, "disk", arr);
    }
    if (l->nnics)
        json_object_set_new(o, "nic", nic_limits_json(l));
    return o;
}

kh_limits *kh_limits_dup(const kh_limits *l)
{
    if (!l)
        return NULL;
    kh_limits *d = xcalloc(1, sizeof(*d));
    *d = *l;
    d->disks = NULL;
    d->cpus = list_dup(l->cpus, l->ncpus);
    d->emu_cpus = list_dup(l->emu_cpus, l->nemu_cpus);
    d->io_cpus = list_dup(l->io_cpus, l->nio_cpus);
    d->nodes = list_dup(l->nodes, l->nnodes);
    d->nics = NULL;
    if (l->nnics) {
        d->nics = xcalloc(l->nnics, sizeof(*d->nics));
        memcpy(d->nics, l->nics, l->nnics * sizeof(*d->nics));
    }
    if (l->ndisks) {
        d->disks = xcalloc(l->ndisks, sizeof(*d->disks));
        memcpy(d->disks, l->disks, l->ndisks * sizeof(*d->disks));
    }
    return d;
}

void kh_limits_free(kh_limits *l)
{
    if (!l)
        return;
    free(l->disks);
    free(l->cpus);
    free(l->emu_cpus);
    free(l->io_cpus);
    free(l->nodes);
    free(l->nics);
    free(l);
}

const kh_disk_limits *kh_limits_disk(const kh_limits *l, unsigned index)
{
    for (size_t i = 0; l && i < l->ndisks; i++)
        if (l->disks[i].index == index)
            return &l->disks[i];
    return NULL;
}

json_t *kh_limits_merge(const json_t *base, const json_t *patch)
{
    if (!json_is_object(patch) || !json_is_object(base))
        return json_incref(unconst(patch));
    json_t *m = json_deep_copy(base);
    const char *key;
    json_t *val;
    json_object_foreach(unconst(patch), key, val) {
        if (json_is_null(val))
            json_object_del(m, key);
        else
            json_object_set(m, key, val);
    }
    return m;
}
