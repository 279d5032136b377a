/* access.c - `kvmhost user|group|token|role|acl|project|permissions|audit`:
 * the rows and their handlers over the access routes (docs/api.md,
 * "Users, roles, projects"). */
#include "cli/nouns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/client.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

/* Send and print: the JSON with --json, else human(resp) (or "msg"). */
static int send_(cli_ctx *ctx, const char *method, char *path /* stolen */, json_t *body,
                 void (*human)(const json_t *), const char *msg, kh_err *err)
{
    int rc;
    if (human || !msg) {
        rc = cli_show(ctx, method, path, body, human ? human : cli_show_kv, err);
    } else {
        cli_client *c = cli_ctx_client(ctx, err);
        json_t *resp = NULL;
        rc = c ? cli_client_json(c, method, path, body, &resp, NULL, err) : -1;
        if (rc == 0) {
            if (ctx->json && resp)
                cli_print_json(stdout, resp);
            else if (!ctx->json)
                printf("%s\n", msg);
        }
        json_decref(resp);
    }
    free(path);
    json_decref(body);
    return rc < 0 ? -1 : 0;
}

static char *path1(const char *fmt, const char *a)
{
    char *e = cli_path_escape(a ? a : "");
    char *p = xasprintf(fmt, e);
    free(e);
    return p;
}

/* A password: the first line of standard input. */
static char *read_password(kh_err *err)
{
    char buf[1100];
    if (!fgets(buf, sizeof(buf), stdin)) {
        kh_err_set(err, KH_E_INVALID, "no password on standard input");
        return NULL;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    return xstrdup(buf);
}

static int set_int_opt(json_t *o, const cli_args *a, const char *opt, const char *key,
                       kh_err *err)
{
    const char *v = cli_arg(a, opt);
    int64_t n;
    if (!v)
        return 0;
    if (cli_parse_int(v, 0, INT64_MAX, opt, &n, err) < 0)
        return -1;
    json_object_set_new(o, key, json_integer(n));
    return 0;
}

/* ---- users ---- */

static void users_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "PROJECT", "ENABLED", "PASSWORD", "GROUPS" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(resp, "users"), i, u) {
        cli_table_add(t, cli_jstr(u, "name"));
        cli_table_add(t, cli_jstr(u, "project"));
        cli_table_add(t, json_is_true(json_object_get(u, "enabled")) ? "yes" : "no");
        cli_table_add(t, json_is_true(json_object_get(u, "has_password")) ? "set" : "-");
        kh_strv *g = kh_strv_new();
        size_t j;
        json_t *x;
        json_array_foreach(json_object_get(u, "groups"), j, x)
            kh_strv_add(g, json_string_value(x));
        char *s = kh_strv_join(g, ",");
        cli_table_add(t, *s ? s : NULL);
        free(s);
        kh_strv_free(g);
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static int do_user_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *b = json_pack("{s:s}", "name", a->pos);
    if (cli_flag(a, "password-stdin")) {
        char *pw = read_password(err);
        if (!pw) {
            json_decref(b);
            return -1;
        }
        json_object_set_new(b, "password", json_string(pw));
        free(pw);
    }
    if (cli_set_str(b, "project", cli_arg(a, "project"), err) < 0) {
        json_decref(b);
        return -1;
    }
    const kh_strv *g = cli_arg_all(a, "group");
    if (g) {
        json_t *arr = json_array();
        for (size_t i = 0; i < g->n; i++)
            json_array_append_new(arr, json_string(g->v[i]));
        json_object_set_new(b, "groups", arr);
    }
    char *msg = xasprintf("user %s added", a->pos);
    int rc = send_(ctx, "POST", xstrdup("/api/v1/users"), b, NULL, msg, err);
    free(msg);
    return rc;
}

static int do_user_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/users", NULL, users_human, err);
}

static int do_user_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, path1("/api/v1/users/%s", a->pos), "user", a->pos, err);
}

static int do_user_passwd(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *pw = read_password(err);
    if (!pw)
        return -1;
    json_t *b = json_pack("{s:s}", "password", pw);
    free(pw);
    return send_(ctx, "PATCH", path1("/api/v1/users/%s", a->pos), b, NULL,
                 "password changed", err);
}

static int do_user_set(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *b = json_object();
    if (cli_set_str(b, "project", cli_arg(a, "project"), err) < 0) {
        json_decref(b);
        return -1;
    }
    if (cli_flag(a, "enable"))
        json_object_set_new(b, "enabled", json_true());
    if (cli_flag(a, "disable"))
        json_object_set_new(b, "enabled", json_false());
    return send_(ctx, "PATCH", path1("/api/v1/users/%s", a->pos), b, NULL, "user changed",
                 err);
}

/* ---- groups ---- */

static int do_group_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *msg = xasprintf("group %s added", a->pos);
    int rc = send_(ctx, "POST", xstrdup("/api/v1/groups"), json_pack("{s:s}", "name", a->pos),
                   NULL, msg, err);
    free(msg);
    return rc;
}

static int do_group_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/groups", NULL, NULL, err);
}

static int do_group_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, path1("/api/v1/groups/%s", a->pos), "group", a->pos, err);
}

static int member(cli_ctx *ctx, const cli_args *a, const char *method, kh_err *err)
{
    char *g = cli_path_escape(a->pos), *u = cli_path_escape(a->pos2);
    char *path = xasprintf("/api/v1/groups/%s/members/%s", g, u);
    free(g);
    free(u);
    return send_(ctx, method, path, NULL, NULL, "done", err);
}

static int do_group_adduser(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return member(ctx, a, "PUT", err);
}

static int do_group_deluser(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return member(ctx, a, "DELETE", err);
}

/* ---- tokens ---- */

static void token_human(const json_t *t)
{
    printf("token %s made; its secret (shown once, use it as the bearer token):\n%s\n",
           cli_jstr(t, "id"), cli_jstr(t, "secret"));
}

static int do_token_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *b = json_pack("{s:s}", "name", a->pos2);
    if (set_int_opt(b, a, "expires-in", "expires_in_seconds", err) < 0 ||
        cli_set_str(b, "comment", cli_arg(a, "comment"), err) < 0) {
        json_decref(b);
        return -1;
    }
    const kh_strv *acl = cli_arg_all(a, "acl");
    if (acl) {
        json_t *arr = json_array();
        for (size_t i = 0; i < acl->n; i++) {
            const char *s = acl->v[i];
            const char *eq = strrchr(s, '=');
            if (!eq) {
                json_decref(arr);
                json_decref(b);
                kh_err_set(err, KH_E_INVALID, "--acl: PATH=ROLE");
                return -1;
            }
            char *p = xstrndup(s, (size_t)(eq - s));
            json_array_append_new(arr, json_pack("{s:s,s:s}", "path", p, "role", eq + 1));
            free(p);
        }
        json_object_set_new(b, "acl", arr);
    }
    return send_(ctx, "POST", path1("/api/v1/users/%s/tokens", a->pos), b, token_human, NULL,
                 err);
}

static int do_token_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return send_(ctx, "GET", path1("/api/v1/users/%s/tokens", a->pos), NULL, NULL, NULL, err);
}

static int do_token_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *u = cli_path_escape(a->pos), *t = cli_path_escape(a->pos2);
    char *path = xasprintf("/api/v1/users/%s/tokens/%s", u, t);
    free(u);
    free(t);
    return send_(ctx, "DELETE", path, NULL, NULL, "token revoked", err);
}

/* ---- roles, ACL, permissions ---- */

static int do_role_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/roles", NULL, NULL, err);
}

static int do_role_set(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *arr = json_array();
    const kh_strv *p = cli_arg_all(a, "priv");
    for (size_t i = 0; p && i < p->n; i++)
        json_array_append_new(arr, json_string(p->v[i]));
    return send_(ctx, "PUT", path1("/api/v1/roles/%s", a->pos),
                 json_pack("{s:o}", "privileges", arr), NULL, "role saved", err);
}

static int do_role_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, path1("/api/v1/roles/%s", a->pos), "role", a->pos, err);
}

static void acl_human(const json_t *resp)
{
    static const char *const head[] = { "PATH", "SUBJECT", "ROLE", "PROPAGATE" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(resp, "acl"), i, e) {
        cli_table_add(t, cli_jstr(e, "path"));
        cli_table_add(t, cli_jstr(e, "subject"));
        cli_table_add(t, cli_jstr(e, "role"));
        cli_table_add(t, json_is_true(json_object_get(e, "propagate")) ? "yes" : "no");
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static int do_acl_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/acl", NULL, acl_human, err);
}

static int need_opts(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    if (cli_arg(a, "subject") && cli_arg(a, "role"))
        return 0;
    cli_usage_error(ctx, a->cmd, err, "--subject and --role are required");
    return -1;
}

static int do_acl_set(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    if (need_opts(ctx, a, err) < 0)
        return -1;
    json_t *b = json_pack("{s:s,s:s,s:s,s:b}", "path", a->pos, "subject", cli_arg(a, "subject"),
                          "role", cli_arg(a, "role"), "propagate",
                          !cli_flag(a, "no-propagate"));
    return send_(ctx, "PUT", xstrdup("/api/v1/acl"), b, NULL, "ACL entry set", err);
}

static char *query_escape(const char *s)
{
    return cli_path_escape(s); /* percent-encodes everything but unreserved characters */
}

static int do_acl_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    if (need_opts(ctx, a, err) < 0)
        return -1;
    char *p = query_escape(a->pos), *s = query_escape(cli_arg(a, "subject")),
         *r = query_escape(cli_arg(a, "role"));
    char *path = xasprintf("/api/v1/acl?path=%s&subject=%s&role=%s", p, s, r);
    free(p);
    free(s);
    free(r);
    return send_(ctx, "DELETE", path, NULL, NULL, "ACL entry removed", err);
}

static int do_permissions(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *p = cli_arg(a, "path");
    char *e = p ? query_escape(p) : NULL;
    char *path = e ? xasprintf("/api/v1/permissions?path=%s", e) : xstrdup("/api/v1/permissions");
    free(e);
    return send_(ctx, "GET", path, NULL, NULL, NULL, err);
}

/* ---- projects ---- */

static json_t *quota_json(const cli_args *a, kh_err *err)
{
    json_t *q = json_object();
    if (set_int_opt(q, a, "vms", "vms", err) < 0 || set_int_opt(q, a, "vcpus", "vcpus", err) < 0 ||
        set_int_opt(q, a, "memory-mib", "memory_mib", err) < 0 ||
        set_int_opt(q, a, "disk-bytes", "disk_bytes", err) < 0) {
        json_decref(q);
        return NULL;
    }
    return q;
}

static int do_project_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *q = quota_json(a, err);
    if (!q)
        return -1;
    return send_(ctx, "POST", xstrdup("/api/v1/projects"),
                 json_pack("{s:s,s:o}", "name", a->pos, "quota", q), NULL, "project added",
                 err);
}

static int do_project_set(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *q = quota_json(a, err);
    if (!q)
        return -1;
    return send_(ctx, "PATCH", path1("/api/v1/projects/%s", a->pos),
                 json_pack("{s:o}", "quota", q), NULL, "project changed", err);
}

static int do_project_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/projects", NULL, NULL, err);
}

static int do_project_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, path1("/api/v1/projects/%s", a->pos), "project", a->pos, err);
}

/* ---- audit ---- */

static void audit_human(const json_t *resp)
{
    static const char *const head[] = { "ID", "TIME", "WHO", "FROM", "METHOD", "PATH",
                                        "STATUS" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(resp, "entries"), i, e) {
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(e, "id")));
        char ts[32];
        time_t at = (time_t)json_number_value(json_object_get(e, "at"));
        struct tm tm;
        strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", gmtime_r(&at, &tm));
        cli_table_add(t, ts);
        cli_table_add(t, cli_jstr(e, "principal") ? cli_jstr(e, "principal") : "-");
        cli_table_add(t, cli_jstr(e, "address"));
        cli_table_add(t, cli_jstr(e, "method"));
        cli_table_add(t, cli_jstr(e, "path"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT,
                       json_integer_value(json_object_get(e, "status")));
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static int do_audit(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    static const char *const keys[] = { "principal", "method", "path", "object", "limit",
                                        "before" };
    kh_strv *q = kh_strv_new();
    for (size_t i = 0; i < KH_ARRAY_LEN(keys); i++) {
        const char *v = cli_arg(a, keys[i]);
        if (!v)
            continue;
        char *e = query_escape(v);
        kh_strv_addf(q, "%s=%s", keys[i], e);
        free(e);
    }
    char *qs = kh_strv_join(q, "&");
    kh_strv_free(q);
    char *path = xasprintf("/api/v1/audit%s%s", *qs ? "?" : "", qs);
    free(qs);
    return send_(ctx, "GET", path, NULL, audit_human, NULL, err);
}

/* ---- the rows ---- */

static const cli_opt opts_user_add[] = {
    { "password-stdin", NULL, 0, "Read the password (8 characters or more) from the first "
      "line of standard input. Without it the user has no password: API tokens only." },
    { "project", "PROJECT", CLI_OPT_ARG, "The project the user's new objects go to (default "
      "\"default\")." },
    { "group", "GROUP", CLI_OPT_ARG | CLI_OPT_REPEAT, "Put the user in this group (repeatable)." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt opts_user_set[] = {
    { "project", "PROJECT", CLI_OPT_ARG, "The user's default project." },
    { "enable", NULL, 0, "Let the user log in again." },
    { "disable", NULL, 0, "Refuse the user's logins, sessions and tokens." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt opts_token_add[] = {
    { "expires-in", "SECONDS", CLI_OPT_ARG, "The token stops working this long from now (default: "
      "never)." },
    { "comment", "TEXT", CLI_OPT_ARG, "What the token is for." },
    { "acl", "PATH=ROLE", CLI_OPT_ARG | CLI_OPT_REPEAT, "An ACL entry of the token (repeatable). The "
      "token's rights are these intersected with its user's: without any it can do nothing." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt opts_role_set[] = {
    { "priv", "PRIVILEGE", CLI_OPT_ARG | CLI_OPT_REPEAT, "A privilege of the role (repeatable), e.g. "
      "VM.PowerMgmt; 'kvmhost role list' shows them all." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt opts_acl[] = {
    { "subject", "SUBJECT", CLI_OPT_ARG, "A user, @group or user!token." },
    { "role", "ROLE", CLI_OPT_ARG, "A built-in (Administrator, Operator, Auditor) or custom role." },
    { "no-propagate", NULL, 0, "The entry applies to PATH only, not below it." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt opts_perm[] = {
    { "path", "PATH", CLI_OPT_ARG, "Only the privileges on this path (e.g. /vms/web1)." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt opts_quota[] = {
    { "vms", "N", CLI_OPT_ARG, "At most N VMs (0: no limit)." },
    { "vcpus", "N", CLI_OPT_ARG, "At most N vCPUs over all its VMs." },
    { "memory-mib", "MIB", CLI_OPT_ARG, "At most this much memory over all its VMs." },
    { "disk-bytes", "BYTES", CLI_OPT_ARG, "At most this many bytes of volume capacity over all its volumes." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt opts_audit[] = {
    { "principal", "WHO", CLI_OPT_ARG, "Only entries of this caller (root@local, user, user!token)." },
    { "method", "METHOD", CLI_OPT_ARG, "Only this HTTP method." },
    { "path", "PREFIX", CLI_OPT_ARG, "Only request paths starting with PREFIX." },
    { "object", "OBJECT", CLI_OPT_ARG, "Only this object (e.g. \"vm web1\")." },
    { "limit", "N", CLI_OPT_ARG, "At most N entries (default 100, at most 1000)." },
    { "before", "ID", CLI_OPT_ARG, "Entries older than entry ID (the next page)." },
    { NULL, NULL, 0, NULL },
};

#define ROW(n, v, p, s, d, o, e, h) { n, v, p, s, d, o, e, h }

const cli_cmd cli_access_cmds[] = {
    ROW("user", "add", "NAME", "add a local user",
        "Add a user who logs in to the web console with a password, or calls the API with "
        "tokens ('kvmhost token add'). A new user can do nothing until an ACL entry gives "
        "them a role ('kvmhost acl set').",
        opts_user_add, "$ kvmhost user add alice --password-stdin --project x < pw.txt", do_user_add),
    ROW("user", "list", NULL, "list the users", "One line per user: name, default project, enabled, whether a password is set, groups.", NULL,
        "$ kvmhost user list", do_user_list),
    ROW("user", "set", "NAME", "change a user's project or enable/disable them",
        "Change a user's default project, or disable the user (their sessions and tokens stop working) and enable them again.", opts_user_set, "$ kvmhost user set alice --disable", do_user_set),
    ROW("user", "passwd", "NAME", "set a user's password (from standard input)",
        "The first line of standard input is the new password. A user may change their own.",
        NULL, "$ kvmhost user passwd alice < pw.txt", do_user_passwd),
    ROW("user", "delete", "NAME", "delete a user with their tokens and ACL entries",
        "Delete a user together with their API tokens, group memberships and ACL entries.", NULL, "$ kvmhost user delete alice", do_user_delete),
    ROW("group", "add", "NAME", "add a group", "Add a group of users; an ACL entry whose subject is @NAME gives its role to every member.", NULL,
        "$ kvmhost group add ops", do_group_add),
    ROW("group", "list", NULL, "list groups and members", "List the groups, each with the names of its members.", NULL,
        "$ kvmhost group list", do_group_list),
    ROW("group", "delete", "NAME", "delete a group", "Delete a group and its ACL entries; its members stay.",
        NULL, "$ kvmhost group delete ops", do_group_delete),
    ROW("group", "adduser", "GROUP USER", "put a user in a group", "Put USER in GROUP: the roles of GROUP's ACL entries apply to USER.", NULL,
        "$ kvmhost group adduser ops alice", do_group_adduser),
    ROW("group", "deluser", "GROUP USER", "take a user out of a group", "Take USER out of "
        "GROUP: the group's ACL entries no longer apply to USER.", NULL, "$ kvmhost group deluser ops alice", do_group_deluser),
    ROW("token", "add", "USER NAME", "make an API token USER!NAME",
        "Make an API token and print its secret, once: only a hash is kept. Use it as "
        "'--token SECRET' or 'Authorization: Bearer SECRET'. The token's rights are its own "
        "ACL entries (--acl) intersected with its user's: never more than the user.",
        opts_token_add, "$ kvmhost token add alice ci --acl /projects/x=Operator "
        "--expires-in 86400", do_token_add),
    ROW("token", "list", "USER", "list a user's tokens", "The tokens of USER with their expiry; the secrets are never shown again.",
        NULL, "$ kvmhost token list alice", do_token_list),
    ROW("token", "delete", "USER NAME", "revoke a token", "Revoke the token USER!NAME: requests with it are refused (401) at once.",
        NULL, "$ kvmhost token delete alice ci", do_token_delete),
    ROW("role", "list", NULL, "list roles and their privileges",
        "Built-in roles (Administrator, Operator, Auditor) and custom ones, with their privileges.", NULL,
        "$ kvmhost role list", do_role_list),
    ROW("role", "set", "NAME", "create or replace a custom role", "A role is a set of "
        "privileges: create one, or replace the privileges of an existing custom role.", opts_role_set, "$ kvmhost role set snapper --priv VM.Audit --priv "
        "VM.Snapshot", do_role_set),
    ROW("role", "delete", "NAME", "delete a custom role", "Delete a custom role; refused while an ACL entry uses it.",
        NULL, "$ kvmhost role delete snapper", do_role_delete),
    ROW("acl", "list", NULL, "list the ACL entries", "List every ACL entry: path, subject (user, @group, user!token), role, propagate.", NULL,
        "$ kvmhost acl list", do_acl_list),
    ROW("acl", "set", "PATH", "give a subject a role on a path",
        "Paths: /, /access, /projects/P, /vms/NAME, /pools/P, /pools/P/volumes/V, "
        "/networks/N, /security-groups/N, /hosts/H. VMs, volumes, networks and security "
        "groups are below their project.", opts_acl,
        "$ kvmhost acl set /projects/x --subject @team-x --role Operator", do_acl_set),
    ROW("acl", "delete", "PATH", "remove an ACL entry", "Remove one ACL entry, named by path, subject and role.", opts_acl,
        "$ kvmhost acl delete /projects/x --subject @team-x --role Operator", do_acl_delete),
    ROW("permissions", NULL, NULL, "show the caller's effective privileges",
        "The privileges of the caller, per ACL path, or on one path with --path.", opts_perm,
        "$ kvmhost permissions --path /vms/web1", do_permissions),
    ROW("project", "add", "NAME", "add a project with its quota",
        "VMs, volumes, networks and security groups belong to a project (the 'project' "
        "query parameter or the user's default project at creation); a caller sees only "
        "objects of projects where they hold a privilege.", opts_quota,
        "$ kvmhost project add team-x --vms 10 --vcpus 20 --memory-mib 32768", do_project_add),
    ROW("project", "set", "NAME", "change a project's quota", "Replace the quota of a project: each limit not given becomes unlimited.", opts_quota,
        "$ kvmhost project set team-x --vms 20", do_project_set),
    ROW("project", "list", NULL, "list the projects you can see", "The projects where you hold a privilege, with quotas and object counts.",
        NULL, "$ kvmhost project list", do_project_list),
    ROW("project", "delete", "NAME", "delete an empty project", "Refused while objects "
        "(VMs, volumes, networks, security groups) belong to it.", NULL, "$ kvmhost project delete team-x", do_project_delete),
    ROW("audit", NULL, NULL, "show the audit log",
        "Every write and every login with who, from where, what and the result, newest "
        "first.", opts_audit, "$ kvmhost audit --principal alice --limit 20", do_audit),
    ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
};
