/* parse.c - the argv parser: global options anywhere, a command's options
 * and positional arguments checked against its row, usage errors, and the
 * accessors for parsed values (cli_arg, cli_flag, cli_arg_all).
 */
#include "cli/commands.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/output.h"
#include "kh_config.h"
#include "util/fs.h"
#include "util/mem.h"

/* The options every command takes, anywhere on the line. */
const cli_opt cli_global_opts[] = {
    { "socket", "PATH", CLI_OPT_ARG,
      "The unix socket of kvmhostd. Default: $KVMHOST_SOCKET, else " KH_DEFAULT_SOCKET "." },
    { "url", "URL", CLI_OPT_ARG,
      "Talk to kvmhostd over TCP at http://HOST:PORT or https://HOST:PORT instead (kvmhostd "
      "--listen). Needs the API token. The console over https is not supported." },
    { "cacert", "FILE", CLI_OPT_ARG,
      "With an https --url: trust this certificate (PEM), e.g. a copy of the daemon's own "
      "STATE_DIR/tls/cert.pem (compare `kvmhostd --tls-fingerprint`). Default: "
      "$KVMHOST_CACERT, else the system's CAs." },
    { "token-file", "FILE", CLI_OPT_ARG,
      "With --url: read the bearer token from FILE (kvmhostd writes it to "
      "STATE_DIR/api-token). Default: $KVMHOST_TOKEN." },
    { "json", NULL, 0,
      "Print the API's JSON as it comes (indented) instead of tables and key: value "
      "lines. Errors still go to stderr as text." },
    { "help", NULL, 0, "Show help: with a command, its options and examples. 'kvmhost help NOUN VERB' is the "
      "same as 'kvmhost NOUN VERB --help'." },
    { "version", NULL, 0, "Print the client version and exit." },
    { NULL, NULL, 0, NULL },
};

/* ---- parsing ---- */

void cli_usage_error(cli_ctx *ctx, const cli_cmd *cmd, kh_err *err, const char *fmt, ...)
{
    char msg[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kh_err_set(err, KH_E_INVALID, "%s", msg);
    if (ctx) {
        ctx->usage_error = true;
        ctx->usage_cmd = cmd;
    }
}

int cli_global_opt(cli_ctx *ctx, const char *arg, const char *next, bool *used_next,
                   kh_err *err)
{
    *used_next = false;
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    static const char *const valued[] = { "socket", "url", "token-file", "cacert" };
    const char **slot[] = { &ctx->socket_opt, &ctx->url, &ctx->token_file, &ctx->cacert };
    for (size_t i = 0; i < KH_ARRAY_LEN(valued); i++) {
        if (strlen(valued[i]) != nlen || strncmp(name, valued[i], nlen) != 0)
            continue;
        const char *v = eq ? eq + 1 : next;
        if (!v) {
            cli_usage_error(ctx, NULL, err, "--%s needs a value", valued[i]);
            return -1;
        }
        if (!eq)
            *used_next = true;
        *slot[i] = v;
        return 1;
    }
    if (nlen == 4 && strncmp(name, "json", 4) == 0) {
        if (eq) {
            cli_usage_error(ctx, NULL, err, "--json takes no value");
            return -1;
        }
        ctx->json = true;
        return 1;
    }
    return 0;
}

static int opt_index(const cli_cmd *cmd, const char *name, size_t nlen)
{
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++)
        if (strlen(cmd->opts[i].name) == nlen && strncmp(cmd->opts[i].name, name, nlen) == 0)
            return i;
    return -1;
}

/* A positional wholly in brackets ("[POOL]") may be left out. */
static bool positional_optional(const cli_cmd *cmd)
{
    size_t n = strlen(cmd->positional);
    return cmd->positional[0] == '[' && cmd->positional[n - 1] == ']' &&
           !strchr(cmd->positional, ' ');
}

int cli_args_parse(const cli_cmd *cmd, int argc, const char *const *argv, cli_ctx *ctx,
                   cli_args *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    out->cmd = cmd;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_pos && strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (!only_pos && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            out->help = true;
            return 0;
        }
        if (!only_pos && arg[0] == '-' && arg[1] != '\0') {
            if (arg[1] != '-') {
                cli_usage_error(ctx, cmd, err, "unknown option '%s'", arg);
                return -1;
            }
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            int idx = opt_index(cmd, name, nlen);
            if (idx < 0) {
                bool used_next;
                int g = cli_global_opt(ctx, arg, i + 1 < argc ? argv[i + 1] : NULL,
                                       &used_next, err);
                if (g < 0) {
                    ctx->usage_cmd = cmd; /* the usage error is already marked */
                    return -1;
                }
                if (g == 0) {
                    cli_usage_error(ctx, cmd, err, "unknown option '--%.*s'", (int)nlen, name);
                    return -1;
                }
                if (used_next)
                    i++;
                continue;
            }
            const cli_opt *o = &cmd->opts[idx];
            const char *value = "";
            if (o->flags & CLI_OPT_ARG) {
                if (eq) {
                    value = eq + 1;
                } else if (i + 1 < argc) {
                    value = argv[++i];
                } else {
                    cli_usage_error(ctx, cmd, err, "--%s needs a value (%s)", o->name,
                                    o->metavar);
                    return -1;
                }
            } else if (eq) {
                cli_usage_error(ctx, cmd, err, "--%s takes no value", o->name);
                return -1;
            }
            if (out->vals[idx] && !(o->flags & CLI_OPT_REPEAT)) {
                cli_usage_error(ctx, cmd, err, "--%s is given twice", o->name);
                return -1;
            }
            if (!out->vals[idx])
                out->vals[idx] = kh_strv_new();
            kh_strv_add(out->vals[idx], value);
            continue;
        }
        if (cmd->positional && !out->pos) {
            out->pos = arg;
            continue;
        }
        if (cmd->positional && strchr(cmd->positional, ' ') && !out->pos2) {
            out->pos2 = arg;
            continue;
        }
        cli_usage_error(ctx, cmd, err, "unexpected argument '%s'", arg);
        return -1;
    }
    if (cmd->positional && !out->pos && !positional_optional(cmd)) {
        cli_usage_error(ctx, cmd, err, "missing %s", cmd->positional);
        return -1;
    }
    if (cmd->positional && strchr(cmd->positional, ' ') && !out->pos2) {
        cli_usage_error(ctx, cmd, err, "missing %s", strchr(cmd->positional, ' ') + 1);
        return -1;
    }
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++) {
        const cli_opt *o = &cmd->opts[i];
        if ((o->flags & CLI_OPT_REQUIRED) && !out->vals[i]) {
            cli_usage_error(ctx, cmd, err, "missing --%s %s", o->name, o->metavar);
            return -1;
        }
    }
    return 0;
}

void cli_args_clear(cli_args *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < CLI_MAX_OPTS; i++)
        kh_strv_free(a->vals[i]);
    memset(a, 0, sizeof(*a));
}

const kh_strv *cli_arg_all(const cli_args *a, const char *name)
{
    int idx = opt_index(a->cmd, name, strlen(name));
    if (idx < 0)
        abort(); /* a handler asked for an option its row does not have: a bug */
    return a->vals[idx];
}

const char *cli_arg(const cli_args *a, const char *name)
{
    const kh_strv *v = cli_arg_all(a, name);
    return v && v->n ? v->v[v->n - 1] : NULL;
}

bool cli_flag(const cli_args *a, const char *name)
{
    return cli_arg_all(a, name) != NULL;
}

