/* storage_handlers.c - `kvmhost pool ...` and `kvmhost volume ...`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>

#include "cli/args.h"
#include "cli/handlers.h"
#include "cli/output.h"
#include "util/mem.h"

static void human_bytes(json_int_t n, char *buf, size_t size)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < KH_ARRAY_LEN(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%lld B", (long long)n);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
}

static void add_bytes(cli_table *t, const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) {
        cli_table_add(t, NULL);
        return;
    }
    char buf[32];
    human_bytes(json_integer_value(v), buf, sizeof(buf));
    cli_table_add(t, buf);
}

/* "POOL/NAME" or "NAME" (the default pool) -> the API path. */
static char *volume_path(const char *ref, const char *suffix)
{
    const char *slash = strchr(ref, '/');
    char *pool = slash ? xstrndup(ref, (size_t)(slash - ref)) : xstrdup("default");
    char *pe = cli_path_escape(pool), *ne = cli_path_escape(slash ? slash + 1 : ref);
    char *p = xasprintf("/api/v1/pools/%s/volumes/%s%s", pe, ne, suffix ? suffix : "");
    free(pool);
    free(pe);
    free(ne);
    return p;
}

static void pools_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "TYPE", "CAPACITY", "USED", "FREE", "VOLUMES",
                                        "PATH" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(resp, "pools"), i, p) {
        cli_table_add(t, cli_jstr(p, "name"));
        cli_table_add(t, cli_jstr(p, "type"));
        add_bytes(t, p, "capacity");
        add_bytes(t, p, "allocation");
        add_bytes(t, p, "free");
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(p, "volumes")));
        cli_table_add(t, cli_jstr(p, "path"));
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static void volumes_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "FORMAT", "SIZE", "ALLOCATED", "BACKING",
                                        "USED BY" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(resp, "volumes"), i, v) {
        cli_table_add(t, cli_jstr(v, "ref"));
        cli_table_addf(t, "%s%s", cli_jstr(v, "format"),
                       json_is_true(json_object_get(v, "readonly")) ? " (ro)" : "");
        add_bytes(t, v, "capacity");
        add_bytes(t, v, "allocation");
        cli_table_add(t, cli_jstr(v, "backing"));
        kh_strv *users = kh_strv_new();
        size_t j;
        json_t *u;
        json_array_foreach(json_object_get(v, "used_by"), j, u) {
            kh_strv_add(users, cli_jstr(u, "vm"));
        }
        char *s = kh_strv_join(users, ",");
        cli_table_add(t, *s ? s : NULL);
        free(s);
        kh_strv_free(users);
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

int cli_do_pool_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/pools", NULL, pools_human, err);
}

int cli_do_pool_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = cli_api_path("pools", a->pos, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, cli_show_kv, err);
    free(path);
    return rc;
}

int cli_do_pool_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd))) {
        kh_err_set(err, KH_E_INTERNAL, "cannot read the current directory");
        return -1;
    }
    char *abs = cli_path_absolute(cli_arg(a, "path"), cwd);
    json_t *body = json_pack("{s:s, s:s, s:s?}", "name", a->pos, "type", "dir", "path", abs);
    free(abs);
    if (!body) {
        kh_err_set(err, KH_E_INVALID, "the name and path must be valid UTF-8");
        return -1;
    }
    int rc = cli_show(ctx, "POST", "/api/v1/pools", body, cli_show_kv, err);
    json_decref(body);
    return rc;
}

int cli_do_pool_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, cli_api_path("pools", a->pos, NULL), "pool", a->pos, err);
}

static void volume_human(const json_t *v)
{
    cli_kv *kv = cli_kv_new();
    cli_kv_add_json(kv, NULL, v, NULL);
    cli_print_free(cli_kv_render(kv));
    cli_kv_free(kv);
}

int cli_do_volume_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *slash = strchr(a->pos, '/');
    char *pool = slash ? xstrndup(a->pos, (size_t)(slash - a->pos)) : xstrdup("default");
    const char *name = slash ? slash + 1 : a->pos;
    json_t *body = json_object();
    int rc = -1;
    char *path = NULL;
    json_t *jname = json_string(name);
    if (!jname) {
        kh_err_set(err, KH_E_INVALID, "the volume name must be valid UTF-8");
        goto out;
    }
    json_object_set_new(body, "name", jname);
    if (cli_arg(a, "format"))
        json_object_set_new(body, "format", json_string(cli_arg(a, "format")));
    if (cli_arg(a, "size"))
        json_object_set_new(body, "size", json_string(cli_arg(a, "size")));
    if (cli_arg(a, "backing"))
        json_object_set_new(body, "backing", json_string(cli_arg(a, "backing")));
    if (cli_flag(a, "preallocate"))
        json_object_set_new(body, "preallocate", json_true());
    if (cli_arg(a, "import")) {
        char cwd[4096];
        if (!getcwd(cwd, sizeof(cwd))) {
            kh_err_set(err, KH_E_INTERNAL, "cannot read the current directory");
            goto out;
        }
        char *abs = cli_path_absolute(cli_arg(a, "import"), cwd);
        json_object_set_new(body, "import", json_string(abs));
        free(abs);
    }
    char *pe = cli_path_escape(pool);
    path = xasprintf("/api/v1/pools/%s/volumes", pe);
    free(pe);
    rc = cli_show(ctx, "POST", path, body, volume_human, err);
out:
    free(path);
    free(pool);
    json_decref(body);
    return rc;
}

int cli_do_volume_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *pool = cli_arg(a, "pool") ? cli_arg(a, "pool") : "default";
    char *path = cli_api_path("pools", pool, "/volumes");
    int rc = cli_show(ctx, "GET", path, NULL, volumes_human, err);
    free(path);
    return rc;
}

int cli_do_volume_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = volume_path(a->pos, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, volume_human, err);
    free(path);
    return rc;
}

int cli_do_volume_resize(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = volume_path(a->pos, "/resize");
    json_t *body = json_pack("{s:s}", "size", cli_arg(a, "size"));
    int rc = -1;
    if (!body)
        kh_err_set(err, KH_E_INVALID, "--size must be valid UTF-8");
    else
        rc = cli_show(ctx, "POST", path, body, volume_human, err);
    json_decref(body);
    free(path);
    return rc;
}

int cli_do_volume_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, volume_path(a->pos, NULL), "volume", a->pos, err);
}

/* ---- upload and download ---- */

int cli_do_volume_upload(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *file = a->pos2;
    FILE *f = fopen(file, "rb");
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) < 0 || !S_ISREG(sb.st_mode)) {
        kh_err_set(err, KH_E_INVALID, "%s: not a readable regular file", file);
        if (f)
            fclose(f);
        return -1;
    }
    char *fe = cli_path_escape(cli_arg(a, "format"));
    char *suffix = xasprintf("/data?format=%s", fe);
    char *path = volume_path(a->pos, suffix);
    free(fe);
    free(suffix);
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *vol = NULL;
    int rc = c ? cli_client_upload(c, path, f, (uint64_t)sb.st_size, &vol, err) : -1;
    fclose(f);
    free(path);
    if (rc < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, vol);
    else
        volume_human(vol);
    json_decref(vol);
    return 0;
}

static int write_out(const char *data, size_t len, void *ud)
{
    return fwrite(data, 1, len, ud) == len ? 0 : 1;
}

int cli_do_volume_download(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *file = a->pos2;
    char *tmp = xasprintf("%s.part", file);
    FILE *f = access(file, F_OK) == 0 ? NULL : fopen(tmp, "wbx");
    if (!f) {
        if (access(file, F_OK) == 0)
            errno = EEXIST;
        kh_err_errno(err, errno == EEXIST ? KH_E_CONFLICT : KH_E_INVALID, errno,
                     "cannot create %s", errno == EEXIST && access(file, F_OK) == 0 ? file : tmp);
        free(tmp);
        return -1;
    }
    char *path = volume_path(a->pos, "/data");
    cli_client *c = cli_ctx_client(ctx, err);
    int rc = c ? cli_client_stream(c, path, NULL, write_out, f, 0, err) : -1;
    free(path);
    if (fclose(f) != 0 && rc == 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "writing %s", tmp);
        rc = -1;
    }
    /* link, not rename: an existing FILE is never replaced */
    if (rc == 0 && link(tmp, file) < 0) {
        kh_err_errno(err, errno == EEXIST ? KH_E_CONFLICT : KH_E_INTERNAL, errno,
                     "cannot create %s", file);
        rc = -1;
    }
    unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- disks ---- */

static void disks_human(const json_t *vm)
{
    static const char *const head[] = { "INDEX", "DISK", "MODE" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(vm, "disks"), i, d) {
        cli_table_addf(t, "%zu", i);
        const char *what = cli_jstr(d, "volume");
        cli_table_add(t, what ? what : cli_jstr(d, "path"));
        cli_table_add(t, json_is_true(json_object_get(d, "readonly")) ? "ro" : "rw");
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

int cli_do_disk_attach(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *ref = a->pos2;
    char *full = strchr(ref, '/') ? xstrdup(ref) : xasprintf("default/%s", ref);
    json_t *body = json_pack("{s:s, s:b}", "volume", full, "readonly",
                             cli_flag(a, "readonly"));
    free(full);
    if (!body) {
        kh_err_set(err, KH_E_INVALID, "the volume must be valid UTF-8");
        return -1;
    }
    char *path = cli_api_path("vms", a->pos, "/disks");
    int rc = cli_show(ctx, "POST", path, body, disks_human, err);
    json_decref(body);
    free(path);
    return rc;
}

int cli_do_disk_detach(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *ie = cli_path_escape(a->pos2);
    const char *timeout = cli_arg(a, "timeout");
    char *te = timeout ? cli_path_escape(timeout) : NULL;
    char *suffix = xasprintf("/disks/%s%s%s", ie, te ? "?timeout=" : "", te ? te : "");
    char *path = cli_api_path("vms", a->pos, suffix);
    int rc = cli_show(ctx, "DELETE", path, NULL, disks_human, err);
    free(ie);
    free(te);
    free(suffix);
    free(path);
    return rc;
}

/* ---- templates ---- */

int cli_do_template_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *e = cli_path_escape(a->pos);
    char *path = xasprintf("/api/v1/vms/%s/template", e);
    free(e);
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL, *body = json_object();
    int rc = c ? cli_client_json(c, "POST", path, body, &resp, NULL, err) : -1;
    json_decref(body);
    free(path);
    if (rc < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, resp);
    else
        printf("vm %s is now a template\n", a->pos);
    json_decref(resp);
    return 0;
}

static void templates_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "VCPUS", "MEMORY", "DISKS" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *vm;
    json_array_foreach(json_object_get(resp, "templates"), i, vm) {
        cli_table_add(t, cli_jstr(vm, "name"));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(vm, "vcpus")));
        cli_table_addf(t, "%" JSON_INTEGER_FORMAT " MiB",
                       json_integer_value(json_object_get(vm, "memory_mib")));
        kh_strv *disks = kh_strv_new();
        size_t j;
        json_t *d;
        json_array_foreach(json_object_get(vm, "disks"), j, d) {
            kh_strv_add(disks, cli_jstr(d, "volume") ? cli_jstr(d, "volume") : cli_jstr(d, "path"));
        }
        char *s = kh_strv_join(disks, ",");
        cli_table_add(t, *s ? s : NULL);
        free(s);
        kh_strv_free(disks);
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

int cli_do_template_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/templates", NULL, templates_human, err);
}

int cli_task_wait(cli_ctx *ctx, json_t **task, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    for (;;) {
        const char *state = cli_jstr(*task, "state");
        if (state && strcmp(state, "running") != 0)
            break;
        usleep(200 * 1000);
        char *e = cli_path_escape(cli_jstr(*task, "id") ? cli_jstr(*task, "id") : "");
        char *path = xasprintf("/api/v1/tasks/%s", e);
        free(e);
        json_t *next = NULL;
        int rc = cli_client_json(c, "GET", path, NULL, &next, NULL, err);
        free(path);
        if (rc < 0)
            return -1;
        json_decref(*task);
        *task = next;
    }
    if (strcmp(cli_jstr(*task, "state"), "succeeded") == 0)
        return 0;
    const json_t *e = json_object_get(*task, "error");
    kh_err_set(err, kh_code_from_name(cli_jstr(e, "code") ? cli_jstr(e, "code") : "internal"), "%s",
               cli_jstr(e, "message") ? cli_jstr(e, "message") : "the task failed");
    return -1;
}

/* ---- snapshots ---- */

static char *snap_path(const char *vm, const char *snap, const char *suffix)
{
    char *ve = cli_path_escape(vm);
    char *se = snap ? cli_path_escape(snap) : NULL;
    char *p = se ? xasprintf("/api/v1/vms/%s/snapshots/%s%s", ve, se, suffix ? suffix : "")
                 : xasprintf("/api/v1/vms/%s/snapshots", ve);
    free(ve);
    free(se);
    return p;
}

/* Send the request for a task and wait for it to finish. */
static int snap_task(cli_ctx *ctx, const char *method, char *path, json_t *body,
                     const char *done_fmt, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *task = NULL;
    int rc = c ? cli_client_json(c, method, path, body, &task, NULL, err) : -1;
    free(path);
    json_decref(body);
    if (rc < 0)
        return -1;
    if (rc == 202 && cli_task_wait(ctx, &task, err) < 0) {
        json_decref(task);
        return -1;
    }
    if (ctx->json) {
        cli_print_json(stdout, task);
    } else {
        bool mem = json_is_true(json_object_get(json_object_get(task, "result"), "memory"));
        printf(done_fmt, a->pos2, a->pos, mem ? " (with memory)" : " (disk only)");
        putchar('\n');
    }
    json_decref(task);
    return 0;
}

int cli_do_snapshot_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_pack("{s:s, s:i}", "name", a->pos2, "wait", 2);
    if (!body) {
        kh_err_set(err, KH_E_INVALID, "the snapshot name must be valid UTF-8");
        return -1;
    }
    return snap_task(ctx, "POST", snap_path(a->pos, NULL, NULL), body,
                     "snapshot %s of vm %s created%s", a, err);
}

int cli_do_snapshot_revert(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return snap_task(ctx, "POST", snap_path(a->pos, a->pos2, "/revert"),
                     json_pack("{s:i}", "wait", 2), "vm %2$s reverted to snapshot %1$s%3$s", a,
                     err);
}

int cli_do_snapshot_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return snap_task(ctx, "DELETE", snap_path(a->pos, a->pos2, "?wait=2"), NULL,
                     "snapshot %s of vm %s deleted%.0s", a, err);
}

static void snapshots_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "PARENT", "MEMORY", "CREATED" };
    cli_table *t = cli_table_new(KH_ARRAY_LEN(head), head);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(resp, "snapshots"), i, s) {
        /* "*" marks the current one: where the VM is */
        cli_table_addf(t, "%s%s", cli_jstr(s, "name"),
                       json_is_true(json_object_get(s, "current")) ? " *" : "");
        cli_table_add(t, cli_jstr(s, "parent"));
        cli_table_add(t, json_is_true(json_object_get(s, "memory")) ? "yes" : "no");
        cli_table_add(t, cli_jstr(s, "created_at"));
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

int cli_do_snapshot_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = snap_path(a->pos, NULL, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, snapshots_human, err);
    free(path);
    return rc;
}
