/* secgroup.c - `kvmhost secgroup list|show|create|delete|rule add|rule delete`: the
 * rows and their handlers. */
#include "cli/nouns.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/client.h"
#include "cli/console.h"
#include "cli/output.h"
#include "kh_config.h"
#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

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

static int cli_do_sg_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/security-groups", NULL, groups_human, err);
}

static int cli_do_sg_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show_one(ctx, "security-groups", a->pos, rules_human, err);
}

/* One rule object from the --proto/--ports/--cidr options. */
static json_t *rule_json(const cli_args *a, kh_err *err)
{
    json_t *r = json_pack("{s:s}", "direction", "in");
    if (cli_set_str(r, "proto", cli_arg(a, "proto"), err) < 0 ||
        cli_set_str(r, "ports", cli_arg(a, "ports"), err) < 0 ||
        cli_set_str(r, "cidr", cli_arg(a, "cidr"), err) < 0) {
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

static int cli_do_sg_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_sg_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, cli_api_path("security-groups", a->pos, NULL), "security group",
                      a->pos, err);
}

/* rule add / rule delete: one request each, so the daemon changes the
 * group in one step and concurrent edits do not lose each other. */
static int cli_do_sg_rule_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_sg_rule_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt opts_sg_rule[] = {
    { "proto", "tcp|udp|icmp|any", CLI_OPT_ARG, "Protocol (default tcp)." },
    { "ports", "PORT[-PORT]", CLI_OPT_ARG,
      "Destination port or range, e.g. 80 or 8000-8080 (tcp and udp only; default all)." },
    { "cidr", "NET/LEN", CLI_OPT_ARG,
      "Source addresses allowed: an IPv4 network (10.0.0.0/8) for IPv4 only or an IPv6 "
      "network (2001:db8::/32) for IPv6 only (default anywhere, both families)." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_secgroup_cmds[] = {
    {
        "secgroup", "list", NULL, "list the security groups",
        "One line per security group: its name and how many rules it has.",
        NULL,
        "$ kvmhost secgroup list",
        cli_do_sg_list,
    },
    {
        "secgroup", "show", "NAME", "show a security group's rules",
        "The group's rules, numbered from 0. A NIC with security groups accepts inbound "
        "traffic that a rule of one of its groups allows (and replies to its own traffic); "
        "the rest inbound is dropped. Outbound is always allowed.",
        NULL,
        "$ kvmhost secgroup show web",
        cli_do_sg_show,
    },
    {
        "secgroup", "create", "NAME", "create a security group",
        "Create the group, empty or with one rule from --proto/--ports/--cidr. Attach it to "
        "NICs with \"security_groups\": [\"NAME\"] in their spec.",
        opts_sg_rule,
        "$ kvmhost secgroup create web --proto tcp --ports 80",
        cli_do_sg_create,
    },
    {
        "secgroup", "delete", "NAME", "delete a security group",
        "Delete the group. A group that a NIC uses is refused (exit status 5).",
        NULL,
        "$ kvmhost secgroup delete web",
        cli_do_sg_delete,
    },
    {
        "secgroup", "rule add", "NAME", "add a rule to a security group",
        "Append an inbound rule; the NICs that use the group get it at once.",
        opts_sg_rule,
        "$ kvmhost secgroup rule add web --proto tcp --ports 443\n"
        "$ kvmhost secgroup rule add web --proto icmp --cidr 10.0.0.0/8\n"
        "$ kvmhost secgroup rule add web --proto tcp --ports 22 --cidr 2001:db8::/32",
        cli_do_sg_rule_add,
    },
    {
        "secgroup", "rule delete", "NAME RULE", "delete a rule of a security group",
        "Delete rule number RULE (see 'secgroup show'); the rules after it move up one.",
        NULL,
        "$ kvmhost secgroup rule delete web 1",
        cli_do_sg_rule_delete,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
