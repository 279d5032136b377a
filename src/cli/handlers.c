#include "cli/handlers.h"
#include "cli/net_handlers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/console.h"
#include "cli/output.h"
#include "kh_config.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* The server waits this long for an action before answering 202; then we
 * poll. Short, so that the progress bar appears soon. */
#define ACTION_WAIT_SECONDS 2
#define POLL_INTERVAL_MS 200

/* ---- small helpers ---- */

/* The error just set is about how the command was called. */
static void mark_usage(cli_ctx *ctx, const cli_args *a)
{
    ctx->usage_error = true;
    ctx->usage_cmd = a->cmd;
}

/* Print s on stdout, or the JSON. */
static void print_kv(cli_kv *kv)
{
    cli_print_free(cli_kv_render(kv));
}

static void print_table(cli_table *t)
{
    char *s = cli_table_render(t);
    fputs(s, stdout);
    free(s);
}

/* A JSON string for a user value; NULL with err when it is not UTF-8. */
static json_t *user_string(const char *s, const char *what, kh_err *err)
{
    json_t *j = json_string(s);
    if (!j)
        kh_err_set(err, KH_E_INVALID, "%s is not valid UTF-8", what);
    return j;
}

/* Set key to a user string; -1 with err when it is not UTF-8. */
static int set_user_string(json_t *obj, const char *key, const char *s, const char *what,
                           kh_err *err)
{
    json_t *j = user_string(s, what, err);
    if (!j)
        return -1;
    json_object_set_new(obj, key, j);
    return 0;
}

/* Set key to the absolute form of a user path. */
static int set_user_path(json_t *obj, const char *key, const char *path, const char *cwd,
                         const char *what, kh_err *err)
{
    char *abs = cli_path_absolute(path, cwd);
    int rc = set_user_string(obj, key, abs, what, err);
    free(abs);
    return rc;
}

/* Current directory for making paths absolute; the caller frees. */
static char *current_dir(kh_err *err)
{
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        kh_err_errno(err, KH_E_INVALID, errno, "cannot find the current directory");
    return cwd;
}

/* Seconds the VM has run, if it runs; -1 otherwise. */
static double vm_uptime(const json_t *vm)
{
    const char *state = cli_jstr(vm, "state");
    double started;
    if (!state || (strcmp(state, "running") != 0 && strcmp(state, "paused") != 0))
        return -1;
    if (cli_parse_time(cli_jstr(vm, "started_at"), &started) < 0)
        return -1;
    double up = kh_wall_time() - started;
    return up < 0 ? 0 : up;
}

/* ---- building specs (create, edit) ---- */

static int parse_serial(const char *v, bool *out, kh_err *err)
{
    if (strcmp(v, "on") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "true") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(v, "off") == 0 || strcmp(v, "no") == 0 || strcmp(v, "false") == 0) {
        *out = false;
        return 0;
    }
    kh_err_set(err, KH_E_INVALID, "--serial takes on or off, not '%s'", v);
    return -1;
}

/* The disks array for the --disk values, or NULL with err. */
static json_t *disks_json(const kh_strv *specs, const char *cwd, kh_err *err)
{
    json_t *arr = json_array();
    for (size_t i = 0; specs && i < specs->n; i++) {
        cli_disk d;
        if (cli_disk_parse(specs->v[i], cwd, &d, err) < 0) {
            json_decref(arr);
            return NULL;
        }
        json_t *disk = json_object();
        int rc;
        if (d.volume) {
            rc = set_user_string(disk, "volume", d.volume, "a --disk volume", err);
        } else {
            rc = set_user_string(disk, "path", d.path, "a --disk path", err);
            json_object_set_new(disk, "format", json_string(d.format));
        }
        json_object_set_new(disk, "readonly", json_boolean(d.readonly));
        json_array_append_new(arr, disk);
        cli_disk_clear(&d);
        if (rc < 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* Fields common to create and edit; boot is handled by the callers.
 * Returns 0 or -1 with err. */
static int spec_common(const cli_args *a, const char *cwd, json_t *spec, kh_err *err)
{
    const char *v;
    int64_t n;
    if ((v = cli_arg(a, "vcpus"))) {
        if (cli_parse_int(v, 0, INT32_MAX, "--vcpus", &n, err) < 0)
            return -1;
        json_object_set_new(spec, "vcpus", json_integer(n));
    }
    if ((v = cli_arg(a, "hugepages"))) {
        if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
            kh_err_set(err, KH_E_INVALID, "--hugepages: on or off");
            return -1;
        }
        json_object_set_new(spec, "hugepages", json_boolean(strcmp(v, "on") == 0));
    }
    if ((v = cli_arg(a, "max-vcpus"))) {
        if (cli_parse_int(v, 0, INT32_MAX, "--max-vcpus", &n, err) < 0)
            return -1;
        json_object_set_new(spec, "max_vcpus", json_integer(n));
    }
    if ((v = cli_arg(a, "memory"))) {
        if (cli_parse_mib(v, "--memory", &n, err) < 0)
            return -1;
        json_object_set_new(spec, "memory_mib", json_integer(n));
    }
    if ((v = cli_arg(a, "machine")) && set_user_string(spec, "machine", v, "--machine", err) < 0)
        return -1;
    if (cli_arg_all(a, "disk")) {
        json_t *disks = disks_json(cli_arg_all(a, "disk"), cwd, err);
        if (!disks)
            return -1;
        json_object_set_new(spec, "disks", disks);
    }
    if (cli_arg_all(a, "nic")) {
        json_t *nics = cli_nics_json(cli_arg_all(a, "nic"), err);
        if (!nics)
            return -1;
        json_object_set_new(spec, "nics", nics);
    }
    if ((v = cli_arg(a, "serial"))) {
        bool on;
        if (parse_serial(v, &on, err) < 0)
            return -1;
        json_object_set_new(spec, "serial", json_boolean(on));
    }
    if ((v = cli_arg(a, "graphics")) &&
        set_user_string(spec, "graphics", v, "--graphics", err) < 0)
        return -1;
    if ((v = cli_arg(a, "description")) &&
        set_user_string(spec, "description", v, "--description", err) < 0)
        return -1;
    return 0;
}

/* Set boot.kernel/initrd/cmdline in boot from the options given. */
static int boot_apply(const cli_args *a, const char *cwd, json_t *boot, kh_err *err)
{
    const char *v;
    if ((v = cli_arg(a, "kernel")) && set_user_path(boot, "kernel", v, cwd, "--kernel", err) < 0)
        return -1;
    if ((v = cli_arg(a, "initrd")) && set_user_path(boot, "initrd", v, cwd, "--initrd", err) < 0)
        return -1;
    if ((v = cli_arg(a, "cmdline")) && set_user_string(boot, "cmdline", v, "--cmdline", err) < 0)
        return -1;
    return 0;
}

/* ---- vm create / list / show / edit / delete ---- */

int cli_do_vm_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *cwd = current_dir(err);
    if (!cwd)
        return -1;
    int rc = -1;
    json_t *spec = json_object(), *vm = NULL;
    if (set_user_string(spec, "name", a->pos, "the vm name", err) < 0 ||
        spec_common(a, cwd, spec, err) < 0) {
        mark_usage(ctx, a);
        goto out;
    }
    if (cli_arg(a, "kernel") || cli_arg(a, "initrd") || cli_arg(a, "cmdline")) {
        json_t *boot = json_object();
        json_object_set_new(spec, "boot", boot);
        if (boot_apply(a, cwd, boot, err) < 0) {
            mark_usage(ctx, a);
            goto out;
        }
    }
    if (cli_arg(a, "from-template")) {
        /* kvmhostd refuses what a clone cannot take (--kernel, --disk, ...) */
        if (set_user_string(spec, "from_template", cli_arg(a, "from-template"),
                            "--from-template", err) < 0) {
            mark_usage(ctx, a);
            goto out;
        }
        json_object_set_new(spec, "clone", json_string(cli_flag(a, "full") ? "full" : "linked"));
    } else if (cli_flag(a, "full")) {
        cli_usage_error(ctx, a->cmd, err, "--full needs --from-template");
        goto out;
    }
    int status = cli_client_json(c, "POST", "/api/v1/vms", spec, &vm, NULL, err);
    if (status < 0)
        goto out;
    if (status == 202 && cli_task_wait(ctx, &vm, err) < 0)
        goto out;
    if (status == 202) {
        json_t *res = json_incref(json_object_get(vm, "result"));
        json_decref(vm);
        vm = res;
    }
    if (ctx->json)
        cli_print_json(stdout, vm);
    else
        printf("vm %s created (%s)\n", a->pos, cli_jstr(vm, "state") ? cli_jstr(vm, "state") : "stopped");
    rc = 0;
out:
    free(cwd);
    json_decref(spec);
    json_decref(vm);
    return rc;
}

static void vms_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "STATE", "VCPUS", "MEMORY", "ACCEL", "PID",
                                        "UPTIME" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *vm;
    json_array_foreach(json_object_get(resp, "vms"), i, vm) {
        char mem[32], up[32];
        cli_table_add(t, cli_jstr(vm, "name"));
        cli_table_add(t, cli_jstr(vm, "state"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(vm, "vcpus")));
        cli_fmt_mib(json_integer_value(json_object_get(vm, "memory_mib")), mem, sizeof(mem));
        cli_table_add(t, mem);
        double uptime = vm_uptime(vm);
        cli_table_add(t, uptime >= 0 ? cli_jstr(vm, "accelerator") : NULL);
        json_t *pid = json_object_get(vm, "pid");
        if (json_is_integer(pid))
            cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(pid));
        else
            cli_table_add(t, NULL);
        if (uptime >= 0) {
            cli_fmt_duration(uptime, up, sizeof(up));
            cli_table_add(t, up);
        } else {
            cli_table_add(t, NULL);
        }
    }
    print_table(t);
    cli_table_free(t);
}

int cli_do_vm_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show(ctx, "GET", "/api/v1/vms", NULL, vms_human, err);
}

static void vm_kv(cli_kv *kv, const json_t *vm)
{
    static const char *const known[] = { "name", "id", "state", "state_reason", "description",
                                         "vcpus", "memory_mib", "machine", "boot", "disks",
                                         "serial", "graphics", "pid", "accelerator",
                                         "created_at", "updated_at", "started_at", NULL };
    char buf[64];
    cli_kv_add(kv, "name", cli_jstr(vm, "name"));
    cli_kv_add(kv, "id", cli_jstr(vm, "id"));
    if (cli_jstr(vm, "state_reason") && *cli_jstr(vm, "state_reason"))
        cli_kv_addf(kv, "state", "%s (%s)", cli_jstr(vm, "state"), cli_jstr(vm, "state_reason"));
    else
        cli_kv_add(kv, "state", cli_jstr(vm, "state"));
    const char *desc = cli_jstr(vm, "description");
    cli_kv_add(kv, "description", desc && *desc ? desc : "-");
    cli_kv_addf(kv, "vcpus", "%" JSON_INTEGER_FORMAT,
                json_integer_value(json_object_get(vm, "vcpus")));
    cli_fmt_mib(json_integer_value(json_object_get(vm, "memory_mib")), buf, sizeof(buf));
    cli_kv_add(kv, "memory", buf);
    cli_kv_add(kv, "machine", cli_jstr(vm, "machine"));
    const json_t *boot = json_object_get(vm, "boot");
    if (cli_jstr(boot, "kernel")) {
        cli_kv_add(kv, "kernel", cli_jstr(boot, "kernel"));
        cli_kv_add(kv, "initrd", cli_jstr(boot, "initrd"));
        cli_kv_add(kv, "cmdline", cli_jstr(boot, "cmdline"));
    } else {
        cli_kv_add(kv, "boot", "first disk");
    }
    kh_strv *lines = kh_strv_new();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(vm, "disks"), i, d) {
        kh_strv_addf(lines, "%s (%s%s)",
                     cli_jstr(d, "volume") ? cli_jstr(d, "volume")
                                       : cli_jstr(d, "path") ? cli_jstr(d, "path") : "?",
                     cli_jstr(d, "volume") ? "volume" : cli_jstr(d, "format") ? cli_jstr(d, "format") : "?",
                     json_is_true(json_object_get(d, "readonly")) ? ", readonly" : "");
    }
    char *joined = lines->n ? kh_strv_join(lines, "\n") : xstrdup("-");
    cli_kv_add(kv, "disks", joined);
    free(joined);
    kh_strv_free(lines);
    const json_t *serial = json_object_get(vm, "serial");
    cli_kv_add(kv, "serial", serial ? (json_is_true(serial) ? "yes" : "no") : NULL);
    cli_kv_add(kv, "graphics", cli_jstr(vm, "graphics"));
    json_t *pid = json_object_get(vm, "pid");
    if (json_is_integer(pid))
        cli_kv_addf(kv, "pid", "%" JSON_INTEGER_FORMAT, json_integer_value(pid));
    else
        cli_kv_add(kv, "pid", NULL);
    double up = vm_uptime(vm);
    cli_kv_add(kv, "accelerator", up >= 0 ? cli_jstr(vm, "accelerator") : NULL);
    if (up >= 0) {
        cli_fmt_duration(up, buf, sizeof(buf));
        cli_kv_add(kv, "uptime", buf);
    }
    cli_kv_add(kv, "created", cli_jstr(vm, "created_at"));
    cli_kv_add(kv, "updated", cli_jstr(vm, "updated_at"));
    cli_kv_add(kv, "started", cli_jstr(vm, "started_at"));
    /* Fields newer than this client, as they are. */
    cli_kv_add_json(kv, NULL, vm, known);
}

static void vm_human(const json_t *vm)
{
    cli_kv *kv = cli_kv_new();
    vm_kv(kv, vm);
    print_kv(kv);
    cli_kv_free(kv);
}

int cli_do_vm_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = cli_api_path("vms", a->pos, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, vm_human, err);
    free(path);
    return rc;
}

int cli_do_vm_edit(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    bool boot_opts = cli_arg(a, "kernel") || cli_arg(a, "initrd") || cli_arg(a, "cmdline");
    if (cli_flag(a, "no-kernel") && boot_opts) {
        cli_usage_error(ctx, a->cmd, err, "--no-kernel excludes --kernel, --initrd and --cmdline");
        return -1;
    }
    if (cli_flag(a, "no-disks") && cli_arg_all(a, "disk")) {
        cli_usage_error(ctx, a->cmd, err, "--no-disks excludes --disk");
        return -1;
    }
    if (cli_flag(a, "no-nics") && cli_arg_all(a, "nic")) {
        cli_usage_error(ctx, a->cmd, err, "--no-nics excludes --nic");
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *cwd = current_dir(err);
    if (!cwd)
        return -1;
    char *path = cli_api_path("vms", a->pos, NULL);
    json_t *patch = json_object(), *vm = NULL, *cur = NULL;
    int rc = -1;
    if (spec_common(a, cwd, patch, err) < 0) {
        mark_usage(ctx, a);
        goto out;
    }
    if (cli_flag(a, "no-disks"))
        json_object_set_new(patch, "disks", json_array());
    if (cli_flag(a, "no-nics"))
        json_object_set_new(patch, "nics", json_array());
    if (cli_flag(a, "no-kernel"))
        json_object_set_new(patch, "boot", json_object());
    if (boot_opts) {
        /* boot is one field: send it whole, the current one with the changes. */
        if (cli_client_json(c, "GET", path, NULL, &cur, NULL, err) < 0)
            goto out;
        json_t *boot = json_object_get(cur, "boot");
        boot = json_is_object(boot) ? json_deep_copy(boot) : json_object();
        json_object_set_new(patch, "boot", boot);
        if (boot_apply(a, cwd, boot, err) < 0) {
            mark_usage(ctx, a);
            goto out;
        }
    }
    if (json_object_size(patch) == 0) {
        cli_usage_error(ctx, a->cmd, err, "nothing to change: give at least one option");
        goto out;
    }
    if (cli_client_json(c, "PATCH", path, patch, &vm, NULL, err) < 0)
        goto out;
    if (ctx->json)
        cli_print_json(stdout, vm);
    else
        printf("vm %s updated\n", a->pos);
    rc = 0;
out:
    free(cwd);
    free(path);
    json_decref(patch);
    json_decref(vm);
    json_decref(cur);
    return rc;
}

/* ---- tasks ---- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    interrupted = 1;
}

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
        return ws.ws_col;
    return 80;
}

static void draw_progress(const json_t *task)
{
    char line[512];
    cli_fmt_progress((int)json_integer_value(json_object_get(task, "progress")),
                     cli_jstr(task, "message"), terminal_width() - 1, line, sizeof(line));
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
}

/* Report a finished task: the result on stdout (unless quiet), or its error. */
static int task_outcome(cli_ctx *ctx, const json_t *task, bool quiet, kh_err *err)
{
    const char *state = cli_jstr(task, "state");
    if (state && strcmp(state, "failed") == 0) {
        const json_t *e = json_object_get(task, "error");
        const char *code = cli_jstr(e, "code");
        const char *msg = cli_jstr(e, "message");
        kh_err_set(err, code ? kh_code_from_name(code) : KH_E_INTERNAL, "%s",
                   msg ? msg : "the task failed without a message");
        return -1;
    }
    if (quiet)
        return 0;
    if (ctx->json) {
        cli_print_json(stdout, task);
        return 0;
    }
    const json_t *vm = json_object_get(task, "result");
    const char *name = cli_jstr(vm, "name") ? cli_jstr(vm, "name") : cli_jstr(task, "vm");
    if (cli_jstr(vm, "state"))
        printf("vm %s is %s\n", name ? name : "?", cli_jstr(vm, "state"));
    else
        printf("%s %s: %s\n", cli_jstr(task, "kind") ? cli_jstr(task, "kind") : "task",
               name ? name : "", state ? state : "done");
    return 0;
}

/* Poll a running task until it ends; takes task (a reference). */
static int task_wait(cli_ctx *ctx, cli_client *c, json_t *task, bool quiet, kh_err *err)
{
    const char *id0 = cli_jstr(task, "id");
    if (!id0) {
        json_decref(task);
        kh_err_set(err, KH_E_INTERNAL, "kvmhostd answered 202 without a task id");
        return -1;
    }
    char *id = xstrdup(id0);
    char *esc = cli_path_escape(id);
    char *path = xasprintf("/api/v1/tasks/%s", esc);
    free(esc);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = -1;
    bool drawn = false;
    for (;;) {
        const char *state = cli_jstr(task, "state");
        if (state && strcmp(state, "running") != 0)
            break;
        if (ctx->stderr_tty) {
            draw_progress(task);
            drawn = true;
        }
        struct timespec ts = { 0, POLL_INTERVAL_MS * 1000000L };
        nanosleep(&ts, NULL);
        if (interrupted)
            break;
        json_t *next = NULL;
        if (cli_client_json(c, "GET", path, NULL, &next, NULL, err) < 0)
            goto out;
        json_decref(task);
        task = next;
    }
    if (drawn) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    if (interrupted) {
        fprintf(stderr, "kvmhost: interrupted; task %s goes on (kvmhost task show %s)\n", id,
                id);
        rc = 130;
        goto out;
    }
    rc = task_outcome(ctx, task, quiet, err);
out:
    if (drawn && rc == -1 && !interrupted)
        fprintf(stderr, "\r\033[K");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    json_decref(task);
    free(path);
    free(id);
    return rc;
}

/* POST an action; wait for its task unless no_wait. quiet: no output on
 * success (delete --force). */
static int run_action(cli_ctx *ctx, cli_client *c, const char *name, const char *verb,
                      json_t *body, bool no_wait, bool quiet, kh_err *err)
{
    json_object_set_new(body, "wait", json_integer(no_wait ? 0 : ACTION_WAIT_SECONDS));
    char *suffix = xasprintf("/%s", verb);
    char *path = cli_api_path("vms", name, suffix);
    free(suffix);
    json_t *task = NULL;
    int status = cli_client_json(c, "POST", path, body, &task, NULL, err);
    free(path);
    if (status < 0)
        return -1;
    const char *state = cli_jstr(task, "state");
    bool running = status == 202 || (state && strcmp(state, "running") == 0);
    if (running && no_wait) {
        if (ctx->json)
            cli_print_json(stdout, task);
        else
            printf("%s\n", cli_jstr(task, "id") ? cli_jstr(task, "id") : "");
        json_decref(task);
        return 0;
    }
    if (running)
        return task_wait(ctx, c, task, quiet, err);
    int rc = task_outcome(ctx, task, quiet, err);
    json_decref(task);
    return rc;
}

int cli_do_vm_action(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_object();
    const char *verb = a->cmd->verb;
    if (strcmp(verb, "stop") == 0 && cli_arg(a, "timeout")) {
        int64_t t;
        if (cli_parse_int(cli_arg(a, "timeout"), 0, INT32_MAX, "--timeout", &t, err) < 0) {
            mark_usage(ctx, a);
            json_decref(body);
            return -1;
        }
        json_object_set_new(body, "timeout", json_integer(t));
    }
    cli_client *c = cli_ctx_client(ctx, err);
    int rc = c ? run_action(ctx, c, a->pos, verb, body, cli_flag(a, "no-wait"), false, err) : -1;
    json_decref(body);
    return rc;
}

int cli_do_vm_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    if (cli_flag(a, "force")) {
        json_t *body = json_object();
        kh_err kerr = KH_ERR_INIT;
        int rc = run_action(ctx, c, a->pos, "kill", body, false, true, &kerr);
        json_decref(body);
        /* conflict: nothing to kill (already stopped); the delete decides. */
        if (rc != 0 && !(rc < 0 && kerr.code == KH_E_CONFLICT)) {
            if (rc < 0)
                kh_err_copy(err, &kerr);
            return rc;
        }
    }
    return cli_delete(ctx, cli_api_path("vms", a->pos, NULL), "vm", a->pos, err);
}

/* ---- console and log ---- */

int cli_do_vm_console(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_console_opts o = { .vm = a->pos };
    if (cli_arg(a, "timeout") &&
        cli_parse_seconds(cli_arg(a, "timeout"), "--timeout", &o.timeout, err) < 0) {
        mark_usage(ctx, a);
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    fflush(stdout);
    return cli_console_run(c, &o, err);
}

int cli_do_vm_log(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_console_opts o = { .vm = a->pos, .read_only = true };
    int64_t tail = -1;
    if (cli_arg(a, "tail") &&
        cli_parse_int(cli_arg(a, "tail"), 0, INT64_MAX, "--tail", &tail, err) < 0) {
        mark_usage(ctx, a);
        return -1;
    }
    if (cli_arg(a, "timeout")) {
        if (!cli_flag(a, "follow")) {
            cli_usage_error(ctx, a->cmd, err, "--timeout goes with --follow");
            return -1;
        }
        if (cli_parse_seconds(cli_arg(a, "timeout"), "--timeout", &o.timeout, err) < 0) {
            mark_usage(ctx, a);
            return -1;
        }
    }
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    char *suffix = tail >= 0 ? xasprintf("/console/log?tail=%lld", (long long)tail)
                             : xstrdup("/console/log");
    char *path = cli_api_path("vms", a->pos, suffix);
    free(suffix);
    char *text = NULL;
    size_t len = 0;
    int rc = cli_client_get_raw(c, path, &text, &len, err);
    free(path);
    if (rc < 0)
        return -1;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    free(text);
    if (!cli_flag(a, "follow"))
        return 0;
    return cli_console_run(c, &o, err);
}

/* ---- host, tasks ---- */

int cli_do_host_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *host = NULL;
    if (!c || cli_client_json(c, "GET", "/api/v1/host", NULL, &host, NULL, err) < 0)
        return -1;
    if (ctx->json) {
        cli_print_json(stdout, host);
    } else {
        cli_kv *kv = cli_kv_new();
        cli_kv_add_json(kv, NULL, host, NULL);
        print_kv(kv);
        cli_kv_free(kv);
    }
    json_decref(host);
    return 0;
}

int cli_do_task_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
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
        print_kv(kv);
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
    print_table(t);
    cli_table_free(t);
}

int cli_do_task_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

int cli_do_events(cli_ctx *ctx, const cli_args *a, kh_err *err)
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
        mark_usage(ctx, a);
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

int cli_do_version(cli_ctx *ctx, const cli_args *a, kh_err *err)
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
