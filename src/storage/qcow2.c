/* qcow2.c - owns looking into qcow2 images: the header check of plain
 * disk files (magic and backing-file offset, read directly: the spec check
 * needs no qemu-img) and an image's internal snapshot table (through
 * qemu-img info, which also reads it while QEMU has the image open). */
#include "storage/qcow2.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "host/spawn.h"

int kh_qcow2_probe(const char *path, bool *backing)
{
    unsigned char hdr[24];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread(fd, hdr, sizeof(hdr), 0) : -1;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof(hdr) || memcmp(hdr, "QFI\xfb", 4) != 0)
        return -1;
    uint64_t off = 0;
    for (int b = 8; b < 16; b++)
        off = (off << 8) | hdr[b];
    *backing = off != 0;
    return 0;
}

#define SNAPSHOTS_TIMEOUT_MS 20000u

json_t *kh_qcow2_snapshots(const char *qemu_img, const char *path, kh_err *err)
{
    static char env_lc[] = "LC_ALL=C", env_path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
    static char *const envp[] = { env_lc, env_path, NULL };
    /* -U: shared, so a running QEMU's image can be read; no -f guess. */
    char *argv[] = { (char *)(uintptr_t)qemu_img, (char *)(uintptr_t)"info",
                     (char *)(uintptr_t)"-U", (char *)(uintptr_t)"--output=json",
                     (char *)(uintptr_t)"-f", (char *)(uintptr_t)"qcow2", (char *)(uintptr_t)path,
                     NULL };
    kh_spawn_spec spec = { .argv = argv, .envp = envp, .stdin_fd = -1, .stdout_fd = -1,
                           .stderr_fd = -1, .die_with_parent = true };
    kh_spawn_run_opts opts = { .timeout_ms = SNAPSHOTS_TIMEOUT_MS };
    kh_spawn_output res;
    if (kh_spawn_run(&spec, &opts, &res, err) < 0) {
        kh_spawn_output_clear(&res);
        return NULL;
    }
    json_t *out = NULL;
    if (res.timed_out || res.status != 0) {
        size_t n = strlen(res.errtext);
        while (n && (res.errtext[n - 1] == '\n' || res.errtext[n - 1] == '\r'))
            res.errtext[--n] = '\0';
        kh_err_set(err, res.timed_out ? KH_E_TIMEOUT : KH_E_INTERNAL,
                   "reading the snapshots of %s: %s", path,
                   res.timed_out ? "qemu-img info did not finish in time"
                   : *res.errtext ? res.errtext : "qemu-img info failed");
        kh_spawn_output_clear(&res);
        return NULL;
    }
    json_error_t jerr;
    json_t *info = json_loadb(res.out, res.outlen, 0, &jerr);
    kh_spawn_output_clear(&res);
    if (!json_is_object(info)) {
        kh_err_set(err, KH_E_INTERNAL, "reading the snapshots of %s: qemu-img info gave no "
                   "JSON object", path);
        json_decref(info);
        return NULL;
    }
    out = json_object();
    size_t i;
    json_t *sn;
    json_array_foreach(json_object_get(info, "snapshots"), i, sn) {
        const char *name = json_string_value(json_object_get(sn, "name"));
        json_t *vms = json_object_get(sn, "vm-state-size");
        if (name && *name)
            json_object_set_new(out, name, json_integer(json_is_integer(vms)
                                                            ? json_integer_value(vms) : 0));
    }
    json_decref(info);
    return out;
}
