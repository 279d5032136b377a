/* nouns.h - the per-noun parts of the command table: each noun's file
 * (vm.c, network.c, secgroup.c, alert.c, host.c, cluster.c, snapshot.c,
 * template.c, storage.c) holds its rows beside its handlers; commands.c assembles the
 * one table from these, in the order `kvmhost --help` lists them. Each
 * handler returns an exit status >= 0, or -1 with err set (the caller
 * prints it and exits with kh_code_exit_status).
 */
#ifndef KH_CLI_NOUNS_H
#define KH_CLI_NOUNS_H

#include <jansson.h>

#include "cli/commands.h"
#include "cli/output.h"

/* Options shared by the actions that run as tasks. */
#define OPT_NO_WAIT                                                                        \
    { "no-wait", NULL, 0,                                                                  \
      "Do not wait for the task: print its id at once (the whole task with --json) and "   \
      "exit 0. Follow it with 'kvmhost task show ID'." }

#define ACTION_TAIL                                                                        \
    "The request is checked at once: an action the VM's state forbids fails with exit "    \
    "status 5 and changes nothing. Otherwise it runs as a task; kvmhost waits for it, "    \
    "drawing a progress bar on stderr when stderr is a terminal, and exits with the "      \
    "task's outcome. Interrupting the wait (Ctrl-C) leaves the task running and exits 130."


/* Row tables, each ended by a row with a NULL noun. */
extern const cli_cmd cli_vm_cmds[];
extern const cli_cmd cli_network_cmds[];
extern const cli_cmd cli_vm_nic_cmds[];
extern const cli_cmd cli_secgroup_cmds[];
extern const cli_cmd cli_alert_cmds[];
extern const cli_cmd cli_host_cmds[];
extern const cli_cmd cli_cluster_cmds[];
extern const cli_cmd cli_snapshot_cmds[];
extern const cli_cmd cli_template_cmds[];
extern const cli_cmd cli_pool_cmds[];
extern const cli_cmd cli_volume_cmds[];
extern const cli_cmd cli_disk_cmds[];
extern const cli_cmd cli_volume_delete_cmds[];
extern const cli_cmd cli_access_cmds[]; /* access.c: user group token role acl permissions project audit */
extern const cli_cmd cli_backup_cmds[];
extern const cli_cmd cli_porting_cmds[]; /* porting.c: vm import, import-libvirt, export */
extern const cli_cmd cli_login_cmds[];   /* login.c: login --oidc, logout */

/* The stored `kvmhost login` ({url, token, principal, expires_at, cacert})
 * or NULL: none, or unusable (err set) (login.c). */
json_t *cli_login_load(kh_err *err);

/* Helpers of the handlers (ctx.c): the error just set is about how the
 * command was called; print a rendered key/value list or table on stdout. */
void cli_mark_usage(cli_ctx *ctx, const cli_args *a);
void cli_print_kv(cli_kv *kv);
void cli_print_table(cli_table *t);
/* o[key] = v as a JSON string (nothing when v is NULL); -1 with err when v
 * is not UTF-8 (the message names --key). */
int cli_set_str(json_t *o, const char *key, const char *v, kh_err *err);

/* vm.c / obs.c / network.c handlers used by rows of another file. */
int cli_do_vm_top(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_limit(cli_ctx *ctx, const cli_args *a, kh_err *err);

/* Wait for a task (polling) and replace *task with the finished one. Returns
 * 0 when it succeeded, -1 with err set to its error otherwise (template.c). */
int cli_task_wait(cli_ctx *ctx, json_t **task, kh_err *err);

/* The "nics" array for `vm create|edit --nic NETWORK[,mac=MAC][,ip=IP]`
 * values, or NULL with err (KH_E_INVALID) (network.c). */
json_t *cli_nics_json(const kh_strv *specs, kh_err *err);

#endif
