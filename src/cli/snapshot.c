/* snapshot.c - `kvmhost snapshot create|list|revert|delete`: the rows and their
 * handlers. */
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

/* ---- snapshots ---- */

static char *snap_path(const char *vm, const char *snap, const char *suffix)
{
    char *ve = cli_path_escape(vm);
    char *se = snap ? cli_path_escape(snap) : NULL;
    char *p = se ? xasprintf("/api/v1/vms/%s/snapshots/%s%s", ve, se, suffix ? suffix : "")
                 : xasprintf("/api/v1/vms/%s/snapshots", ve);
    free(ve);
    free(se);
    return p;
}

/* Send the request for a task and wait for it to finish. */
static int snap_task(cli_ctx *ctx, const char *method, char *path, json_t *body,
                     const char *done_fmt, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *task = NULL;
    int rc = c ? cli_client_json(c, method, path, body, &task, NULL, err) : -1;
    free(path);
    json_decref(body);
    if (rc < 0)
        return -1;
    if (rc == 202 && cli_task_wait(ctx, &task, err) < 0) {
        json_decref(task);
        return -1;
    }
    if (ctx->json) {
        cli_print_json(stdout, task);
    } else {
        bool mem = json_is_true(json_object_get(json_object_get(task, "result"), "memory"));
        printf(done_fmt, a->pos2, a->pos, mem ? " (with memory)" : " (disk only)");
        putchar('\n');
    }
    json_decref(task);
    return 0;
}

static int cli_do_snapshot_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_pack("{s:s, s:i}", "name", a->pos2, "wait", 2);
    if (!body) {
        kh_err_set(err, KH_E_INVALID, "the snapshot name must be valid UTF-8");
        return -1;
    }
    return snap_task(ctx, "POST", snap_path(a->pos, NULL, NULL), body,
                     "snapshot %s of vm %s created%s", a, err);
}

static int cli_do_snapshot_revert(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return snap_task(ctx, "POST", snap_path(a->pos, a->pos2, "/revert"),
                     json_pack("{s:i}", "wait", 2), "vm %2$s reverted to snapshot %1$s%3$s", a,
                     err);
}

static int cli_do_snapshot_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return snap_task(ctx, "DELETE", snap_path(a->pos, a->pos2, "?wait=2"), NULL,
                     "snapshot %s of vm %s deleted%.0s", a, err);
}

static void snapshots_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "PARENT", "MEMORY", "CREATED" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(resp, "snapshots"), i, s) {
        /* "*" marks the current one: where the VM is */
        cli_table_addf(t, "%s%s", cli_jstr(s, "name"),
                       json_is_true(json_object_get(s, "current")) ? " *" : "");
        cli_table_add(t, cli_jstr(s, "parent"));
        cli_table_add(t, json_is_true(json_object_get(s, "memory")) ? "yes" : "no");
        cli_table_add(t, cli_jstr(s, "created_at"));
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static int cli_do_snapshot_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = snap_path(a->pos, NULL, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, snapshots_human, err);
    free(path);
    return rc;
}

/* ---- the command rows (assembled in commands.c) ---- */

const cli_cmd cli_snapshot_cmds[] = {
    {
        "snapshot", "create", "VM SNAP", "snapshot a VM",
        "Take snapshot SNAP of the VM. While the VM runs, the snapshot holds its memory and "
        "device state too (QEMU's internal qcow2 snapshots); a stopped VM gets a disk-only "
        "snapshot. Every writable disk must be a qcow2 volume. kvmhost waits for the task; "
        "the snapshot is recorded only once it is complete.",
        NULL,
        "$ kvmhost snapshot create web1 before-upgrade",
        cli_do_snapshot_create,
    },
    {
        "snapshot", "list", "VM", "list the snapshots of a VM",
        "One line per snapshot: its name, whether it holds the VM's memory, and when it was "
        "taken.",
        NULL,
        "$ kvmhost snapshot list web1",
        cli_do_snapshot_list,
    },
    {
        "snapshot", "revert", "VM SNAP", "go back to a snapshot",
        "Revert the VM to SNAP. A snapshot with memory needs the VM running: it runs on from "
        "the instant of the snapshot, and everything since is lost. A disk-only snapshot "
        "needs the VM stopped. The other snapshots stay.",
        NULL,
        "$ kvmhost snapshot revert web1 before-upgrade",
        cli_do_snapshot_revert,
    },
    {
        "snapshot", "delete", "VM SNAP", "delete one snapshot",
        "Delete SNAP. Snapshots are independent: the others keep all their data, whichever "
        "is deleted.",
        NULL,
        "$ kvmhost snapshot delete web1 before-upgrade",
        cli_do_snapshot_delete,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
