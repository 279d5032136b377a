/* help.c - help rendered from the command table: the overview (`kvmhost
 * --help`), a noun's command list, one command's manual page, usage lines,
 * and the EXIT STATUS section.
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

#define HELP_WIDTH 79

/* What each exit status means; the codes that lead to it come from err.h. */
static const char *const exit_meaning[] = {
    "success",
    "kvmhostd failed inside, or QEMU refused or died",
    "usage error, or the request was invalid",
    "not allowed: missing or wrong token, or forbidden",
    "no such VM, task or route",
    "the VM's state forbids it now: running, busy, or the name is taken",
    "kvmhostd is busy; try again later",
    "kvmhostd cannot be reached (is it running?), or the host cannot do it now (pool full)",
    "gave up waiting",
    "vm stop: the guest did not power off within the timeout and QEMU was killed",
};


/* ---- help ---- */

static char *command_name(const cli_cmd *cmd)
{
    return cmd->verb ? xasprintf("%s %s", cmd->noun, cmd->verb) : xstrdup(cmd->noun);
}

/* One synopsis token per option: "--vcpus N", "[--kernel PATH]", "[--disk SPEC]...". */
static char *opt_token(const cli_opt *o)
{
    char *core = o->metavar ? xasprintf("--%s %s", o->name, o->metavar)
                            : xasprintf("--%s", o->name);
    char *tok;
    if (o->flags & CLI_OPT_REQUIRED)
        tok = xasprintf("%s%s", core, (o->flags & CLI_OPT_REPEAT) ? "..." : "");
    else
        tok = xasprintf("[%s]%s", core, (o->flags & CLI_OPT_REPEAT) ? "..." : "");
    free(core);
    return tok;
}

static kh_strv *usage_tokens(const cli_cmd *cmd, bool full)
{
    kh_strv *t = kh_strv_new();
    kh_strv_add(t, "kvmhost");
    kh_strv_add(t, cmd->noun);
    if (cmd->verb)
        kh_strv_add(t, cmd->verb);
    if (cmd->positional)
        kh_strv_add(t, cmd->positional);
    bool optional = false;
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++) {
        const cli_opt *o = &cmd->opts[i];
        if (full || (o->flags & CLI_OPT_REQUIRED))
            kh_strv_add_steal(t, opt_token(o));
        else
            optional = true;
    }
    if (optional)
        kh_strv_add(t, "[OPTIONS]");
    return t;
}

char *cli_usage_line(const cli_cmd *cmd, bool full)
{
    kh_strv *t = usage_tokens(cmd, full);
    char *s = kh_strv_join(t, " ");
    kh_strv_free(t);
    return s;
}

/* Print tokens wrapped: first line at indent, the rest at indent + 8. */
static void print_tokens(FILE *f, const kh_strv *t, int indent)
{
    int col = fprintf(f, "%*s", indent, "");
    for (size_t i = 0; i < t->n; i++) {
        int len = (int)strlen(t->v[i]);
        if (i > 0 && col + 1 + len > HELP_WIDTH) {
            fputc('\n', f);
            col = fprintf(f, "%*s", indent + 8, "");
        } else if (i > 0) {
            fputc(' ', f);
            col++;
        }
        fputs(t->v[i], f);
        col += len;
    }
    fputc('\n', f);
}

static void print_options(FILE *f, const cli_opt *opts)
{
    for (int i = 0; opts && opts[i].name; i++) {
        const cli_opt *o = &opts[i];
        if (strcmp(o->name, "help") == 0)
            fprintf(f, "    -h, --help\n");
        else if (o->metavar)
            fprintf(f, "    --%s %s\n", o->name, o->metavar);
        else
            fprintf(f, "    --%s\n", o->name);
        char *text = (o->flags & CLI_OPT_REQUIRED) ? xasprintf("%s Required.", o->help)
                     : (o->flags & CLI_OPT_REPEAT) ? xasprintf("%s May be repeated.", o->help)
                                                   : xstrdup(o->help);
        cli_wrap(f, text, 8, HELP_WIDTH);
        free(text);
    }
}

static void print_exit_status(FILE *f)
{
    fprintf(f, "EXIT STATUS\n");
    for (int status = 0; status < (int)KH_ARRAY_LEN(exit_meaning); status++) {
        kh_strv *names = kh_strv_new();
        for (int c = 1; c < KH_CODE__COUNT; c++)
            if (kh_code_exit_status((kh_code)c) == status)
                kh_strv_add(names, kh_code_name((kh_code)c));
        char *line;
        if (names->n) {
            char *joined = kh_strv_join(names, ", ");
            line = xasprintf("%d  %s (%s)", status, exit_meaning[status], joined);
            free(joined);
        } else {
            line = xasprintf("%d  %s", status, exit_meaning[status]);
        }
        /* Continuation lines align under the meaning. */
        kh_strv *words = kh_strv_new();
        char *save = NULL;
        for (char *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save))
            kh_strv_add(words, w);
        int col = fprintf(f, "    %s", words->v[0]);
        for (size_t i = 1; i < words->n; i++) {
            int len = (int)strlen(words->v[i]);
            if (i == 1) {
                col += fprintf(f, "  %s", words->v[i]);
            } else if (col + 1 + len > HELP_WIDTH) {
                col = fprintf(f, "\n%7s%s", "", words->v[i]) - 1;
            } else {
                col += fprintf(f, " %s", words->v[i]);
            }
        }
        fputc('\n', f);
        kh_strv_free(words);
        kh_strv_free(names);
        free(line);
    }
    fputc('\n', f);
}

static void print_examples(FILE *f, const char *examples)
{
    fprintf(f, "EXAMPLES\n");
    const char *p = examples;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "    %.*s\n", (int)n, p);
        if (!nl)
            break;
        p = nl + 1;
    }
    fputc('\n', f);
}

/* A list of commands: "    vm create NAME ... [OPTIONS]   summary". */
static void print_command_list(FILE *f, const char *noun)
{
    enum { COL = 32 };
    for (const cli_cmd *c = cli_commands; c->noun; c++) {
        if (noun && strcmp(c->noun, noun) != 0)
            continue;
        char *u = cli_usage_line(c, false);
        const char *shown = u + strlen("kvmhost ");
        int len = (int)strlen(shown);
        if (4 + len + 2 <= COL) {
            fprintf(f, "    %s%*s%s\n", shown, COL - 4 - len, "", c->summary);
        } else {
            fprintf(f, "    %s\n%*s%s\n", shown, COL, "", c->summary);
        }
        free(u);
    }
}

static char *render(void (*fn)(FILE *, const void *), const void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    fn(f, arg);
    fclose(f);
    return buf;
}

static void overview(FILE *f, const void *unused)
{
    fprintf(f, "NAME\n    kvmhost - manage the virtual machines of a kvmhostd host\n\n");
    fprintf(f, "SYNOPSIS\n    kvmhost [GLOBAL OPTIONS] NOUN VERB [ARGS]\n"
               "    kvmhost help [NOUN [VERB]]\n\n");
    fprintf(f, "DESCRIPTION\n");
    cli_wrap(f,
             "kvmhost is the command-line client of kvmhostd: every command is one or a few "
             "requests to kvmhostd's REST API, over its unix socket (the default) or TCP "
             "(--url). Output is meant for people (aligned tables, key: value lines); --json "
             "prints the API's JSON instead. Errors are printed on stderr as \"kvmhost: "
             "error: MESSAGE\", and the exit status tells their kind (see EXIT STATUS).\n\n"
             "Global options may come before or after the command. Run 'kvmhost help NOUN "
             "VERB' (or 'kvmhost NOUN VERB --help') for the options and examples of one "
             "command.",
             4, HELP_WIDTH);
    fprintf(f, "\nCOMMANDS\n");
    print_command_list(f, NULL);
    fprintf(f, "\nGLOBAL OPTIONS\n");
    print_options(f, cli_global_opts);
    fprintf(f, "\nENVIRONMENT\n");
    fprintf(f, "    KVMHOST_SOCKET\n");
    cli_wrap(f, "The unix socket of kvmhostd when --socket is not given.", 8, HELP_WIDTH);
    fprintf(f, "    KVMHOST_TOKEN\n");
    cli_wrap(f, "The bearer token for --url when --token-file is not given.", 8, HELP_WIDTH);
    fputc('\n', f);
    print_exit_status(f);
    print_examples(f, "$ kvmhost vm create web1 --vcpus 1 --memory 512 \\\n"
                      "      --disk web1.qcow2,format=qcow2\n"
                      "$ kvmhost vm start web1\n"
                      "$ kvmhost vm list\n"
                      "$ kvmhost vm console web1\n"
                      "$ kvmhost --url http://h1:8443 --token-file ~/.kvmhost-token host show");
}

static void noun_help(FILE *f, const void *arg)
{
    const char *noun = arg;
    fprintf(f, "NAME\n    kvmhost %s - %s\n\n", noun, cli_noun_summary(noun));
    fprintf(f, "SYNOPSIS\n    kvmhost [GLOBAL OPTIONS] %s VERB [ARGS]\n\n", noun);
    fprintf(f, "COMMANDS\n");
    print_command_list(f, noun);
    fprintf(f, "\n");
    char *text = xasprintf("Run 'kvmhost help %s VERB' for the options and examples of one "
                           "command, 'kvmhost --help' for the global options and exit "
                           "statuses.", noun);
    cli_wrap(f, text, 4, HELP_WIDTH);
    free(text);
}

static void command_help(FILE *f, const void *arg)
{
    const cli_cmd *cmd = arg;
    char *name = command_name(cmd);
    fprintf(f, "NAME\n    kvmhost %s - %s\n\n", name, cmd->summary);
    fprintf(f, "SYNOPSIS\n");
    kh_strv *t = usage_tokens(cmd, true);
    print_tokens(f, t, 4);
    kh_strv_free(t);
    fprintf(f, "\nDESCRIPTION\n");
    cli_wrap(f, cmd->description, 4, HELP_WIDTH);
    fputc('\n', f);
    if (cmd->opts && cmd->opts[0].name) {
        fprintf(f, "OPTIONS\n");
        print_options(f, cmd->opts);
        fputc('\n', f);
    }
    fprintf(f, "GLOBAL OPTIONS\n");
    cli_wrap(f, "--socket PATH, --url URL, --token-file FILE, --json, -h/--help: see "
                "'kvmhost --help'.", 4, HELP_WIDTH);
    fputc('\n', f);
    print_exit_status(f);
    print_examples(f, cmd->examples);
    fprintf(f, "SEE ALSO\n    kvmhost help%s%s\n", cmd->verb ? " " : "",
            cmd->verb ? cmd->noun : "");
    free(name);
}

char *cli_help_overview(void)
{
    return render(overview, NULL);
}

char *cli_help_noun(const char *noun)
{
    if (!cli_noun_has_verbs(noun)) {
        const cli_cmd *c = cli_cmd_find(noun, NULL);
        return c ? cli_help_command(c) : NULL;
    }
    return render(noun_help, noun);
}

char *cli_help_command(const cli_cmd *cmd)
{
    return render(command_help, cmd);
}

