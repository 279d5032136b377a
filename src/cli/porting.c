/* porting.c - `kvmhost vm import|import-libvirt|export`: the rows and
 * handlers of VM import (OVA, libvirt domain XML) and export (OVA). */
#include "cli/nouns.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/client.h"
#include "util/mem.h"

static FILE *open_regular(const char *file, uint64_t *size, kh_err *err)
{
    FILE *f = fopen(file, "rb");
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) < 0 || !S_ISREG(sb.st_mode)) {
        kh_err_set(err, KH_E_INVALID, "%s: not a readable regular file", file);
        if (f)
            fclose(f);
        return NULL;
    }
    *size = (uint64_t)sb.st_size;
    return f;
}

/* "&key=value" for an option given, escaped. */
static void add_query(char **q, const cli_args *a, const char *key)
{
    const char *v = cli_arg(a, key);
    if (!v)
        return;
    char *e = cli_path_escape(v);
    char *n = xasprintf("%s&%s=%s", *q, key, e);
    free(e);
    free(*q);
    *q = n;
}

static void print_imported(cli_ctx *ctx, const json_t *vm, const json_t *warnings)
{
    size_t i;
    json_t *w;
    json_array_foreach(warnings, i, w)
        fprintf(stderr, "warning: %s\n", json_string_value(w));
    if (!ctx->json)
        printf("%s\n", json_string_value(json_object_get(vm, "name")));
}

static int cli_do_vm_import(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    if (!c)
        return -1;
    json_t *task = NULL;
    int rc;
    if (cli_flag(a, "host-path")) {
        char *cwd = getcwd(NULL, 0);
        char *abs = cli_path_absolute(a->pos, cwd ? cwd : "/");
        free(cwd);
        json_t *body = json_pack("{s:s, s:i}", "path", abs, "wait", 5);
        free(abs);
        const char *keys[] = { "name", "pool", "network" };
        for (size_t k = 0; body && k < 3; k++)
            if (cli_set_str(body, keys[k], cli_arg(a, keys[k]), err) < 0) {
                json_decref(body);
                return -1;
            }
        if (!body) {
            kh_err_set(err, KH_E_INVALID, "the path must be valid UTF-8");
            return -1;
        }
        rc = cli_client_json(c, "POST", "/api/v1/vms/import", body, &task, NULL, err);
        json_decref(body);
    } else {
        uint64_t size = 0;
        FILE *f = open_regular(a->pos, &size, err);
        if (!f)
            return -1;
        char *q = xstrdup("/api/v1/vms/import?wait=5");
        add_query(&q, a, "name");
        add_query(&q, a, "pool");
        add_query(&q, a, "network");
        rc = cli_client_upload(c, q, f, size, &task, err);
        fclose(f);
        free(q);
    }
    if (rc < 0)
        return -1;
    if (cli_task_wait(ctx, &task, err) < 0) {
        json_decref(task);
        return -1;
    }
    json_t *result = json_object_get(task, "result");
    if (ctx->json)
        cli_print_json(stdout, result);
    print_imported(ctx, json_object_get(result, "vm"), json_object_get(result, "warnings"));
    json_decref(task);
    return 0;
}

static int cli_do_vm_import_libvirt(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    uint64_t size = 0;
    FILE *f = open_regular(a->pos, &size, err);
    if (!f)
        return -1;
    char *q = xstrdup("/api/v1/vms/import-libvirt?");
    add_query(&q, a, "name");
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *out = NULL;
    int rc = c ? cli_client_send_file(c, "POST", q, "application/xml", f, size, &out, err)
               : -1;
    fclose(f);
    free(q);
    if (rc < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, out);
    print_imported(ctx, json_object_get(out, "vm"), json_object_get(out, "warnings"));
    json_decref(out);
    return 0;
}

static int write_out(const char *data, size_t len, void *ud)
{
    return fwrite(data, 1, len, ud) == len ? 0 : 1;
}

static int cli_do_vm_export(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *file = a->pos2;
    char *tmp = xasprintf("%s.part", file);
    FILE *f = access(file, F_OK) == 0 ? NULL : fopen(tmp, "wbx");
    if (!f) {
        kh_err_errno(err, KH_E_CONFLICT, access(file, F_OK) == 0 ? EEXIST : errno,
                     "cannot create %s", access(file, F_OK) == 0 ? file : tmp);
        free(tmp);
        return -1;
    }
    char *e = cli_path_escape(a->pos);
    char *path = xasprintf("/api/v1/vms/%s/export", e);
    free(e);
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
    return rc < 0 ? -1 : 0;
}

static const cli_opt opts_vm_import[] = {
    { "name", "NAME", CLI_OPT_ARG, "The new VM's name (default: the OVF's)." },
    { "pool", "POOL", CLI_OPT_ARG, "The pool of its volumes (default: default)." },
    { "network", "NET", CLI_OPT_ARG,
      "Attach the OVF's network adapters to this network (their MACs kept); without it they "
      "are not imported." },
    { "host-path", NULL, 0,
      "FILE is on kvmhostd's host: read there, not sent (needs Sys.HostPath and a path under "
      "--host-path-allow)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_import_libvirt[] = {
    { "name", "NAME", CLI_OPT_ARG, "The new VM's name (default: the domain's <name>)." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_porting_cmds[] = {
    {
        "vm", "import", "FILE", "make a VM from an OVA",
        "Send the OVA FILE to kvmhostd (streamed), which reads its OVF (CPUs, memory, disks, "
        "network adapters, firmware), checks every entry against the OVF and the .mf "
        "digests, converts each VMDK disk to a qcow2 volume and makes the VM. Archives with "
        "links, paths, unknown or oversized entries, digest mismatches, or disks that name "
        "other files are refused (exit status 2) and leave nothing. What is not imported is "
        "printed as warnings on stderr.",
        opts_vm_import,
        "$ kvmhost vm import appliance.ova --name web1 --network default",
        cli_do_vm_import,
    },
    {
        "vm", "import-libvirt", "FILE", "make a VM from a libvirt domain XML",
        "FILE is a domain as `virsh dumpxml` writes it. Memory, vCPUs, machine, UEFI and "
        "Secure Boot, direct kernel boot, file disks (used in place: Sys.HostPath), network "
        "interfaces (on the kvmhost network of the same name, which must exist), serial "
        "console and TPM are taken; everything else is printed as a warning on stderr.",
        opts_vm_import_libvirt,
        "# on the libvirt host: virsh dumpxml web1 > web1.xml\n"
        "$ kvmhost vm import-libvirt web1.xml",
        cli_do_vm_import_libvirt,
    },
    {
        "vm", "export", "VM FILE", "save a stopped VM as an OVA",
        "Stream the stopped VM (exit status 5 while it runs) as an OVA into FILE, which must "
        "not exist: an OVF descriptor, a SHA-256 manifest and each disk as a streamOptimized "
        "VMDK. Encrypted volumes are not exported.",
        NULL,
        "$ kvmhost vm export web1 web1.ova",
        cli_do_vm_export,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
