/* libvirt_state.c - the host state a libvirt domain brings along, read
 * where libvirt keeps it (the paths come from libvirt_xml.c; the caller has
 * allowed them as host paths): the UEFI variable store named by
 * <os><nvram> becomes the new VM's VARS file, libvirt's swtpm state
 * (tpm2-00.permall) the VM's TPM state (encrypted with the VM's key). Both
 * are read and checked before the VM is made (a refusal makes nothing) and
 * written into the VM's state dir once the VM exists (see porting.h). */
#include "porting/porting.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemu/firmware.h"
#include "qemu/tpm.h"
#include "util/fs.h"
#include "util/mem.h"

#define VARS_MAX (64u * 1024 * 1024) /* OVMF's stores are 128 KiB to 4 MiB */

struct kh_libvirt_state {
    unsigned char *vars; /* the store's bytes, or NULL: a fresh one at the first start */
    size_t vars_len;
    char *vars_name;     /* its file name in the VM's state dir */
    unsigned char *tpm;  /* the TPM's permanent state (plain), or NULL: a fresh TPM */
    size_t tpm_len;
};

#define TPM_STATE_MAX (4u * 1024 * 1024) /* swtpm's permall is tens of KiB */

/* The whole regular file at path, refused (KH_E_INVALID, naming what) when
 * it is a symlink, a device, a FIFO, a directory or longer than max. 1 and
 * *data, 0 when it does not exist, -1 with err. */
static int read_regular(const char *path, const char *what, size_t max, unsigned char **data,
                        size_t *len, kh_err *err)
{
    struct stat ls, st;
    *data = NULL;
    *len = 0;
    if (lstat(path, &ls) < 0) {
        if (errno == ENOENT)
            return 0;
        kh_err_errno(err, KH_E_INVALID, errno, "%s %s", what, path);
        return -1;
    }
    if (S_ISLNK(ls.st_mode) || !S_ISREG(ls.st_mode)) {
        kh_err_set(err, KH_E_INVALID, "%s %s is %s, not a regular file", what, path,
                   S_ISLNK(ls.st_mode) ? "a symbolic link" : S_ISDIR(ls.st_mode) ? "a directory"
                   : S_ISCHR(ls.st_mode) || S_ISBLK(ls.st_mode) ? "a device" : "special");
        return -1;
    }
    /* O_NOFOLLOW and the same inode: what was checked is what is read */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        kh_err_errno(err, KH_E_INVALID, errno, "%s %s", what, path);
        return -1;
    }
    int rc = -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_ino != ls.st_ino ||
        st.st_dev != ls.st_dev) {
        kh_err_set(err, KH_E_INVALID, "%s %s changed while it was read", what, path);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        kh_err_set(err, KH_E_INVALID, "%s %s is %" PRIu64 " bytes, more than %zu", what, path,
                   (uint64_t)st.st_size, max);
        goto out;
    }
    size_t n = (size_t)st.st_size, got = 0;
    unsigned char *buf = xmalloc(n + 1);
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r <= 0) {
            if (r < 0)
                kh_err_errno(err, KH_E_INVALID, errno, "%s %s", what, path);
            else
                kh_err_set(err, KH_E_INVALID, "%s %s shrank while it was read", what, path);
            free(buf);
            goto out;
        }
        got += (size_t)r;
    }
    *data = buf;
    *len = n;
    rc = 1;
out:
    close(fd);
    return rc;
}

/* An OVMF variable store is a firmware volume: its header (the same GUID
 * and length as the template's, the "_FVH" signature at 40) says so. */
static bool same_volume(const unsigned char *a, size_t alen, const unsigned char *t, size_t tlen)
{
    return alen == tlen && alen >= 48 && memcmp(a + 40, "_FVH", 4) == 0 &&
           memcmp(a + 16, t + 16, 24) == 0; /* FileSystemGuid, FvLength */
}

static int read_nvram(kh_libvirt_state *s, const json_t *state, const json_t *spec,
                      json_t *warnings, kh_err *err)
{
    const char *path = json_string_value(json_object_get(state, "nvram"));
    if (!path)
        return 0;
    const char *fw = json_string_value(json_object_get(spec, "firmware"));
    if (!fw || strcmp(fw, "uefi") != 0) {
        json_array_append_new(warnings, json_string("os/nvram without UEFI firmware is not "
                                                    "imported"));
        return 0;
    }
    kh_firmware_choice c = { 0 };
    unsigned char *tmpl = NULL, *data = NULL;
    size_t tlen = 0, len = 0;
    int rc = -1;
    if (kh_firmware_select(NULL, json_is_true(json_object_get(spec, "secure_boot")), &c, err) < 0)
        goto out;
    tmpl = (unsigned char *)kh_fs_read(c.vars_template, VARS_MAX, &tlen, err);
    if (!tmpl)
        goto out;
    int got = read_regular(path, "os/nvram", VARS_MAX, &data, &len, err);
    if (got < 0)
        goto out;
    if (got == 0) {
        /* libvirt makes it from the template at the first start: so do we */
        char msg[256];
        snprintf(msg, sizeof(msg), "os/nvram %.160s does not exist: the VM gets a fresh UEFI "
                 "variable store", path);
        json_array_append_new(warnings, json_string(msg));
        rc = 0;
        goto out;
    }
    if (len != tlen) {
        kh_err_set(err, KH_E_INVALID, "os/nvram %s is %zu bytes; the VARS template of the "
                   "firmware chosen (%s) is %zu bytes: a store of another firmware (e.g. "
                   "OVMF's 2 MiB build) cannot be used", path, len, c.vars_template, tlen);
        goto out;
    }
    if (!same_volume(data, len, tmpl, tlen)) {
        kh_err_set(err, KH_E_INVALID, "os/nvram %s is not a UEFI variable store like %s (no "
                   "firmware volume header of the same kind)", path, c.vars_template);
        goto out;
    }
    s->vars = data;
    s->vars_len = len;
    s->vars_name = xstrdup(kh_firmware_vars_name(&c));
    data = NULL;
    rc = 0;
out:
    free(tmpl);
    free(data);
    kh_firmware_choice_clear(&c);
    return rc;
}

static void warn(json_t *warnings, const char *fmt, const char *a)
{
    char msg[320];
    snprintf(msg, sizeof(msg), fmt, a);
    json_array_append_new(warnings, json_string(msg));
}

static bool uuid_ok(const char *u)
{
    if (strlen(u) != 36)
        return false;
    for (int i = 0; i < 36; i++)
        if (i == 8 || i == 13 || i == 18 || i == 23 ? u[i] != '-'
                                                    : !strchr("0123456789abcdefABCDEF", u[i]))
            return false;
    return true;
}

char *kh_libvirt_state_tpm_file(const json_t *state, const json_t *spec, json_t *warnings)
{
    const json_t *t = json_object_get(state, "tpm");
    if (!t || !json_is_true(json_object_get(spec, "tpm")))
        return NULL;
    const char *version = json_string_value(json_object_get(t, "version"));
    const char *dir = json_string_value(json_object_get(t, "dir"));
    const char *uuid = json_string_value(json_object_get(state, "uuid"));
    if (json_is_true(json_object_get(t, "encrypted"))) {
        warn(warnings, "tpm: libvirt encrypted its state (<encryption secret=...>): not "
                       "imported, the VM gets a fresh TPM%s", "");
    } else if (version && *version && strcmp(version, "2.0") != 0) {
        warn(warnings, "tpm: a TPM %.16s state is not imported (kvmhost's TPM is a 2.0)",
             version);
    } else if (json_object_get(t, "other")) {
        warn(warnings, "tpm: a state that is not a directory (<source type=...>) is not "
                       "imported%s", "");
    } else if (dir) {
        return xasprintf("%s/tpm2-00.permall", dir);
    } else if (uuid && uuid_ok(uuid)) {
        /* libvirt's default: swtpm --tpmstate dir=/var/lib/libvirt/swtpm/UUID/tpm2 */
        return xasprintf("/var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall", uuid);
    }
    return NULL;
}

static int read_tpm(kh_libvirt_state *s, const json_t *state, json_t *warnings, kh_err *err)
{
    const char *path = json_string_value(json_object_get(state, "tpm_file"));
    unsigned char *file = NULL;
    size_t len = 0;
    if (!path)
        return 0;
    int got = read_regular(path, "tpm state", TPM_STATE_MAX, &file, &len, err);
    if (got <= 0) {
        if (got == 0)
            warn(warnings, "tpm: no state at %.200s: the VM gets a fresh TPM", path);
        return got;
    }
    const unsigned char *data = NULL;
    size_t dlen = 0;
    if (kh_tpm_permall_plain(file, len, &data, &dlen, err) < 0) {
        kh_err_prefix(err, "%s", path);
        free(file);
        return -1;
    }
    s->tpm = xmalloc(dlen + 1);
    memcpy(s->tpm, data, dlen);
    s->tpm_len = dlen;
    free(file);
    return 0;
}

kh_libvirt_state *kh_libvirt_state_read(const json_t *state, const json_t *spec,
                                        json_t *warnings, kh_err *err)
{
    kh_libvirt_state *s = xcalloc(1, sizeof(*s));
    if (read_nvram(s, state, spec, warnings, err) < 0 ||
        read_tpm(s, state, warnings, err) < 0) {
        kh_libvirt_state_free(s);
        return NULL;
    }
    return s;
}

int kh_libvirt_state_write(const kh_libvirt_state *s, kh_manager *mgr, kh_storage *storage,
                           const char *vm_id, kh_err *err)
{
    if (!s->vars && !s->tpm)
        return 0;
    char *dir = kh_manager_state_file(mgr, vm_id, NULL);
    int rc = kh_fs_mkdir_p(dir, 0700, err);
    if (rc == 0 && s->vars) {
        char *path = kh_manager_state_file(mgr, vm_id, s->vars_name);
        rc = kh_fs_write_atomic(path, s->vars, s->vars_len, 0600, err);
        free(path);
    }
    if (rc == 0 && s->tpm) {
        /* encrypted with the VM's key, as the launcher has swtpm read it */
        int key_fd = storage ? kh_storage_vm_tpm_key_fd(storage, vm_id, err) : -1;
        if (!storage || key_fd >= 0)
            rc = kh_tpm_state_import(dir, s->tpm, s->tpm_len, key_fd, err);
        else
            rc = -1;
        if (key_fd >= 0)
            close(key_fd);
    }
    free(dir);
    return rc;
}

void kh_libvirt_state_free(kh_libvirt_state *s)
{
    if (!s)
        return;
    free(s->vars);
    free(s->vars_name);
    free(s->tpm);
    free(s);
}
