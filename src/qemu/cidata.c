/* cidata.c - owns cloud-init NoCloud seeds: rendering the files from the
 * spec and making the "cidata" ISO9660 volume (see cidata.h). */
#include "qemu/cidata.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/spawn.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/strv.h"

#define ISO_TIMEOUT_MS 20000

void kh_cidata_clear(kh_cidata *c)
{
    if (!c)
        return;
    free(c->meta_data);
    free(c->user_data);
    free(c->network_config);
    free(c->vendor_data);
    *c = (kh_cidata){ 0 };
}

/* RFC 1123 label: letters, digits, '-' inside, 1-63. */
static bool is_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
    }
    return true;
}

static char *dump(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    char *out = xasprintf("%s\n", s ? s : "{}");
    free(s);
    return out;
}

/* One entry of cloud-config "users" from a spec user. */
static json_t *render_user(const json_t *u)
{
    json_t *o = json_object();
    json_object_set(o, "name", json_object_get(u, "name"));
    const json_t *keys = json_object_get(u, "ssh_authorized_keys");
    if (keys)
        json_object_set_new(o, "ssh_authorized_keys", json_deep_copy(keys));
    if (json_is_true(json_object_get(u, "sudo")))
        json_object_set_new(o, "sudo", json_string("ALL=(ALL) NOPASSWD:ALL"));
    const json_t *shell = json_object_get(u, "shell");
    json_object_set_new(o, "shell", shell ? json_deep_copy(shell) : json_string("/bin/bash"));
    json_object_set_new(o, "lock_passwd", json_true());
    return o;
}

void kh_cidata_render(const json_t *ci, const char *vm_id, const char *vm_name, kh_cidata *out)
{
    *out = (kh_cidata){ 0 };
    const char *host = json_string_value(json_object_get(ci, "hostname"));
    if (!host && vm_name && is_hostname(vm_name))
        host = vm_name;
    json_t *meta = json_object();
    char *iid = xasprintf("%s-%lld", vm_id,
                          (long long)json_integer_value(json_object_get(ci, "reprovision")));
    json_object_set_new(meta, "instance-id", json_string(iid));
    free(iid);
    if (host)
        json_object_set_new(meta, "local-hostname", json_string(host));
    out->meta_data = dump(meta);
    json_decref(meta);

    const char *raw = json_string_value(json_object_get(ci, "user_data"));
    if (raw) {
        out->user_data = xstrdup(raw);
    } else {
        json_t *cc = json_object();
        if (host)
            json_object_set_new(cc, "hostname", json_string(host));
        static const char *const copied[] = { "ssh_authorized_keys", "packages", "runcmd" };
        for (size_t i = 0; i < sizeof(copied) / sizeof(copied[0]); i++) {
            const json_t *v = json_object_get(ci, copied[i]);
            if (v)
                json_object_set_new(cc, copied[i], json_deep_copy(v));
        }
        const json_t *users = json_object_get(ci, "users");
        if (users) {
            /* "default" keeps the image's own user beside the new ones */
            json_t *ua = json_array();
            json_array_append_new(ua, json_string("default"));
            size_t i;
            json_t *u;
            json_array_foreach(users, i, u)
                json_array_append_new(ua, render_user(u));
            json_object_set_new(cc, "users", ua);
        }
        char *body = dump(cc);
        json_decref(cc);
        out->user_data = xasprintf("#cloud-config\n%s", body);
        free(body);
    }
    const json_t *nc = json_object_get(ci, "network_config");
    if (nc)
        out->network_config = dump(nc);
    const char *vd = json_string_value(json_object_get(ci, "vendor_data"));
    if (vd)
        out->vendor_data = xstrdup(vd);
}

/* The ISO tool: genisoimage, or xorriso in its mkisofs mode. */
static const char *const *iso_tool(void)
{
    static const char *const geniso[] = { "/usr/bin/genisoimage", NULL };
    static const char *const xorriso[] = { "/usr/bin/xorriso", "-as", "mkisofs", NULL };
    if (access(geniso[0], X_OK) == 0)
        return geniso;
    if (access(xorriso[0], X_OK) == 0)
        return xorriso;
    return NULL;
}

int kh_cidata_write_iso(const kh_cidata *c, const char *iso_path, unsigned mode, kh_err *err)
{
    const char *const *tool = iso_tool();
    if (!tool) {
        kh_err_set(err, KH_E_UNSUPPORTED, "cloud_init: neither genisoimage nor xorriso is "
                   "installed");
        return -1;
    }
    int rc = -1;
    char *dir = xasprintf("%s.d", iso_path), *tmp = xasprintf("%s.tmp", iso_path);
    kh_strv *argv = kh_strv_new();
    kh_fs_rm_rf(dir, NULL);
    if (kh_fs_mkdir_p(dir, 0700, err) < 0)
        goto out;
    const struct { const char *name, *text; } files[] = {
        { "meta-data", c->meta_data },
        { "user-data", c->user_data },
        { "network-config", c->network_config },
        { "vendor-data", c->vendor_data },
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (!files[i].text)
            continue;
        char *p = xasprintf("%s/%s", dir, files[i].name);
        int w = kh_fs_write_atomic(p, files[i].text, strlen(files[i].text), 0600, err);
        free(p);
        if (w < 0)
            goto out;
    }
    for (size_t i = 0; tool[i]; i++)
        kh_strv_add(argv, tool[i]);
    /* volume id "cidata" is what NoCloud looks for; Joliet and Rock Ridge
     * keep the file names as they are */
    const char *const opts[] = { "-quiet", "-volid", "cidata", "-joliet", "-rock",
                                 "-input-charset", "utf-8", "-output" };
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        kh_strv_add(argv, opts[i]);
    kh_strv_add(argv, tmp);
    kh_strv_add(argv, dir);
    kh_spawn_spec spec = { .argv = argv->v, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1,
                           .die_with_parent = true, .no_new_privs = true };
    kh_spawn_run_opts o = { .timeout_ms = ISO_TIMEOUT_MS, .merge_stderr = true,
                            .max_output = 4096 };
    kh_spawn_output res = { 0 };
    if (kh_spawn_run(&spec, &o, &res, err) < 0)
        goto out;
    if (res.status != 0) {
        if (res.timed_out)
            kh_err_set(err, KH_E_INTERNAL, "cloud_init: %s timed out", tool[0]);
        else
            kh_err_set(err, KH_E_INTERNAL, "cloud_init: %s failed (exit status %d): %.200s",
                       tool[0], res.status, res.out ? res.out : "");
        kh_spawn_output_clear(&res);
        goto out;
    }
    kh_spawn_output_clear(&res);
    if (chmod(tmp, (mode_t)mode) < 0 || rename(tmp, iso_path) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cloud_init: install %s", iso_path);
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        unlink(tmp);
    kh_fs_rm_rf(dir, NULL);
    kh_strv_free(argv);
    free(dir);
    free(tmp);
    return rc;
}
