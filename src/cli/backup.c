/* backup.c - `kvmhost backup-store add|list|show|delete` and `kvmhost backup
 * create|list|show|restore|verify|prune|delete`: the rows and their
 * handlers. */
#include "cli/nouns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/client.h"
#include "cli/output.h"
#include "util/mem.h"

static char *esc_path(const char *fmt, const char *seg)
{
    char *e = cli_path_escape(seg);
    char *p = xasprintf(fmt, e);
    free(e);
    return p;
}

/* Send a request that answers with a task, wait for it, print it. */
static int run_task(cli_ctx *ctx, const char *method, char *path, json_t *body, const char *done,
                    kh_err *err)
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
        printf("%s\n", done);
        json_t *res = json_object_get(task, "result");
        if (json_is_object(res))
            cli_show_kv(res);
    }
    json_decref(task);
    return 0;
}

/* ---- stores ---- */

static int do_store_add(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_object();
    if (cli_set_str(body, "name", a->pos, err) < 0 ||
        cli_set_str(body, "path", cli_arg(a, "path"), err) < 0 ||
        cli_set_str(body, "key", cli_arg(a, "key"), err) < 0) {
        json_decref(body);
        return -1;
    }
    if (cli_flag(a, "encrypt"))
        json_object_set_new(body, "encrypt", json_true());
    const char *cs = cli_arg(a, "chunk-size");
    if (cs) {
        char *end = NULL;
        long long n = strtoll(cs, &end, 10);
        if (end && (*end == 'K' || *end == 'k'))
            n <<= 10, end++;
        else if (end && (*end == 'M' || *end == 'm'))
            n <<= 20, end++;
        if (!*cs || !end || *end || n < 65536 || n > (4ll << 20) || (n & (n - 1)) != 0) {
            json_decref(body);
            cli_usage_error(ctx, a->cmd, err, "--chunk-size: a power of two from 64K to 4M");
            return -1;
        }
        json_object_set_new(body, "chunk_size", json_integer(n));
    }
    int rc = cli_show(ctx, "POST", "/api/v1/backup-stores", body, cli_show_kv, err);
    json_decref(body);
    if (rc == 0 && !ctx->json && cli_flag(a, "encrypt"))
        fprintf(stderr, "keep the key above in a safe place: without it the backups in this "
                        "store cannot be read or restored\n");
    return rc;
}

static void stores_human(const json_t *resp)
{
    static const char *const head[] = { "NAME", "PATH", "ENCRYPTED", "BACKUPS" };
    cli_table *t = cli_table_new(4, head);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(resp, "stores"), i, s) {
        cli_table_add(t, cli_jstr(s, "name"));
        cli_table_add(t, cli_jstr(s, "path"));
        cli_table_add(t, json_is_true(json_object_get(s, "encrypted")) ? "yes" : "no");
        cli_table_addf(t, "%lld", (long long)json_integer_value(json_object_get(s, "backups")));
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static int do_store_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    return cli_show(ctx, "GET", "/api/v1/backup-stores", NULL, stores_human, err);
}

static int do_store_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show_one(ctx, "backup-stores", a->pos, cli_show_kv, err);
}

static int do_store_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, esc_path("/api/v1/backup-stores/%s", a->pos), "backup store", a->pos,
                      err);
}

/* ---- backups ---- */

static int do_create(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_pack("{s:i}", "wait", 2);
    if (cli_set_str(body, "store", cli_arg(a, "store"), err) < 0) {
        json_decref(body);
        return -1;
    }
    char *done = xasprintf("vm %s backed up", a->pos);
    int rc = run_task(ctx, "POST", esc_path("/api/v1/vms/%s/backups", a->pos), body, done, err);
    free(done);
    return rc;
}

static void backups_human(const json_t *resp)
{
    static const char *const head[] = { "ID", "VM", "STORE", "KIND", "CREATED", "READ",
                                        "WRITTEN" };
    cli_table *t = cli_table_new(7, head);
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(resp, "backups"), i, b) {
        cli_table_add(t, cli_jstr(b, "id"));
        cli_table_add(t, cli_jstr(b, "vm"));
        cli_table_add(t, cli_jstr(b, "store"));
        cli_table_add(t, cli_jstr(b, "kind"));
        cli_table_add(t, cli_jstr(b, "created_at"));
        cli_table_addf(t, "%.1f MiB",
                       (double)json_integer_value(json_object_get(b, "bytes_read")) / 1048576.0);
        cli_table_addf(t, "%.1f MiB", (double)json_integer_value(
                                          json_object_get(b, "bytes_written")) / 1048576.0);
    }
    cli_print_free(cli_table_render(t));
    cli_table_free(t);
}

static int do_list(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *q = NULL;
    const char *vm = cli_arg(a, "vm"), *store = cli_arg(a, "store");
    char *ve = vm ? cli_path_escape(vm) : NULL, *se = store ? cli_path_escape(store) : NULL;
    q = xasprintf("/api/v1/backups%s%s%s%s%s", vm || store ? "?" : "", vm ? "vm=" : "",
                  ve ? ve : "", vm && store ? "&store=" : store ? "store=" : "", se ? se : "");
    free(ve);
    free(se);
    int rc = cli_show(ctx, "GET", q, NULL, backups_human, err);
    free(q);
    return rc;
}

static int do_show(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_show_one(ctx, "backups", a->pos, cli_show_kv, err);
}

static int do_delete(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    return cli_delete(ctx, esc_path("/api/v1/backups/%s", a->pos), "backup", a->pos, err);
}

static int do_restore(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_pack("{s:i}", "wait", 2);
    if (cli_set_str(body, "as", cli_arg(a, "as"), err) < 0 ||
        cli_set_str(body, "vm", cli_arg(a, "vm"), err) < 0 ||
        cli_set_str(body, "pool", cli_arg(a, "pool"), err) < 0) {
        json_decref(body);
        return -1;
    }
    if (cli_flag(a, "live"))
        json_object_set_new(body, "live", json_true());
    const char *speed = cli_arg(a, "speed");
    if (speed) {
        char *end = NULL;
        long long mib = strtoll(speed, &end, 10);
        if (!*speed || *end || mib < 1 || mib > 1048576) {
            json_decref(body);
            cli_usage_error(ctx, a->cmd, err, "--speed: MiB per second, from 1");
            return -1;
        }
        json_object_set_new(body, "speed", json_integer((json_int_t)mib << 20));
    }
    const char *disk = cli_arg(a, "disk");
    if (disk) {
        char *end = NULL;
        long d = strtol(disk, &end, 10);
        if (!*disk || *end || d < 0 || d > 63) {
            json_decref(body);
            cli_usage_error(ctx, a->cmd, err, "--disk: a disk index from 0 to 63");
            return -1;
        }
        json_object_set_new(body, "disk", json_integer(d));
    }
    char *done = xasprintf("backup %s restored", a->pos);
    int rc = run_task(ctx, "POST", esc_path("/api/v1/backups/%s/restore", a->pos), body, done,
                      err);
    free(done);
    return rc;
}

static int do_verify(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *done = xasprintf("backup %s verified", a->pos);
    int rc = run_task(ctx, "POST", esc_path("/api/v1/backups/%s/verify", a->pos),
                      json_pack("{s:i}", "wait", 2), done, err);
    free(done);
    return rc;
}

/* The --keep-* options into body's keep_* (prune, schedule). */
static int set_keep(cli_ctx *ctx, const cli_args *a, json_t *body, kh_err *err)
{
    static const char *const rules[] = { "keep-last", "keep-daily", "keep-weekly",
                                         "keep-monthly" };
    static const char *const keys[] = { "keep_last", "keep_daily", "keep_weekly",
                                        "keep_monthly" };
    for (size_t i = 0; i < 4; i++) {
        const char *v = cli_arg(a, rules[i]);
        if (!v)
            continue;
        char *end = NULL;
        long n = strtol(v, &end, 10);
        if (!*v || *end || n < 0 || n > 100000) {
            cli_usage_error(ctx, a->cmd, err, "--%s: a count from 0 to 100000", rules[i]);
            return -1;
        }
        json_object_set_new(body, keys[i], json_integer(n));
    }
    return 0;
}

static int do_prune(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    json_t *body = json_pack("{s:i}", "wait", 2);
    if (cli_set_str(body, "store", a->pos, err) < 0 ||
        cli_set_str(body, "vm", cli_arg(a, "vm"), err) < 0) {
        json_decref(body);
        return -1;
    }
    if (set_keep(ctx, a, body, err) < 0) {
        json_decref(body);
        return -1;
    }
    if (cli_flag(a, "dry-run"))
        json_object_set_new(body, "dry_run", json_true());
    char *done = xasprintf("store %s pruned", a->pos);
    int rc = run_task(ctx, "POST", xstrdup("/api/v1/backups/prune"), body, done, err);
    free(done);
    return rc;
}

static int do_schedule(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    char *path = esc_path("/api/v1/vms/%s/backup-schedule", a->pos);
    int rc;
    if (cli_flag(a, "off")) {
        rc = cli_delete(ctx, path, "backup schedule of vm", a->pos, err);
        return rc;
    }
    if (!cli_arg(a, "daily")) {
        rc = cli_show(ctx, "GET", path, NULL, cli_show_kv, err);
        free(path);
        return rc;
    }
    json_t *body = json_object();
    const char *store = cli_arg(a, "store");
    if (cli_set_str(body, "daily", cli_arg(a, "daily"), err) < 0 ||
        cli_set_str(body, "store", store, err) < 0) {
        json_decref(body);
        free(path);
        return -1;
    }
    if (!store) {
        json_decref(body);
        free(path);
        cli_usage_error(ctx, a->cmd, err, "--store is needed with --daily");
        return -1;
    }
    if (set_keep(ctx, a, body, err) < 0) {
        json_decref(body);
        free(path);
        return -1;
    }
    rc = cli_show(ctx, "PUT", path, body, cli_show_kv, err);
    json_decref(body);
    free(path);
    return rc;
}

/* ---- the command rows (assembled in commands.c) ---- */

static const cli_opt store_add_opts[] = {
    { "path", "DIR", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "The directory: empty or missing for a new store (a local disk, an NFS mount), or an "
      "existing store directory." },
    { "encrypt", NULL, 0,
      "Encrypt every chunk (AES-256-GCM) with a new random key, printed once: keep it. "
      "Without it the backups cannot be read." },
    { "key", "HEX", CLI_OPT_ARG, "The key of an existing encrypted store (64 hex digits)." },
    { "chunk-size", "SIZE", CLI_OPT_ARG,
      "A new store's chunk size: 64K to 4M, a power of two (default 512K). Smaller chunks make "
      "incremental backups store less; larger ones mean fewer files." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt create_opts[] = {
    { "store", "STORE", CLI_OPT_ARG, "The backup store (needed when there are several)." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt list_opts[] = {
    { "vm", "VM", CLI_OPT_ARG, "Only this VM's backups." },
    { "store", "STORE", CLI_OPT_ARG, "Only this store's backups." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt restore_opts[] = {
    { "as", "NEWVM", CLI_OPT_ARG, "Restore to a new VM with new volumes." },
    { "pool", "POOL", CLI_OPT_ARG, "With --as: the pool of the new volumes (default)." },
    { "vm", "VM", CLI_OPT_ARG, "Restore over this stopped VM's disks." },
    { "disk", "N", CLI_OPT_ARG, "With --vm: only disk N." },
    { "live", NULL, 0, "With --as: live-restore: the VM starts at once on the backup while "
                       "its data streams in behind it." },
    { "speed", "MIB", CLI_OPT_ARG, "With --live: limit the stream to MIB MiB/s." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt schedule_opts[] = {
    { "daily", "HH:MM", CLI_OPT_ARG, "Back up every day at this time (UTC)." },
    { "store", "STORE", CLI_OPT_ARG, "The backup store (with --daily)." },
    { "off", NULL, 0, "Remove the schedule." },
    { "keep-last", "N", CLI_OPT_ARG, "After each scheduled backup, keep the VM's N newest." },
    { "keep-daily", "N", CLI_OPT_ARG, "... and the newest of each of the last N days." },
    { "keep-weekly", "N", CLI_OPT_ARG, "... and the newest of each of the last N weeks." },
    { "keep-monthly", "N", CLI_OPT_ARG, "... and the newest of each of the last N months." },
    { NULL, NULL, 0, NULL },
};
static const cli_opt prune_opts[] = {
    { "vm", "VM", CLI_OPT_ARG, "Apply the rules to this VM's backups only." },
    { "keep-last", "N", CLI_OPT_ARG, "Keep the N newest backups of each VM." },
    { "keep-daily", "N", CLI_OPT_ARG, "Keep the newest backup of each of the last N days." },
    { "keep-weekly", "N", CLI_OPT_ARG, "Keep the newest backup of each of the last N weeks." },
    { "keep-monthly", "N", CLI_OPT_ARG,
      "Keep the newest backup of each of the last N months." },
    { "dry-run", NULL, 0, "Say what would go; change nothing." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_backup_cmds[] = {
    { "backup-store", "add", "NAME", "add a backup store",
      "Register a directory as a backup store: content-addressed chunks (1 MiB unless "
      "--chunk-size, SHA-256 names, zstd), deduplicated across disks, VMs and backups.",
      store_add_opts, "$ kvmhost backup-store add nightly --path /srv/backups --encrypt",
      do_store_add },
    { "backup-store", "list", NULL, "list the backup stores", "One line per backup store: its name, directory, whether it is encrypted, and how many backups it holds.", NULL,
      "$ kvmhost backup-store list", do_store_list },
    { "backup-store", "show", "NAME", "show a backup store", "Show one backup store: its id, directory, whether it is encrypted, when it was added and how many backups it holds.",
      NULL, "$ kvmhost backup-store show nightly", do_store_show },
    { "backup-store", "delete", "NAME", "forget a backup store",
      "Forget a store that holds no backups; its directory stays.", NULL,
      "$ kvmhost backup-store delete nightly", do_store_delete },
    { "backup", "create", "VM", "back up a VM",
      "Back up every disk of the VM (stopped) into a store, as a task. The first backup of a "
      "VM into a store reads everything; the next ones read only what the disks' persistent "
      "dirty bitmaps mark as changed since the last backup. Each backup is a complete restore "
      "point.",
      create_opts, "$ kvmhost backup create web1 --store nightly", do_create },
    { "backup", "list", NULL, "list backups", "One line per backup, newest first: its id, VM, store, kind (full or incremental), when it was taken, the bytes read and written.", list_opts,
      "$ kvmhost backup list --vm web1", do_list },
    { "backup", "show", "ID", "show a backup", "Show one backup: its disks (volume, size, bitmap), the VM spec it holds, and its figures: bytes read, written and deduplicated, new and reused chunks, duration.", NULL,
      "$ kvmhost backup show 6f1c...", do_show },
    { "backup", "restore", "ID", "restore a backup",
      "Restore to a new VM (--as), over a stopped VM (--vm), or one disk of it (--vm --disk). "
      "Every chunk is checked first: a damaged backup is refused and nothing is written. "
      "--live starts the new VM at once on the backup (each chunk is checked as it is read) "
      "and the task ends when the data has streamed into its disks.",
      restore_opts, "$ kvmhost backup restore 6f1c... --as web1-yesterday --live", do_restore },
    { "backup", "verify", "ID", "check every chunk of a backup",
      "Re-read, decrypt and re-hash every chunk; damaged chunks are named.", NULL,
      "$ kvmhost backup verify 6f1c...", do_verify },
    { "backup", "prune", "STORE", "apply retention and free unused chunks",
      "Delete the backups no rule keeps, then remove the chunks no backup uses.", prune_opts,
      "$ kvmhost backup prune nightly --keep-daily 7 --keep-weekly 4", do_prune },
    { "backup", "schedule", "VM", "back a VM up every night",
      "With --daily HH:MM --store STORE: the daemon backs the VM up every day at that time "
      "(UTC); a time missed while the daemon was down runs when it starts. Without options: "
      "show the schedule. --off removes it. With --keep-*: after each scheduled backup the "
      "daemon prunes the VM's backups in the store by those rules (as kvmhost backup prune).",
      schedule_opts, "$ kvmhost backup schedule web1 --daily 02:00 --store nightly",
      do_schedule },
    { "backup", "delete", "ID", "delete a backup",
      "Delete its record and indexes; its chunks go at the next prune.", NULL,
      "$ kvmhost backup delete 6f1c...", do_delete },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
