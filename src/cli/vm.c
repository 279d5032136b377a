/* vm.c - `kvmhost vm create|list|show|edit|start|stop|...|delete|console|log`: the
 * vm rows of the command table and their handlers (vm top and vm limit are in
 * obs.c, the console relay in console.c, vm nic in network.c). */
#include "cli/nouns.h"

#include <errno.h>
#include <signal.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/console.h"
#include "cli/output.h"
#include "cli/render.h"
#include "kh_config.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"

/* The server waits this long for an action before answering 202; then we
 * poll. Short, so that the progress bar appears soon. */
#define ACTION_WAIT_SECONDS 2
#define POLL_INTERVAL_MS 200

/* ---- small helpers ---- */

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
    if ((v = cli_arg(a, "cpu")) && set_user_string(spec, "cpu_model", v, "--cpu", err) < 0)
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

/* The text of a file named on the command line (relative to cwd), at most
 * max bytes; NULL with err. */
static char *option_file(const char *path, const char *cwd, size_t max, const char *opt,
                         kh_err *err)
{
    char *full = path[0] == '/' ? xstrdup(path) : xasprintf("%s/%s", cwd, path);
    size_t len = 0;
    char *text = kh_fs_read(full, max, &len, err);
    free(full);
    if (text && strlen(text) != len) {
        kh_err_set(err, KH_E_INVALID, "%s %s: not a text file", opt, path);
        free(text);
        return NULL;
    }
    if (!text)
        kh_err_prefix(err, "%s", opt);
    return text;
}

/* The guest OS options of create: --firmware, --secure-boot, --tpm and the
 * cloud-init ones (--ssh-key, --hostname, --user-data). */
static int guest_opts(const cli_args *a, const char *cwd, json_t *spec, kh_err *err)
{
    const char *v;
    if ((v = cli_arg(a, "firmware")) && set_user_string(spec, "firmware", v, "--firmware", err) < 0)
        return -1;
    if (cli_flag(a, "secure-boot")) {
        json_object_set_new(spec, "secure_boot", json_true());
        if (!cli_arg(a, "firmware")) /* Secure Boot is UEFI's */
            json_object_set_new(spec, "firmware", json_string("uefi"));
    }
    if (cli_flag(a, "tpm"))
        json_object_set_new(spec, "tpm", json_true());
    const kh_strv *keys = cli_arg_all(a, "ssh-key");
    if (!keys && !cli_arg(a, "hostname") && !cli_arg(a, "user-data"))
        return 0;
    json_t *ci = json_object();
    json_object_set_new(spec, "cloud_init", ci);
    if ((v = cli_arg(a, "hostname")) && set_user_string(ci, "hostname", v, "--hostname", err) < 0)
        return -1;
    if ((v = cli_arg(a, "user-data"))) {
        char *text = option_file(v, cwd, 64 * 1024, "--user-data", err);
        if (!text)
            return -1;
        json_object_set_new(ci, "user_data", json_string(text));
        free(text);
    }
    if (keys) {
        json_t *arr = json_array();
        json_object_set_new(ci, "ssh_authorized_keys", arr);
        for (size_t i = 0; i < keys->n; i++) {
            char *text = option_file(keys->v[i], cwd, 16 * 1024, "--ssh-key", err);
            if (!text)
                return -1;
            /* one key per non-empty line (an authorized_keys file works too) */
            char *save = NULL;
            for (char *l = strtok_r(text, "\r\n", &save); l; l = strtok_r(NULL, "\r\n", &save))
                if (*l && *l != '#')
                    json_array_append_new(arr, json_string(l));
            free(text);
        }
    }
    return 0;
}

/* ---- vm create / list / show / edit / delete ---- */

static int cli_do_vm_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
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
        spec_common(a, cwd, spec, err) < 0 || guest_opts(a, cwd, spec, err) < 0) {
        cli_mark_usage(ctx, a);
        goto out;
    }
    if (cli_arg(a, "kernel") || cli_arg(a, "initrd") || cli_arg(a, "cmdline")) {
        json_t *boot = json_object();
        json_object_set_new(spec, "boot", boot);
        if (boot_apply(a, cwd, boot, err) < 0) {
            cli_mark_usage(ctx, a);
            goto out;
        }
    }
    if (cli_arg(a, "from-template")) {
        /* kvmhostd refuses what a clone cannot take (--kernel, --disk, ...) */
        if (set_user_string(spec, "from_template", cli_arg(a, "from-template"),
                            "--from-template", err) < 0) {
            cli_mark_usage(ctx, a);
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
    cli_print_free(cli_render_vm_list(resp, kh_wall_time()));
}

static int cli_do_vm_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *host = cli_arg(a, "host");
    if (!host)
        return cli_show(ctx, "GET", "/api/v1/vms", NULL, vms_human, err);
    char *enc = curl_easy_escape(NULL, host, 0);
    char *path = xasprintf("/api/v1/vms?host=%s", enc ? enc : "");
    curl_free(enc);
    int rc = cli_show(ctx, "GET", path, NULL, vms_human, err);
    free(path);
    return rc;
}

static void vm_human(const json_t *vm)
{
    cli_print_free(cli_render_vm(vm, kh_wall_time()));
}

static int cli_do_vm_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show_one(ctx, "vms", a->pos, vm_human, err);
}

static void guest_human(const json_t *g)
{
    const json_t *os = json_object_get(g, "os");
    printf("os:       %s\n", cli_jstr(os, "name") ? cli_jstr(os, "name") : "?");
    printf("kernel:   %s\n", cli_jstr(os, "kernel") ? cli_jstr(os, "kernel") : "?");
    printf("hostname: %s\n", cli_jstr(g, "hostname") ? cli_jstr(g, "hostname") : "?");
    size_t i, j;
    json_t *nic, *a;
    json_array_foreach(json_object_get(g, "interfaces"), i, nic) {
        printf("%-9s %s", cli_jstr(nic, "name") ? cli_jstr(nic, "name") : "?",
               cli_jstr(nic, "mac") ? cli_jstr(nic, "mac") : "");
        json_array_foreach(json_object_get(nic, "addresses"), j, a)
            printf(" %s/%lld", cli_jstr(a, "ip") ? cli_jstr(a, "ip") : "?",
                   (long long)json_integer_value(json_object_get(a, "prefix")));
        printf("\n");
    }
}

static int cli_do_vm_guest(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = cli_api_path("vms", a->pos, "/guest");
    int rc = cli_show(ctx, "GET", path, NULL, guest_human, err);
    free(path);
    return rc;
}

static int cli_do_vm_edit(cli_ctx *ctx, const cli_args *a, kh_err *err)
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
        cli_mark_usage(ctx, a);
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
            cli_mark_usage(ctx, a);
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

/* kvmhostd's message of a stop task that ended in a kill ("forced: did not
 * power off within 60 s and was killed"); `vm stop` exits with this status
 * then (listed in `kvmhost --help`, EXIT STATUS). */
#define STOP_FORCED_PREFIX "forced: "
#define CLI_EXIT_STOP_FORCED 9

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
    /* A stop that ended in a kill: the VM is stopped, but not the way asked. */
    const char *kind = cli_jstr(task, "kind"), *tmsg = cli_jstr(task, "message");
    bool forced = kind && strcmp(kind, "vm.stop") == 0 && tmsg &&
                  strncmp(tmsg, STOP_FORCED_PREFIX, strlen(STOP_FORCED_PREFIX)) == 0;
    if (quiet)
        return forced ? CLI_EXIT_STOP_FORCED : 0;
    if (ctx->json) {
        cli_print_json(stdout, task);
        return forced ? CLI_EXIT_STOP_FORCED : 0;
    }
    const json_t *vm = json_object_get(task, "result");
    if (forced) {
        const char *fname = cli_jstr(vm, "name") ? cli_jstr(vm, "name") : cli_jstr(task, "vm");
        fprintf(stderr, "vm %s %s\n", fname ? fname : "?", tmsg + strlen(STOP_FORCED_PREFIX));
        return CLI_EXIT_STOP_FORCED;
    }
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

static int cli_do_vm_action(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_object();
    const char *verb = a->cmd->verb;
    if (strcmp(verb, "stop") == 0 && cli_arg(a, "timeout")) {
        int64_t t;
        if (cli_parse_int(cli_arg(a, "timeout"), 0, INT32_MAX, "--timeout", &t, err) < 0) {
            cli_mark_usage(ctx, a);
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

static int cli_do_vm_migrate(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_object();
    if (set_user_string(body, "target", a->pos2, "HOST", err) < 0) {
        json_decref(body);
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    int rc = c ? run_action(ctx, c, a->pos, "migrate", body, cli_flag(a, "no-wait"), false, err)
               : -1;
    json_decref(body);
    return rc;
}

static int cli_do_vm_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
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
    if (!cli_flag(a, "with-volumes"))
        return cli_delete(ctx, cli_api_path("vms", a->pos, NULL), "vm", a->pos, err);
    /* the volumes its disks refer to, to say which went */
    char *path = cli_api_path("vms", a->pos, NULL);
    json_t *vm = NULL;
    int rc = cli_client_json(c, "GET", path, NULL, &vm, NULL, err);
    char *del = xasprintf("%s?volumes=true", path);
    free(path);
    if (rc >= 0)
        rc = cli_delete(ctx, del, "vm", a->pos, err);
    else
        free(del);
    size_t i;
    json_t *d;
    json_array_foreach(rc == 0 && !ctx->json ? json_object_get(vm, "disks") : NULL, i, d) {
        if (cli_jstr(d, "volume"))
            printf("volume %s deleted\n", cli_jstr(d, "volume"));
    }
    json_decref(vm);
    return rc < 0 ? -1 : 0;
}

/* ---- console and log ---- */

static int cli_do_vm_console(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_console_opts o = { .vm = a->pos };
    if (cli_arg(a, "timeout") &&
        cli_parse_seconds(cli_arg(a, "timeout"), "--timeout", &o.timeout, err) < 0) {
        cli_mark_usage(ctx, a);
        return -1;
    }
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    fflush(stdout);
    return cli_console_run(c, &o, err);
}

static int cli_do_vm_log(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_console_opts o = { .vm = a->pos, .read_only = true };
    int64_t tail = -1;
    if (cli_arg(a, "tail") &&
        cli_parse_int(cli_arg(a, "tail"), 0, INT64_MAX, "--tail", &tail, err) < 0) {
        cli_mark_usage(ctx, a);
        return -1;
    }
    if (cli_arg(a, "timeout")) {
        if (!cli_flag(a, "follow")) {
            cli_usage_error(ctx, a->cmd, err, "--timeout goes with --follow");
            return -1;
        }
        if (cli_parse_seconds(cli_arg(a, "timeout"), "--timeout", &o.timeout, err) < 0) {
            cli_mark_usage(ctx, a);
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

/* ---- the command rows (assembled in commands.c) ---- */

#define DISKS_HELP                                                                          \
    "DISKS: a --disk SPEC is a comma-separated list of items: the image path, "             \
    "format=raw or format=qcow2 (required: formats are never guessed), and readonly "       \
    "(or readonly=on|off). The path comes first, taken literally, '=' included; it can "    \
    "also be given anywhere as path=PATH. A comma inside the path is written as two "       \
    "commas (\",,\", as in QEMU). A path that itself begins with \"path=\", \"format=\" or " \
    "\"readonly\" needs the path= form or a leading \"./\". Relative paths are made "       \
    "absolute against the current directory before they are sent; \".\" and \"..\" are "   \
    "resolved by name, without following symlinks. kvmhostd opens the files, so they must " \
    "exist on its host. A volume of a storage pool is given as volume=POOL/NAME instead of " \
    "a path and format (see 'kvmhost volume')."

static const cli_opt opts_vm_create[] = {
    { "vcpus", "N", CLI_OPT_ARG,
      "Number of virtual CPUs, 1 to 255 (default 1; with --from-template, the template's)." },
    { "max-vcpus", "N", CLI_OPT_ARG,
      "Most vCPUs the VM may have while it runs (vCPU hot-plug, q35 only; default: --vcpus)." },
    { "hugepages", "on|off", CLI_OPT_ARG,
      "Back guest RAM with 2 MiB huge pages (taken at start; --memory even)." },
    { "memory", "MIB", CLI_OPT_ARG,
      "Guest memory in MiB, 16 to 16777216 (default 512; with --from-template, the "
      "template's). A suffix M or G (512M, 2G) is accepted." },
    { "from-template", "TPL", CLI_OPT_ARG,
      "Clone template TPL: its whole spec (boot, machine, vCPUs, memory, limits, serial, "
      "graphics, description, NICs on the same networks and security groups with NEW MACs "
      "and no static ip) and for each of its volumes a linked clone (a qcow2 overlay, made "
      "in O(1)). --vcpus, --max-vcpus, --memory, --hugepages, --nic (replaces all its "
      "NICs), --serial, --graphics and --description override the template's; --disk, "
      "--kernel, --machine are refused." },
    { "full", NULL, 0, "With --from-template: full copies of the volumes instead (a task)." },
    { "machine", "TYPE", CLI_OPT_ARG,
      "Machine type: q35 (the default, a PC with PCIe) or microvm (minimal, virtio-mmio, "
      "needs --kernel)." },
    { "cpu", "MODEL", CLI_OPT_ARG,
      "The guest's CPU, as QEMU's -cpu: a model and +/- features (host, Nehalem, "
      "Skylake-Client-v4, qemu64,+aes,...). Default: the host's under KVM, x86-64-v2-AES under "
      "TCG. A named model lets the VM move live between hosts of different CPUs." },
    { "kernel", "PATH", CLI_OPT_ARG,
      "Boot this kernel image directly. Without it the VM boots from its first disk." },
    { "initrd", "PATH", CLI_OPT_ARG, "Initial ramdisk loaded with --kernel." },
    { "cmdline", "STR", CLI_OPT_ARG,
      "Kernel command line for --kernel, e.g. \"console=ttyS0 root=/dev/vda\"." },
    { "disk", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Attach a disk image; disks keep the order given. SPEC is "
      "PATH,format=raw|qcow2[,readonly]; see DISKS above." },
    { "nic", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Add a virtio NIC on a network: NETWORK[,mac=MAC][,ip=IP][,link=down]"
      "[,security_groups=G1+G2] (ip: a static DHCP reservation; mac: generated when absent; "
      "security_groups: up to 8 groups joined by '+', which no group name contains, whose "
      "rules filter the NIC's inbound IPv4 and IPv6 traffic). At most 8." },
    { "serial", "on|off", CLI_OPT_ARG, "Serial console (default on)." },
    { "graphics", "TYPE", CLI_OPT_ARG, "none (the default) or vnc." },
    { "description", "TEXT", CLI_OPT_ARG, "Free text for people, one line." },
    { "firmware", "bios|uefi", CLI_OPT_ARG,
      "Firmware of a q35 VM booting from its disk: bios (SeaBIOS, the default) or uefi "
      "(OVMF, chosen from QEMU's firmware descriptors; the VM keeps its own UEFI variables)." },
    { "secure-boot", NULL, 0,
      "UEFI Secure Boot with Microsoft's keys enrolled (implies --firmware uefi): only "
      "signed boot loaders and kernels start (shim, Debian's grub and kernel pass)." },
    { "tpm", NULL, 0, "A TPM 2.0 (swtpm, one per VM; its state is kept with the VM)." },
    { "ssh-key", "FILE", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "cloud-init: authorize the OpenSSH public keys of FILE (one per line) for the image's "
      "default user. The VM gets a cidata CD-ROM (NoCloud) built by kvmhostd." },
    { "hostname", "NAME", CLI_OPT_ARG,
      "cloud-init: the guest's hostname (default: the VM name)." },
    { "user-data", "FILE", CLI_OPT_ARG,
      "cloud-init: FILE is the user-data as is (#cloud-config, a script...); excludes "
      "--ssh-key and --hostname (put them in the file)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_edit[] = {
    { "vcpus", "N", CLI_OPT_ARG,
      "New number of virtual CPUs. On a running q35 VM (given alone) the vCPUs are "
      "hot-plugged or unplugged at once, up to --max-vcpus; unplugging needs the guest's "
      "consent and fails with exit status 8 if it does not release them within 20 s." },
    { "max-vcpus", "N", CLI_OPT_ARG,
      "Most vCPUs the VM may have while it runs (q35; takes effect at the next start)." },
    { "hugepages", "on|off", CLI_OPT_ARG,
      "Back guest RAM with 2 MiB huge pages (from the next start)." },
    { "memory", "MIB", CLI_OPT_ARG, "New guest memory in MiB (suffix M or G accepted)." },
    { "machine", "TYPE", CLI_OPT_ARG, "q35 or microvm." },
    { "cpu", "MODEL", CLI_OPT_ARG, "The guest's CPU (QEMU's -cpu; the VM stopped)." },
    { "kernel", "PATH", CLI_OPT_ARG, "Boot this kernel directly (keeps initrd and cmdline)." },
    { "initrd", "PATH", CLI_OPT_ARG, "Initial ramdisk for the kernel." },
    { "cmdline", "STR", CLI_OPT_ARG, "Kernel command line." },
    { "no-kernel", NULL, 0, "Boot from the first disk again (drops kernel, initrd, cmdline)." },
    { "disk", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Replace the whole disk list with these disks, in order (same SPEC as vm create)." },
    { "no-disks", NULL, 0, "Remove every disk." },
    { "nic", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Replace the whole NIC list with these NICs (same SPEC as vm create)." },
    { "no-nics", NULL, 0, "Remove every NIC." },
    { "serial", "on|off", CLI_OPT_ARG, "Serial console on or off." },
    { "graphics", "TYPE", CLI_OPT_ARG, "none or vnc." },
    { "description", "TEXT", CLI_OPT_ARG,
      "New description (a running VM accepts it too)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_list[] = {
    { "host", "NAME", CLI_OPT_ARG, "Only the VMs on this host of the cluster." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_top[] = {
    { "once", NULL, 0, "Print one frame and exit (also when stdout is not a terminal)." },
    { "interval", "SECONDS", CLI_OPT_ARG, "Refresh period (default 2)." },
    { "sort", "KEY", CLI_OPT_ARG, "cpu (default), mem (CGROUP-MEM) or name." },
    { "all", NULL, 0, "Also list VMs that are not running (with their GUEST-RAM only)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_limit[] = {
    { "cpu-weight", "N", CLI_OPT_ARG, "Relative CPU share, 1 to 10000 (100 is the default)." },
    { "cpu-max", "PERCENT", CLI_OPT_ARG,
      "Hard CPU cap in percent of one host CPU (at most 100 per vCPU)." },
    { "memory-max", "MIB", CLI_OPT_ARG,
      "Hard memory limit of the VM's QEMU (suffix M or G); at least the guest's memory." },
    { "balloon", "MIB", CLI_OPT_ARG,
      "Balloon target: the memory the guest keeps (suffix M or G; q35 only)." },
    { "cpu-affinity", "LIST", CLI_OPT_ARG,
      "Host CPUs the vCPU threads may run on, comma-separated (\"0,2,3\")." },
    { "emulator-cpus", "LIST", CLI_OPT_ARG,
      "Host CPUs QEMU's other threads (main loop, workers) may run on." },
    { "iothread-cpus", "LIST", CLI_OPT_ARG, "Host CPUs the disks' iothreads may run on." },
    { "numa-nodes", "LIST", CLI_OPT_ARG,
      "Host NUMA nodes the guest's memory may come from (cgroup cpuset.mems)." },
    { "disk", "INDEX", CLI_OPT_ARG,
      "The disk the --disk-* options apply to: 0 (the default) is the first, as numbered "
      "by 'vm show' and 'disk detach'. The output names the disk (its volume or path)." },
    { "disk-iops", "N", CLI_OPT_ARG, "Total I/O operations per second." },
    { "disk-read-iops", "N", CLI_OPT_ARG, "Read operations per second." },
    { "disk-write-iops", "N", CLI_OPT_ARG, "Write operations per second." },
    { "disk-bps", "BYTES", CLI_OPT_ARG, "Total bytes per second." },
    { "disk-read-bps", "BYTES", CLI_OPT_ARG, "Read bytes per second." },
    { "disk-write-bps", "BYTES", CLI_OPT_ARG, "Written bytes per second." },
    { "disk-iops-burst", "N", CLI_OPT_ARG, "Burst for --disk-iops." },
    { "disk-bps-burst", "BYTES", CLI_OPT_ARG, "Burst for --disk-bps." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_wait_only[] = {
    OPT_NO_WAIT,
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_stop[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "How long the guest gets to power down before QEMU is killed: default 60, 0 kills "
      "at once." },
    OPT_NO_WAIT,
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_delete[] = {
    { "force", NULL, 0,
      "Kill the VM first if it is not stopped (no ACPI power-down, no waiting for the "
      "guest)." },
    { "with-volumes", NULL, 0,
      "Also delete the pool volumes its disks refer to (for a clone: the volumes made for "
      "it). All or none: refused (exit status 5, nothing deleted) when another VM uses one "
      "of them or clones are based on one (a template's base). Disks given by path are "
      "never deleted." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_console[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "Leave after this many seconds (decimals allowed) and exit 0. For scripts." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_log[] = {
    { "tail", "BYTES", CLI_OPT_ARG, "Only the last BYTES bytes of the saved output." },
    { "follow", NULL, 0,
      "After the saved output, keep printing new output as it comes (read-only console) "
      "until the VM's console closes, Ctrl-C, or --timeout." },
    { "timeout", "SECONDS", CLI_OPT_ARG, "With --follow: stop after this many seconds, exit 0." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_vm_cmds[] = {
    {
        "vm", "create", "NAME", "define a new virtual machine",
        "Define a VM called NAME (letters, digits, '-', '_', '.'; at most 64; not starting "
        "with '.' or '-'). It is created stopped; start it with 'kvmhost vm start NAME'. "
        "kvmhostd checks every value and answers with exit status 2 on bad input and 5 when "
        "the name is taken.\n\n" DISKS_HELP,
        opts_vm_create,
        "# a VM booting its own kernel, with a qcow2 root disk\n"
        "$ kvmhost vm create web1 --vcpus 2 --memory 1G --kernel ./vmlinuz \\\n"
        "      --initrd ./initrd.img --cmdline \"console=ttyS0 root=/dev/vda\" \\\n"
        "      --disk web1.qcow2,format=qcow2\n"
        "# a raw data disk attached read-only; a path holding a comma\n"
        "$ kvmhost vm create db --vcpus 1 --memory 512 --disk /srv/db,format=raw \\\n"
        "      --disk /srv/a,,b.img,format=raw,readonly\n"
        "# a cloud image with UEFI, Secure Boot, a TPM and an SSH key\n"
        "$ kvmhost vm create deb --memory 1G --disk volume=default/deb12 --nic lan \\\n"
        "      --ssh-key ~/.ssh/id_ed25519.pub --hostname deb --secure-boot --tpm",
        cli_do_vm_create,
    },
    {
        "vm", "list", NULL, "list the virtual machines",
        "One line per VM: its name, state, virtual CPUs, memory, the accelerator of its "
        "QEMU (kvm or tcg) and QEMU's pid while it runs, and how long it has been up. In a "
        "cluster every host's VMs, with a HOST column; commands on a VM of another host "
        "are sent on to that host by kvmhostd.",
        opts_vm_list,
        "$ kvmhost vm list\n"
        "$ kvmhost vm list --host h2\n"
        "$ kvmhost --json vm list",
        cli_do_vm_list,
    },
    {
        "vm", "show", "NAME", "show one virtual machine",
        "Everything kvmhostd knows about the VM: its spec (CPUs, memory, boot, disks, "
        "devices) and its runtime state, with the reason for the state (\"crashed: ...\", "
        "\"guest shut down\", ...).",
        NULL,
        "$ kvmhost vm show web1",
        cli_do_vm_show,
    },
    {
        "vm", "guest", "NAME", "ask a running VM's guest agent",
        "What qemu-guest-agent in the guest says: its OS and kernel, hostname, and the "
        "addresses of its interfaces. Fails (exit status 5, conflict) when the VM is not "
        "running or the agent does not answer within 5 s.",
        NULL,
        "$ kvmhost vm guest web1",
        cli_do_vm_guest,
    },
    {
        "vm", "edit", "NAME", "change the spec of a virtual machine",
        "Change the given fields and leave the others as they are. A stopped VM accepts every "
        "field. A running or paused VM accepts two, applied at once: --description, and "
        "--vcpus given alone (q35: vCPU hot-plug or unplug, up to --max-vcpus; with any other "
        "option it fails with exit status 5). Every other field fails with exit status 5 "
        "until the VM is stopped. Other live changes have commands of their own: 'vm limit' "
        "(CPU, memory, balloon, pinning, disk I/O), 'vm nic add|remove|link' and 'disk "
        "attach|detach'. --kernel, --initrd and --cmdline change only that part of the boot settings. --disk "
        "replaces the whole disk list, in the order given; the SPEC is the one of vm "
        "create.\n\n" DISKS_HELP,
        opts_vm_edit,
        "$ kvmhost vm edit web1 --vcpus 4 --memory 4G\n"
        "$ kvmhost vm edit web1 --description \"front end, team A\"\n"
        "# on a running q35 VM created with --max-vcpus 4: hot-plug to 3 vCPUs\n"
        "$ kvmhost vm edit web1 --vcpus 3\n"
        "$ kvmhost vm edit web1 --disk web1.qcow2,format=qcow2 \\\n"
        "      --disk data.img,format=raw",
        cli_do_vm_edit,
    },
    {
        "vm", "top", NULL, "live CPU, memory and disk use of the VMs",
        "A virt-top-like view from the daemon's samples (taken every 10 s by default): the "
        "host's CPU, memory and load, then one line per running VM. CPU% is its use in "
        "percent of one host CPU. GUEST-RAM is the memory the guest was given (--memory), "
        "shown as TARGET/CONFIGURED when a balloon target is set ('vm limit --balloon'). "
        "QEMU-RSS is the resident memory of the VM's QEMU process: the guest RAM it has "
        "touched plus QEMU's own overhead (under TCG its translated-code cache too, so it "
        "can exceed GUEST-RAM). CGROUP-MEM is all the memory charged to "
        "the VM's cgroup (QEMU-RSS plus page cache and kernel memory; what --memory-max "
        "limits). Then the disk read and write rates in bytes and operations per second. "
        "Refreshes until Ctrl-C; --once (or --json, or a stdout that is not a terminal) "
        "prints one frame. --json output is the daemon's samples as they are.",
        opts_vm_top,
        "$ kvmhost vm top\n"
        "$ kvmhost vm top --once --sort mem\n"
        "$ kvmhost --json vm top",
        cli_do_vm_top,
    },
    {
        "vm", "limit", "NAME", "show or change the limits of a VM",
        "Without options, show the VM's limits. With options, change them; a running VM "
        "takes them at once (CPU and memory through its cgroup, disk limits through QEMU's "
        "I/O throttling) and keeps them across restarts. The value \"none\" removes a "
        "limit. A memory limit under what QEMU already uses fails with exit status 5 and "
        "changes nothing.",
        opts_vm_limit,
        "$ kvmhost vm limit web1 --cpu-max 20 --memory-max 1G\n"
        "$ kvmhost vm limit web1 --disk 0 --disk-iops 100 --disk-bps 10485760\n"
        "$ kvmhost vm limit web1 --cpu-affinity 2,3\n"
        "$ kvmhost vm limit web1 --cpu-max none\n"
        "$ kvmhost vm limit web1",
        cli_do_vm_limit,
    },
    {
        "vm", "start", "NAME", "start a virtual machine",
        "Start QEMU for the VM and wait until it runs. " ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm start web1\n"
        "$ id=$(kvmhost vm start web1 --no-wait) && kvmhost task show \"$id\"",
        cli_do_vm_action,
    },
    {
        "vm", "migrate", "NAME HOST", "move a running VM to another host",
        "Live-migrate the running VM to HOST (a cluster member's name): the guest keeps "
        "running, paused only for the switch. Its disks must be on a pool at the same path on "
        "HOST (a shared pool; on one machine every directory is). The VM is gone from this "
        "host afterwards. A failure before the switch leaves it running here. " ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm migrate web1 h2",
        cli_do_vm_migrate,
    },
    {
        "vm", "stop", "NAME", "power a virtual machine down",
        "Ask the guest to power down (ACPI), again every 3 seconds (a guest early in boot "
        "misses the first request), and kill QEMU if it has not powered off within --timeout "
        "seconds. Then it prints \"vm NAME did not power off within N s and was killed\" on "
        "stderr and exits with status 9: the VM is stopped, but not cleanly. --timeout 0 "
        "kills at once and exits 0. " ACTION_TAIL,
        opts_vm_stop,
        "$ kvmhost vm stop web1\n"
        "$ kvmhost vm stop web1 --timeout 10",
        cli_do_vm_action,
    },
    {
        "vm", "kill", "NAME", "kill the QEMU of a virtual machine at once",
        "Kill QEMU without asking the guest: like pulling the power cord. " ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm kill web1",
        cli_do_vm_action,
    },
    {
        "vm", "reboot", "NAME", "reset a virtual machine",
        "Reset the VM (QEMU's system_reset): like the reset button, the guest is not asked. "
        ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm reboot web1",
        cli_do_vm_action,
    },
    {
        "vm", "pause", "NAME", "pause the virtual CPUs",
        "Stop running the VM's virtual CPUs; its memory and devices stay as they are. "
        ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm pause web1",
        cli_do_vm_action,
    },
    {
        "vm", "resume", "NAME", "resume the virtual CPUs of a paused VM",
        "Run the virtual CPUs of a paused VM again. " ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm resume web1",
        cli_do_vm_action,
    },
    {
        "vm", "delete", "NAME", "delete a stopped virtual machine",
        "Remove the VM's definition and the files kvmhostd keeps for it (logs, sockets). Disk "
        "images named with --disk are never deleted; its pool volumes stay unless "
        "--with-volumes. A VM that is not stopped is refused "
        "(exit status 5) unless --force, which kills it first. There is no confirmation "
        "prompt. With --json nothing is printed on success.",
        opts_vm_delete,
        "$ kvmhost vm delete web1\n"
        "$ kvmhost vm delete web1 --force\n"
        "$ kvmhost vm delete web1 --with-volumes",
        cli_do_vm_delete,
    },
    {
        "vm", "console", "NAME", "attach to the serial console",
        "Connect the terminal to the VM's serial console (a WebSocket of kvmhostd; several "
        "people may watch the same console). On a terminal, kvmhost prints \"Connected to "
        "NAME (escape character is ^])\" on stderr, puts the terminal in raw mode (every key, "
        "Ctrl-C included, goes to the guest) and restores it when it leaves; Ctrl-] detaches. "
        "When stdin is not a terminal (a pipe or a file), stdin is sent as is until its end, "
        "the guest's output keeps being copied to stdout, and kvmhost leaves when kvmhostd "
        "closes the console, on SIGINT or SIGTERM, or after --timeout; all of these exit 0. "
        "Over --url only http:// works (no TLS for the console).",
        opts_vm_console,
        "$ kvmhost vm console web1\n"
        "$ printf 'uname -a\\n' | kvmhost vm console web1 --timeout 3",
        cli_do_vm_console,
    },
    {
        "vm", "log", "NAME", "print the serial console output",
        "Print what the VM wrote on its serial console, as kvmhostd saved it (at most the last "
        "MiB). The output is the guest's bytes, also with --json. With --follow, kvmhost then "
        "watches the console (read-only) and prints new output as it comes; output written "
        "in the instant between the two may be missed or shown twice.",
        opts_vm_log,
        "$ kvmhost vm log web1 --tail 4096\n"
        "$ kvmhost vm log web1 --follow",
        cli_do_vm_log,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
