/* handlers.h - what each command of the table does (handlers.c). Each
 * returns an exit status >= 0, or -1 with err set (the caller prints it
 * and exits with kh_code_exit_status). */
#ifndef KH_CLI_HANDLERS_H
#define KH_CLI_HANDLERS_H

#include "cli/commands.h"

int cli_do_vm_create(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_show(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_edit(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_action(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_delete(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_console(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_log(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_host_show(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_task_show(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_task_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_events(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_pool_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_pool_show(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_pool_create(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_pool_delete(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_volume_create(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_volume_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_volume_show(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_volume_resize(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_volume_delete(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_volume_upload(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_volume_download(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_disk_attach(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_disk_detach(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_snapshot_create(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_snapshot_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_snapshot_revert(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_snapshot_delete(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_template_create(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_template_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
/* Wait for a task (polling) and replace *task with the finished one. Returns
 * 0 when it succeeded, -1 with err set to its error otherwise. */
int cli_task_wait(cli_ctx *ctx, json_t **task, kh_err *err);
int cli_do_version(cli_ctx *ctx, const cli_args *a, kh_err *err);
/* obs.c */
int cli_do_vm_top(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_limit(cli_ctx *ctx, const cli_args *a, kh_err *err);

#endif
