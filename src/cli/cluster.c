/* cluster.c - `kvmhost cluster create|join|token|status|leave|remove|
 * ca-export|ca-import` and `kvmhost host list`: the rows and their handlers. */
#include "cli/nouns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/client.h"
#include "cli/output.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/misc.h"

static void hosts_table(const json_t *hosts)
{
    static const char *const head[] = { "NAME", "STATE", "ADDRESS", "CPUS", "MEMORY",
                                        "FREE", "VMS", "VERSION", "ID" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *h;
    json_array_foreach(hosts, i, h) {
        const json_t *cap = json_object_get(h, "capacity");
        cli_table_addf(t, "%s%s", cli_jstr(h, "name") ? cli_jstr(h, "name") : "?",
                       json_is_true(json_object_get(h, "self")) ? " (this host)" : "");
        cli_table_add(t, cli_jstr(h, "state"));
        cli_table_add(t, cli_jstr(h, "address"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(cap, "cpus")));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT " MiB",
                       json_integer_value(json_object_get(cap, "memory_mib")));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT " MiB",
                       json_integer_value(json_object_get(h, "memory_free_mib")));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(h, "vms")));
        cli_table_add(t, cli_jstr(h, "version"));
        cli_table_add(t, cli_jstr(h, "id") && *cli_jstr(h, "id") ? cli_jstr(h, "id") : NULL);
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static void hosts_human(const json_t *resp)
{
    hosts_table(json_object_get(resp, "hosts"));
}

static void status_human(const json_t *st)
{
    if (!json_is_true(json_object_get(st, "enabled"))) {
        printf("this host (%s) is in no cluster: 'kvmhost cluster create' makes one, "
               "'kvmhost cluster join' joins one\n", cli_jstr(st, "host_name"));
        return;
    }
    cli_kv *kv = cli_kv_new();
    cli_kv_add(kv, "cluster", cli_jstr(st, "name"));
    cli_kv_add(kv, "id", cli_jstr(st, "id"));
    cli_kv_addf(kv, "this host", "%s (%s)", cli_jstr(st, "host_name"), cli_jstr(st, "host_id"));
    const json_t *etcd = json_object_get(st, "etcd");
    bool quorum = json_is_true(json_object_get(st, "quorum"));
    cli_kv_add(kv, "quorum", quorum ? "yes" : "no (cluster-wide changes are refused)");
    cli_kv_add(kv, "fenced", json_is_true(json_object_get(st, "fenced"))
                                 ? "yes (this host does not act as an owner)" : "no");
    cli_kv_addf(kv, "etcd", "%s, %s", cli_jstr(etcd, "mode"), cli_jstr(etcd, "endpoints"));
    cli_kv_addf(kv, "members", "%" JSON_INTEGER_FORMAT " online of %zu",
                json_integer_value(json_object_get(st, "online")),
                json_array_size(json_object_get(st, "members")));
    if (cli_jstr(st, "error"))
        cli_kv_add(kv, "last error", cli_jstr(st, "error"));
    cli_print_kv(kv);
    cli_kv_free(kv);
    printf("\n");
    hosts_table(json_object_get(st, "members"));
}

static int cli_do_cluster_status(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/cluster", NULL, status_human, err);
}

static int cli_do_host_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/hosts", NULL, hosts_human, err);
}

static int cli_do_cluster_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_object();
    int rc = cli_set_str(body, "name", cli_arg(a, "name"), err);
    if (rc == 0)
        rc = cli_show(ctx, "POST", "/api/v1/cluster", body, status_human, err);
    json_decref(body);
    return rc;
}

static int cli_do_cluster_join(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_object();
    int rc = cli_set_str(body, "address", a->pos, err);
    if (rc == 0)
        rc = cli_set_str(body, "token", cli_arg(a, "token"), err);
    if (rc == 0)
        rc = cli_show(ctx, "POST", "/api/v1/cluster/join", body, status_human, err);
    json_decref(body);
    return rc;
}

static void token_human(const json_t *t)
{
    printf("%s\n", cli_jstr(t, "token"));
    fprintf(stderr, "A one-time token, valid %" JSON_INTEGER_FORMAT " s. On the new host:\n"
            "  kvmhost cluster join %s --token %s\n",
            json_integer_value(json_object_get(t, "ttl_s")),
            cli_jstr(t, "address") ? cli_jstr(t, "address") : "ADDRESS", cli_jstr(t, "token"));
}

static int cli_do_cluster_token(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_object();
    int64_t ttl = 0;
    int rc = 0;
    if (cli_arg(a, "ttl")) {
        rc = cli_parse_int(cli_arg(a, "ttl"), 10, 604800, "--ttl", &ttl, err);
        if (rc < 0)
            cli_mark_usage(ctx, a);
        else
            json_object_set_new(body, "ttl_s", json_integer(ttl));
    }
    if (rc == 0)
        rc = cli_show(ctx, "POST", "/api/v1/cluster/tokens", body, token_human, err);
    json_decref(body);
    return rc;
}

static int cli_do_cluster_leave(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "POST", "/api/v1/cluster/leave", NULL, status_human, err);
}

static int cli_do_cluster_remove(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *e = cli_path_escape(a->pos);
    char *path = xasprintf("/api/v1/cluster/members/%s", e);
    free(e);
    return cli_delete(ctx, path, "host", a->pos, err);
}

/* The passphrase: the first line of --passphrase-file (a new string). */
static char *passphrase(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *p = kh_fs_read(cli_arg(a, "passphrase-file"), 4096, NULL, err);
    if (!p) {
        kh_err_prefix(err, "--passphrase-file");
        return NULL;
    }
    p[strcspn(p, "\r\n")] = '\0';
    (void)ctx;
    return p;
}

static int cli_do_cluster_ca_export(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *cl = cli_ctx_client(ctx, err);
    char *pass = cl ? passphrase(ctx, a, err) : NULL;
    if (!pass)
        return -1;
    json_t *body = json_pack("{s:s}", "passphrase", pass), *out = NULL;
    memset(pass, 0, strlen(pass));
    free(pass);
    int rc = cli_client_json(cl, "POST", "/api/v1/cluster/ca/export", body, &out, NULL, err);
    json_decref(body);
    if (rc < 0)
        return -1;
    char *text = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(out);
    rc = kh_fs_write_atomic(a->pos, text, strlen(text), 0600, err);
    free(text);
    if (rc == 0)
        fprintf(stderr, "The cluster CA key, encrypted, is in %s. On another member:\n"
                "  kvmhost cluster ca-import %s --passphrase-file FILE\n", a->pos, a->pos);
    return rc;
}

static int cli_do_cluster_ca_import(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *bundle = kh_fs_read_json(a->pos, 1 << 20, err);
    if (!bundle)
        return -1;
    char *pass = passphrase(ctx, a, err);
    int rc = -1;
    if (pass) {
        json_t *body = json_pack("{s:O?, s:O?, s:s}", "ca", json_object_get(bundle, "ca"),
                                 "key", json_object_get(bundle, "key"), "passphrase", pass);
        memset(pass, 0, strlen(pass));
        free(pass);
        rc = cli_show(ctx, "POST", "/api/v1/cluster/ca/import", body, status_human, err);
        json_decref(body);
    }
    json_decref(bundle);
    return rc;
}

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt opts_ca[] = {
    { "passphrase-file", "PATH", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "A file whose first line is the passphrase (at least 8 characters)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_create[] = {
    { "name", "NAME", CLI_OPT_ARG, "The cluster's name (default kvmhost)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_join[] = {
    { "token", "TOKEN", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "A one-time join token made by 'kvmhost cluster token' on that member." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_token[] = {
    { "ttl", "SECONDS", CLI_OPT_ARG, "How long the token is valid (default 3600)." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_cluster_cmds[] = {
    {
        "cluster", "create", NULL, "make this host the first member of a new cluster",
        "Start a local etcd member (Debian's etcd-server; its data in STATE_DIR/etcd) and "
        "register this host in it. kvmhostd must know the address other hosts reach it at: "
        "it takes the one of --listen ADDR:PORT, or --advertise ADDR. With --etcd-endpoints "
        "kvmhostd uses that etcd cluster instead of running a member. A host that is in no "
        "cluster works exactly as before, with SQLite alone.",
        opts_create,
        "$ kvmhost cluster create --name lab",
        cli_do_cluster_create,
    },
    {
        "cluster", "join", "ADDRESS", "join the cluster of the member at ADDRESS",
        "ADDRESS is a member's TCP API (HOST:PORT, as its kvmhostd --listen). The token "
        "pins the cluster CA and, when the member's API speaks TLS (the default), the key "
        "of its certificate: kvmhostd trusts exactly that key (a self-signed certificate "
        "is fine) and refuses any other. The member checks the one-time token, adds this "
        "host's etcd member and answers how to start it; kvmhostd then starts its own etcd "
        "member and registers.",
        opts_join,
        "$ kvmhost cluster join 10.0.0.1:8443 --token 3f5c...",
        cli_do_cluster_join,
    },
    {
        "cluster", "token", NULL, "make a one-time join token on a member",
        "Print a token that lets one host join (used once; valid --ttl seconds). Only its "
        "SHA-256 is kept, in etcd. Needs quorum (exit status 7 without).",
        opts_token,
        "$ kvmhost cluster token",
        cli_do_cluster_token,
    },
    {
        "cluster", "status", NULL, "show the cluster, its members and quorum",
        "The cluster's name and id, this host, whether it has quorum (renews its lease: "
        "cluster-wide changes work) and is fenced (missed its lease deadline: it does not "
        "act as an owner), the etcd mode and endpoints, then one line per member: online "
        "(lease alive), offline (expired) or unknown (no quorum here).",
        NULL,
        "$ kvmhost cluster status",
        cli_do_cluster_status,
    },
    {
        "cluster", "leave", NULL, "leave the cluster",
        "Remove this host's etcd member and record from the cluster, stop its etcd and "
        "delete its etcd data: the host is a single host again (its VMs stay).",
        NULL,
        "$ kvmhost cluster leave",
        cli_do_cluster_leave,
    },
    {
        "cluster", "remove", "HOST", "remove another host from the cluster",
        "Remove HOST (its name or id), e.g. one that is gone for good: its etcd member and "
        "its record. Run 'kvmhost cluster leave' on a host to remove that host itself.",
        NULL,
        "$ kvmhost cluster remove h3",
        cli_do_cluster_remove,
    },
    {
        "cluster", "ca-export", "FILE", "back up the cluster CA key, encrypted",
        "Write the cluster CA certificate and its key, encrypted with the passphrase "
        "(PKCS#8, AES-256-CBC, PBKDF2), to FILE (mode 0600). Only a host that holds the key "
        "(the one that created the cluster, or one it was imported on) can export it.",
        opts_ca,
        "$ kvmhost cluster ca-export /root/lab-ca.json --passphrase-file /root/pass",
        cli_do_cluster_ca_export,
    },
    {
        "cluster", "ca-import", "FILE", "install a backed-up CA key on this member",
        "Install the CA key from FILE (made by 'kvmhost cluster ca-export') on this member of "
        "the same cluster: it can then make tokens that admit new hosts, as the host that "
        "created the cluster does.",
        opts_ca,
        "$ kvmhost cluster ca-import /root/lab-ca.json --passphrase-file /root/pass",
        cli_do_cluster_ca_import,
    },
    {
        "host", "list", NULL, "list the hosts of the cluster",
        "One line per host: name, state (online, offline, unknown), address, CPUs, memory, "
        "free memory, VMs, version and id. A host in no cluster lists itself.",
        NULL,
        "$ kvmhost host list",
        cli_do_host_list,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
