/* fuzz_vm_spec.c - libFuzzer target: request JSON -> spec -> JSON -> argv.
 *
 * Bytes are loaded as JSON (NUL bytes allowed, so the spec's own NUL
 * check is exercised), parsed with kh_vm_spec_from_json() and, when valid:
 *  - printed and parsed again: the round trip must give the same JSON;
 *  - turned into an argv with a fixed env: the build may refuse, but an
 *    argv it returns has no newline in any argument and every -blockdev /
 *    -device / -object value is one JSON object;
 * and the same bytes are applied as a PATCH to a fixed valid spec, which
 * must be unchanged whenever the patch is refused.
 * Any broken property aborts (a crash for libFuzzer).
 *
 * Build (target fuzz_vm_spec, needs the util, conf and qemu libraries):
 *   clang -fsanitize=fuzzer,address -D_GNU_SOURCE -Isrc -Ibuild-argv \
 *     tests/fuzz/fuzz_vm_spec.c src/conf/vm_spec.c src/qemu/argv.c \
 *     src/util/{check,err,mem,strv}.c -ljansson -o fuzz_vm_spec
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "conf/vm_spec.h"
#include "qemu/argv.h"
#include "util/err.h"
#include "util/strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_argv(const kh_strv *sv)
{
    for (size_t i = 0; i < sv->n; i++) {
        if (strchr(sv->v[i], '\n'))
            abort();
        if ((strcmp(sv->v[i], "-blockdev") == 0 || strcmp(sv->v[i], "-device") == 0 ||
             strcmp(sv->v[i], "-object") == 0)) {
            if (i + 1 >= sv->n)
                abort();
            json_t *j = json_loads(sv->v[i + 1], JSON_REJECT_DUPLICATES, NULL);
            if (!json_is_object(j))
                abort();
            json_decref(j);
        }
    }
}

static void try_argv(const kh_vm_spec *spec)
{
    static const int disk_fds[KH_VM_DISKS_MAX] = { 10, -1, 12, -1, 14, -1, 16, -1,
                                                   18, -1, 20, -1, 22, -1, 24, -1 };
    kh_qemu_caps caps = { .version = 70202, .sandbox = true, .io_uring = true };
    kh_argv_env env = {
        .binary = "/usr/bin/qemu-system-x86_64",
        .vm_id = "8a6e0804-2bd0-4672-b79d-d97027f1f86b",
        .accel = KH_ACCEL_TCG,
        .qmp_fd = 3,
        .serial_fd = 4,
        .pidfile = "/run/kvmhost/vms/8a6e0804-2bd0-4672-b79d-d97027f1f86b/qemu.pid",
        .vnc_socket = "/run/kvmhost/vms/8a6e0804-2bd0-4672-b79d-d97027f1f86b/vnc.sock",
        .kernel_file = NULL,
        .initrd_file = NULL,
        .disk_fds = spec->ndisks <= KH_VM_DISKS_MAX ? disk_fds : NULL,
    };
    kh_err err = KH_ERR_INIT;
    kh_strv *sv = kh_qemu_argv_build(spec, &caps, &env, &err);
    if (sv) {
        if (kh_err_isset(&err))
            abort();
        check_argv(sv);
    } else if (!kh_err_isset(&err)) {
        abort();
    }
    kh_strv_free(sv);
}

static void try_patch(const json_t *patch)
{
    static const char base[] =
        "{\"name\":\"web1\",\"vcpus\":2,\"memory_mib\":512,\"boot\":{\"kernel\":\"/k\"},"
        "\"disks\":[{\"path\":\"/d/a.qcow2\",\"format\":\"qcow2\"}]}";
    json_t *bj = json_loads(base, 0, NULL);
    kh_err err = KH_ERR_INIT;
    kh_vm_spec *spec = kh_vm_spec_from_json(bj, &err);
    json_decref(bj);
    if (!spec)
        abort();
    json_t *before = kh_vm_spec_to_json(spec);
    if (kh_vm_spec_patch(spec, patch, &err) < 0) {
        json_t *after = kh_vm_spec_to_json(spec);
        if (!kh_err_isset(&err) || !json_equal(before, after))
            abort();
        json_decref(after);
    } else {
        try_argv(spec);
    }
    json_decref(before);
    kh_vm_spec_free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
    if (!j)
        return 0;
    kh_err err = KH_ERR_INIT;
    kh_vm_spec *spec = kh_vm_spec_from_json(j, &err);
    if (spec) {
        json_t *out = kh_vm_spec_to_json(spec);
        kh_vm_spec *again = kh_vm_spec_from_json(out, &err);
        if (!again)
            abort();
        json_t *out2 = kh_vm_spec_to_json(again);
        if (!json_equal(out, out2))
            abort();
        json_decref(out2);
        json_decref(out);
        kh_vm_spec_free(again);
        try_argv(spec);
        kh_vm_spec_free(spec);
    } else if (err.code != KH_E_INVALID) {
        abort();
    }
    try_patch(j);
    json_decref(j);
    return 0;
}
