/* main.c - `kvmhost`: global options, finding the command in the table,
 * help, and turning errors into the message and exit status. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/commands.h"
#include "kh_config.h"
#include "util/err.h"

#define GENERAL_USAGE "usage: kvmhost [GLOBAL OPTIONS] NOUN VERB [ARGS]"

static bool is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

/* Print s to f and free it. */
static void put(FILE *f, char *s)
{
    if (s)
        fputs(s, f);
    free(s);
}

/* Print the error and return the exit status for it. */
static int fail(const cli_ctx *ctx, const kh_err *err)
{
    fflush(stdout);
    fprintf(stderr, "kvmhost: error: %s\n", err->msg[0] ? err->msg : kh_code_name(err->code));
    if (ctx->usage_error || ctx->usage_cmd) {
        if (ctx->usage_cmd) {
            char *u = cli_usage_line(ctx->usage_cmd, false);
            fprintf(stderr, "usage: %s\n", u);
            free(u);
            const cli_cmd *c = ctx->usage_cmd;
            fprintf(stderr, "Run 'kvmhost help %s%s%s' for the options.\n", c->noun,
                    c->verb ? " " : "", c->verb ? c->verb : "");
        } else {
            fprintf(stderr, GENERAL_USAGE "\nRun 'kvmhost --help' for the commands.\n");
        }
        return kh_code_exit_status(KH_E_INVALID);
    }
    return kh_code_exit_status(err->code);
}

/* A usage error about the command line as a whole: "MSG 'WHAT'". */
static int usage_fail(const char *msg, const char *what)
{
    fprintf(stderr, "kvmhost: error: %s", msg);
    if (what)
        fprintf(stderr, " '%s'", what);
    fprintf(stderr, "\n" GENERAL_USAGE "\nRun 'kvmhost --help' for the commands.\n");
    return kh_code_exit_status(KH_E_INVALID);
}

/* `kvmhost help [NOUN [VERB]]`. */
static int help(int argc, char **argv)
{
    if (argc == 0) {
        put(stdout, cli_help_overview());
        return 0;
    }
    if (!cli_noun_exists(argv[0])) {
        fprintf(stderr, "kvmhost: error: no help for unknown command '%s'\n", argv[0]);
        return kh_code_exit_status(KH_E_INVALID);
    }
    if (argc == 1) {
        put(stdout, cli_help_noun(argv[0]));
        return 0;
    }
    const cli_cmd *cmd = NULL;
    char two[64];
    if (argc == 3 && snprintf(two, sizeof(two), "%s %s", argv[1], argv[2]) < (int)sizeof(two))
        cmd = cli_cmd_find(argv[0], two); /* "secgroup rule add" */
    else if (argc == 2)
        cmd = cli_cmd_find(argv[0], argv[1]);
    if (!cmd) {
        fprintf(stderr, "kvmhost: error: no help for unknown command '%s %s'\n", argv[0],
                argv[1]);
        return kh_code_exit_status(KH_E_INVALID);
    }
    put(stdout, cli_help_command(cmd));
    return 0;
}

/* Global options at argv[*i]...; stops at the first non-option. Returns
 * -1 to go on, else an exit status. */
static int global_options(cli_ctx *ctx, int argc, char **argv, int *i, bool top)
{
    kh_err err = KH_ERR_INIT;
    for (; *i < argc; (*i)++) {
        const char *arg = argv[*i];
        if (arg[0] != '-' || arg[1] == '\0')
            break;
        if (top && is_help(arg)) {
            put(stdout, cli_help_overview());
            return 0;
        }
        if (top && strcmp(arg, "--version") == 0) {
            printf("kvmhost %s\n", KH_VERSION);
            return 0;
        }
        bool used_next;
        int g = cli_global_opt(ctx, arg, *i + 1 < argc ? argv[*i + 1] : NULL, &used_next, &err);
        if (g < 0)
            return fail(ctx, &err);
        if (g == 0)
            return usage_fail("unknown option", arg);
        if (used_next)
            (*i)++;
    }
    return -1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    cli_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.stderr_tty = isatty(STDERR_FILENO);
    kh_err err = KH_ERR_INIT;
    int i = 1;

    int rc = global_options(&ctx, argc, argv, &i, true);
    if (rc >= 0)
        return rc;
    if (i >= argc)
        return usage_fail("missing command", NULL);
    const char *noun = argv[i++];
    if (strcmp(noun, "help") == 0)
        return help(argc - i, argv + i);
    if (!cli_noun_exists(noun))
        return usage_fail("unknown command", noun);

    const cli_cmd *cmd;
    if (cli_noun_has_verbs(noun)) {
        if (i < argc && is_help(argv[i])) {
            put(stdout, cli_help_noun(noun));
            return 0;
        }
        rc = global_options(&ctx, argc, argv, &i, false);
        if (rc >= 0)
            return rc;
        /* two-word verbs first ("nic add", "rule delete") */
        char two[64];
        cmd = NULL;
        if (i + 1 < argc && snprintf(two, sizeof(two), "%s %s", argv[i], argv[i + 1]) <
                                (int)sizeof(two) &&
            (cmd = cli_cmd_find(noun, two)))
            i++;
        if (i >= argc || (!cmd && !(cmd = cli_cmd_find(noun, argv[i])))) {
            if (i >= argc)
                fprintf(stderr, "kvmhost: error: '%s' needs a command\n\n", noun);
            else
                fprintf(stderr, "kvmhost: error: unknown command '%s %s'\n\n", noun, argv[i]);
            put(stderr, cli_help_noun(noun));
            return kh_code_exit_status(KH_E_INVALID);
        }
        i++;
    } else {
        cmd = cli_cmd_find(noun, NULL);
    }

    cli_args args;
    if (cli_args_parse(cmd, argc - i, (const char *const *)(argv + i), &ctx, &args, &err) < 0) {
        cli_args_clear(&args);
        return fail(&ctx, &err);
    }
    if (args.help) {
        put(stdout, cli_help_command(cmd));
        cli_args_clear(&args);
        return 0;
    }
    rc = cmd->handler(&ctx, &args, &err);
    cli_args_clear(&args);
    cli_client_free(ctx.client);
    if (rc < 0)
        return fail(&ctx, &err);
    if (fflush(stdout) != 0 && rc == 0)
        rc = 1;
    return rc;
}
