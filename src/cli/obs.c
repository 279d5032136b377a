/* obs.c - `kvmhost vm top` and `kvmhost vm limit`. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/nouns.h"
#include "cli/output.h"
#include "util/mem.h"
#include "util/misc.h"

static char *vm_path(const char *name)
{
    char *esc = cli_path_escape(name);
    char *p = xasprintf("/api/v1/vms/%s", esc);
    free(esc);
    return p;
}

/* ---- vm top ---- */

static volatile sig_atomic_t top_stop;

static void top_on_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

static void fmt_bytes(double b, char *buf, size_t size)
{
    cli_fmt_bytes((int64_t)b, buf, size);
}

/* GUEST-RAM: the memory the guest was given, "BALLOON/CONFIGURED" when a
 * balloon target below it is set; "-" for a VM the list does not have. */
static void fmt_guest_ram(const json_t *vm, char *buf, size_t size)
{
    json_int_t mib = json_integer_value(json_object_get(vm, "memory_mib"));
    json_int_t balloon =
        json_integer_value(json_object_get(json_object_get(vm, "limits"), "balloon_mib"));
    char conf[32], bal[32];
    if (!mib) {
        snprintf(buf, size, "-");
        return;
    }
    cli_fmt_bytes((int64_t)mib << 20, conf, sizeof(conf));
    if (balloon > 0 && balloon < mib) {
        cli_fmt_bytes((int64_t)balloon << 20, bal, sizeof(bal));
        snprintf(buf, size, "%s/%s", bal, conf);
    } else {
        snprintf(buf, size, "%s", conf);
    }
}

static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

typedef struct top_row {
    const char *name;
    const json_t *v;
} top_row;

static int by_cpu(const void *a, const void *b)
{
    double x = num(((const top_row *)a)->v, "cpu_percent");
    double y = num(((const top_row *)b)->v, "cpu_percent");
    if (x != y)
        return x < y ? 1 : -1;
    return strcmp(((const top_row *)a)->name, ((const top_row *)b)->name);
}

static int by_mem(const void *a, const void *b)
{
    double x = num(((const top_row *)a)->v, "memory_bytes");
    double y = num(((const top_row *)b)->v, "memory_bytes");
    if (x != y)
        return x < y ? 1 : -1;
    return strcmp(((const top_row *)a)->name, ((const top_row *)b)->name);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const top_row *)a)->name, ((const top_row *)b)->name);
}

/* The VM of that name in a GET /api/v1/vms answer, NULL if absent. */
static const json_t *vm_named(const json_t *list, const char *name)
{
    size_t i;
    json_t *vm;
    json_array_foreach(json_object_get(list, "vms"), i, vm) {
        if (cli_jstr(vm, "name") && strcmp(cli_jstr(vm, "name"), name) == 0)
            return vm;
    }
    return NULL;
}

/* One frame: the host line and a table of the VMs (running ones first). */
static void top_print(const json_t *h, const json_t *vmlist, const char *sort, bool all)
{
    const json_t *samples = json_object_get(h, "samples");
    const json_t *last = json_array_get(samples, json_array_size(samples) - 1);
    char mem[32], tot[32];
    if (last) {
        fmt_bytes(json_number_value(json_array_get(last, 2)), mem, sizeof(mem));
        fmt_bytes(json_number_value(json_array_get(last, 3)), tot, sizeof(tot));
        printf("host: cpu %.1f%%  memory %s / %s  load %.2f  running %d\n",
               json_number_value(json_array_get(last, 1)), mem, tot,
               json_number_value(json_array_get(last, 4)),
               (int)json_number_value(json_array_get(last, 5)));
    } else {
        printf("host: no sample yet\n");
    }
    const json_t *vms = json_object_get(h, "vms");
    size_t n = json_object_size(vms), k = 0;
    top_row *rows = xcalloc(n ? n : 1, sizeof(*rows));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)vms, key, v) {
        if (!all && !json_is_number(json_object_get(v, "cpu_percent")))
            continue;
        rows[k].name = key;
        rows[k].v = v;
        k++;
    }
    qsort(rows, k, sizeof(*rows),
          strcmp(sort, "mem") == 0 ? by_mem : strcmp(sort, "name") == 0 ? by_name : by_cpu);
    static const char *const hdr[] = { "NAME",       "STATE",    "CPU%",     "GUEST-RAM",
                                       "QEMU-RSS",   "CGROUP-MEM", "DISK-R/s", "DISK-W/s",
                                       "R-IOPS",     "W-IOPS" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(hdr), hdr);
    for (size_t i = 0; i < k; i++) {
        const json_t *r = rows[i].v;
        char b[80];
        cli_table_add(t, rows[i].name);
        cli_table_add(t, json_string_value(json_object_get(r, "state")));
        bool sampled = json_is_number(json_object_get(r, "cpu_percent"));
        if (sampled)
            cli_table_addf(t, "%.1f", num(r, "cpu_percent"));
        else
            cli_table_add(t, "-");
        fmt_guest_ram(vm_named(vmlist, rows[i].name), b, sizeof(b));
        cli_table_add(t, b);
        if (!sampled) {
            for (int c = 0; c < 6; c++)
                cli_table_add(t, "-");
            continue;
        }
        fmt_bytes(num(r, "rss_bytes"), b, sizeof(b));
        cli_table_add(t, b);
        fmt_bytes(num(r, "memory_bytes"), b, sizeof(b));
        cli_table_add(t, b);
        fmt_bytes(num(r, "disk_read_bytes_per_second"), b, sizeof(b));
        cli_table_add(t, b);
        fmt_bytes(num(r, "disk_write_bytes_per_second"), b, sizeof(b));
        cli_table_add(t, b);
        cli_table_addf(t, "%.0f", num(r, "disk_read_ops_per_second"));
        cli_table_addf(t, "%.0f", num(r, "disk_write_ops_per_second"));
    }
    char *text = cli_table_render(t);
    fputs(text, stdout);
    free(text);
    cli_table_free(t);
    free(rows);
}

int cli_do_vm_top(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *sort = cli_arg(a, "sort") ? cli_arg(a, "sort") : "cpu";
    if (strcmp(sort, "cpu") != 0 && strcmp(sort, "mem") != 0 && strcmp(sort, "name") != 0) {
        cli_usage_error(ctx, a->cmd, err, "--sort must be cpu, mem or name");
        return -1;
    }
    double interval = 2;
    if (cli_arg(a, "interval") &&
        (cli_parse_seconds(cli_arg(a, "interval"), "--interval", &interval, err) < 0 ||
         interval < 0.2)) {
        if (interval < 0.2)
            cli_usage_error(ctx, a->cmd, err, "--interval must be at least 0.2 seconds");
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    bool once = cli_flag(a, "once") || ctx->json || !isatty(STDOUT_FILENO);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = top_on_signal;
    sigemptyset(&sa.sa_mask);
    if (!once) {
        top_stop = 0;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    int rc = 0;
    do {
        json_t *h = NULL;
        if (cli_client_json(c, "GET", "/api/v1/host/metrics?range=60", NULL, &h, NULL, err) < 0) {
            rc = -1;
            break;
        }
        if (ctx->json) {
            json_t *out = json_object();
            const json_t *samples = json_object_get(h, "samples");
            const json_t *last = json_array_get(samples, json_array_size(samples) - 1);
            json_t *host = json_object();
            const json_t *fields = json_object_get(h, "fields");
            for (size_t i = 0; last && i < json_array_size(fields); i++)
                json_object_set(host, json_string_value(json_array_get(fields, i)),
                                json_array_get(last, i));
            json_object_set_new(out, "host", host);
            json_object_set(out, "vms", json_object_get(h, "vms"));
            cli_print_json(stdout, out);
            json_decref(out);
        } else {
            json_t *vms = NULL;
            if (cli_client_json(c, "GET", "/api/v1/vms", NULL, &vms, NULL, err) < 0) {
                json_decref(h);
                rc = -1;
                break;
            }
            if (!once)
                fputs("\033[H\033[2J", stdout);
            top_print(h, vms, sort, cli_flag(a, "all"));
            fflush(stdout);
            json_decref(vms);
        }
        json_decref(h);
        if (once)
            break;
        struct timespec ts = { (time_t)interval,
                               (long)((interval - (double)(time_t)interval) * 1e9) };
        while (!top_stop && nanosleep(&ts, &ts) != 0) {
        }
    } while (!top_stop);
    if (!once) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    return rc;
}

/* ---- vm limit ---- */

static const struct {
    const char *opt, *key;
} disk_opts[] = {
    { "disk-iops", "iops_total" },          { "disk-read-iops", "iops_read" },
    { "disk-write-iops", "iops_write" },    { "disk-bps", "bps_total" },
    { "disk-read-bps", "bps_read" },        { "disk-write-bps", "bps_write" },
    { "disk-iops-burst", "iops_total_max" }, { "disk-bps-burst", "bps_total_max" },
};

/* "none" -> JSON null (remove), else an integer in [min, max]. */
static json_t *limit_value(const char *s, const char *opt, int64_t min, int64_t max, bool mib,
                           kh_err *err)
{
    if (strcmp(s, "none") == 0)
        return json_null();
    int64_t v;
    char what[48];
    snprintf(what, sizeof(what), "--%s", opt);
    if (mib ? cli_parse_mib(s, what, &v, err) : cli_parse_int(s, min, max, what, &v, err))
        return NULL;
    return json_integer(v);
}

/* Turn a parse error into a usage error of this command. */
static void usage_again(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char msg[sizeof(err->msg)];
    snprintf(msg, sizeof(msg), "%s", err->msg);
    cli_usage_error(ctx, a->cmd, err, "%s", msg);
}

/* What disk index of the VM is: its volume or path, "?" when it has none. */
static const char *disk_name(const json_t *vm, json_int_t index)
{
    const json_t *d = index >= 0 ? json_array_get(json_object_get(vm, "disks"), (size_t)index)
                                 : NULL;
    const char *s = cli_jstr(d, "volume") ? cli_jstr(d, "volume") : cli_jstr(d, "path");
    return s ? s : "?";
}

static void print_limits(const json_t *vm)
{
    const json_t *l = json_object_get(vm, "limits");
    if (!json_object_size(l)) {
        printf("vm %s has no limits\n", json_string_value(json_object_get(vm, "name")));
        return;
    }
    cli_kv *kv = cli_kv_new();
    static const char *const skip[] = { "disk", NULL };
    cli_kv_add_json(kv, NULL, l, skip);
    const json_t *disks = json_object_get(l, "disk");
    for (size_t i = 0; i < json_array_size(disks); i++) {
        char prefix[32];
        json_int_t index = json_integer_value(json_object_get(json_array_get(disks, i), "index"));
        snprintf(prefix, sizeof(prefix), "disk%lld", (long long)index);
        cli_kv_add(kv, prefix, disk_name(vm, index));
        static const char *const skip_index[] = { "index", NULL };
        cli_kv_add_json(kv, prefix, json_array_get(disks, i), skip_index);
    }
    char *text = cli_kv_render(kv);
    fputs(text, stdout);
    free(text);
    cli_kv_free(kv);
}

int cli_do_vm_limit(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *path = vm_path(a->pos);
    json_t *limits = json_object(), *cur = NULL, *vm = NULL, *patch = NULL;
    int rc = -1;
    static const struct {
        const char *opt, *key;
        int64_t max;
        bool mib;
    } top_opts[] = {
        { "cpu-weight", "cpu_weight", 10000, false },
        { "cpu-max", "cpu_max_percent", 25500, false },
        { "memory-max", "memory_max_mib", 0, true },
        { "balloon", "balloon_mib", 0, true },
    };
    for (size_t i = 0; i < sizeof(top_opts) / sizeof(top_opts[0]); i++) {
        const char *s = cli_arg(a, top_opts[i].opt);
        if (!s)
            continue;
        json_t *v = limit_value(s, top_opts[i].opt, 1, top_opts[i].max, top_opts[i].mib, err);
        if (!v) {
            usage_again(ctx, a, err);
            goto out;
        }
        json_object_set_new(limits, top_opts[i].key, v);
    }
    static const struct {
        const char *opt, *key, *what;
    } list_opts[] = {
        { "cpu-affinity", "cpu_affinity", "CPU numbers (0,2,3)" },
        { "emulator-cpus", "emulator_cpus", "CPU numbers (0,2,3)" },
        { "iothread-cpus", "iothread_cpus", "CPU numbers (0,2,3)" },
        { "numa-nodes", "numa_nodes", "NUMA node numbers (0,1)" },
    };
    for (size_t i = 0; i < sizeof(list_opts) / sizeof(list_opts[0]); i++) {
        const char *lv = cli_arg(a, list_opts[i].opt);
        if (!lv)
            continue;
        if (strcmp(lv, "none") == 0) {
            json_object_set_new(limits, list_opts[i].key, json_null());
            continue;
        }
        char flag[32];
        snprintf(flag, sizeof(flag), "--%s", list_opts[i].opt);
        json_t *list = json_array();
        char *copy = xstrdup(lv), *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int64_t n;
            if (cli_parse_int(tok, 0, 1023, flag, &n, err) < 0)
                break;
            json_array_append_new(list, json_integer(n));
        }
        free(copy);
        if (err->code != KH_OK || json_array_size(list) == 0) {
            json_decref(list);
            if (err->code == KH_OK)
                kh_err_set(err, KH_E_INVALID, "%s: a list of %s", flag, list_opts[i].what);
            usage_again(ctx, a, err);
            goto out;
        }
        json_object_set_new(limits, list_opts[i].key, list);
    }
    int64_t index = 0;
    if (cli_arg(a, "disk") && cli_parse_int(cli_arg(a, "disk"), 0, 15, "--disk", &index, err)) {
        usage_again(ctx, a, err);
        goto out;
    }
    bool disk_change = false;
    for (size_t i = 0; i < sizeof(disk_opts) / sizeof(disk_opts[0]); i++)
        disk_change = disk_change || cli_arg(a, disk_opts[i].opt);
    if (cli_client_json(c, "GET", path, NULL, &cur, NULL, err) < 0)
        goto out;
    if (disk_change) {
        /* "disk" is replaced whole: start from the current list. */
        const json_t *old = json_object_get(json_object_get(cur, "limits"), "disk");
        json_t *list = json_is_array(old) ? json_deep_copy(old) : json_array();
        json_t *entry = NULL;
        for (size_t i = 0; i < json_array_size(list) && !entry; i++)
            if (json_integer_value(json_object_get(json_array_get(list, i), "index")) == index)
                entry = json_array_get(list, i);
        if (!entry) {
            entry = json_pack("{s:I}", "index", (json_int_t)index);
            json_array_append_new(list, entry);
        }
        for (size_t i = 0; i < sizeof(disk_opts) / sizeof(disk_opts[0]); i++) {
            const char *s = cli_arg(a, disk_opts[i].opt);
            if (!s)
                continue;
            json_t *v = limit_value(s, disk_opts[i].opt, 1, INT64_MAX, false, err);
            if (!v) {
                json_decref(list);
                usage_again(ctx, a, err);
                goto out;
            }
            if (json_is_null(v)) {
                json_object_del(entry, disk_opts[i].key);
                json_decref(v);
            } else {
                json_object_set_new(entry, disk_opts[i].key, v);
            }
        }
        /* Drop entries left with nothing but their index. */
        for (size_t i = json_array_size(list); i-- > 0;)
            if (json_object_size(json_array_get(list, i)) <= 1)
                json_array_remove(list, i);
        json_object_set_new(limits, "disk", json_array_size(list) ? list : json_null());
        if (!json_array_size(list))
            json_decref(list);
    }
    if (json_object_size(limits) == 0) {
        /* No option: show the limits. */
        if (ctx->json)
            cli_print_json(stdout, json_object_get(cur, "limits") ? json_object_get(cur, "limits")
                                                                  : json_object());
        else
            print_limits(cur);
        rc = 0;
        goto out;
    }
    patch = json_pack("{s:O}", "limits", limits);
    if (cli_client_json(c, "PATCH", path, patch, &vm, NULL, err) < 0)
        goto out;
    if (ctx->json) {
        cli_print_json(stdout, json_object_get(vm, "limits") ? json_object_get(vm, "limits")
                                                             : json_object());
    } else {
        if (disk_change)
            printf("disk limits set on disk %lld (%s)%s\n", (long long)index,
                   disk_name(vm, index),
                   cli_arg(a, "disk") ? "" : ": the first disk, as no --disk INDEX was given");
        print_limits(vm);
    }
    rc = 0;
out:
    free(path);
    json_decref(limits);
    json_decref(cur);
    json_decref(vm);
    json_decref(patch);
    return rc;
}
