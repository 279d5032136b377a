/* net_handlers.h - `kvmhost network ...` (the rows are in commands.c). */
#ifndef KH_CLI_NET_HANDLERS_H
#define KH_CLI_NET_HANDLERS_H

#include <jansson.h>

#include "cli/commands.h"

int cli_do_net_create(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_net_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_net_show(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_net_delete(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_net_leases(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_net_forward(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_nic_add(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_nic_remove(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_vm_nic_link(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_sg_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_sg_show(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_sg_create(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_sg_delete(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_sg_rule_add(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_sg_rule_delete(cli_ctx *ctx, const cli_args *a, kh_err *err);
/* The "nics" array for `vm create|edit --nic NETWORK[,mac=MAC][,ip=IP]`
 * values, or NULL with err (KH_E_INVALID). */
json_t *cli_nics_json(const kh_strv *specs, kh_err *err);

#endif
