/* template.c - `kvmhost template create|list`: the rows and their handlers, and
 * cli_task_wait (polling a task to its end). */
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

/* ---- templates ---- */

static int cli_do_template_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *e = cli_path_escape(a->pos);
    char *path = xasprintf("/api/v1/vms/%s/template", e);
    free(e);
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL, *body = json_object();
    if (cli_flag(a, "reset-identity"))
        json_object_set_new(body, "reset_identity", json_true());
    int rc = c ? cli_client_json(c, "POST", path, body, &resp, NULL, err) : -1;
    json_decref(body);
    free(path);
    if (rc < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, resp);
    else
        printf("vm %s is now a template\n", a->pos);
    json_decref(resp);
    return 0;
}

static void templates_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "VCPUS", "MEMORY", "DISKS" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *vm;
    json_array_foreach(json_object_get(resp, "templates"), i, vm) {
        cli_table_add(t, cli_jstr(vm, "name"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(vm, "vcpus")));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT " MiB",
                       json_integer_value(json_object_get(vm, "memory_mib")));
        kh_strv *disks = kh_strv_new();
        size_t j;
        json_t *d;
        json_array_foreach(json_object_get(vm, "disks"), j, d) {
            kh_strv_add(disks, cli_jstr(d, "volume") ? cli_jstr(d, "volume") : cli_jstr(d, "path"));
        }
        char *s = kh_strv_join(disks, ",");
        cli_table_add(t, *s ? s : NULL);
        free(s);
        kh_strv_free(disks);
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static int cli_do_template_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/templates", NULL, templates_human, err);
}

int cli_task_wait(cli_ctx *ctx, json_t **task, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    for (;;) {
        const char *state = cli_jstr(*task, "state");
        if (state && strcmp(state, "running") != 0)
            break;
        usleep(200 * 1000);
        char *e = cli_path_escape(cli_jstr(*task, "id") ? cli_jstr(*task, "id") : "");
        char *path = xasprintf("/api/v1/tasks/%s", e);
        free(e);
        json_t *next = NULL;
        int rc = cli_client_json(c, "GET", path, NULL, &next, NULL, err);
        free(path);
        if (rc < 0)
            return -1;
        json_decref(*task);
        *task = next;
    }
    if (strcmp(cli_jstr(*task, "state"), "succeeded") == 0)
        return 0;
    const json_t *e = json_object_get(*task, "error");
    kh_err_set(err, kh_code_from_name(cli_jstr(e, "code") ? cli_jstr(e, "code") : "internal"), "%s",
               cli_jstr(e, "message") ? cli_jstr(e, "message") : "the task failed");
    return -1;
}

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt opts_template_create[] = {
    { "reset-identity", NULL, 0,
      "First reset the guest's identity in its volumes, as virt-sysprep --operations "
      "machine-id,ssh-hostkeys: empty /etc/machine-id, remove /var/lib/dbus/machine-id and "
      "/etc/ssh/ssh_host_*, so that each clone makes its own at first boot (systemd makes "
      "the machine-id; the SSH keys need the guest's sshd-keygen, cloud-init or "
      "'ssh-keygen -A'). Needs an ext2/3/4 root filesystem (whole disk or partition) that "
      "was cleanly unmounted; refused otherwise, and nothing changes. Off by default: the "
      "disk is left as it is, as Proxmox's 'convert to template' does." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_template_cmds[] = {
    {
        "template", "create", "VM", "make a stopped VM a template",
        "Turn the stopped VM into a template: its volumes become read-only bases and it can "
        "no longer start. Every disk must be a volume. Clone it with 'kvmhost vm create NAME "
        "--from-template VM [--full]': a linked clone is a qcow2 overlay per volume, made "
        "in O(1) whatever the size; many clones can be made at once. Clones share the "
        "template's machine-id and SSH host keys unless --reset-identity.",
        opts_template_create,
        "$ kvmhost template create debian12\n"
        "$ kvmhost template create debian12 --reset-identity\n"
        "$ kvmhost vm create web1 --from-template debian12",
        cli_do_template_create,
    },
    {
        "template", "list", NULL, "list the templates",
        "One line per template: its name, CPUs, memory and disks.",
        NULL,
        "$ kvmhost template list",
        cli_do_template_list,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
