/* host.c - `kvmhost host show`, `task show|list`, `events` and `version`: the rows
 * and their handlers. */
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
#include "cli/render.h"
#include "kh_config.h"
#include "util/check.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* ---- host, tasks ---- */

static int cli_do_host_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *host = NULL;
    if (!c || cli_client_json(c, "GET", "/api/v1/host", NULL, &host, NULL, err) < 0)
        return -1;
    if (ctx->json) {
        cli_print_json(stdout, host);
    } else {
        cli_print_free(cli_render_host(host));
    }
    json_decref(host);
    return 0;
}

static int cli_do_task_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *esc = cli_path_escape(a->pos);
    char *path = xasprintf("/api/v1/tasks/%s", esc);
    free(esc);
    json_t *task = NULL;
    int rc = cli_client_json(c, "GET", path, NULL, &task, NULL, err);
    free(path);
    if (rc < 0)
        return -1;
    if (ctx->json) {
        cli_print_json(stdout, task);
    } else {
        static const char *const skip[] = { "result", NULL };
        cli_kv *kv = cli_kv_new();
        cli_kv_add_json(kv, NULL, task, skip);
        const json_t *vm = json_object_get(task, "result");
        if (json_is_object(vm))
            cli_kv_addf(kv, "result", "vm %s, %s", cli_jstr(vm, "name") ? cli_jstr(vm, "name") : "?",
                        cli_jstr(vm, "state") ? cli_jstr(vm, "state") : "?");
        cli_print_kv(kv);
        cli_kv_free(kv);
    }
    json_decref(task);
    return 0;
}

static void tasks_human(const json_t *resp)
{
    static const char *const head[] = { "ID", "KIND", "VM", "STATE", "PROGRESS", "CREATED",
                                        "MESSAGE" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *task;
    json_array_foreach(json_object_get(resp, "tasks"), i, task) {
        cli_table_add(t, cli_jstr(task, "id"));
        cli_table_add(t, cli_jstr(task, "kind"));
        cli_table_add(t, cli_jstr(task, "vm"));
        cli_table_add(t, cli_jstr(task, "state"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT "%%",
                       json_integer_value(json_object_get(task, "progress")));
        cli_table_add(t, cli_jstr(task, "created_at"));
        const char *emsg = cli_jstr(json_object_get(task, "error"), "message");
        const char *msg = emsg ? emsg : cli_jstr(task, "message");
        cli_table_add(t, msg && *msg ? msg : NULL);
    }
    cli_print_table(t);
    cli_table_free(t);
}

static int cli_do_task_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show(ctx, "GET", "/api/v1/tasks", NULL, tasks_human, err);
}

/* ---- events ---- */

typedef struct events_state {
    bool json;
    int64_t count;   /* events left before we stop; -1 = no limit */
    cli_sse sse;
} events_state;

/* "key=value" pairs of the scalars of data (nested objects as a.b=v). */
static void event_details(kh_strv *out, const char *prefix, const json_t *data)
{
    const char *key;
    json_t *v;
    json_t *o = (json_t *)(uintptr_t)data;
    json_object_foreach(o, key, v) {
        char *full = prefix ? xasprintf("%s.%s", prefix, key) : xstrdup(key);
        if (json_is_object(v)) {
            /* One level deep is enough for a line; a task's result (the
             * whole VM) is too much: --json has it. */
            if (!prefix && strcmp(key, "result") != 0)
                event_details(out, full, v);
        } else if (!json_is_array(v) && !json_is_null(v)) {
            char *s = cli_json_scalar(v);
            if (json_is_boolean(v)) {
                free(s);
                s = xstrdup(json_is_true(v) ? "true" : "false");
            }
            char q[512];
            bool plain = *s && !strpbrk(s, " \t\"\\=\r\n");
            kh_strv_addf(out, "%s=%s", full, plain ? s : kh_log_quote(q, sizeof(q), s));
            free(s);
        }
        free(full);
    }
}

static int on_event(const char *type, const char *id, const char *data, void *ud)
{
    events_state *st = ud;
    json_t *ev = json_loads(data, 0, NULL);
    if (st->json) {
        if (ev && strchr(data, '\n')) {
            char *s = json_dumps(ev, JSON_COMPACT);
            printf("%s\n", s);
            free(s);
        } else {
            printf("%s\n", data);
        }
    } else if (!ev || !json_is_object(ev)) {
        printf("%s %s\n", type, data);
    } else {
        kh_strv *parts = kh_strv_new();
        const char *t = cli_jstr(ev, "type") ? cli_jstr(ev, "type") : type;
        kh_strv_add(parts, cli_jstr(ev, "time") ? cli_jstr(ev, "time") : "-");
        kh_strv_add(parts, t);
        kh_strv_add(parts, cli_jstr(ev, "vm") ? cli_jstr(ev, "vm") : "-");
        event_details(parts, NULL, json_object_get(ev, "data"));
        char *line = kh_strv_join(parts, " ");
        printf("%s\n", line);
        free(line);
        kh_strv_free(parts);
    }
    fflush(stdout);
    json_decref(ev);
    if (st->count > 0 && --st->count == 0)
        return 1;
    return 0;
}

static int events_data(const char *data, size_t len, void *ud)
{
    events_state *st = ud;
    return cli_sse_feed(&st->sse, data, len);
}

static int cli_do_events(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    events_state st = { .json = ctx->json, .count = -1 };
    int64_t since = -1;
    double timeout = 0;
    if ((cli_arg(a, "since") &&
         cli_parse_int(cli_arg(a, "since"), 0, INT64_MAX, "--since", &since, err) < 0) ||
        (cli_arg(a, "count") &&
         cli_parse_int(cli_arg(a, "count"), 1, INT64_MAX, "--count", &st.count, err) < 0) ||
        (cli_arg(a, "timeout") &&
         cli_parse_seconds(cli_arg(a, "timeout"), "--timeout", &timeout, err) < 0)) {
        cli_mark_usage(ctx, a);
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *path = since >= 0 ? xasprintf("/api/v1/events?since=%lld", (long long)since)
                            : xstrdup("/api/v1/events");
    static const char *const headers[] = { "Accept: text/event-stream", NULL };
    cli_sse_init(&st.sse, on_event, &st);
    long timeout_ms = timeout > 0 ? (long)(timeout * 1000.0) : 0;
    if (timeout > 0 && timeout_ms == 0)
        timeout_ms = 1;
    int rc = cli_client_stream(c, path, headers, events_data, &st, timeout_ms, err);
    free(path);
    cli_sse_clear(&st.sse);
    if (rc < 0)
        return -1;
    /* Stopped by --count or --timeout: done. Otherwise the daemon hung up. */
    if (st.count == 0 || timeout_ms > 0)
        return 0;
    kh_err_set(err, KH_E_UNAVAILABLE, "kvmhostd ended the event stream");
    return -1;
}

/* ---- version ---- */

static int cli_do_version(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *host = NULL;
    cli_client *c = cli_ctx_client(ctx, err);
    int rc = c ? cli_client_json(c, "GET", "/api/v1/host", NULL, &host, NULL, err) : -1;
    const json_t *qemu = json_object_get(host, "qemu");
    if (ctx->json) {
        json_t *out = json_pack("{s:s}", "client", KH_VERSION);
        if (rc >= 0) {
            json_object_set(out, "daemon", json_object_get(host, "version"));
            json_object_set(out, "qemu", json_object_get(qemu, "version"));
        }
        cli_print_json(stdout, out);
        json_decref(out);
    } else {
        printf("client: %s\n", KH_VERSION);
        if (rc >= 0) {
            printf("daemon: %s\n", cli_jstr(host, "version") ? cli_jstr(host, "version") : "-");
            printf("qemu:   %s\n", cli_jstr(qemu, "version") ? cli_jstr(qemu, "version") : "-");
        }
    }
    json_decref(host);
    return rc < 0 ? -1 : 0;
}

static int cli_do_task_cancel(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *esc = cli_path_escape(a->pos);
    char *path = xasprintf("/api/v1/tasks/%s/cancel", esc);
    free(esc);
    json_t *body = json_object(), *task = NULL;
    int rc = cli_client_json(c, "POST", path, body, &task, NULL, err);
    json_decref(body);
    free(path);
    if (rc < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, task);
    else
        printf("cancelling %s %s\n", cli_jstr(task, "kind") ? cli_jstr(task, "kind") : "task",
               a->pos);
    json_decref(task);
    return 0;
}

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt opts_events[] = {
    { "since", "ID", CLI_OPT_ARG,
      "First replay the buffered events newer than event ID (0 replays all of them)." },
    { "count", "N", CLI_OPT_ARG, "Exit 0 after N events." },
    { "timeout", "SECONDS", CLI_OPT_ARG, "Exit 0 after this many seconds." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_host_cmds[] = {
    {
        "host", "show", NULL, "show facts about the host",
        "The host as kvmhostd sees it: name, versions of kvmhostd and QEMU, the accelerator "
        "VMs get (kvm, or tcg with the reason KVM is not usable), CPUs, memory, cgroup "
        "version, VM counts, paths and uptime.",
        NULL,
        "$ kvmhost host show",
        cli_do_host_show,
    },
    {
        "task", "show", "ID", "show one task",
        "A task is a long operation (start, stop, ...): its kind, VM, state (running, "
        "succeeded, failed), progress, message and error.",
        NULL,
        "$ kvmhost task show c0ffee00-1234-4abc-8def-0123456789ab",
        cli_do_task_show,
    },
    {
        "task", "cancel", "ID", "cancel a running task",
        "Ask a running task to stop. Only some can: a live migration (`vm migrate`) before "
        "its switch-over rolls back, the VM running on where it was, and the task fails "
        "\"cancelled\". Others, and a migration already switching over, answer 409 (exit "
        "status 5). Run it on the host the task runs on.",
        NULL,
        "$ kvmhost task cancel c0ffee00-1234-4abc-8def-0123456789ab",
        cli_do_task_cancel,
    },
    {
        "task", "list", NULL, "list recent tasks",
        "The tasks kvmhostd remembers, one per line: id, kind, VM, state, progress, when it "
        "began, and its message (the error for a failed task).",
        NULL,
        "$ kvmhost task list",
        cli_do_task_list,
    },
    {
        "events", NULL, NULL, "follow what happens on the host",
        "Print kvmhostd's events as they happen (VMs created, changed, deleted, state "
        "changes, task progress, host warnings), one line each: time, type, VM, then the "
        "details as key=value. With --json each line is the event's JSON object. Runs until "
        "Ctrl-C, --count or --timeout; if kvmhostd ends the stream the exit status is 7.",
        opts_events,
        "$ kvmhost events\n"
        "$ kvmhost --json events --since 0 --count 10",
        cli_do_events,
    },
    {
        "version", NULL, NULL, "show the versions of kvmhost, kvmhostd and QEMU",
        "Print the client version, then ask kvmhostd for its own and QEMU's. When kvmhostd "
        "cannot be reached the client version is still printed and the exit status is 7. "
        "'kvmhost --version' prints the client version only.",
        NULL,
        "$ kvmhost version",
        cli_do_version,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
