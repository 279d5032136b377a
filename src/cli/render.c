/* render.c - the views for people of VMs, networks, leases, volumes, pools
 * and the host (see render.h). */
#include "cli/render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"
#include "cli/output.h"
#include "util/mem.h"
#include "util/strv.h"

static const char *str_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = cli_jstr(o, key);
    return s ? s : dflt;
}

/* Seconds the VM has run, if it runs; -1 otherwise. */
static double vm_uptime(const json_t *vm, double now)
{
    const char *state = cli_jstr(vm, "state");
    double started;
    if (!state || (strcmp(state, "running") != 0 && strcmp(state, "paused") != 0))
        return -1;
    if (cli_parse_time(cli_jstr(vm, "started_at"), &started) < 0)
        return -1;
    double up = now - started;
    return up < 0 ? 0 : up;
}

/* The key of a one-member object, added to kv as cli_kv_add_json would. */
static void kv_add_member(cli_kv *kv, const char *key, json_t *v)
{
    json_t *one = json_object();
    json_object_set(one, key, v);
    cli_kv_add_json(kv, NULL, one, NULL);
    json_decref(one);
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* Join lines (stolen) with '\n'; "-" when there are none. */
static char *lines_join_free(kh_strv *lines)
{
    char *s = lines->n ? kh_strv_join(lines, "\n") : xstrdup("-");
    kh_strv_free(lines);
    return s;
}

/* ---- VMs ---- */

char *cli_render_vm_addresses(const json_t *vm)
{
    kh_strv *ips = kh_strv_new();
    size_t i, k;
    json_t *nic, *a;
    json_array_foreach(json_object_get(vm, "nics"), i, nic) {
        const json_t *addrs = json_object_get(nic, "addresses");
        if (!json_is_array(addrs)) { /* a daemon without "addresses" */
            if (cli_jstr(nic, "ip"))
                kh_strv_add(ips, cli_jstr(nic, "ip"));
            continue;
        }
        json_array_foreach(addrs, k, a) {
            if (cli_jstr(a, "ip"))
                kh_strv_add(ips, cli_jstr(a, "ip"));
        }
    }
    char *s = ips->n ? kh_strv_join(ips, ",") : xstrdup("-");
    kh_strv_free(ips);
    return s;
}

char *cli_render_vm_list(const json_t *resp, double now)
{
    static const char *const head[] = { "NAME",    "TYPE",  "STATE", "VCPUS", "MEMORY",
                                        "ADDRESS", "ACCEL", "PID",   "UPTIME", "HOST" };
    size_t i;
    json_t *vm;
    /* A HOST column when the VMs are on more than one host (a cluster). */
    const char *first = NULL;
    bool hosts = false;
    json_array_foreach(json_object_get(resp, "vms"), i, vm) {
        const char *h = json_string_value(json_object_get(vm, "host"));
        if (h && !first)
            first = h;
        hosts = hosts || (h && strcmp(h, first) != 0);
    }
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head) - (hosts ? 0 : 1), head);
    json_array_foreach(json_object_get(resp, "vms"), i, vm) {
        char mem[32], up[32];
        cli_table_add(t, cli_jstr(vm, "name"));
        cli_table_add(t, json_is_true(json_object_get(vm, "template")) ? "template" : "vm");
        cli_table_add(t, cli_jstr(vm, "state"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(vm, "vcpus")));
        cli_fmt_mib(json_integer_value(json_object_get(vm, "memory_mib")), mem, sizeof(mem));
        cli_table_add(t, mem);
        char *addr = cli_render_vm_addresses(vm);
        cli_table_add(t, addr);
        free(addr);
        double uptime = vm_uptime(vm, now);
        cli_table_add(t, uptime >= 0 ? cli_jstr(vm, "accelerator") : NULL);
        json_t *pid = json_object_get(vm, "pid");
        if (json_is_integer(pid))
            cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(pid));
        else
            cli_table_add(t, NULL);
        if (uptime >= 0) {
            cli_fmt_duration(uptime, up, sizeof(up));
            cli_table_add(t, up);
        } else {
            cli_table_add(t, NULL);
        }
        if (hosts)
            cli_table_add(t, cli_jstr(vm, "host"));
    }
    char *s = cli_table_render(t);
    cli_table_free(t);
    return s;
}

/* "10.10.0.5 (reserved, lease expires in 52m)" */
static char *address_text(const json_t *a, double now)
{
    const char *src = str_or(a, "source", "");
    const json_t *exp = json_object_get(a, "expires");
    char when[64] = "";
    if (json_is_number(exp)) {
        char e[48];
        cli_fmt_expiry(json_number_value(exp), now, e, sizeof(e));
        snprintf(when, sizeof(when), "lease expires %s", e);
    }
    if (strcmp(src, "reservation") == 0)
        return xasprintf("%s (reserved%s%s)", str_or(a, "ip", "?"), *when ? ", " : "", when);
    if (strcmp(src, "dhcp") == 0)
        return xasprintf("%s (DHCP%s%s)", str_or(a, "ip", "?"), *when ? ", " : "", when);
    return xstrdup(str_or(a, "ip", "?"));
}

char *cli_render_nic(size_t index, const json_t *nic, double now)
{
    kh_strv *parts = kh_strv_new();
    kh_strv_addf(parts, "%zu: %s", index, str_or(nic, "network", "?"));
    if (cli_jstr(nic, "mac"))
        kh_strv_addf(parts, "mac %s", cli_jstr(nic, "mac"));
    const json_t *addrs = json_object_get(nic, "addresses");
    if (json_is_array(addrs)) {
        kh_strv *as = kh_strv_new();
        size_t i;
        json_t *a;
        json_array_foreach(addrs, i, a) {
            kh_strv_add_steal(as, address_text(a, now));
        }
        char *j = as->n ? kh_strv_join(as, " ") : NULL;
        if (j)
            kh_strv_addf(parts, "address%s %s", as->n > 1 ? "es" : "", j);
        else
            kh_strv_add(parts, "no address known");
        free(j);
        kh_strv_free(as);
    } else if (cli_jstr(nic, "ip")) {
        kh_strv_addf(parts, "address %s (reserved)", cli_jstr(nic, "ip"));
    }
    const json_t *groups = json_object_get(nic, "security_groups");
    if (json_array_size(groups)) {
        kh_strv *gs = kh_strv_new();
        size_t i;
        json_t *g;
        json_array_foreach(groups, i, g) {
            kh_strv_add(gs, json_string_value(g) ? json_string_value(g) : "?");
        }
        char *j = kh_strv_join(gs, "+");
        kh_strv_addf(parts, "security groups %s", j);
        free(j);
        kh_strv_free(gs);
    }
    if (cli_jstr(nic, "link"))
        kh_strv_addf(parts, "link %s", cli_jstr(nic, "link"));
    if (json_is_true(json_object_get(nic, "hotplugged")))
        kh_strv_add(parts, "hot-plugged");
    char *s = kh_strv_join(parts, ", ");
    kh_strv_free(parts);
    return s;
}

char *cli_render_vm(const json_t *vm, double now)
{
    static const char *const known[] = { "name", "id", "state", "state_reason", "description",
                                         "vcpus", "memory_mib", "machine", "cpu_model", "boot", "disks",
                                         "nics", "serial", "graphics", "pid", "accelerator",
                                         "created_at", "updated_at", "started_at", "guest",
                                         NULL };
    char buf[64];
    cli_kv *kv = cli_kv_new();
    cli_kv_add(kv, "name", cli_jstr(vm, "name"));
    cli_kv_add(kv, "id", cli_jstr(vm, "id"));
    if (cli_jstr(vm, "state_reason") && *cli_jstr(vm, "state_reason"))
        cli_kv_addf(kv, "state", "%s (%s)", cli_jstr(vm, "state"), cli_jstr(vm, "state_reason"));
    else
        cli_kv_add(kv, "state", cli_jstr(vm, "state"));
    const char *desc = cli_jstr(vm, "description");
    cli_kv_add(kv, "description", desc && *desc ? desc : "-");
    cli_kv_addf(kv, "vcpus", "%" JSON_INTEGER_FORMAT,
                json_integer_value(json_object_get(vm, "vcpus")));
    cli_fmt_mib(json_integer_value(json_object_get(vm, "memory_mib")), buf, sizeof(buf));
    cli_kv_add(kv, "memory", buf);
    cli_kv_add(kv, "machine", cli_jstr(vm, "machine"));
    cli_kv_add(kv, "cpu", cli_jstr(vm, "cpu_model") ? cli_jstr(vm, "cpu_model") : "default");
    const json_t *boot = json_object_get(vm, "boot");
    if (cli_jstr(boot, "kernel")) {
        cli_kv_add(kv, "kernel", cli_jstr(boot, "kernel"));
        cli_kv_add(kv, "initrd", cli_jstr(boot, "initrd"));
        cli_kv_add(kv, "cmdline", cli_jstr(boot, "cmdline"));
    } else {
        cli_kv_add(kv, "boot", "first disk");
    }
    kh_strv *lines = kh_strv_new();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(vm, "disks"), i, d) {
        kh_strv_addf(lines, "%s (%s%s)",
                     cli_jstr(d, "volume") ? cli_jstr(d, "volume") : str_or(d, "path", "?"),
                     cli_jstr(d, "volume") ? "volume" : str_or(d, "format", "?"),
                     json_is_true(json_object_get(d, "readonly")) ? ", readonly" : "");
    }
    char *joined = lines_join_free(lines);
    cli_kv_add(kv, "disks", joined);
    free(joined);
    lines = kh_strv_new();
    json_array_foreach(json_object_get(vm, "nics"), i, d) {
        kh_strv_add_steal(lines, cli_render_nic(i, d, now));
    }
    joined = lines_join_free(lines);
    cli_kv_add(kv, "nics", joined);
    free(joined);
    char *addr = cli_render_vm_addresses(vm);
    cli_kv_add(kv, "address", addr);
    free(addr);
    const json_t *guest = json_object_get(vm, "guest");
    if (guest) { /* what the guest agent said last */
        const json_t *os = json_object_get(guest, "os");
        cli_kv_add(kv, "guest os", str_or(os, "name", str_or(os, "id", "-")));
        cli_kv_add(kv, "guest hostname", str_or(guest, "hostname", "-"));
        lines = kh_strv_new();
        json_array_foreach(json_object_get(guest, "addresses"), i, d) {
            kh_strv_addf(lines, "%s/%" JSON_INTEGER_FORMAT " (%s)", str_or(d, "ip", "?"),
                         json_integer_value(json_object_get(d, "prefix")),
                         str_or(d, "interface", "?"));
        }
        joined = lines_join_free(lines);
        cli_kv_add(kv, "guest addresses", joined);
        free(joined);
    }
    const json_t *serial = json_object_get(vm, "serial");
    cli_kv_add(kv, "serial", serial ? (json_is_true(serial) ? "yes" : "no") : NULL);
    cli_kv_add(kv, "graphics", cli_jstr(vm, "graphics"));
    json_t *pid = json_object_get(vm, "pid");
    if (json_is_integer(pid))
        cli_kv_addf(kv, "pid", "%" JSON_INTEGER_FORMAT, json_integer_value(pid));
    else
        cli_kv_add(kv, "pid", NULL);
    double up = vm_uptime(vm, now);
    cli_kv_add(kv, "accelerator", up >= 0 ? cli_jstr(vm, "accelerator") : NULL);
    if (up >= 0) {
        cli_fmt_span(up, buf, sizeof(buf));
        cli_kv_add(kv, "uptime", buf);
    }
    cli_kv_add(kv, "created", cli_jstr(vm, "created_at"));
    cli_kv_add(kv, "updated", cli_jstr(vm, "updated_at"));
    cli_kv_add(kv, "started", cli_jstr(vm, "started_at"));
    /* Fields newer than this client, as they are. */
    cli_kv_add_json(kv, NULL, vm, known);
    char *s = cli_kv_render(kv);
    cli_kv_free(kv);
    return s;
}

/* ---- networks ---- */

char *cli_render_network(const json_t *net)
{
    cli_kv *kv = cli_kv_new();
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)net, key, v) {
        if (strcmp(key, "nics") == 0) {
            kh_strv *lines = kh_strv_new();
            size_t i;
            json_t *n;
            json_array_foreach(v, i, n) {
                kh_strv_addf(lines, "vm %s, mac %s%s%s%s", str_or(n, "vm", "?"),
                             str_or(n, "mac", "?"), cli_jstr(n, "ip") ? ", address " : "",
                             str_or(n, "ip", ""), cli_jstr(n, "ip") ? " (reserved)" : "");
            }
            char *s = lines_join_free(lines);
            cli_kv_add(kv, key, s);
            free(s);
        } else if (strcmp(key, "forwards") == 0) {
            kh_strv *lines = kh_strv_new();
            size_t i;
            json_t *f;
            json_array_foreach(v, i, f) {
                kh_strv_addf(lines,
                             "%s host port %" JSON_INTEGER_FORMAT " -> vm %s port %"
                             JSON_INTEGER_FORMAT "%s%s%s",
                             str_or(f, "proto", "tcp"),
                             json_integer_value(json_object_get(f, "host_port")),
                             str_or(f, "vm", "?"),
                             json_integer_value(json_object_get(f, "vm_port")),
                             cli_jstr(f, "ip") ? " (" : "", str_or(f, "ip", ""),
                             cli_jstr(f, "ip") ? ")" : "");
            }
            char *s = lines_join_free(lines);
            cli_kv_add(kv, key, s);
            free(s);
        } else {
            kv_add_member(kv, key, v);
        }
    }
    char *s = cli_kv_render(kv);
    cli_kv_free(kv);
    return s;
}

char *cli_render_leases(const json_t *resp, double now)
{
    static const char *const head[] = { "IP", "MAC", "VM", "HOSTNAME", "EXPIRES" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(resp, "leases"), i, l) {
        char when[64];
        cli_table_add(t, cli_jstr(l, "ip"));
        cli_table_add(t, cli_jstr(l, "mac"));
        cli_table_add(t, cli_jstr(l, "vm"));
        cli_table_add(t, cli_jstr(l, "hostname"));
        cli_fmt_expiry((double)json_integer_value(json_object_get(l, "expires")), now, when,
                       sizeof(when));
        cli_table_add(t, when);
    }
    char *s = cli_table_render(t);
    cli_table_free(t);
    return s;
}

/* ---- storage ---- */

static const char *const byte_keys[] = { "capacity",     "allocation", "free", "virtual_size",
                                          "actual_size",  NULL };

static void kv_add_sized(cli_kv *kv, const char *key, json_t *v)
{
    char buf[32];
    if (in_list(key, byte_keys) && json_is_integer(v)) {
        cli_fmt_bytes(json_integer_value(v), buf, sizeof(buf));
        cli_kv_add(kv, key, buf);
    } else {
        kv_add_member(kv, key, v);
    }
}

char *cli_render_volume(const json_t *vol)
{
    cli_kv *kv = cli_kv_new();
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)vol, key, v) {
        if (strcmp(key, "backing_chain") == 0 && json_is_array(v)) {
            kh_strv *lines = kh_strv_new();
            size_t i;
            json_t *l;
            json_array_foreach(v, i, l) {
                char vs[32] = "?", as[32] = "?";
                if (json_is_integer(json_object_get(l, "virtual_size")))
                    cli_fmt_bytes(json_integer_value(json_object_get(l, "virtual_size")), vs,
                                  sizeof(vs));
                if (json_is_integer(json_object_get(l, "actual_size")))
                    cli_fmt_bytes(json_integer_value(json_object_get(l, "actual_size")), as,
                                  sizeof(as));
                kh_strv_addf(lines, "%s: %s, %s virtual, %s allocated",
                             cli_jstr(l, "volume") ? cli_jstr(l, "volume")
                                                   : str_or(l, "filename", "?"),
                             str_or(l, "format", "?"), vs, as);
            }
            char *s = lines_join_free(lines);
            cli_kv_add(kv, key, s);
            free(s);
        } else if (strcmp(key, "used_by") == 0 && json_is_array(v)) {
            kh_strv *vms = kh_strv_new();
            size_t i;
            json_t *u;
            json_array_foreach(v, i, u) {
                kh_strv_add(vms, cli_jstr(u, "vm") ? cli_jstr(u, "vm") : "?");
            }
            char *s = vms->n ? kh_strv_join(vms, ", ") : xstrdup("-");
            cli_kv_add(kv, key, s);
            free(s);
            kh_strv_free(vms);
        } else {
            kv_add_sized(kv, key, v);
        }
    }
    char *s = cli_kv_render(kv);
    cli_kv_free(kv);
    return s;
}

char *cli_render_pool(const json_t *pool)
{
    cli_kv *kv = cli_kv_new();
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)pool, key, v) {
        kv_add_sized(kv, key, v);
    }
    char *s = cli_kv_render(kv);
    cli_kv_free(kv);
    return s;
}

/* ---- host ---- */

char *cli_render_host(const json_t *host)
{
    cli_kv *kv = cli_kv_new();
    const char *key;
    json_t *v;
    char buf[64];
    json_object_foreach((json_t *)(uintptr_t)host, key, v) {
        if (strcmp(key, "load_average") == 0 && json_is_array(v)) {
            cli_fmt_load(v, buf, sizeof(buf));
            cli_kv_add(kv, key, buf);
        } else if (strcmp(key, "uptime_seconds") == 0 && json_is_number(v)) {
            cli_fmt_span(json_number_value(v), buf, sizeof(buf));
            cli_kv_add(kv, "kvmhostd_uptime", buf);
        } else {
            kv_add_member(kv, key, v);
        }
    }
    char *s = cli_kv_render(kv);
    cli_kv_free(kv);
    return s;
}
