/* network.c - `kvmhost network create|list|show|delete|leases|forward` and
 * `kvmhost vm nic add|remove|link`: the rows and their handlers. */
#include "cli/nouns.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/output.h"
#include "cli/render.h"
#include "util/check.h"
#include "util/mem.h"
#include "util/misc.h"

static int cli_do_net_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_pack("{s:s}", "name", a->pos);
    if (!body) {
        kh_err_set(err, KH_E_INVALID, "network name: must be UTF-8 text");
        return -1;
    }
    if (cli_set_str(body, "type", cli_arg(a, "type"), err) < 0 ||
        cli_set_str(body, "subnet", cli_arg(a, "subnet"), err) < 0 ||
        cli_set_str(body, "bridge", cli_arg(a, "bridge"), err) < 0) {
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

static int cli_do_net_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static void net_human(const json_t *net)
{
    cli_print_free(cli_render_network(net));
}

static int cli_do_net_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show_one(ctx, "networks", a->pos, net_human, err);
}

static int cli_do_net_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, cli_api_path("networks", a->pos, NULL), "network", a->pos, err);
}

static int cli_do_net_leases(cli_ctx *ctx, const cli_args *a, kh_err *err)
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
    cli_print_free(cli_render_leases(resp, kh_wall_time()));
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

static int cli_do_net_forward(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_int_t hp, vp;
    if (port_arg(cli_arg(a, "host-port"), "host-port", &hp, err) < 0 ||
        port_arg(cli_arg(a, "vm-port"), "vm-port", &vp, err) < 0)
        return -1;
    json_t *body = json_pack("{s:I,s:I}", "host_port", hp, "vm_port", vp);
    if (cli_set_str(body, "vm", cli_arg(a, "vm"), err) < 0 ||
        cli_set_str(body, "proto", cli_arg(a, "proto"), err) < 0) {
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

/* security_groups=a+b: '+' never appears in a name (letters, digits, '-',
 * '_', '.'), ',' already separates the items of SPEC. */
static json_t *nic_groups(const char *spec, const char *val, kh_err *err)
{
    json_t *arr = json_array();
    const char *p = val;
    for (;;) {
        const char *end = strchr(p, '+');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        json_t *g = n ? json_stringn(p, n) : NULL;
        if (!g) {
            kh_err_set(err, KH_E_INVALID, "--nic %s: security_groups takes names joined by "
                       "'+' (security_groups=web+ssh)", spec);
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, g);
        if (!end)
            return arr;
        p = end + 1;
    }
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
                    kh_err_set(err, KH_E_INVALID,
                               "--nic %s: '%s' is not mac=..., ip=..., link=... or "
                               "security_groups=...", specs->v[i], item);
                    rc = -1;
                    break;
                }
                *eq = '\0';
                key = item;
                val = eq + 1;
                if (strcmp(key, "security_groups") == 0) {
                    json_t *groups = nic_groups(specs->v[i], val, err);
                    if (!groups) {
                        rc = -1;
                        break;
                    }
                    json_object_set_new(nic, key, groups);
                    continue;
                }
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

static int cli_do_vm_nic_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_vm_nic_remove(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_vm_nic_link(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt opts_net_create[] = {
    { "type", "TYPE", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "nat (a private subnet with DHCP and masquerade out), isolated (DHCP, no way out) or "
      "bridged (NICs join an existing host bridge)." },
    { "subnet", "CIDR", CLI_OPT_ARG,
      "nat/isolated: the IPv4 network, e.g. 10.10.0.0/24; the gateway is its first address. "
      "Default: a free 10.X.Y.0/24." },
    { "bridge", "NAME", CLI_OPT_ARG, "bridged: the existing host bridge." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_net_forward[] = {
    { "vm", "NAME", CLI_OPT_ARG | CLI_OPT_REQUIRED, "The VM to reach (it has a NIC here)." },
    { "host-port", "PORT", CLI_OPT_ARG | CLI_OPT_REQUIRED, "Port on the host's addresses." },
    { "vm-port", "PORT", CLI_OPT_ARG | CLI_OPT_REQUIRED, "Port in the VM." },
    { "proto", "tcp|udp", CLI_OPT_ARG, "Protocol (default tcp)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_nic_link[] = {
    { "state", "up|down", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "The link state the guest sees (carrier); kept in the spec for the next start." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_network_cmds[] = {
    {
        "network", "create", "NAME", "create a network",
        "Create a network called NAME. A nat or isolated network gets a Linux bridge of "
        "kvmhost's own (khbr + 8 hex digits), an IPv4 subnet whose first address is the "
        "gateway, and a dnsmasq serving DHCP (and DNS) on that bridge only; a nat network "
        "also masquerades its guests' traffic out through the host (nftables table "
        "'inet kvmhost'). A bridged network attaches NICs to a bridge the administrator "
        "made. VMs join a network with \"nics\": [{\"network\": \"NAME\"}] in their spec.",
        opts_net_create,
        "$ kvmhost network create lan --type nat --subnet 10.10.0.0/24\n"
        "$ kvmhost network create lab --type isolated\n"
        "$ kvmhost network create uplink --type bridged --bridge br0",
        cli_do_net_create,
    },
    {
        "network", "list", NULL, "list the networks",
        "One line per network: name, type, bridge, subnet, and how many NICs and port "
        "forwards it has.",
        NULL,
        "$ kvmhost network list",
        cli_do_net_list,
    },
    {
        "network", "show", "NAME", "show one network",
        "Everything about the network: subnet, gateway, DHCP range, bridge, the NICs on it, "
        "its port forwards and its dnsmasq's pid.",
        NULL,
        "$ kvmhost network show lan",
        cli_do_net_show,
    },
    {
        "network", "delete", "NAME", "delete a network no VM uses",
        "Remove the network, its bridge, rules and dnsmasq. A network that a VM has a NIC on "
        "is refused (exit status 5): remove the NIC or the VM first.",
        NULL,
        "$ kvmhost network delete lan",
        cli_do_net_delete,
    },
    {
        "network", "leases", "NAME", "show the DHCP leases of a network",
        "The leases dnsmasq handed out on a nat or isolated network, with the VM each MAC "
        "belongs to.",
        NULL,
        "$ kvmhost network leases lan",
        cli_do_net_leases,
    },
    {
        "network", "forward", "NAME", "forward a host port to a VM",
        "On a nat network, forward --host-port on every address of the host to --vm-port of "
        "the VM's address on the network (its static ip, else its current DHCP lease).",
        opts_net_forward,
        "$ kvmhost network forward lan --vm web1 --host-port 8080 --vm-port 80",
        cli_do_net_forward,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};

const cli_cmd cli_vm_nic_cmds[] = {
    {
        "vm", "nic add", "VM SPEC", "add a NIC to a VM",
        "Add a virtio NIC to the VM. SPEC is NETWORK[,mac=MAC][,ip=IP][,link=down]"
        "[,security_groups=G1+G2], as --nic of 'vm create' (the groups' rules filter the "
        "NIC's inbound traffic, IPv4 and IPv6). A running q35 VM gets it at once (PCIe hot-plug onto a free "
        "port: at most four hot-plugged NICs at a time); a stopped VM has it from its next "
        "start. The NIC is the VM's last; its number is printed.",
        NULL,
        "$ kvmhost vm nic add web1 lan\n"
        "$ kvmhost vm nic add web1 lan,ip=10.10.0.20\n"
        "$ kvmhost vm nic add web1 lan,security_groups=web+ssh",
        cli_do_vm_nic_add,
    },
    {
        "vm", "nic remove", "VM INDEX", "remove a NIC from a VM",
        "Remove NIC number INDEX (0 is the first; see 'vm show'). On a running VM only NICs "
        "hot-plugged since it started can go: the guest is asked to release the device "
        "(up to 30 s), then its tap and firewall rules are removed. NICs after it move up "
        "one number.",
        NULL,
        "$ kvmhost vm nic remove web1 1",
        cli_do_vm_nic_remove,
    },
    {
        "vm", "nic link", "VM INDEX", "set a NIC's link up or down",
        "Set the link of NIC number INDEX: down, the guest sees no carrier and no traffic "
        "passes; up, it is back. Applies at once to a running VM and stays in the spec.",
        opts_nic_link,
        "$ kvmhost vm nic link web1 0 --state down",
        cli_do_vm_nic_link,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
