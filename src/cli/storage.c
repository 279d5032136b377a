/* storage.c - `kvmhost pool ...`, `kvmhost volume ...` and `kvmhost disk
 * attach|detach`: the rows and their handlers (sizes for people: cli_fmt_bytes). */
#include "cli/nouns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>

#include "cli/args.h"
#include "cli/output.h"
#include "cli/render.h"
#include "util/mem.h"

static void add_bytes(cli_table *t, const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) {
        cli_table_add(t, NULL);
        return;
    }
    char buf[32];
    cli_fmt_bytes(json_integer_value(v), buf, sizeof(buf));
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

static int cli_do_pool_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/pools", NULL, pools_human, err);
}

static void pool_human(const json_t *pool)
{
    cli_print_free(cli_render_pool(pool));
}

static int cli_do_pool_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show_one(ctx, "pools", a->pos, pool_human, err);
}

static int cli_do_pool_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd))) {
        kh_err_set(err, KH_E_INTERNAL, "cannot read the current directory");
        return -1;
    }
    char *abs = cli_path_absolute(cli_arg(a, "path"), cwd);
    json_t *body = json_pack("{s:s, s:s, s:s?}", "name", a->pos, "type", "dir", "path", abs);
    free(abs);
    if (body && cli_flag(a, "shared"))
        json_object_set_new(body, "shared", json_true());
    if (!body) {
        kh_err_set(err, KH_E_INVALID, "the name and path must be valid UTF-8");
        return -1;
    }
    int rc = cli_show(ctx, "POST", "/api/v1/pools", body, pool_human, err);
    json_decref(body);
    return rc;
}

static int cli_do_pool_edit(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    bool on = cli_flag(a, "shared"), off = cli_flag(a, "not-shared");
    if (on == off) {
        cli_usage_error(ctx, a->cmd, err, "give --shared or --not-shared");
        return -1;
    }
    json_t *body = json_pack("{s:b}", "shared", on);
    char *path = cli_api_path("pools", a->pos, NULL);
    int rc = cli_show(ctx, "PATCH", path, body, pool_human, err);
    free(path);
    json_decref(body);
    return rc;
}

static int cli_do_pool_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, cli_api_path("pools", a->pos, NULL), "pool", a->pos, err);
}

static void volume_human(const json_t *v)
{
    cli_print_free(cli_render_volume(v));
}

static int cli_do_volume_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_volume_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    if (a->pos && cli_arg(a, "pool") && strcmp(a->pos, cli_arg(a, "pool")) != 0) {
        cli_usage_error(ctx, a->cmd, err, "two pools: %s and --pool %s", a->pos,
                        cli_arg(a, "pool"));
        return -1;
    }
    const char *pool = a->pos ? a->pos : cli_arg(a, "pool") ? cli_arg(a, "pool") : "default";
    char *path = cli_api_path("pools", pool, "/volumes");
    int rc = cli_show(ctx, "GET", path, NULL, volumes_human, err);
    free(path);
    return rc;
}

static int cli_do_volume_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = volume_path(a->pos, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, volume_human, err);
    free(path);
    return rc;
}

static int cli_do_volume_resize(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_volume_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, volume_path(a->pos, NULL), "volume", a->pos, err);
}

/* ---- upload and download ---- */

static int cli_do_volume_upload(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_volume_download(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_disk_attach(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

static int cli_do_disk_detach(cli_ctx *ctx, const cli_args *a, kh_err *err)
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

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt opts_pool_create[] = {
    { "path", "DIR", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "An existing directory on the host (an NFS mount, a bigger disk)." },
    { "shared", NULL, 0,
      "The directory is the same on every cluster host (an NFS mount): a live migration "
      "leaves the pool's volumes in place. Without it they are copied to the target." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_pool_edit[] = {
    { "shared", NULL, 0, "Mark the pool shared by every cluster host." },
    { "not-shared", NULL, 0, "Mark it local: a live migration copies its volumes." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_create[] = {
    { "size", "SIZE", CLI_OPT_ARG,
      "Virtual size: bytes or with a unit (512M, 10G, 1T; powers of 1024). Required "
      "unless --backing or --import gives it." },
    { "format", "FMT", CLI_OPT_ARG, "qcow2 (the default) or raw." },
    { "backing", "[POOL/]VOL", CLI_OPT_ARG,
      "Make a qcow2 overlay on this volume: a linked clone, made in O(1)." },
    { "preallocate", NULL, 0, "Allocate the whole size now (refused if it does not fit)." },
    { "import", "FILE", CLI_OPT_ARG,
      "Copy this host image (of --format, never guessed). Images that name a backing or "
      "data file are refused." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_list[] = {
    { "pool", "POOL", CLI_OPT_ARG, "The pool, as the positional POOL (default: default)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_upload[] = {
    { "format", "FORMAT", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "What the file is: qcow2 or raw. kvmhostd checks it (qemu-img), never guesses it." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_resize[] = {
    { "size", "SIZE", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "The new size (512M, 10G, ...); volumes only grow." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_disk_attach[] = {
    { "readonly", NULL, 0,
      "Attach read-only: the guest cannot write. A template's base, or a volume other VMs "
      "also use, is attached only read-only." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_disk_detach[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "How long the guest of a running VM may take to release the disk (default 30)." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_pool_cmds[] = {
    {
        "pool", "list", NULL, "list the storage pools",
        "One line per pool: name, type, capacity, space used and free on its file system, "
        "how many volumes it holds, and its directory. The pool \"default\" lives in the "
        "state directory and always exists.",
        NULL,
        "$ kvmhost pool list",
        cli_do_pool_list,
    },
    {
        "pool", "show", "NAME", "show one storage pool",
        "The pool's type, directory, capacity, allocation and free space (statvfs of its "
        "file system) and its number of volumes.",
        NULL,
        "$ kvmhost pool show default",
        cli_do_pool_show,
    },
    {
        "pool", "create", "NAME", "add a pool at an existing directory",
        "Add a pool of type dir at an existing, writable directory: an NFS mount or a "
        "bigger disk. Volumes are files in it named by their id. kvmhostd does not create "
        "or remove the directory.",
        opts_pool_create,
        "$ kvmhost pool create fast --path /srv/nvme/kvmhost",
        cli_do_pool_create,
    },
    {
        "pool", "edit", "NAME", "mark a pool shared or local",
        "A shared pool's directory is the same on every cluster host (an NFS mount): "
        "`vm migrate` leaves its volumes where they are. A local pool's volumes are copied "
        "to the target host's pool of the same name over NBD while the VM runs, and the "
        "source's copies are deleted once the VM runs on the target.",
        opts_pool_edit,
        "$ kvmhost pool edit nfs --shared",
        cli_do_pool_edit,
    },
    {
        "pool", "delete", "NAME", "forget an empty pool",
        "Forget a pool that holds no volumes. Its directory stays. The default pool cannot "
        "be deleted.",
        NULL,
        "$ kvmhost pool delete fast",
        cli_do_pool_delete,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};

const cli_cmd cli_volume_cmds[] = {
    {
        "volume", "create", "[POOL/]NAME", "create a volume",
        "Create a qcow2 or raw volume in POOL (default: default): empty with --size, a "
        "linked clone of another volume with --backing, or a copy of a host image with "
        "--import. A size over the pool's free space is refused (exit status 2). NAME "
        "takes letters, digits, '-', '_' and '.'.",
        opts_volume_create,
        "$ kvmhost volume create data1 --size 10G\n"
        "$ kvmhost volume create default/web1-root --backing debian12\n"
        "$ kvmhost volume create debian12 --format qcow2 --import ./debian-12.qcow2",
        cli_do_volume_create,
    },
    {
        "volume", "list", "[POOL]", "list the volumes of a pool",
        "One line per volume of POOL (default: default; --pool POOL says the same): "
        "pool/name, format, virtual size, space allocated on the host (in KiB, MiB, GiB, "
        "... as 'volume show'), its backing volume and the VMs that use it.",
        opts_volume_list,
        "$ kvmhost volume list\n"
        "$ kvmhost volume list fast",
        cli_do_volume_list,
    },
    {
        "volume", "show", "[POOL/]NAME", "show one volume",
        "Everything about the volume, with its backing chain as qemu-img reads it: virtual "
        "and allocated size and format of every layer. Sizes are shown as in 'volume list' "
        "(\"20.0 GiB\"); --json gives them in bytes.",
        NULL,
        "$ kvmhost volume show default/data1",
        cli_do_volume_show,
    },
    {
        "volume", "resize", "[POOL/]NAME", "grow a volume",
        "Grow the volume to --size. Volumes never shrink. Refused (exit status 5) while a "
        "running VM uses it.",
        opts_volume_resize,
        "$ kvmhost volume resize data1 --size 20G",
        cli_do_volume_resize,
    },
    {
        "volume", "upload", "[POOL/]NAME FILE", "make a volume from an image file",
        "Send FILE to kvmhostd, streamed, as the new volume NAME. The pool's free space is the "
        "limit (exit status 2 beyond it). The image must be of the --format given, and one "
        "that names no other file (no backing file, no external data file; exit status 2 "
        "otherwise). A failed upload leaves nothing.",
        opts_volume_upload,
        "$ kvmhost volume upload default/debian debian-12.qcow2 --format qcow2",
        cli_do_volume_upload,
    },
    {
        "volume", "download", "[POOL/]NAME FILE", "save a volume's image to a file",
        "Stream the volume's image file (as it is: qcow2 or raw) into FILE, which must not "
        "exist (written as FILE.part, renamed when complete). Refused (exit status 5) while a "
        "running VM writes to the volume.",
        NULL,
        "$ kvmhost volume download default/debian backup.qcow2",
        cli_do_volume_download,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};

const cli_cmd cli_disk_cmds[] = {
    {
        "disk", "attach", "VM [POOL/]VOLUME", "attach a volume to a VM as a disk",
        "Add the volume as the VM's last disk. A stopped VM's spec changes. A running q35 VM "
        "gets it at once (hot-plug: a virtio disk on a free PCIe hot-plug port, with its own "
        "I/O thread; up to 4 hot-plugged disks) and keeps it as an ordinary disk at the next "
        "start. Refused (exit status 5) for a volume another VM writes to, a template's base "
        "attached writable, or a VM that is busy.",
        opts_disk_attach,
        "$ kvmhost disk attach web1 default/data1\n"
        "$ kvmhost disk attach web1 iso/tools --readonly",
        cli_do_disk_attach,
    },
    {
        "disk", "detach", "VM INDEX", "detach disk INDEX (0 is the first) of a VM",
        "Remove the disk from the VM; the volume stays. On a running VM only a hot-plugged "
        "disk can go: the guest is asked to release it, and kvmhost waits for that (exit "
        "status 8 on a timeout, and the disk stays attached).",
        opts_disk_detach,
        "$ kvmhost disk detach web1 1",
        cli_do_disk_detach,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};

const cli_cmd cli_volume_delete_cmds[] = {
    {
        "volume", "delete", "[POOL/]NAME", "delete a volume",
        "Delete the volume and its file. Refused (exit status 5) while a VM refers to it or "
        "another volume is based on it.",
        NULL,
        "$ kvmhost volume delete data1",
        cli_do_volume_delete,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
