/* firmware.c - owns the choice of UEFI firmware from QEMU's firmware
 * descriptors and each VM's VARS copy (see firmware.h). */
#include "qemu/firmware.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "util/fs.h"
#include "util/mem.h"
#include "util/strv.h"

#define DESCRIPTOR_MAX (64 * 1024)
#define VARS_MAX (64 * 1024 * 1024)

const char *const kh_firmware_default_dirs[] = { "/etc/qemu/firmware", "/usr/share/qemu/firmware",
                                                 NULL };

void kh_firmware_choice_clear(kh_firmware_choice *c)
{
    if (!c)
        return;
    free(c->descriptor);
    free(c->code);
    free(c->vars_template);
    c->descriptor = c->code = c->vars_template = NULL;
    c->smm = c->secure_boot = false;
}

static bool has_string(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

static bool targets_q35(const json_t *targets)
{
    size_t i, j;
    json_t *t, *m;
    json_array_foreach(targets, i, t) {
        const char *arch = json_string_value(json_object_get(t, "architecture"));
        if (!arch || strcmp(arch, "x86_64") != 0)
            continue;
        json_array_foreach(json_object_get(t, "machines"), j, m) {
            if (json_is_string(m) && fnmatch(json_string_value(m), "pc-q35-7.2", 0) == 0)
                return true;
        }
    }
    return false;
}

/* A flash file of the mapping: its absolute path if raw, else NULL. */
static const char *flash_file(const json_t *mapping, const char *key)
{
    const json_t *f = json_object_get(mapping, key);
    const char *name = json_string_value(json_object_get(f, "filename"));
    const char *fmt = json_string_value(json_object_get(f, "format"));
    if (!name || name[0] != '/' || (fmt && strcmp(fmt, "raw") != 0))
        return NULL;
    return name;
}

/* Whether descriptor d fits; fills out when it does. plain: without Secure
 * Boot, take only firmware without the feature (no SMM either). */
static bool fits(const json_t *d, bool secure_boot, bool plain, kh_firmware_choice *out)
{
    const json_t *mapping = json_object_get(d, "mapping");
    const json_t *features = json_object_get(d, "features");
    const char *device = json_string_value(json_object_get(mapping, "device"));
    if (!has_string(json_object_get(d, "interface-types"), "uefi") || !device ||
        strcmp(device, "flash") != 0 || !targets_q35(json_object_get(d, "targets")))
        return false;
    const char *code = flash_file(mapping, "executable");
    const char *vars = flash_file(mapping, "nvram-template");
    if (!code || !vars)
        return false;
    bool sb = has_string(features, "secure-boot") && has_string(features, "enrolled-keys");
    if (secure_boot != sb || (!secure_boot && has_string(features, "enrolled-keys")) ||
        (plain && has_string(features, "secure-boot")))
        return false;
    out->code = xstrdup(code);
    out->vars_template = xstrdup(vars);
    out->smm = has_string(features, "requires-smm");
    out->secure_boot = sb;
    return true;
}

static int cmp_base(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    const char *bx = strrchr(x, '/'), *by = strrchr(y, '/');
    return strcmp(bx ? bx + 1 : x, by ? by + 1 : y);
}

/* Descriptor paths of all dirs, one per file name (the first dir wins),
 * sorted by file name. */
static kh_strv *list_descriptors(const char *const *dirs)
{
    kh_strv *all = kh_strv_new();
    kh_strv *seen = kh_strv_new();
    for (size_t d = 0; dirs[d]; d++) {
        DIR *dir = opendir(dirs[d]);
        if (!dir)
            continue;
        struct dirent *e;
        while ((e = readdir(dir))) {
            size_t len = strlen(e->d_name);
            if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
                continue;
            bool dup = false;
            for (size_t i = 0; i < seen->n && !dup; i++)
                dup = strcmp(seen->v[i], e->d_name) == 0;
            if (dup)
                continue;
            kh_strv_add(seen, e->d_name);
            kh_strv_add_steal(all, xasprintf("%s/%s", dirs[d], e->d_name));
        }
        closedir(dir);
    }
    kh_strv_free(seen);
    if (all->n > 1)
        qsort(all->v, all->n, sizeof(char *), cmp_base);
    return all;
}

int kh_firmware_select(const char *const *dirs, bool secure_boot, kh_firmware_choice *out,
                       kh_err *err)
{
    *out = (kh_firmware_choice){ 0 };
    kh_strv *paths = list_descriptors(dirs ? dirs : kh_firmware_default_dirs);
    /* without Secure Boot, firmware without it first (no SMM: faster) */
    for (size_t k = 0; k < 2 * paths->n; k++) {
        size_t i = k % paths->n;
        bool plain = !secure_boot && k < paths->n;
        if (secure_boot && k >= paths->n)
            break;
        size_t len = 0;
        char *text = kh_fs_read(paths->v[i], DESCRIPTOR_MAX, &len, NULL);
        json_t *d = text && len ? json_loadb(text, len, 0, NULL) : NULL; /* empty: disabled */
        free(text);
        bool ok = json_is_object(d) && fits(d, secure_boot, plain, out);
        json_decref(d);
        if (ok) {
            out->descriptor = xstrdup(paths->v[i]);
            kh_strv_free(paths);
            return 0;
        }
        /* fits() fills out only when it returns true */
    }
    kh_strv_free(paths);
    kh_err_set(err, KH_E_UNSUPPORTED, "no UEFI firmware%s for q35 among QEMU's firmware "
               "descriptors (install ovmf)", secure_boot ? " with Secure Boot and enrolled keys"
                                                         : "");
    return -1;
}

/* Copy the template to path (atomically: a half copy is never used). */
static int copy_template(const char *template, const char *path, kh_err *err)
{
    size_t len = 0;
    char *data = kh_fs_read(template, VARS_MAX, &len, err);
    if (!data)
        return -1;
    int r = kh_fs_write_atomic(path, data, len, 0600, err);
    free(data);
    return r;
}

const char *kh_firmware_vars_name(const kh_firmware_choice *c)
{
    return c->secure_boot ? "uefi-vars-sb.fd" : "uefi-vars.fd";
}

int kh_firmware_vars_open(const kh_firmware_choice *c, const char *state_dir, bool chown_it,
                          unsigned uid, unsigned gid, kh_err *err)
{
    char *path = xasprintf("%s/%s", state_dir, kh_firmware_vars_name(c));
    struct stat st;
    int fd = -1;
    if (lstat(path, &st) < 0 && (errno != ENOENT || copy_template(c->vars_template, path,
                                                                  err) < 0))
        goto out;
    fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "open %s", path);
        goto out;
    }
    if (chown_it && fchown(fd, (uid_t)uid, (gid_t)gid) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "chown %s", path);
        close(fd);
        fd = -1;
    }
out:
    free(path);
    return fd;
}
