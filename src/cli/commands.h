/* commands.h - the one command table of `kvmhost` (commands.c, assembled
 * from the per-noun rows: nouns.h), its argument parser (parse.c), the help
 * generated from it (help.c) and the handlers' context (ctx.c).
 *
 * Each row names a command (noun, verb), its positional argument, its
 * options, a one-line summary, a long description and examples, and the
 * handler. `kvmhost --help`, `kvmhost NOUN --help`, `kvmhost NOUN VERB
 * --help`, `kvmhost help ...`, the usage line of usage errors and the
 * option parser all read this table, so they cannot disagree.
 */
#ifndef KH_CLI_COMMANDS_H
#define KH_CLI_COMMANDS_H

#include <stdbool.h>

#include "cli/client.h"
#include "util/err.h"
#include "util/strv.h"

/* What every handler gets: the global options and the client. */
typedef struct cli_ctx {
    const char *socket_opt;     /* --socket, NULL if not given */
    const char *url;            /* --url */
    const char *token_file;     /* --token-file */
    const char *cacert;         /* --cacert */
    bool json;                  /* --json */
    bool stderr_tty;            /* draw progress bars */
    cli_client *client;         /* made by cli_ctx_client on first use */
    bool usage_error;           /* err is a usage error: print a usage line */
    const struct cli_cmd *usage_cmd; /* ... of this command (NULL: the general one) */
} cli_ctx;

enum {
    CLI_OPT_ARG = 1 << 0,      /* takes a value: --name VALUE or --name=VALUE */
    CLI_OPT_REQUIRED = 1 << 1, /* must be given */
    CLI_OPT_REPEAT = 1 << 2,   /* may be given several times */
};

typedef struct cli_opt {
    const char *name;    /* without the leading "--"; NULL ends a list */
    const char *metavar; /* "N", "PATH"; NULL for a flag */
    unsigned flags;
    const char *help;    /* one paragraph, wrapped when printed */
} cli_opt;

#define CLI_MAX_OPTS 32

typedef struct cli_args {
    const struct cli_cmd *cmd;
    const char *pos;               /* the positional argument (borrowed from argv) */
    const char *pos2;              /* the second one, when positional names two ("VM SNAP") */
    kh_strv *vals[CLI_MAX_OPTS];   /* values per cmd->opts index; NULL = not given */
    bool help;                     /* -h/--help was among the arguments */
} cli_args;

typedef int (*cli_handler)(cli_ctx *ctx, const cli_args *a, kh_err *err);

typedef struct cli_cmd {
    const char *noun;        /* NULL ends the table */
    const char *verb;        /* NULL: the noun alone is the command (events, version) */
    const char *positional;  /* "NAME", "ID", "VM SNAP" (two), or NULL; required when set,
                              * unless wholly in brackets ("[POOL]") */
    const char *summary;     /* one line, no final period */
    const char *description; /* paragraphs separated by "\n\n"; lines starting with ' ' verbatim */
    const cli_opt *opts;     /* NULL or a list ended by a NULL name */
    const char *examples;    /* lines "$ command" and comments, verbatim */
    cli_handler handler;
} cli_cmd;

/* The whole table, ended by a row with a NULL noun (built on first use). */
const cli_cmd *cli_commands_all(void);
#define cli_commands (cli_commands_all())
extern const cli_opt cli_global_opts[];

/* The command for noun and verb (verb NULL for verb-less nouns); NULL if
 * unknown. */
const cli_cmd *cli_cmd_find(const char *noun, const char *verb);
/* Whether any command has this noun; whether the noun takes verbs. */
bool cli_noun_exists(const char *noun);
bool cli_noun_has_verbs(const char *noun);
/* The one-line summary of a noun ("manage virtual machines"). */
const char *cli_noun_summary(const char *noun);

/* Parse a command's arguments (argv after NOUN [VERB]). Global options are
 * accepted anywhere and stored in ctx. Returns 0, or -1 with a usage error
 * (KH_E_INVALID, ctx->usage_cmd set). Release with cli_args_clear. */
int cli_args_parse(const cli_cmd *cmd, int argc, const char *const *argv, cli_ctx *ctx,
                   cli_args *out, kh_err *err);
void cli_args_clear(cli_args *a);
/* A global option by name: 1 if it was one (value consumed when it takes
 * one: *used_next tells whether argv's next element was the value),
 * 0 if not a global option, -1 with err when its value is missing. */
int cli_global_opt(cli_ctx *ctx, const char *arg, const char *next, bool *used_next,
                   kh_err *err);

/* The last value of an option, NULL if not given; whether a flag was given;
 * all values of a repeatable option (NULL if not given). */
const char *cli_arg(const cli_args *a, const char *name);
bool cli_flag(const cli_args *a, const char *name);
const kh_strv *cli_arg_all(const cli_args *a, const char *name);

/* Set a usage error about the command being run. */
void cli_usage_error(cli_ctx *ctx, const cli_cmd *cmd, kh_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Help, rendered to a string (caller frees). */
char *cli_help_overview(void);
char *cli_help_noun(const char *noun);
char *cli_help_command(const cli_cmd *cmd);
/* "kvmhost vm create NAME --vcpus N --memory MIB [OPTIONS]" (short form)
 * or with every option spelled out (full). */
char *cli_usage_line(const cli_cmd *cmd, bool full);

/* The client for the global options (socket/--url/token), made once.
 * NULL with err (usage error or unreadable token file). */
cli_client *cli_ctx_client(cli_ctx *ctx, kh_err *err);

/* Send method path (body borrowed, may be NULL) and print the answer: the
 * JSON as it is with --json, else through human(). 0, or -1 with err. */
int cli_show(cli_ctx *ctx, const char *method, const char *path, const json_t *body,
             void (*human)(const json_t *), kh_err *err);
/* cli_show of GET /api/v1/<collection>/<name> (the name escaped). */
int cli_show_one(cli_ctx *ctx, const char *collection, const char *name,
                 void (*human)(const json_t *), kh_err *err);
/* DELETE path (stolen) and say "<what> <name> deleted" (nothing with
 * --json). 0, or -1 with err. */
int cli_delete(cli_ctx *ctx, char *path, const char *what, const char *name, kh_err *err);
/* A human() for cli_show: every member of the object as "key: value". */
void cli_show_kv(const json_t *o);
/* Write s (rendered output) to stdout and free it. */
void cli_print_free(char *s);

#endif
