/* alert_handlers.h - `kvmhost alert ...` (the rows are in commands.c). */
#ifndef KH_CLI_ALERT_HANDLERS_H
#define KH_CLI_ALERT_HANDLERS_H

#include "cli/commands.h"

int cli_do_alert_list(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_alert_rules(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_alert_rules_set(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_alert_webhook_set(cli_ctx *ctx, const cli_args *a, kh_err *err);
int cli_do_alert_webhook_clear(cli_ctx *ctx, const cli_args *a, kh_err *err);

#endif
