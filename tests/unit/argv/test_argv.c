/* test_argv.c - golden tests of the QEMU argv builder.
 *
 * For every DATA/NAME.json ({"spec": {...}, "caps": {...}, "env": {...}})
 * the argv is built and compared with DATA/NAME.args (one argument per
 * line) or, when the build fails, with DATA/NAME.err ("code: message").
 * A golden without its .json, or one that does not match the outcome, fails
 * the run ("unused golden"). KH_REGEN_GOLDEN=1 rewrites the goldens.
 *
 * "spec" goes through kh_vm_spec_from_json() unless the case says
 * "validate": false; then it is loaded as is, without any check, to prove
 * the builder's own defences (a spec from an old store, a caller bug).
 *
 * Every argv that is built is also checked for invariants: no newline in
 * any argument, every -blockdev/-device/-object argument is one JSON
 * object, no -drive, and each disk yields exactly one file node whose
 * filename is the disk's path (or its fd set), one format node and one
 * device - so a path like "x,file=/etc/shadow" cannot add a drive.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "conf/vm_spec.h"
#include "qemu/argv.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/strv.h"

#define DEFAULT_ID "8a6e0804-2bd0-4672-b79d-d97027f1f86b"

static bool has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a > b && strcmp(s + a - b, suffix) == 0;
}

/* A string from obj[key], NULL when absent or null; dflt when absent. */
static const char *opt_str(const json_t *obj, const char *key, const char *dflt)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return dflt;
    return json_string_value(v);
}

/* "validate": false - the spec as written, no checks at all. */
static kh_vm_spec *spec_load_raw(const json_t *o)
{
    kh_vm_spec *s = xcalloc(1, sizeof(*s));
    s->name = xstrdup(opt_str(o, "name", "raw"));
    s->vcpus = (unsigned)json_integer_value(json_object_get(o, "vcpus"));
    s->memory_mib = (uint64_t)json_integer_value(json_object_get(o, "memory_mib"));
    const char *m = opt_str(o, "machine", "q35");
    s->machine = strcmp(m, "microvm") == 0 ? KH_MACHINE_MICROVM : KH_MACHINE_Q35;
    const json_t *boot = json_object_get(o, "boot");
    s->kernel = xstrdup(opt_str(boot, "kernel", NULL));
    s->initrd = xstrdup(opt_str(boot, "initrd", NULL));
    s->cmdline = xstrdup(opt_str(boot, "cmdline", NULL));
    const json_t *disks = json_object_get(o, "disks");
    s->ndisks = json_array_size(disks);
    s->disks = xcalloc(s->ndisks + 1, sizeof(*s->disks));
    for (size_t i = 0; i < s->ndisks; i++) {
        const json_t *d = json_array_get(disks, i);
        s->disks[i].path = xstrdup(opt_str(d, "path", NULL));
        const char *f = opt_str(d, "format", "raw");
        s->disks[i].format = strcmp(f, "qcow2") == 0 ? KH_DISK_QCOW2 : KH_DISK_RAW;
        s->disks[i].readonly = json_is_true(json_object_get(d, "readonly"));
    }
    const json_t *serial = json_object_get(o, "serial");
    s->serial = serial ? json_is_true(serial) : true;
    s->graphics = strcmp(opt_str(o, "graphics", "none"), "vnc") == 0 ? KH_GRAPHICS_VNC
                                                                       : KH_GRAPHICS_NONE;
    s->description = xstrdup(opt_str(o, "description", NULL));
    return s;
}

static int int_or(const json_t *obj, const char *key, int dflt)
{
    const json_t *v = json_object_get(obj, key);
    return v ? (int)json_integer_value(v) : dflt;
}

/* Check that a test file only uses keys the runner knows (catches typos). */
static bool keys_known(const json_t *obj, const char *const *known, const char *name)
{
    const char *key;
    json_t *val;
    bool ok = true;
    json_object_foreach((json_t *)(uintptr_t)obj, key, val) {
        (void)val;
        bool found = false;
        for (size_t i = 0; known[i]; i++)
            found = found || strcmp(known[i], key) == 0;
        if (!found) {
            printf("# %s: unknown test key \"%s\"\n", name, key);
            ok = false;
        }
    }
    return ok;
}

static void check_invariants(const char *name, const kh_vm_spec *spec, const kh_argv_env *env,
                             const kh_strv *sv)
{
    size_t nfile = 0, nfmt = 0, ndev = 0;
    size_t *file_hits = xcalloc(spec->ndisks + 1, sizeof(size_t));
    for (size_t i = 0; i < sv->n; i++) {
        const char *a = sv->v[i];
        if (strchr(a, '\n')) {
            printf("# %s: newline in argument %zu\n", name, i);
            CHECK(!"newline in an argument");
        }
        CHECK(strcmp(a, "-drive") != 0);
        bool json_opt = strcmp(a, "-blockdev") == 0 || strcmp(a, "-device") == 0 ||
                        strcmp(a, "-object") == 0;
        if (!json_opt)
            continue;
        CHECK(i + 1 < sv->n);
        if (i + 1 >= sv->n)
            break;
        json_error_t jerr;
        json_t *j = json_loads(sv->v[i + 1], JSON_REJECT_DUPLICATES, &jerr);
        CHECK(json_is_object(j));
        const char *driver = json_string_value(json_object_get(j, "driver"));
        const char *nn = json_string_value(json_object_get(j, "node-name"));
        if (strcmp(a, "-blockdev") == 0 && nn && strncmp(nn, "disk", 4) != 0) {
            /* the firmware's flash and the cidata CD-ROM: their own names */
            CHECK(strncmp(nn, "fw-code", 7) == 0 || strncmp(nn, "fw-vars", 7) == 0 ||
                  strncmp(nn, "cidata", 6) == 0);
        } else if (strcmp(a, "-blockdev") == 0 && driver && strcmp(driver, "file") == 0) {
            nfile++;
            const char *fn = json_string_value(json_object_get(j, "filename"));
            for (size_t d = 0; fn && d < spec->ndisks; d++) {
                char fdset[32];
                snprintf(fdset, sizeof(fdset), "/dev/fdset/%zu", d + 1);
                int fd = env->disk_fds ? env->disk_fds[d] : -1;
                if (strcmp(fn, fd >= 0 ? fdset : spec->disks[d].path) == 0)
                    file_hits[d]++;
            }
        } else if (strcmp(a, "-blockdev") == 0) {
            nfmt++;
        } else if (strcmp(a, "-device") == 0 && driver && strncmp(driver, "virtio-blk", 10) == 0) {
            ndev++;
        }
        json_decref(j);
        i++;
    }
    size_t nlayers = spec->ndisks;
    for (size_t d = 0; d < spec->ndisks; d++)
        nlayers += spec->disks[d].nbacking;
    CHECK(nfile == nlayers);
    CHECK(nfmt == nlayers);
    CHECK(ndev == spec->ndisks);
    for (size_t d = 0; d < spec->ndisks; d++)
        CHECK(file_hits[d] == 1);
    if (nfile != nlayers || ndev != spec->ndisks)
        printf("# %s: %zu disks but %zu file nodes, %zu devices\n", name, spec->ndisks, nfile,
               ndev);
    free(file_hits);
}

/* Run one case; returns the outcome text and sets *is_err. */
static char *run_case(const char *name, const json_t *tc, bool *is_err)
{
    static const char *const top[] = { "spec", "caps", "env", "validate", "comment", "resolved",
                                       NULL };
    static const char *const caps_keys[] = { "version", "sandbox", "io_uring", NULL };
    static const char *const env_keys[] = { "binary", "vm_id", "accel", "qmp_fd", "serial_fd",
                                            "pidfile", "vnc_socket", "kernel_file",
                                            "initrd_file", "disk_fds", "backing_fds", "nic_fds",
                                            "nic_vhost_fds", "tsc_khz", "secret_fds",
                                            "backing_secret_fds", "firmware_serial_file",
                                            "incoming", "fw_code", "fw_vars_fd", "fw_smm",
                                            "cidata_path", "tpm_fd", "qga_fd", "cpu", NULL };
    const json_t *sj = json_object_get(tc, "spec");
    const json_t *cj = json_object_get(tc, "caps");
    const json_t *ej = json_object_get(tc, "env");
    CHECK(keys_known(tc, top, name));
    CHECK(!cj || keys_known(cj, caps_keys, name));
    CHECK(!ej || keys_known(ej, env_keys, name));

    kh_err err = KH_ERR_INIT;
    kh_vm_spec *spec;
    if (json_is_false(json_object_get(tc, "validate"))) {
        spec = spec_load_raw(sj);
    } else {
        spec = kh_vm_spec_from_json(sj, &err);
        if (!spec) {
            *is_err = true;
            return xasprintf("%s: vm spec: %s\n", kh_code_name(err.code), err.msg);
        }
    }

    /* "resolved": what the VM manager fills in for volume disks at start
     * (file, format and backing chain from the storage records), per disk
     * index: {"path", "format", "backing": [{"path", "format"}, ...],
     * "encrypted", "direct"}. */
    const json_t *rj = json_object_get(tc, "resolved");
    for (size_t i = 0; i < json_array_size(rj) && i < spec->ndisks; i++) {
        const json_t *r = json_array_get(rj, i);
        kh_disk_spec *d = &spec->disks[i];
        if (!json_is_object(r))
            continue;
        free(d->path);
        d->path = xstrdup(opt_str(r, "path", NULL));
        d->format = strcmp(opt_str(r, "format", "raw"), "qcow2") == 0 ? KH_DISK_QCOW2
                                                                       : KH_DISK_RAW;
        d->encrypted = json_is_true(json_object_get(r, "encrypted"));
        d->direct = json_is_true(json_object_get(r, "direct"));
        const json_t *bk = json_object_get(r, "backing");
        d->nbacking = json_array_size(bk);
        d->backing = d->nbacking ? xcalloc(d->nbacking, sizeof(*d->backing)) : NULL;
        for (size_t j = 0; j < d->nbacking; j++) {
            const json_t *l = json_array_get(bk, j);
            d->backing[j].path = xstrdup(opt_str(l, "path", NULL));
            d->backing[j].format = strcmp(opt_str(l, "format", "raw"), "qcow2") == 0
                                       ? KH_DISK_QCOW2 : KH_DISK_RAW;
            d->backing[j].encrypted = json_is_true(json_object_get(l, "encrypted"));
        }
    }
    /* "backing_fds": per disk null or an array of fds, one per layer. */
    const json_t *bfj = json_object_get(ej, "backing_fds");
    int **bfds = NULL;
    if (json_is_array(bfj)) {
        bfds = xcalloc(spec->ndisks + 1, sizeof(int *));
        for (size_t i = 0; i < json_array_size(bfj) && i < spec->ndisks; i++) {
            const json_t *a = json_array_get(bfj, i);
            if (!json_is_array(a))
                continue;
            bfds[i] = xcalloc(json_array_size(a) + 1, sizeof(int));
            for (size_t j = 0; j < json_array_size(a); j++)
                bfds[i][j] = (int)json_integer_value(json_array_get(a, j));
        }
    }

    /* "backing_secret_fds": per disk null or an array, one per layer (-1: none). */
    const json_t *bsj = json_object_get(ej, "backing_secret_fds");
    int **bsfds = NULL;
    if (json_is_array(bsj)) {
        bsfds = xcalloc(spec->ndisks + 1, sizeof(int *));
        for (size_t i = 0; i < json_array_size(bsj) && i < spec->ndisks; i++) {
            const json_t *a = json_array_get(bsj, i);
            if (!json_is_array(a))
                continue;
            bsfds[i] = xcalloc(json_array_size(a) + 1, sizeof(int));
            for (size_t j = 0; j < json_array_size(a); j++)
                bsfds[i][j] = (int)json_integer_value(json_array_get(a, j));
        }
    }

    int *sfds = NULL;
    const json_t *sfj = json_object_get(ej, "secret_fds");
    if (json_is_array(sfj)) {
        sfds = xcalloc(json_array_size(sfj) + 1, sizeof(int));
        for (size_t i = 0; i < json_array_size(sfj); i++)
            sfds[i] = (int)json_integer_value(json_array_get(sfj, i));
    }

    kh_qemu_caps caps = {
        .version = (unsigned)int_or(cj, "version", 70202),
        .sandbox = json_object_get(cj, "sandbox") ? json_is_true(json_object_get(cj, "sandbox"))
                                                  : true,
        .io_uring = json_object_get(cj, "io_uring")
                        ? json_is_true(json_object_get(cj, "io_uring"))
                        : true,
    };
    int *fds = NULL;
    const json_t *fdj = json_object_get(ej, "disk_fds");
    if (json_is_array(fdj)) {
        fds = xcalloc(json_array_size(fdj) + 1, sizeof(int));
        for (size_t i = 0; i < json_array_size(fdj); i++)
            fds[i] = (int)json_integer_value(json_array_get(fdj, i));
    }
    int *nfds = NULL, *vfds = NULL;
    const json_t *nj = json_object_get(ej, "nic_fds"), *vj = json_object_get(ej, "nic_vhost_fds");
    if (json_is_array(nj)) {
        nfds = xcalloc(json_array_size(nj) + 1, sizeof(int));
        for (size_t i = 0; i < json_array_size(nj); i++)
            nfds[i] = (int)json_integer_value(json_array_get(nj, i));
    }
    if (json_is_array(vj)) {
        vfds = xcalloc(json_array_size(vj) + 1, sizeof(int));
        for (size_t i = 0; i < json_array_size(vj); i++)
            vfds[i] = (int)json_integer_value(json_array_get(vj, i));
    }
    const char *accel = opt_str(ej, "accel", "kvm");
    kh_argv_env env = {
        .binary = opt_str(ej, "binary", "/usr/bin/qemu-system-x86_64"),
        .vm_id = opt_str(ej, "vm_id", DEFAULT_ID),
        .accel = accel && strcmp(accel, "tcg") == 0 ? KH_ACCEL_TCG : KH_ACCEL_KVM,
        .cpu = opt_str(ej, "cpu", NULL),
        .qmp_fd = int_or(ej, "qmp_fd", 3),
        .serial_fd = int_or(ej, "serial_fd", 4),
        .pidfile = opt_str(ej, "pidfile", "/run/kvmhost/vms/" DEFAULT_ID "/qemu.pid"),
        .vnc_socket = opt_str(ej, "vnc_socket", "/run/kvmhost/vms/" DEFAULT_ID "/vnc.sock"),
        .kernel_file = opt_str(ej, "kernel_file", NULL),
        .initrd_file = opt_str(ej, "initrd_file", NULL),
        .firmware_serial_file = opt_str(ej, "firmware_serial_file", "/proc/self/fd/5"),
        .disk_fds = fds,
        .backing_fds = (const int *const *)bfds,
        .secret_fds = sfds,
        .backing_secret_fds = (const int *const *)bsfds,
        .nic_fds = nfds,
        .nic_vhost_fds = vfds,
        .tsc_khz = (unsigned)int_or(ej, "tsc_khz", 0),
        .incoming = json_is_true(json_object_get(ej, "incoming")),
        .fw_code = opt_str(ej, "fw_code", NULL),
        .fw_vars_fd = int_or(ej, "fw_vars_fd", -1),
        .fw_smm = json_is_true(json_object_get(ej, "fw_smm")),
        .cidata_path = opt_str(ej, "cidata_path", NULL),
        .tpm_fd = int_or(ej, "tpm_fd", -1),
        .qga_fd = int_or(ej, "qga_fd", -1),
    };
    if (fds && json_array_size(fdj) != spec->ndisks)
        printf("# %s: disk_fds has %zu entries for %zu disks\n", name, json_array_size(fdj),
               spec->ndisks);

    char *out;
    kh_strv *sv = kh_qemu_argv_build(spec, &caps, &env, &err);
    if (!sv) {
        CHECK(kh_err_isset(&err));
        *is_err = true;
        out = xasprintf("%s: %s\n", kh_code_name(err.code), err.msg);
    } else {
        CHECK(!kh_err_isset(&err));
        check_invariants(name, spec, &env, sv);
        *is_err = false;
        char *joined = kh_strv_join(sv, "\n");
        out = xasprintf("%s\n", joined);
        free(joined);
        kh_strv_free(sv);
    }
    free(fds);
    free(sfds);
    for (size_t i = 0; bfds && i < spec->ndisks; i++)
        free(bfds[i]);
    free(bfds);
    for (size_t i = 0; bsfds && i < spec->ndisks; i++)
        free(bsfds[i]);
    free(bsfds);
    free(nfds);
    free(vfds);
    kh_vm_spec_free(spec);
    return out;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_goldens(const char *dir)
{
    bool regen = getenv("KH_REGEN_GOLDEN") && strcmp(getenv("KH_REGEN_GOLDEN"), "1") == 0;
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d) {
        printf("# cannot open %s: %s\n", dir, strerror(errno));
        return;
    }
    kh_strv *files = kh_strv_new();
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            kh_strv_add(files, de->d_name);
    closedir(d);
    qsort(files->v, files->n, sizeof(char *), cmp_names);

    /* Goldens that a case produced; anything left over is unused. */
    kh_strv *used = kh_strv_new();
    size_t ncases = 0;
    for (size_t i = 0; i < files->n; i++) {
        const char *f = files->v[i];
        if (!has_suffix(f, ".json"))
            continue;
        ncases++;
        char *base = xstrndup(f, strlen(f) - 5);
        char *path = xasprintf("%s/%s", dir, f);
        json_error_t jerr;
        json_t *tc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(tc)) {
            printf("not ok - %s: bad test JSON: %s\n", f, jerr.text);
            CHECK(!"bad test JSON");
            json_decref(tc);
            free(path);
            free(base);
            continue;
        }
        bool is_err = false;
        char *out = run_case(base, tc, &is_err);
        json_decref(tc);
        char *gname = xasprintf("%s%s", base, is_err ? ".err" : ".args");
        char *gpath = xasprintf("%s/%s", dir, gname);
        char *other = xasprintf("%s/%s%s", dir, base, is_err ? ".args" : ".err");
        if (regen) {
            CHECK(kh_fs_write_atomic(gpath, out, strlen(out), 0644, NULL) == 0);
            remove(other);
        }
        kh_strv_add(used, gname);
        char *want = kh_fs_read(gpath, 1 << 20, NULL, NULL);
        kh_test_count++;
        if (!want || strcmp(want, out) != 0) {
            kh_test_failures++;
            printf("not ok %d - %s: output differs from %s%s\n--- got:\n%s---\n", kh_test_count,
                   base, gname, want ? "" : " (missing)", out);
        } else {
            printf("ok %d - %s\n", kh_test_count, base);
        }
        free(want);
        free(other);
        free(gpath);
        free(gname);
        free(out);
        free(path);
        free(base);
    }
    CHECK(ncases >= 20);

    for (size_t i = 0; i < files->n; i++) {
        const char *f = files->v[i];
        if (!has_suffix(f, ".args") && !has_suffix(f, ".err"))
            continue;
        bool found = false;
        for (size_t j = 0; j < used->n && !found; j++)
            found = strcmp(used->v[j], f) == 0;
        if (!found) {
            printf("not ok - unused golden %s\n", f);
            CHECK(!"unused golden");
        }
    }
    kh_strv_free(used);
    kh_strv_free(files);
}

static void test_escape(void)
{
    char *s = kh_qemu_opt_escape("a,b,,c");
    CHECK_STR(s, "a,,b,,,,c");
    free(s);
    s = kh_qemu_opt_escape("");
    CHECK_STR(s, "");
    free(s);
    CHECK_STR(kh_accel_name(KH_ACCEL_KVM), "kvm");
    CHECK_STR(kh_accel_name(KH_ACCEL_TCG), "tcg");
}

/* -cpu: the default per accelerator; a value from a peer is a model and
 * feature names, nothing QEMU would read as another option. */
static void test_cpu(void)
{
    CHECK_STR(kh_qemu_cpu_default(KH_ACCEL_KVM), "host");
    CHECK_STR(kh_qemu_cpu_default(KH_ACCEL_TCG), KH_CPU_TCG);
    CHECK(strstr(KH_CPU_TCG, "+sse4.2") && !strstr(KH_CPU_TCG, "avx"));
    CHECK_STR(kh_qemu_cpu_unrecorded(KH_ACCEL_TCG), "max");
    /* the one precedence: a migration source's, the spec's, the default */
    kh_vm_spec spec = { 0 };
    CHECK_STR(kh_qemu_cpu_of(&spec, NULL, KH_ACCEL_TCG), KH_CPU_TCG);
    CHECK_STR(kh_qemu_cpu_of(&spec, "", KH_ACCEL_KVM), "host");
    char nehalem[] = "Nehalem";
    spec.cpu_model = nehalem;
    CHECK_STR(kh_qemu_cpu_of(&spec, NULL, KH_ACCEL_TCG), "Nehalem");
    CHECK_STR(kh_qemu_cpu_of(&spec, "max", KH_ACCEL_TCG), "max");
    CHECK(kh_vm_cpu_model_valid(KH_CPU_TCG));
    CHECK(kh_vm_cpu_model_valid("max"));
    CHECK(kh_vm_cpu_model_valid("Skylake-Client-v4,-hle"));
    CHECK(!kh_vm_cpu_model_valid(NULL));
    CHECK(!kh_vm_cpu_model_valid(""));
    CHECK(!kh_vm_cpu_model_valid("+aes"));
    CHECK(!kh_vm_cpu_model_valid("max -m 1"));
    CHECK(!kh_vm_cpu_model_valid("max,x=/etc/passwd"));
    CHECK(!kh_vm_cpu_model_valid("max\n"));
    char big[200];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(!kh_vm_cpu_model_valid(big));
}

/* Missing arguments are a caller bug, reported, never a crash. */
static void test_null_args(void)
{
    kh_err err = KH_ERR_INIT;
    kh_qemu_caps caps = { 0 };
    CHECK(kh_qemu_argv_build(NULL, &caps, NULL, &err) == NULL);
    CHECK(err.code == KH_E_INTERNAL);
}

static const char *data_dir;

static void test_goldens(void)
{
    run_goldens(data_dir);
}

int main(int argc, char **argv)
{
    data_dir = argc > 1 ? argv[1] : getenv("KH_ARGV_DATA");
    if (!data_dir) {
        fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    RUN(test_escape);
    RUN(test_null_args);
    RUN(test_cpu);
    RUN(test_goldens);
    TEST_DONE();
}
