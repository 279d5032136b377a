/* caps.c - find the QEMU binary and learn what it can do, by running it.
 *
 * Short runs, no shell, each bounded by a timeout (two runs, about 50 ms,
 * on a normal host):
 *  - `<bin> -version`                       -> caps->version
 *  - `<bin> -sandbox on,<every deny> -blockdev driver=file,
 *    filename=/proc/self/exe,aio=io_uring,read-only=on,... -machine none
 *    -nodefaults -display none -monitor stdio` with "quit" on stdin: exit 0
 *    means both caps->sandbox and caps->io_uring (the latter tried only
 *    when QEMU >= 5.0 and io_uring_setup(2) works here). Unlike
 *    `-sandbox on -version`, which exits before the filter is installed,
 *    this installs the seccomp filter, so a host that cannot says false.
 *  - when that fails: the same with only -sandbox, and when the sandbox is
 *    what failed, with only -blockdev.
 */
#include "qemu/caps.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "host/spawn.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/misc.h"
#include "util/strv.h"

#define DEFAULT_BINARY "qemu-system-x86_64"
#define VERSION_TIMEOUT_MS 2000
#define CHECK_TIMEOUT_MS 3000
#define OUTPUT_MAX (64 * 1024)
#define SANDBOX_OPTS "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

/* An executable regular file? */
static int is_exec_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Resolve the binary to an absolute path. `name` came from the caller or
 * from `from` ("KVMHOST_QEMU", or NULL for the default). */
static char *find_binary(const char *name, const char *from, kh_err *err)
{
    char resolved[PATH_MAX];
    const char *src = from ? from : "the QEMU binary";
    if (strchr(name, '/')) {
        if (!is_exec_file(name)) {
            kh_err_set(err, KH_E_UNAVAILABLE, "%s %s %s", src, name,
                       access(name, F_OK) == 0 ? "is not an executable file" : "does not exist");
            return NULL;
        }
        if (!realpath(name, resolved)) {
            kh_err_errno(err, KH_E_UNAVAILABLE, errno, "cannot resolve %s", name);
            return NULL;
        }
        return xstrdup(resolved);
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char *dirs = xstrdup(path), *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *cand = xasprintf("%s/%s", *d ? d : ".", name);
        if (is_exec_file(cand) && realpath(cand, resolved)) {
            free(cand);
            free(dirs);
            return xstrdup(resolved);
        }
        free(cand);
    }
    free(dirs);
    kh_err_set(err, KH_E_UNAVAILABLE,
               "%s not found in PATH (%s): install qemu-system-x86 or set KVMHOST_QEMU", name,
               path);
    return NULL;
}

/* Run argv (no shell) with `input` on stdin (NULL: /dev/null), capturing
 * stdout and stderr (at most OUTPUT_MAX bytes) into *out (caller frees),
 * for at most timeout_ms. Returns the exit status, or -1 with err set when
 * it could not run, timed out or died of a signal. */
static int run_capture(char *const argv[], const char *input, int timeout_ms, char **out,
                       kh_err *err)
{
    kh_spawn_spec spec = { .argv = argv, .die_with_parent = true };
    kh_spawn_run_opts opts = { .input = input, .timeout_ms = (unsigned)timeout_ms,
                               .max_output = OUTPUT_MAX, .merge_stderr = true };
    kh_spawn_output res;
    kh_err serr = KH_ERR_INIT;
    int status = -1;
    if (kh_spawn_run(&spec, &opts, &res, &serr) < 0) {
        kh_err_set(err, KH_E_QEMU, "cannot run %s: %s", argv[0], serr.msg);
        kh_err_clear(&serr);
    } else if (res.timed_out) {
        kh_err_set(err, KH_E_TIMEOUT, "%s %s did not finish within %d ms", argv[0],
                   argv[1] ? argv[1] : "", timeout_ms);
    } else if (res.signal) {
        kh_err_set(err, KH_E_QEMU, "%s died of signal %d", argv[0], res.signal);
    } else {
        status = res.status;
    }
    *out = res.out;
    res.out = NULL;
    kh_spawn_output_clear(&res);
    return status;
}

/* First line of s, for messages, into line. */
static const char *first_line(const char *s, char *line, size_t size)
{
    size_t n = strcspn(s, "\r\n");
    if (n >= size)
        n = size - 1;
    memcpy(line, s, n);
    line[n] = '\0';
    return line;
}

/* "QEMU emulator version X.Y.Z ..." -> X*10000 + Y*100 + Z; 0 if absent. */
static unsigned parse_version(const char *out)
{
    const char *p = strstr(out, "QEMU emulator version ");
    if (!p)
        return 0;
    p += strlen("QEMU emulator version ");
    unsigned major = 0, minor = 0, micro = 0;
    int n = sscanf(p, "%u.%u.%u", &major, &minor, &micro);
    if (n < 2 || major == 0 || major > 999 || minor > 99 || micro > 99)
        return 0;
    return major * 10000 + minor * 100 + (n == 3 ? micro : 0);
}

/* Does the host kernel let us create an io_uring? 0 if so, else the
 * errno of io_uring_setup(2) (ENOSYS: too old; EPERM: disabled). */
static int kernel_io_uring(void)
{
#ifdef __NR_io_uring_setup
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    long fd = syscall(__NR_io_uring_setup, 1, &params);
    if (fd < 0)
        return errno;
    close((int)fd);
    return 0;
#else
    return ENOSYS;
#endif
}

/* Start a machine-less QEMU with extra options and "quit" on its monitor:
 * true when it exits 0. */
static bool qemu_starts(const char *bin, const char *const extra[], size_t n_extra,
                        char *why, size_t why_size)
{
    const char *base[] = { "-machine", "none", "-nodefaults", "-no-user-config",
                           "-display", "none", "-monitor", "stdio" };
    const char *argv[1 + KH_ARRAY_LEN(base) + 8 + 1];
    size_t i = 0;
    argv[i++] = bin;
    for (size_t k = 0; k < n_extra && k < 8; k++)
        argv[i++] = extra[k];
    for (size_t k = 0; k < KH_ARRAY_LEN(base); k++)
        argv[i++] = base[k];
    argv[i] = NULL;
    kh_err err = KH_ERR_INIT;
    char *out = NULL;
    /* posix_spawn takes char *const[]: the strings are not modified. */
    char **av = xcalloc(i + 1, sizeof(char *));
    for (size_t k = 0; k < i; k++)
        av[k] = xstrdup(argv[k]);
    int st = run_capture(av, "quit\n", CHECK_TIMEOUT_MS, &out, &err);
    kh_strv_array_free(av);
    bool ok = st == 0;
    why[0] = '\0';
    if (!ok) {
        /* The reason is QEMU's error line (its monitor banner comes first). */
        const char *e = strstr(out, "qemu-system");
        char line[200];
        if (st < 0) {
            size_t n = strnlen(err.msg, why_size - 1);
            memcpy(why, err.msg, n);
            why[n] = '\0';
        } else {
            snprintf(why, why_size, "exit %d: %s", st, first_line(e ? e : out, line, sizeof(line)));
        }
    }
    free(out);
    return ok;
}

char *kh_qemu_caps_probe(const char *binary, kh_qemu_caps *caps, kh_err *err)
{
    memset(caps, 0, sizeof(*caps));
    const char *from = NULL;
    const char *name = binary;
    if (!name || !*name) {
        const char *env = getenv("KVMHOST_QEMU");
        if (env && *env) {
            name = env;
            from = "KVMHOST_QEMU";
        } else {
            name = DEFAULT_BINARY;
        }
    }
    char *bin = find_binary(name, from, err);
    if (!bin)
        return NULL;
    uint64_t start = kh_now_ms();

    char vflag[] = "-version";
    char *argv[] = { bin, vflag, NULL };
    char *out = NULL;
    char line[200];
    int st = run_capture(argv, NULL, VERSION_TIMEOUT_MS, &out, err);
    if (st < 0) {
        kh_err_prefix(err, "probing QEMU: ");
        goto fail;
    }
    if (st != 0) {
        kh_err_set(err, KH_E_QEMU, "%s -version failed (exit %d): %s", bin, st,
                   first_line(out, line, sizeof(line)));
        goto fail;
    }
    caps->version = parse_version(out);
    if (caps->version == 0) {
        kh_err_set(err, KH_E_QEMU, "%s -version: no \"QEMU emulator version X.Y.Z\" in \"%s\"",
                   bin, first_line(out, line, sizeof(line)));
        goto fail;
    }
    if (caps->version < KH_QEMU_MIN_VERSION) {
        kh_err_set(err, KH_E_UNSUPPORTED, "%s is QEMU %u.%u.%u; kvmhost needs %u.%u or later",
                   bin, caps->version / 10000, caps->version / 100 % 100, caps->version % 100,
                   KH_QEMU_MIN_VERSION / 10000, KH_QEMU_MIN_VERSION / 100 % 100);
        goto fail;
    }
    KH_FREE(out);

    /* The block layer opens a file with aio=io_uring, under the sandbox
     * the VMs get. Usually one run answers both questions; when it fails,
     * the sandbox alone tells which one failed. */
    char sandbox_why[256] = "", uring_why[256] = "";
    static const char blockdev[] =
        "driver=file,filename=/proc/self/exe,aio=io_uring,read-only=on,node-name=kh-probe";
    const char *both[] = { "-sandbox", SANDBOX_OPTS, "-blockdev", blockdev };
    int uring_errno = caps->version < 50000 ? 0 : kernel_io_uring();
    if (caps->version < 50000)
        snprintf(uring_why, sizeof(uring_why), "QEMU older than 5.0");
    else if (uring_errno)
        snprintf(uring_why, sizeof(uring_why), "io_uring_setup: %s", strerror(uring_errno));
    else if (qemu_starts(bin, both, 4, uring_why, sizeof(uring_why)))
        caps->sandbox = caps->io_uring = true;
    if (!caps->sandbox) {
        caps->sandbox = qemu_starts(bin, both, 2, sandbox_why, sizeof(sandbox_why));
        if (!caps->sandbox && !uring_errno && caps->version >= 50000)
            caps->io_uring = qemu_starts(bin, both + 2, 2, uring_why, sizeof(uring_why));
    }
    char q1[600], q2[300], q3[300];
    kh_log(KH_LOG_INFO, "qemu.caps",
           "binary=%s version=%u sandbox=%s io_uring=%s ms=%llu sandbox_why=%s io_uring_why=%s",
           kh_log_quote(q1, sizeof(q1), bin), caps->version, caps->sandbox ? "yes" : "no",
           caps->io_uring ? "yes" : "no", (unsigned long long)(kh_now_ms() - start),
           kh_log_quote(q2, sizeof(q2), sandbox_why), kh_log_quote(q3, sizeof(q3), uring_why));
    return bin;
fail:
    free(out);
    free(bin);
    memset(caps, 0, sizeof(*caps));
    return NULL;
}
