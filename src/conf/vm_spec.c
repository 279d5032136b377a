/* vm_spec.c - parse, validate, print and patch the user's VM spec.
 *
 * Everything that comes from a request goes through spec_parse(): the
 * schema check comes first (src/schema/VMSpec.json: unknown keys, so no mass
 * assignment, types, ranges, enums), then each field's meaning (names,
 * paths, addresses), then the fields together. Every message
 * names the field ("disks[1].format: must be ..."). No file-system access.
 */
#include "conf/vm_spec.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/limits.h"
#include "schema/schema.h"
#include "util/check.h"
#include "util/inet.h"
#include "util/mem.h"

/* Longest field label we print: "disks[15].readonly" and the like. */
#define FIELD_MAX 64

/* jansson's iterators take a non-const object but do not change it. */
static json_t *unconst(const json_t *j)
{
    return (json_t *)(uintptr_t)j;
}

/* A string field: NULL with err set unless it is a JSON string without NUL
 * bytes (a loader with JSON_ALLOW_NUL would otherwise cut it short). */
static const char *get_string(const json_t *v, const char *field, kh_err *err)
{
    if (!json_is_string(v)) {
        kh_err_set(err, KH_E_INVALID, "%s: must be a string", field);
        return NULL;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) {
        kh_err_set(err, KH_E_INVALID, "%s: must not contain NUL characters", field);
        return NULL;
    }
    return s;
}

/* A string that must be one of names[0..n); its index goes to *out. */
static int get_enum(const json_t *v, const char *field, const char *const *names, size_t n,
                    int *out, kh_err *err)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    for (size_t i = 0; s && i < n; i++) {
        if (strlen(s) == json_string_length(v) && strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    /* "must be "a" or "b"" or "must be one of ..." for longer lists */
    char list[128] = "";
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof(list) - len, "%s\"%s\"",
                 i == 0 ? "" : (i + 1 == n ? " or " : ", "), names[i]);
    }
    kh_err_set(err, KH_E_INVALID, "%s: must be %s", field, list);
    return -1;
}

static const char *const machine_names[] = { [KH_MACHINE_Q35] = "q35",
                                             [KH_MACHINE_MICROVM] = "microvm" };
static const char *const format_names[] = { [KH_DISK_RAW] = "raw", [KH_DISK_QCOW2] = "qcow2" };
static const char *const firmware_names[] = { [KH_FIRMWARE_BIOS] = "bios",
                                              [KH_FIRMWARE_UEFI] = "uefi" };
static const char *const graphics_names[] = { [KH_GRAPHICS_NONE] = "none",
                                              [KH_GRAPHICS_VNC] = "vnc" };

bool kh_vm_cpu_model_valid(const char *cpu)
{
    size_t n = cpu ? strlen(cpu) : 0;
    if (n == 0 || n > 127 || !isalnum((unsigned char)cpu[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)cpu[i]) && !strchr("_.,+-", cpu[i]))
            return false;
    return true;
}

const char *kh_machine_name(kh_machine m)
{
    return (size_t)m < KH_ARRAY_LEN(machine_names) ? machine_names[m] : "unknown";
}

const char *kh_disk_format_name(kh_disk_format f)
{
    return (size_t)f < KH_ARRAY_LEN(format_names) ? format_names[f] : "unknown";
}

const char *kh_firmware_name(kh_firmware f)
{
    return (size_t)f < KH_ARRAY_LEN(firmware_names) ? firmware_names[f] : "unknown";
}

static const char *graphics_name(kh_graphics g)
{
    return (size_t)g < KH_ARRAY_LEN(graphics_names) ? graphics_names[g] : "unknown";
}

void kh_disk_spec_clear_backing(kh_disk_spec *d)
{
    for (size_t j = 0; j < d->nbacking; j++)
        free(d->backing[j].path);
    free(d->backing);
    d->backing = NULL;
    d->nbacking = 0;
}

/* Free what the spec owns, not the struct. */
static void spec_clear(kh_vm_spec *spec)
{
    free(spec->name);
    free(spec->kernel);
    free(spec->initrd);
    free(spec->cmdline);
    json_decref(spec->cloud_init);
    for (size_t i = 0; i < spec->ndisks; i++) {
        free(spec->disks[i].path);
        free(spec->disks[i].volume);
        kh_disk_spec_clear_backing(&spec->disks[i]);
    }
    free(spec->disks);
    for (size_t i = 0; i < spec->nnics; i++) {
        free(spec->nics[i].network);
        free(spec->nics[i].mac);
        free(spec->nics[i].ip);
        free(spec->nics[i].security_groups);
    }
    free(spec->nics);
    free(spec->description);
    free(spec->cpu_model);
    kh_limits_free(spec->limits);
    memset(spec, 0, sizeof(*spec));
}

void kh_vm_spec_free(kh_vm_spec *spec)
{
    if (!spec)
        return;
    spec_clear(spec);
    free(spec);
}

static int parse_boot(kh_vm_spec *spec, const json_t *boot, kh_err *err)
{
    const json_t *v;
    const char *s;
    if ((v = json_object_get(boot, "kernel"))) {
        if (!(s = get_string(v, "boot.kernel", err)) ||
            kh_check_abs_path(s, "boot.kernel", err) < 0)
            return -1;
        spec->kernel = xstrdup(s);
    }
    if ((v = json_object_get(boot, "initrd"))) {
        if (!(s = get_string(v, "boot.initrd", err)) ||
            kh_check_abs_path(s, "boot.initrd", err) < 0)
            return -1;
        spec->initrd = xstrdup(s);
    }
    if ((v = json_object_get(boot, "cmdline"))) {
        if (!(s = get_string(v, "boot.cmdline", err)) ||
            kh_check_text(s, KH_VM_CMDLINE_MAX, "boot.cmdline", err) < 0)
            return -1;
        if (*s) /* "" means no command line */
            spec->cmdline = xstrdup(s);
    }
    if (!spec->kernel && spec->initrd) {
        kh_err_set(err, KH_E_INVALID, "boot.initrd: requires boot.kernel");
        return -1;
    }
    if (!spec->kernel && spec->cmdline) {
        kh_err_set(err, KH_E_INVALID, "boot.cmdline: requires boot.kernel");
        return -1;
    }
    return 0;
}

static int parse_disk(kh_disk_spec *d, const json_t *obj, size_t i, kh_err *err)
{
    char prefix[FIELD_MAX], field[FIELD_MAX];
    snprintf(prefix, sizeof(prefix), "disks[%zu].", i);

    snprintf(field, sizeof(field), "disks[%zu].path", i);
    const json_t *v = json_object_get(obj, "path");
    const char *s;
    const json_t *vol = json_object_get(obj, "volume");
    if (vol) {
        /* A volume: its file, format and chain come from the storage
         * records when the VM starts. */
        snprintf(field, sizeof(field), "disks[%zu].volume", i);
        if (v || json_object_get(obj, "format")) {
            kh_err_set(err, KH_E_INVALID,
                       "disks[%zu]: give either volume or path and format, not both", i);
            return -1;
        }
        if (!(s = get_string(vol, field, err)))
            return -1;
        const char *slash = strchr(s, '/');
        char *pool = slash ? xstrndup(s, (size_t)(slash - s)) : NULL;
        int bad = !slash || kh_check_name(pool, field, err) < 0 ||
                  kh_check_name(slash + 1, field, err) < 0;
        free(pool);
        if (bad) {
            kh_err_set(err, KH_E_INVALID, "%s: must be \"pool/name\"", field);
            return -1;
        }
        d->volume = xstrdup(s);
        d->readonly = json_is_true(json_object_get(obj, "readonly"));
        return 0;
    }
    if (!v) {
        kh_err_set(err, KH_E_INVALID, "%s is required", field);
        return -1;
    }
    if (!(s = get_string(v, field, err)) || kh_check_abs_path(s, field, err) < 0)
        return -1;
    d->path = xstrdup(s);

    /* The format is the user's word, never guessed from the file. */
    snprintf(field, sizeof(field), "disks[%zu].format", i);
    if (!(v = json_object_get(obj, "format"))) {
        kh_err_set(err, KH_E_INVALID, "%s is required (\"raw\" or \"qcow2\")", field);
        return -1;
    }
    int fmt;
    if (get_enum(v, field, format_names, KH_ARRAY_LEN(format_names), &fmt, err) < 0)
        return -1;
    d->format = (kh_disk_format)fmt;
    d->readonly = json_is_true(json_object_get(obj, "readonly"));
    return 0;
}

/* arr: an array of at most KH_VM_DISKS_MAX objects (the schema). */
static int parse_disks(kh_vm_spec *spec, const json_t *arr, kh_err *err)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    spec->disks = xcalloc(n, sizeof(*spec->disks));
    for (size_t i = 0; i < n; i++) {
        /* count as we go so spec_clear() frees exactly what was set */
        spec->ndisks = i + 1;
        if (parse_disk(&spec->disks[i], json_array_get(arr, i), i, err) < 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            const kh_disk_spec *a = &spec->disks[i], *b = &spec->disks[j];
            if (a->volume || b->volume) {
                if (a->volume && b->volume && strcmp(a->volume, b->volume) == 0) {
                    kh_err_set(err, KH_E_INVALID, "disks[%zu].volume: same volume as disks[%zu]",
                               i, j);
                    return -1;
                }
                continue;
            }
            if (strcmp(spec->disks[i].path, spec->disks[j].path) == 0) {
                kh_err_set(err, KH_E_INVALID, "disks[%zu].path: same file as disks[%zu]", i, j);
                return -1;
            }
        }
    }
    return 0;
}

static int parse_nic(kh_nic_spec *n, const json_t *obj, size_t i, kh_err *err)
{
    char prefix[FIELD_MAX], field[FIELD_MAX];
    snprintf(prefix, sizeof(prefix), "nics[%zu].", i);
    const json_t *v;
    const char *s;
    snprintf(field, sizeof(field), "nics[%zu].network", i);
    if (!(v = json_object_get(obj, "network"))) {
        kh_err_set(err, KH_E_INVALID, "%s is required", field);
        return -1;
    }
    if (!(s = get_string(v, field, err)) || kh_check_name(s, field, err) < 0)
        return -1;
    n->network = xstrdup(s);
    snprintf(field, sizeof(field), "nics[%zu].mac", i);
    if ((v = json_object_get(obj, "mac"))) {
        uint8_t mac[6];
        char text[KH_MAC_STRLEN];
        if (!(s = get_string(v, field, err)) || kh_inet_mac_parse(s, mac, field, err) < 0)
            return -1;
        kh_inet_mac_format(mac, text);
        n->mac = xstrdup(text);
    }
    snprintf(field, sizeof(field), "nics[%zu].ip", i);
    if ((v = json_object_get(obj, "ip"))) {
        uint32_t a;
        if (!(s = get_string(v, field, err)) || kh_inet_ipv4_parse(s, &a, field, err) < 0)
            return -1;
        n->ip = xstrdup(s);
    }
    snprintf(field, sizeof(field), "nics[%zu].security_groups", i);
    if ((v = json_object_get(obj, "security_groups"))) { /* at most 8 (the schema) */
        size_t k;
        const json_t *g;
        char *joined = NULL;
        json_array_foreach(unconst(v), k, g) {
            if (!(s = get_string(g, field, err)) || kh_check_name(s, field, err) < 0) {
                free(joined);
                return -1;
            }
            char *next = joined ? xasprintf("%s,%s", joined, s) : xstrdup(s);
            free(joined);
            joined = next;
        }
        n->security_groups = joined;
    }
    const char *link = json_string_value(json_object_get(obj, "link")); /* "up" or "down" */
    n->link_down = link && strcmp(link, "down") == 0;
    return 0;
}

/* arr: an array of at most KH_VM_NICS_MAX objects (the schema). */
static int parse_nics(kh_vm_spec *spec, const json_t *arr, kh_err *err)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    spec->nics = xcalloc(n, sizeof(*spec->nics));
    for (size_t i = 0; i < n; i++) {
        spec->nnics = i + 1;
        if (parse_nic(&spec->nics[i], json_array_get(arr, i), i, err) < 0)
            return -1;
        for (size_t j = 0; j < i; j++) {
            if (spec->nics[i].mac && spec->nics[j].mac &&
                strcmp(spec->nics[i].mac, spec->nics[j].mac) == 0) {
                kh_err_set(err, KH_E_INVALID, "nics[%zu].mac: same address as nics[%zu]", i, j);
                return -1;
            }
        }
    }
    return 0;
}

/* Whether any string (or key) inside j holds a NUL byte. */
static bool has_nul(const json_t *j)
{
    if (json_is_string(j))
        return strlen(json_string_value(j)) != json_string_length(j);
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_object(j)) {
        json_object_foreach(unconst(j), key, v) {
            if (has_nul(v))
                return true;
        }
    }
    if (json_is_array(j)) {
        json_array_foreach(unconst(j), i, v) {
            if (has_nul(v))
                return true;
        }
    }
    return false;
}

/* 1..max characters of a-z, 0-9 and extra; the first not in not_first.
 * NULL is not ok. */
static bool word_ok(const char *s, size_t max, const char *extra, const char *not_first)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max || strchr(not_first, s[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr(extra, c)))
            return false;
    }
    return true;
}

/* The patterns of CloudInit.json, which the schema checker leaves to us. */
static int check_cloud_init_words(const json_t *ci, kh_err *err)
{
    const json_t *v = json_object_get(ci, "hostname");
    if (v) { /* an RFC 1123 label */
        const char *h = json_string_value(v);
        size_t n = strlen(h);
        bool ok = n >= 1 && n <= 63 && h[0] != '-' && h[n - 1] != '-';
        for (size_t i = 0; ok && i < n; i++)
            ok = (h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
                 (h[i] >= '0' && h[i] <= '9') || h[i] == '-';
        if (!ok) {
            kh_err_set(err, KH_E_INVALID, "cloud_init.hostname: must be 1 to 63 letters, "
                       "digits and '-', not starting or ending with '-'");
            return -1;
        }
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ci, "users"), i, e) {
        const json_t *name = json_object_get(e, "name");
        if (!name || !word_ok(json_string_value(name), 32, "_-", "-0123456789")) {
            kh_err_set(err, KH_E_INVALID, "cloud_init.users[%zu].name: %s", i,
                       name ? "must be 1 to 32 of a-z, 0-9, '_' and '-', starting with a "
                              "letter or '_'" : "is required");
            return -1;
        }
        const char *shell = json_string_value(json_object_get(e, "shell"));
        if (shell && (shell[0] != '/' || !word_ok(shell + 1, 127, "_./-ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                                                  "") || strstr(shell, ".."))) {
            kh_err_set(err, KH_E_INVALID, "cloud_init.users[%zu].shell: must be an absolute "
                       "path of letters, digits, '_', '.', '/' and '-'", i);
            return -1;
        }
    }
    json_array_foreach(json_object_get(ci, "packages"), i, e) {
        if (!word_ok(json_string_value(e), 128, "+.-", "+.-")) {
            kh_err_set(err, KH_E_INVALID, "cloud_init.packages[%zu]: must be a package name "
                       "(a-z, 0-9, '+', '.', '-')", i);
            return -1;
        }
    }
    return 0;
}

/* "cloud_init": the schema checked keys, types and patterns; what is left
 * is that the strings are text (no NUL, valid UTF-8 is jansson's) and that
 * raw user_data is not mixed with the keys kvmhost renders itself. */
static int parse_cloud_init(kh_vm_spec *spec, const json_t *ci, kh_err *err)
{
    static const char *const rendered[] = { "hostname", "ssh_authorized_keys", "users",
                                            "packages", "runcmd" };
    const json_t *v;
    if ((v = json_object_get(ci, "user_data"))) {
        for (size_t i = 0; i < KH_ARRAY_LEN(rendered); i++) {
            if (json_object_get(ci, rendered[i])) {
                kh_err_set(err, KH_E_INVALID, "cloud_init.%s: not with cloud_init.user_data "
                           "(put it in the user-data)", rendered[i]);
                return -1;
            }
        }
        if (!get_string(v, "cloud_init.user_data", err))
            return -1;
    }
    if ((v = json_object_get(ci, "vendor_data")) && !get_string(v, "cloud_init.vendor_data", err))
        return -1;
    if (check_cloud_init_words(ci, err) < 0)
        return -1;
    /* Strings reach the seed as JSON (safe by construction); a NUL would
     * cut them short in the guest, so it is refused anywhere. */
    if (has_nul(ci)) {
        kh_err_set(err, KH_E_INVALID, "cloud_init: must not contain NUL characters");
        return -1;
    }
    json_t *nc = json_object_get(ci, "network_config");
    json_t *ver = nc ? json_object_get(nc, "version") : NULL;
    if (nc && (!json_is_integer(ver) || (json_integer_value(ver) != 1 &&
                                        json_integer_value(ver) != 2))) {
        kh_err_set(err, KH_E_INVALID, "cloud_init.network_config.version: must be 1 or 2");
        return -1;
    }
    spec->cloud_init = json_deep_copy(ci);
    return 0;
}

/* Checks that need several fields. */
static int spec_check_whole(const kh_vm_spec *spec, kh_err *err)
{
    if (spec->machine == KH_MACHINE_MICROVM && !spec->kernel) {
        kh_err_set(err, KH_E_INVALID,
                   "machine: \"microvm\" requires boot.kernel (it cannot boot from a disk)");
        return -1;
    }
    if (spec->machine == KH_MACHINE_MICROVM && spec->graphics != KH_GRAPHICS_NONE) {
        kh_err_set(err, KH_E_INVALID, "graphics: \"%s\" is not available with machine \"microvm\"",
                   graphics_name(spec->graphics));
        return -1;
    }
    if (spec->hugepages && spec->memory_mib % (KH_VM_HUGEPAGE_KIB / 1024) != 0) {
        kh_err_set(err, KH_E_INVALID, "memory_mib: must be a multiple of %d with hugepages "
                   "(%d MiB pages)", KH_VM_HUGEPAGE_KIB / 1024, KH_VM_HUGEPAGE_KIB / 1024);
        return -1;
    }
    if (spec->max_vcpus && spec->max_vcpus < spec->vcpus) {
        kh_err_set(err, KH_E_INVALID, "vcpus: %u is more than max_vcpus (%u)", spec->vcpus,
                   spec->max_vcpus);
        return -1;
    }
    if (spec->max_vcpus > spec->vcpus && spec->machine != KH_MACHINE_Q35) {
        kh_err_set(err, KH_E_INVALID, "max_vcpus: vCPU hot-plug needs machine \"q35\"");
        return -1;
    }
    if (spec->limits && spec->limits->balloon_mib && spec->machine != KH_MACHINE_Q35) {
        kh_err_set(err, KH_E_INVALID, "limits.balloon_mib: only q35 VMs have a balloon");
        return -1;
    }
    if (spec->machine != KH_MACHINE_Q35 &&
        (spec->firmware != KH_FIRMWARE_BIOS || spec->tpm || spec->cloud_init)) {
        kh_err_set(err, KH_E_INVALID, "%s: only q35 VMs have it",
                   spec->tpm ? "tpm" : spec->cloud_init ? "cloud_init" : "firmware");
        return -1;
    }
    if (spec->secure_boot && spec->firmware != KH_FIRMWARE_UEFI) {
        kh_err_set(err, KH_E_INVALID, "secure_boot: needs firmware \"uefi\"");
        return -1;
    }
    if (kh_limits_check_nics(spec->limits, spec->nnics, err) < 0)
        return -1;
    return kh_limits_check(spec->limits, spec->vcpus, spec->memory_mib, spec->ndisks, err);
}

static int spec_parse(kh_vm_spec *spec, const json_t *obj, kh_err *err)
{
    if (!json_is_object(obj)) {
        kh_err_set(err, KH_E_INVALID, "vm spec: must be a JSON object");
        return -1;
    }
    if (kh_schema_check("VMSpec", obj, "", err) < 0) /* keys, types, ranges, enums */
        return -1;

    const json_t *v;
    const char *s;
    if (!(v = json_object_get(obj, "name"))) {
        kh_err_set(err, KH_E_INVALID, "vm name is required");
        return -1;
    }
    if (!(s = get_string(v, "name", err)) || kh_check_name(s, "vm name", err) < 0)
        return -1;
    spec->name = xstrdup(s);

    /* Defaults as Proxmox and Incus users know them: 1 vCPU, 512 MiB. The
     * numbers are integers in their ranges (1 to KH_VM_VCPUS_MAX,
     * KH_VM_MEMORY_MIN_MIB to KH_VM_MEMORY_MAX_MIB) and the flags booleans:
     * the schema says so. */
    v = json_object_get(obj, "vcpus");
    spec->vcpus = v ? (unsigned)json_integer_value(v) : KH_VM_VCPUS_DEFAULT;
    spec->max_vcpus = (unsigned)json_integer_value(json_object_get(obj, "max_vcpus"));
    v = json_object_get(obj, "memory_mib");
    spec->memory_mib = v ? (unsigned long long)json_integer_value(v) : KH_VM_MEMORY_DEFAULT_MIB;
    spec->hugepages = json_is_true(json_object_get(obj, "hugepages"));

    int e;
    spec->machine = KH_MACHINE_Q35;
    if ((v = json_object_get(obj, "machine"))) {
        if (get_enum(v, "machine", machine_names, KH_ARRAY_LEN(machine_names), &e, err) < 0)
            return -1;
        spec->machine = (kh_machine)e;
    }
    if ((v = json_object_get(obj, "cpu_model"))) { /* the schema's pattern: no option syntax */
        if (!(s = get_string(v, "cpu_model", err)))
            return -1;
        if (strlen(s) != json_string_length(v) || !kh_vm_cpu_model_valid(s)) {
            kh_err_set(err, KH_E_INVALID, "cpu_model: a CPU model and +/- features as QEMU's "
                       "-cpu takes them (letters, digits and _.,+-, up to 127)");
            return -1;
        }
        spec->cpu_model = xstrdup(s);
    }
    if ((v = json_object_get(obj, "boot")) && parse_boot(spec, v, err) < 0)
        return -1;
    spec->firmware = KH_FIRMWARE_BIOS;
    if ((v = json_object_get(obj, "firmware"))) {
        if (get_enum(v, "firmware", firmware_names, KH_ARRAY_LEN(firmware_names), &e, err) < 0)
            return -1;
        spec->firmware = (kh_firmware)e;
    }
    spec->secure_boot = json_is_true(json_object_get(obj, "secure_boot"));
    spec->tpm = json_is_true(json_object_get(obj, "tpm"));
    if ((v = json_object_get(obj, "cloud_init")) && parse_cloud_init(spec, v, err) < 0)
        return -1;
    if ((v = json_object_get(obj, "disks")) && parse_disks(spec, v, err) < 0)
        return -1;
    spec->serial = !json_is_false(json_object_get(obj, "serial"));
    spec->graphics = KH_GRAPHICS_NONE;
    if ((v = json_object_get(obj, "graphics"))) {
        if (get_enum(v, "graphics", graphics_names, KH_ARRAY_LEN(graphics_names), &e, err) < 0)
            return -1;
        spec->graphics = (kh_graphics)e;
    }
    if ((v = json_object_get(obj, "nics")) && parse_nics(spec, v, err) < 0)
        return -1;
    if ((v = json_object_get(obj, "description"))) {
        if (!(s = get_string(v, "description", err)) ||
            kh_check_text(s, KH_VM_DESCRIPTION_MAX, "description", err) < 0)
            return -1;
        if (*s) /* "" means none */
            spec->description = xstrdup(s);
    }
    if ((v = json_object_get(obj, "limits")) && !(spec->limits = kh_limits_from_json(v, err)))
        return -1;
    return spec_check_whole(spec, err);
}

kh_vm_spec *kh_vm_spec_from_json(const json_t *obj, kh_err *err)
{
    kh_vm_spec *spec = xcalloc(1, sizeof(*spec));
    if (spec_parse(spec, obj, err) < 0) {
        kh_vm_spec_free(spec);
        return NULL;
    }
    return spec;
}

/* Keys in the documented order; "boot" is {} and "description" "" when
 * unset, so the shape is the same for every VM. */
json_t *kh_vm_spec_to_json(const kh_vm_spec *spec)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(spec->name ? spec->name : ""));
    json_object_set_new(o, "vcpus", json_integer((json_int_t)spec->vcpus));
    if (spec->max_vcpus) /* absent when unset: older VMs keep their shape */
        json_object_set_new(o, "max_vcpus", json_integer((json_int_t)spec->max_vcpus));
    json_object_set_new(o, "memory_mib", json_integer((json_int_t)spec->memory_mib));
    if (spec->hugepages) /* absent when off: older VMs keep their shape */
        json_object_set_new(o, "hugepages", json_true());
    json_object_set_new(o, "machine", json_string(kh_machine_name(spec->machine)));
    if (spec->cpu_model) /* absent when unset: the default follows the host */
        json_object_set_new(o, "cpu_model", json_string(spec->cpu_model));
    json_t *boot = json_object();
    if (spec->kernel)
        json_object_set_new(boot, "kernel", json_string(spec->kernel));
    if (spec->initrd)
        json_object_set_new(boot, "initrd", json_string(spec->initrd));
    if (spec->cmdline)
        json_object_set_new(boot, "cmdline", json_string(spec->cmdline));
    json_object_set_new(o, "boot", boot);
    /* absent when default: older VMs keep their shape */
    if (spec->firmware != KH_FIRMWARE_BIOS)
        json_object_set_new(o, "firmware", json_string(kh_firmware_name(spec->firmware)));
    if (spec->secure_boot)
        json_object_set_new(o, "secure_boot", json_true());
    if (spec->tpm)
        json_object_set_new(o, "tpm", json_true());
    if (spec->cloud_init)
        json_object_set_new(o, "cloud_init", json_deep_copy(spec->cloud_init));
    json_t *disks = json_array();
    for (size_t i = 0; i < spec->ndisks; i++) {
        const kh_disk_spec *d = &spec->disks[i];
        json_t *dj = json_object();
        if (d->volume) {
            json_object_set_new(dj, "volume", json_string(d->volume));
        } else {
            json_object_set_new(dj, "path", json_string(d->path));
            json_object_set_new(dj, "format", json_string(kh_disk_format_name(d->format)));
        }
        json_object_set_new(dj, "readonly", json_boolean(d->readonly));
        json_array_append_new(disks, dj);
    }
    json_object_set_new(o, "disks", disks);
    json_object_set_new(o, "serial", json_boolean(spec->serial));
    json_object_set_new(o, "graphics", json_string(graphics_name(spec->graphics)));
    json_object_set_new(o, "description",
                        json_string(spec->description ? spec->description : ""));
    if (spec->nnics) { /* absent when none: the shape of NIC-less VMs is unchanged */
        json_t *nics = json_array();
        for (size_t i = 0; i < spec->nnics; i++) {
            const kh_nic_spec *n = &spec->nics[i];
            json_t *nj = json_pack("{s:s}", "network", n->network);
            if (n->mac)
                json_object_set_new(nj, "mac", json_string(n->mac));
            if (n->ip)
                json_object_set_new(nj, "ip", json_string(n->ip));
            if (n->security_groups) {
                json_t *ga = json_array();
                char *copy = xstrdup(n->security_groups), *save = NULL;
                for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
                    json_array_append_new(ga, json_string(t));
                free(copy);
                json_object_set_new(nj, "security_groups", ga);
            }
            if (n->link_down) /* absent when up: unchanged shape for existing NICs */
                json_object_set_new(nj, "link", json_string("down"));
            json_array_append_new(nics, nj);
        }
        json_object_set_new(o, "nics", nics);
    }
    json_t *limits = kh_limits_to_json(spec->limits);
    if (json_object_size(limits)) /* only when some limit is set */
        json_object_set_new(o, "limits", limits);
    else
        json_decref(limits);
    return o;
}

/* The patch replaces top-level keys as a whole ("disks" is the new list,
 * "boot" the new boot object); a null value resets the key to its default
 * (boot: null = boot from disk). The merged spec is then parsed as a new
 * spec, so every rule applies to the result. */
int kh_vm_spec_patch(kh_vm_spec *spec, const json_t *patch, kh_err *err)
{
    if (!json_is_object(patch)) {
        kh_err_set(err, KH_E_INVALID, "patch: must be a JSON object");
        return -1;
    }
    if (json_object_get(patch, "name")) {
        kh_err_set(err, KH_E_INVALID, "name cannot be changed");
        return -1;
    }
    if (kh_schema_check("VMPatch", patch, "", err) < 0)
        return -1;
    const char *key;
    json_t *val;
    json_t *merged = kh_vm_spec_to_json(spec);
    json_object_foreach(unconst(patch), key, val) {
        if (json_is_null(val))
            json_object_del(merged, key);
        else if (strcmp(key, "limits") == 0) /* merged key by key (see limits.h) */
            json_object_set_new(merged, key, kh_limits_merge(json_object_get(merged, key), val));
        else
            json_object_set(merged, key, val);
    }
    kh_vm_spec *next = kh_vm_spec_from_json(merged, err);
    json_decref(merged);
    if (!next)
        return -1;
    spec_clear(spec);
    *spec = *next;
    free(next);
    return 0;
}

kh_vm_spec *kh_vm_spec_dup(const kh_vm_spec *spec)
{
    if (!spec)
        return NULL;
    kh_vm_spec *d = xcalloc(1, sizeof(*d));
    *d = *spec;
    d->name = xstrdup(spec->name);
    d->kernel = xstrdup(spec->kernel);
    d->initrd = xstrdup(spec->initrd);
    d->cmdline = xstrdup(spec->cmdline);
    d->description = xstrdup(spec->description);
    d->cpu_model = xstrdup(spec->cpu_model);
    d->cloud_init = spec->cloud_init ? json_deep_copy(spec->cloud_init) : NULL;
    d->limits = kh_limits_dup(spec->limits);
    d->disks = NULL;
    if (spec->ndisks) {
        d->disks = xcalloc(spec->ndisks, sizeof(*d->disks));
        for (size_t i = 0; i < spec->ndisks; i++) {
            d->disks[i] = spec->disks[i];
            d->disks[i].path = xstrdup(spec->disks[i].path);
            d->disks[i].volume = xstrdup(spec->disks[i].volume);
            d->disks[i].backing = NULL;
            d->disks[i].nbacking = 0;
            if (spec->disks[i].nbacking) {
                d->disks[i].backing = xcalloc(spec->disks[i].nbacking, sizeof(kh_disk_layer));
                for (size_t j = 0; j < spec->disks[i].nbacking; j++) {
                    d->disks[i].backing[j].path = xstrdup(spec->disks[i].backing[j].path);
                    d->disks[i].backing[j].format = spec->disks[i].backing[j].format;
                }
                d->disks[i].nbacking = spec->disks[i].nbacking;
            }
        }
    }
    d->nics = NULL;
    if (spec->nnics) {
        d->nics = xcalloc(spec->nnics, sizeof(*d->nics));
        for (size_t i = 0; i < spec->nnics; i++) {
            d->nics[i].network = xstrdup(spec->nics[i].network);
            d->nics[i].mac = xstrdup(spec->nics[i].mac);
            d->nics[i].ip = xstrdup(spec->nics[i].ip);
            d->nics[i].security_groups = xstrdup(spec->nics[i].security_groups);
            d->nics[i].link_down = spec->nics[i].link_down;
        }
    }
    return d;
}
