/* net_handlers.c - `kvmhost network create|list|show|delete|leases|forward`. */
#include "cli/net_handlers.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/output.h"
#include "cli/handlers.h"
#include "util/check.h"
#include "util/mem.h"

static int set_str(json_t *o, const char *key, const char *v, kh_err *err)
{
    json_t *s = v ? json_string(v) : NULL;
    if (v && !s) {
        kh_err_set(err, KH_E_INVALID, "--%s: must be UTF-8 text", key);
        return -1;
    }
    if (s)
        json_object_set_new(o, key, s);
    return 0;
}

int cli_do_net_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_pack("{s:s}", "name", a->pos);
    if (!body) {
        kh_err_set(err, KH_E_INVALID, "network name: must be UTF-8 text");
        return -1;
    }
    if (set_str(body, "type", cli_arg(a, "type"), err) < 0 ||
        set_str(body, "subnet", cli_arg(a, "subnet"), err) < 0 ||
        set_str(body, "bridge", cli_arg(a, "bridge"), err) < 0) {
        json_decref(body);
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    int rc = c ? cli_client_json(c, "POST", "/api/v1/networks", body, &resp, NULL, err) : -1;
    json_decref(body);
    if (rc < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, resp);
    else if (cli_jstr(resp, "subnet"))
        printf("network %s created (%s, bridge %s, subnet %s, gateway %s)\n", a->pos,
               cli_jstr(resp, "type"), cli_jstr(resp, "bridge"), cli_jstr(resp, "subnet"),
               cli_jstr(resp, "gateway"));
    else
        printf("network %s created (%s on %s)\n", a->pos, cli_jstr(resp, "type"),
               cli_jstr(resp, "bridge"));
    json_decref(resp);
    return 0;
}

int cli_do_net_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    if (!c || cli_client_json(c, "GET", "/api/v1/networks", NULL, &resp, NULL, err) < 0)
        return -1;
    if (ctx->json) {
        cli_print_json(stdout, resp);
        json_decref(resp);
        return 0;
    }
    static const char *const head[] = { "NAME", "TYPE", "BRIDGE", "SUBNET", "NICS",
                                        "FORWARDS" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(resp, "networks"), i, n) {
        cli_table_add(t, cli_jstr(n, "name"));
        cli_table_add(t, cli_jstr(n, "type"));
        cli_table_add(t, cli_jstr(n, "bridge"));
        cli_table_add(t, cli_jstr(n, "subnet"));
        cli_table_addf(t, "%zu", json_array_size(json_object_get(n, "nics")));
        cli_table_addf(t, "%zu", json_array_size(json_object_get(n, "forwards")));
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
    json_decref(resp);
    return 0;
}

int cli_do_net_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = cli_api_path("networks", a->pos, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, cli_show_kv, err);
    free(path);
    return rc;
}

int cli_do_net_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, cli_api_path("networks", a->pos, NULL), "network", a->pos, err);
}

int cli_do_net_leases(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *path = cli_api_path("networks", a->pos, "/leases");
    json_t *resp = NULL;
    int rc = cli_client_json(c, "GET", path, NULL, &resp, NULL, err);
    free(path);
    if (rc < 0)
        return -1;
    if (ctx->json) {
        cli_print_json(stdout, resp);
        json_decref(resp);
        return 0;
    }
    static const char *const head[] = { "IP", "MAC", "VM", "HOSTNAME", "EXPIRES" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(resp, "leases"), i, l) {
        cli_table_add(t, cli_jstr(l, "ip"));
        cli_table_add(t, cli_jstr(l, "mac"));
        cli_table_add(t, cli_jstr(l, "vm"));
        cli_table_add(t, cli_jstr(l, "hostname"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT,
                       json_integer_value(json_object_get(l, "expires")));
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
    json_decref(resp);
    return 0;
}

static int port_arg(const char *s, const char *what, json_int_t *out, kh_err *err)
{
    char *end = NULL;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !end || *end || v < 1 || v > 65535) {
        kh_err_set(err, KH_E_INVALID, "--%s: must be a port from 1 to 65535", what);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_do_net_forward(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_int_t hp, vp;
    if (port_arg(cli_arg(a, "host-port"), "host-port", &hp, err) < 0 ||
        port_arg(cli_arg(a, "vm-port"), "vm-port", &vp, err) < 0)
        return -1;
    json_t *body = json_pack("{s:I,s:I}", "host_port", hp, "vm_port", vp);
    if (set_str(body, "vm", cli_arg(a, "vm"), err) < 0 ||
        set_str(body, "proto", cli_arg(a, "proto"), err) < 0) {
        json_decref(body);
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    char *path = cli_api_path("networks", a->pos, "/forwards");
    json_t *resp = NULL;
    int rc = c ? cli_client_json(c, "POST", path, body, &resp, NULL, err) : -1;
    free(path);
    json_decref(body);
    if (rc < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, resp);
    else
        printf("forwarding %s port %" JSON_INTEGER_FORMAT " to %s port %" JSON_INTEGER_FORMAT
               "\n", cli_arg(a, "proto") ? cli_arg(a, "proto") : "tcp", hp, cli_arg(a, "vm"),
               vp);
    json_decref(resp);
    return 0;
}

json_t *cli_nics_json(const kh_strv *specs, kh_err *err)
{
    json_t *arr = json_array();
    for (size_t i = 0; specs && i < specs->n; i++) {
        char *copy = xstrdup(specs->v[i]);
        json_t *nic = json_object();
        char *save = NULL;
        int rc = 0;
        size_t k = 0;
        for (char *item = strtok_r(copy, ",", &save); item && rc == 0;
             item = strtok_r(NULL, ",", &save), k++) {
            const char *key = "network", *val = item;
            char *eq = strchr(item, '=');
            if (k > 0 || eq) {
                if (!eq) {
                    kh_err_set(err, KH_E_INVALID, "--nic %s: '%s' is not mac=... or ip=...",
                               specs->v[i], item);
                    rc = -1;
                    break;
                }
                *eq = '\0';
                key = item;
                val = eq + 1;
                if (strcmp(key, "mac") != 0 && strcmp(key, "ip") != 0 &&
                    strcmp(key, "network") != 0 && strcmp(key, "link") != 0) {
                    kh_err_set(err, KH_E_INVALID, "--nic %s: unknown item %s", specs->v[i], key);
                    rc = -1;
                    break;
                }
            }
            json_t *js = json_string(val);
            if (!js) {
                kh_err_set(err, KH_E_INVALID, "--nic: must be UTF-8 text");
                rc = -1;
                break;
            }
            json_object_set_new(nic, key, js);
        }
        free(copy);
        if (rc == 0 && !json_object_get(nic, "network")) {
            kh_err_set(err, KH_E_INVALID, "--nic %s: names no network", specs->v[i]);
            rc = -1;
        }
        if (rc < 0) {
            json_decref(nic);
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, nic);
    }
    return arr;
}

/* ---- vm nic add|remove|link ---- */

/* Send a NIC request that answers with a task and wait for it. */
static int nic_task(cli_ctx *ctx, const char *method, char *path, const json_t *body,
                    json_t **task, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    int rc = c ? cli_client_json(c, method, path, body, task, NULL, err) : -1;
    free(path);
    if (rc < 0)
        return -1;
    if (rc == 202 && cli_task_wait(ctx, task, err) < 0)
        return -1;
    return 0;
}

static char *nic_path(const char *vm, const char *index)
{
    char *ve = cli_path_escape(vm);
    char *p;
    if (index) {
        char *ie = cli_path_escape(index);
        p = xasprintf("/api/v1/vms/%s/nics/%s?wait=60", ve, ie);
        free(ie);
    } else {
        p = xasprintf("/api/v1/vms/%s/nics?wait=60", ve);
    }
    free(ve);
    return p;
}

int cli_do_vm_nic_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    kh_strv specs = { 0 };
    char *one[] = { (char *)(uintptr_t)a->pos2, NULL };
    specs.v = one;
    specs.n = 1;
    json_t *arr = cli_nics_json(&specs, err);
    if (!arr)
        return -1;
    json_t *task = NULL;
    int rc = nic_task(ctx, "POST", nic_path(a->pos, NULL), json_array_get(arr, 0), &task, err);
    json_decref(arr);
    if (rc == 0) {
        const json_t *r = json_object_get(task, "result");
        if (ctx->json)
            cli_print_json(stdout, task);
        else
            printf("vm %s: NIC %lld added (mac %s, tap %s%s%s)\n", a->pos,
                   (long long)json_integer_value(json_object_get(r, "index")), cli_jstr(r, "mac"),
                   cli_jstr(r, "tap"), cli_jstr(r, "port") ? ", hot-plugged on " : "",
                   cli_jstr(r, "port") ? cli_jstr(r, "port") : "");
    }
    json_decref(task);
    return rc;
}

int cli_do_vm_nic_remove(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *task = NULL;
    int rc = nic_task(ctx, "DELETE", nic_path(a->pos, a->pos2), NULL, &task, err);
    if (rc == 0) {
        if (ctx->json)
            cli_print_json(stdout, task);
        else
            printf("vm %s: NIC %s removed\n", a->pos, a->pos2);
    }
    json_decref(task);
    return rc;
}

int cli_do_vm_nic_link(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *state = cli_arg(a, "state");
    json_t *body = json_pack("{s:s}", "link", state ? state : "");
    json_t *task = NULL;
    int rc = nic_task(ctx, "PATCH", nic_path(a->pos, a->pos2), body, &task, err);
    json_decref(body);
    if (rc == 0) {
        if (ctx->json)
            cli_print_json(stdout, task);
        else
            printf("vm %s: NIC %s link %s\n", a->pos, a->pos2, state);
    }
    json_decref(task);
    return rc;
}

/* ---- secgroup ---- */

static void rules_human(const json_t *g)
{
    static const char *const head[] = { "#", "DIRECTION", "PROTO", "PORTS", "CIDR" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(g, "rules"), i, r) {
        char idx[24];
        snprintf(idx, sizeof(idx), "%zu", i);
        cli_table_add(t, idx);
        cli_table_add(t, cli_jstr(r, "direction") ? cli_jstr(r, "direction") : "in");
        cli_table_add(t, cli_jstr(r, "proto") ? cli_jstr(r, "proto") : "");
        cli_table_add(t, cli_jstr(r, "ports") ? cli_jstr(r, "ports") : "-");
        cli_table_add(t, cli_jstr(r, "cidr") ? cli_jstr(r, "cidr") : "any");
    }
    printf("security group %s (inbound: what no rule allows is dropped; outbound: all)\n",
           cli_jstr(g, "name") ? cli_jstr(g, "name") : "");
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static void groups_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "RULES" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(resp, "security_groups"), i, g) {
        char n[24];
        snprintf(n, sizeof(n), "%zu", json_array_size(json_object_get(g, "rules")));
        cli_table_add(t, cli_jstr(g, "name"));
        cli_table_add(t, n);
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

int cli_do_sg_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/security-groups", NULL, groups_human, err);
}

int cli_do_sg_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = cli_api_path("security-groups", a->pos, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, rules_human, err);
    free(path);
    return rc;
}

/* One rule object from the --proto/--ports/--cidr options. */
static json_t *rule_json(const cli_args *a, kh_err *err)
{
    json_t *r = json_pack("{s:s}", "direction", "in");
    if (set_str(r, "proto", cli_arg(a, "proto"), err) < 0 ||
        set_str(r, "ports", cli_arg(a, "ports"), err) < 0 ||
        set_str(r, "cidr", cli_arg(a, "cidr"), err) < 0) {
        json_decref(r);
        return NULL;
    }
    return r;
}

static void print_nothing(const json_t *o)
{
    (void)o;
}

static int sg_put(cli_ctx *ctx, const char *name, const json_t *body, const char *done,
                  kh_err *err)
{
    char *path = cli_api_path("security-groups", name, NULL);
    int rc = cli_show(ctx, "PUT", path, body, print_nothing, err);
    free(path);
    if (rc == 0 && !ctx->json)
        printf("security group %s %s\n", name, done);
    return rc;
}

int cli_do_sg_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *path = cli_api_path("security-groups", a->pos, NULL);
    json_t *resp = NULL;
    int rc = cli_client_json(c, "GET", path, NULL, &resp, NULL, err);
    free(path);
    json_decref(resp);
    if (rc >= 0) {
        kh_err_set(err, KH_E_CONFLICT, "security group %s exists", a->pos);
        return -1;
    }
    if (err->code != KH_E_NOTFOUND)
        return -1;
    kh_err_clear(err);
    json_t *rules = json_array();
    if (cli_arg(a, "proto") || cli_arg(a, "ports") || cli_arg(a, "cidr")) {
        json_t *r = rule_json(a, err);
        if (!r) {
            json_decref(rules);
            return -1;
        }
        json_array_append_new(rules, r);
    }
    json_t *body = json_pack("{s:o}", "rules", rules);
    rc = sg_put(ctx, a->pos, body, "created", err);
    json_decref(body);
    return rc;
}

int cli_do_sg_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, cli_api_path("security-groups", a->pos, NULL), "security group",
                      a->pos, err);
}

/* rule add / rule delete: one request each, so the daemon changes the
 * group in one step and concurrent edits do not lose each other. */
int cli_do_sg_rule_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *r = rule_json(a, err);
    if (!r)
        return -1;
    char *path = cli_api_path("security-groups", a->pos, "/rules");
    int rc = cli_show(ctx, "POST", path, r, print_nothing, err);
    free(path);
    json_decref(r);
    if (rc == 0 && !ctx->json)
        printf("security group %s updated: rule added\n", a->pos);
    return rc;
}

int cli_do_sg_rule_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *end = NULL;
    long idx = strtol(a->pos2, &end, 10);
    if (!*a->pos2 || *end || idx < 0) {
        kh_err_set(err, KH_E_INVALID, "rule: '%s' is not a rule number (see secgroup show)",
                   a->pos2);
        return -1;
    }
    char *suffix = xasprintf("/rules/%ld", idx);
    char *path = cli_api_path("security-groups", a->pos, suffix);
    free(suffix);
    int rc = cli_show(ctx, "DELETE", path, NULL, print_nothing, err);
    free(path);
    if (rc == 0 && !ctx->json)
        printf("security group %s updated: rule deleted\n", a->pos);
    return rc;
}
