/* identity.c - the identity reset of a volume's guest (templates): empties
 * /etc/machine-id (systemd makes a new one at the next boot), removes
 * /var/lib/dbus/machine-id and the SSH host keys /etc/ssh/ssh_host_*, as
 * virt-sysprep's machine-id and ssh-hostkeys operations do.
 *
 * How: the volume's chain is exported as a raw file through FUSE by
 * qemu-storage-daemon (no nbd module, no appliance VM), the ext2/3/4
 * filesystem holding /etc (the whole disk or a partition, found with
 * partx) is edited with debugfs -w, then checked. Synchronous: it blocks
 * the daemon's loop for the time it takes (about half a second). */
#include "storage/storage_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "host/spawn.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/strv.h"

#define QSD_BIN "/usr/bin/qemu-storage-daemon"
#define PARTX_BIN "/usr/bin/partx"

static const char *debugfs_bin(void)
{
    return access("/usr/sbin/debugfs", X_OK) == 0 ? "/usr/sbin/debugfs" : "/sbin/debugfs";
}

/* The blockdev JSON of the chain from layer i down (the recorded chain, not
 * what the image headers say). */
static json_t *chain_node(const kh_volume_chain *c, size_t i)
{
    json_t *file = json_pack("{s:s, s:s}", "driver", "file", "filename", c->layer[i].path);
    if (c->layer[i].format != KH_DISK_QCOW2)
        return json_pack("{s:s, s:o}", "driver", "raw", "file", file);
    return json_pack("{s:s, s:o, s:o}", "driver", "qcow2", "file", file, "backing",
                     i + 1 < c->n ? chain_node(c, i + 1) : json_null());
}

/* Run a short helper; its stdout in *out (caller frees). -1 with err when it
 * could not run or failed. */
static int run(const char *const *argv, const char *input, char **out, kh_err *err)
{
    kh_spawn_spec spec = { .argv = (char *const *)(uintptr_t)argv, .stdin_fd = -1,
                           .stdout_fd = -1, .stderr_fd = -1, .die_with_parent = true };
    kh_spawn_run_opts o = { .input = input, .timeout_ms = 30000 };
    kh_spawn_output res;
    memset(&res, 0, sizeof(res));
    if (kh_spawn_run(&spec, &o, &res, err) < 0)
        return -1;
    int rc = 0;
    if (res.status != 0) {
        kh_err_set(err, KH_E_INTERNAL, "%s failed (%s): %.200s", argv[0],
                   res.timed_out ? "timed out" : "exit status", res.errtext ? res.errtext : "");
        rc = -1;
    } else if (out) {
        *out = xstrdup(res.out ? res.out : "");
    }
    kh_spawn_output_clear(&res);
    return rc;
}

/* debugfs -R cmd on img; its stdout. */
static char *dbg(const char *img, const char *cmd, kh_err *err)
{
    const char *argv[] = { debugfs_bin(), "-R", cmd, img, NULL };
    char *out = NULL;
    return run(argv, NULL, &out, err) < 0 ? NULL : out;
}

/* The names in a `ls -p DIR` listing ("/ino/mode/uid/gid/name/size/"). */
static kh_strv *ls_names(const char *listing, kh_strv *sizes)
{
    kh_strv *names = kh_strv_new();
    const char *line = listing;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *l = xstrndup(line, len);
        char *f[7] = { 0 };
        int n = 0;
        for (char *p = l, *save = NULL, *t = strtok_r(p, "/", &save); t && n < 7;
             t = strtok_r(NULL, "/", &save))
            f[n++] = t;
        if (n >= 5 && l[0] == '/') {
            kh_strv_add(names, f[4]);
            if (sizes)
                kh_strv_add(sizes, n >= 6 ? f[5] : "");
        }
        free(l);
        line = end ? end + 1 : NULL;
    }
    return names;
}

static bool has_name(const kh_strv *v, const char *name, size_t *at)
{
    for (size_t i = 0; i < v->n; i++) {
        if (strcmp(v->v[i], name) == 0) {
            if (at)
                *at = i;
            return true;
        }
    }
    return false;
}

/* Reset the guest identity in the filesystem at img (with ?offset=N).
 * 1 done, 0 not a root filesystem (no /etc), -1 error. */
static int reset_fs(const char *img, const char *empty, unsigned *nkeys, kh_err *err)
{
    kh_err e = KH_ERR_INIT;
    char *etc = dbg(img, "ls -p /etc", &e);
    kh_err_clear(&e); /* not an ext2/3/4 filesystem: not this one */
    if (!etc)
        return 0;
    kh_strv *names = ls_names(etc, NULL);
    free(etc);
    bool root = has_name(names, "machine-id", NULL) || has_name(names, "ssh", NULL) ||
                has_name(names, "os-release", NULL) || has_name(names, "passwd", NULL);
    bool mid = has_name(names, "machine-id", NULL);
    kh_strv_free(names);
    if (!root)
        return 0;
    char *feat = dbg(img, "features", err);
    if (!feat)
        return -1;
    bool dirty = strstr(feat, "needs_recovery") != NULL;
    free(feat);
    if (dirty) {
        kh_err_set(err, KH_E_CONFLICT, "the guest filesystem was not cleanly unmounted (its "
                   "journal needs recovery): boot and shut down the VM cleanly first");
        return -1;
    }
    kh_strv *script = kh_strv_new();
    if (mid) {
        kh_strv_add(script, "rm /etc/machine-id");
        kh_strv_addf(script, "write %s /etc/machine-id", empty);
        kh_strv_add(script, "sif /etc/machine-id mode 0100444");
        kh_strv_add(script, "sif /etc/machine-id uid 0");
        kh_strv_add(script, "sif /etc/machine-id gid 0");
    }
    char *dbus = dbg(img, "ls -p /var/lib/dbus", err);
    kh_err_clear(err);
    kh_strv *dn = ls_names(dbus, NULL);
    if (has_name(dn, "machine-id", NULL))
        kh_strv_add(script, "rm /var/lib/dbus/machine-id");
    kh_strv_free(dn);
    free(dbus);
    char *ssh = dbg(img, "ls -p /etc/ssh", err);
    kh_err_clear(err);
    kh_strv *sn = ls_names(ssh, NULL);
    unsigned keys = 0;
    for (size_t i = 0; i < sn->n; i++) {
        if (strncmp(sn->v[i], "ssh_host_", 9) == 0) {
            kh_strv_addf(script, "rm /etc/ssh/%s", sn->v[i]);
            keys++;
        }
    }
    kh_strv_free(sn);
    free(ssh);
    int rc = 0;
    if (script->n) {
        char *input = kh_strv_join(script, "\n");
        const char *argv[] = { debugfs_bin(), "-w", "-f", "-", img, NULL };
        rc = run(argv, input, NULL, err);
        free(input);
    }
    kh_strv_free(script);
    if (rc < 0)
        return -1;
    /* check: debugfs says little about a failed command */
    kh_strv *sizes = kh_strv_new();
    char *after = dbg(img, "ls -p /etc", err);
    kh_strv *an = after ? ls_names(after, sizes) : kh_strv_new();
    size_t at = 0;
    bool ok = after && (!mid || (has_name(an, "machine-id", &at) && strcmp(sizes->v[at], "0") == 0));
    free(after);
    kh_strv_free(an);
    kh_strv_free(sizes);
    char *ssh2 = ok ? dbg(img, "ls -p /etc/ssh", err) : NULL;
    kh_err_clear(err);
    kh_strv *s2 = ls_names(ssh2, NULL);
    for (size_t i = 0; ok && i < s2->n; i++)
        ok = strncmp(s2->v[i], "ssh_host_", 9) != 0;
    kh_strv_free(s2);
    free(ssh2);
    if (!ok) {
        kh_err_set(err, KH_E_INTERNAL, "the identity reset did not take (debugfs)");
        return -1;
    }
    *nkeys += keys;
    return 1;
}

/* Start qemu-storage-daemon exporting chain c at mp; 0 once the export is
 * mounted. */
static int export_start(const kh_volume_chain *c, const char *mp, kh_spawn_child *child,
                        kh_err *err)
{
    json_t *node = chain_node(c, 0);
    json_object_set_new(node, "node-name", json_string("top"));
    char *bd = json_dumps(node, JSON_COMPACT);
    json_decref(node);
    json_t *ex = json_pack("{s:s, s:s, s:s, s:s, s:b}", "type", "fuse", "id", "e", "node-name",
                           "top", "mountpoint", mp, "writable", 1);
    char *exs = json_dumps(ex, JSON_COMPACT);
    json_decref(ex);
    const char *argv[] = { QSD_BIN, "--blockdev", bd, "--export", exs, NULL };
    kh_spawn_spec spec = { .argv = (char *const *)(uintptr_t)argv, .stdin_fd = -1,
                           .stdout_fd = -1, .stderr_fd = -1, .die_with_parent = true };
    int rc = kh_spawn(&spec, child, err);
    free(bd);
    free(exs);
    if (rc < 0)
        return -1;
    char *dir = xstrdup(mp);
    *strrchr(dir, '/') = '\0';
    struct stat sd, sm;
    for (int i = 0; i < 1000; i++) { /* 10 s */
        if (stat(dir, &sd) == 0 && stat(mp, &sm) == 0 && sd.st_dev != sm.st_dev) {
            free(dir);
            return 0;
        }
        if (waitpid(child->pid, NULL, WNOHANG) == child->pid) {
            child->pid = -1;
            break;
        }
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    free(dir);
    kh_err_set(err, KH_E_INTERNAL, "qemu-storage-daemon could not export the volume (FUSE)");
    return -1;
}

/* SIGTERM (qemu-storage-daemon flushes and unmounts), then reap. */
static void export_stop(kh_spawn_child *child)
{
    if (child->pid > 0) {
        kill(child->pid, SIGTERM);
        struct pollfd p = { .fd = child->pidfd, .events = POLLIN };
        if (child->pidfd < 0 || poll(&p, 1, 10000) <= 0)
            kill(child->pid, SIGKILL);
        waitpid(child->pid, NULL, 0);
    }
    if (child->pidfd >= 0)
        close(child->pidfd);
}

int kh_storage_identity_reset(kh_storage *st, const char *ref, unsigned *nkeys, kh_err *err)
{
    kh_volume_chain c;
    if (kh_storage_resolve(st, ref, &c, err) < 0)
        return -1;
    if (c.encrypted) {
        kh_err_set(err, KH_E_INVALID, "volume %s is encrypted: its identity is not reset here",
                   ref);
        kh_volume_chain_clear(&c);
        return -1;
    }
    char tmpl[] = "/tmp/kh-identity-XXXXXX";
    if (!mkdtemp(tmpl)) {
        kh_err_set(err, KH_E_INTERNAL, "mkdtemp: %s", strerror(errno));
        kh_volume_chain_clear(&c);
        return -1;
    }
    char *mp = xasprintf("%s/disk", tmpl), *empty = xasprintf("%s/empty", tmpl);
    kh_spawn_child child = { .pid = -1, .pidfd = -1 };
    int rc = -1, fd;
    if ((fd = open(mp, O_CREAT | O_WRONLY | O_CLOEXEC, 0600)) < 0 ||
        close(fd) < 0 || (fd = open(empty, O_CREAT | O_WRONLY | O_CLOEXEC, 0444)) < 0 ||
        close(fd) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "temporary files: %s", strerror(errno));
        goto out;
    }
    if (export_start(&c, mp, &child, err) < 0)
        goto out;
    /* the whole disk, then each partition */
    kh_strv *offs = kh_strv_new();
    kh_strv_add(offs, "0");
    const char *px[] = { PARTX_BIN, "-r", "-g", "-o", "START", mp, NULL };
    char *parts = NULL;
    kh_err perr = KH_ERR_INIT;
    if (run(px, NULL, &parts, &perr) == 0) {
        /* START in 512-byte sectors, one per line */
        for (char *save = NULL, *t = strtok_r(parts, "\n", &save); t;
             t = strtok_r(NULL, "\n", &save))
            kh_strv_addf(offs, "%llu", strtoull(t, NULL, 10) * 512ULL);
    }
    kh_err_clear(&perr); /* no partition table: the whole disk only */
    free(parts);
    rc = 0;
    for (size_t i = 0; i < offs->n && rc == 0; i++) {
        char *img = xasprintf("%s?offset=%s", mp, offs->v[i]);
        rc = reset_fs(img, empty, nkeys, err);
        free(img);
    }
    kh_strv_free(offs);
    if (rc == 0)
        kh_log(KH_LOG_INFO, "template.identity", "volume=%s found=none", ref);
out:
    export_stop(&child);
    unlink(mp);
    unlink(empty);
    rmdir(tmpl);
    free(mp);
    free(empty);
    kh_volume_chain_clear(&c);
    return rc;
}
