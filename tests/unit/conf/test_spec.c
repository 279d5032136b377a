/* test_spec.c - the VM spec: parse/validate table, round trip, dup, patch. */
#include <stdlib.h>
#include <string.h>

#include "../kh_test.h"
#include "conf/vm_spec.h"
#include "util/err.h"

#define BASE "\"name\":\"web1\",\"vcpus\":2,\"memory_mib\":512"

static json_t *load(const char *text, size_t flags)
{
    json_error_t jerr;
    json_t *j = json_loads(text, flags, &jerr);
    if (!j)
        printf("# bad test JSON: %s: %s\n", text, jerr.text);
    return j;
}

/* Specs that must parse. */
static const char *const valid[] = {
    "{" BASE "}",
    "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":16}",
    "{\"name\":\"a\",\"vcpus\":255,\"memory_mib\":16777216}",
    "{" BASE ",\"machine\":\"q35\",\"boot\":{},\"disks\":[],\"serial\":false,"
    "\"graphics\":\"vnc\",\"description\":\"\"}",
    "{" BASE ",\"machine\":\"microvm\",\"boot\":{\"kernel\":\"/k\",\"initrd\":\"/i\","
    "\"cmdline\":\"console=ttyS0,115200 quiet\"}}",
    "{" BASE ",\"disks\":[{\"path\":\"/d/a.qcow2\",\"format\":\"qcow2\"},"
    "{\"path\":\"/d/b.raw\",\"format\":\"raw\",\"readonly\":true}]}",
    /* a comma in a path is legal: the argv builder puts it in JSON */
    "{" BASE ",\"disks\":[{\"path\":\"/d/x,file=/etc/shadow\",\"format\":\"raw\"}]}",
    "{" BASE ",\"description\":\"caf\\u00e9 \\\"quoted\\\" $HOME\"}",
    "{\"name\":\"web-1_a.b\",\"vcpus\":2,\"memory_mib\":512}",
};

/* Specs that must be rejected, and a piece of the message (the field). */
static const struct {
    const char *json;
    const char *msg;
} invalid[] = {
    { "[]", "must be a JSON object" },
    { "\"x\"", "must be a JSON object" },
    /* names: security cases 1-3 */
    { "{\"name\":\"../../etc/x\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\"x,file=/etc/shadow\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\"a\\nb\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\"x;rm -rf\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\"$(id)\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\"`id`\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\".hidden\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\"\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"name\":\"a/b\",\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    { "{\"vcpus\":1,\"memory_mib\":64}", "vm name is required" },
    { "{\"name\":7,\"vcpus\":1,\"memory_mib\":64}", "name: must be a string" },
    { "{\"name\":\"a1234567890123456789012345678901234567890123456789012345678901234\","
      "\"vcpus\":1,\"memory_mib\":64}", "vm name" },
    /* memory: case 14 */
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":0}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":-1}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":15}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":16777217}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":1e30}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":\"512\"}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":1.5}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":512.0}", "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":9223372036854775807}",
      "memory_mib: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":1,\"memory_mib\":null}", "memory_mib: must be an integer" },
    /* vcpus */
    { "{\"name\":\"a\",\"vcpus\":0,\"memory_mib\":64}", "vcpus: must be an integer between 1 and 255" },
    { "{\"name\":\"a\",\"vcpus\":256,\"memory_mib\":64}", "vcpus: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":-1,\"memory_mib\":64}", "vcpus: must be an integer" },
    { "{\"name\":\"a\",\"vcpus\":true,\"memory_mib\":64}", "vcpus: must be an integer" },
    /* mass assignment: case 11 */
    { "{" BASE ",\"owner\":\"root\"}", "owner: unknown field" },
    { "{" BASE ",\"qemu_args\":[\"-device\",\"x\"]}", "qemu_args: unknown field" },
    { "{" BASE ",\"id\":\"8a6e0804-2bd0-4672-b79d-d97027f1f86b\"}", "id: unknown field" },
    { "{" BASE ",\"state\":\"running\"}", "state: unknown field" },
    { "{" BASE ",\"../x\":1}", "../x: unknown field" },
    { "{" BASE ",\"boot\":{\"kernel\":\"/k\",\"dtb\":\"/x\"}}", "boot.dtb: unknown field" },
    { "{" BASE ",\"disks\":[{\"path\":\"/d\",\"format\":\"raw\",\"cache\":\"unsafe\"}]}",
      "disks[0].cache: unknown field" },
    /* types and enums */
    { "{" BASE ",\"machine\":\"pc\"}", "machine: must be \"q35\" or \"microvm\"" },
    { "{" BASE ",\"machine\":1}", "machine: must be" },
    { "{" BASE ",\"graphics\":\"spice\"}", "graphics: must be \"none\" or \"vnc\"" },
    { "{" BASE ",\"serial\":\"yes\"}", "serial: must be true or false" },
    { "{" BASE ",\"serial\":1}", "serial: must be true or false" },
    { "{" BASE ",\"boot\":\"/k\"}", "boot: must be an object" },
    { "{" BASE ",\"disks\":{}}", "disks: must be an array" },
    { "{" BASE ",\"description\":5}", "description: must be a string" },
    /* boot */
    { "{" BASE ",\"boot\":{\"kernel\":\"vmlinuz\"}}", "boot.kernel must be an absolute path" },
    { "{" BASE ",\"boot\":{\"kernel\":\"/boot/../etc/shadow\"}}", "boot.kernel" },
    { "{" BASE ",\"boot\":{\"kernel\":\"/k\\n-S\"}}", "boot.kernel" },
    { "{" BASE ",\"boot\":{\"kernel\":\"/k\",\"initrd\":\"i\"}}", "boot.initrd" },
    { "{" BASE ",\"boot\":{\"kernel\":\"/k\",\"cmdline\":\"a\\nb\"}}", "boot.cmdline" },
    { "{" BASE ",\"boot\":{\"initrd\":\"/i\"}}", "boot.initrd: requires boot.kernel" },
    { "{" BASE ",\"boot\":{\"cmdline\":\"quiet\"}}", "boot.cmdline: requires boot.kernel" },
    { "{" BASE ",\"machine\":\"microvm\"}", "machine: \"microvm\" requires boot.kernel" },
    { "{" BASE ",\"machine\":\"microvm\",\"graphics\":\"vnc\",\"boot\":{\"kernel\":\"/k\"}}",
      "graphics: \"vnc\" is not available" },
    /* disks */
    { "{" BASE ",\"disks\":[{\"path\":\"/d\"}]}", "disks[0].format is required" },
    { "{" BASE ",\"disks\":[{\"path\":\"/a\",\"format\":\"raw\"},{\"path\":\"/b\",\"format\":\"vmdk\"}]}",
      "disks[1].format: must be \"raw\" or \"qcow2\"" },
    { "{" BASE ",\"disks\":[{\"path\":\"/a\",\"format\":\"raw\"},{\"path\":\"/b\",\"format\":\"auto\"}]}",
      "disks[1].format: must be" },
    { "{" BASE ",\"disks\":[{\"format\":\"raw\"}]}", "disks[0].path is required" },
    { "{" BASE ",\"disks\":[{\"path\":\"rel.img\",\"format\":\"raw\"}]}", "disks[0].path" },
    { "{" BASE ",\"disks\":[{\"path\":\"/a\\nb\",\"format\":\"raw\"}]}", "disks[0].path" },
    { "{" BASE ",\"disks\":[{\"path\":\"/a/../../etc/shadow\",\"format\":\"raw\"}]}",
      "disks[0].path" },
    { "{" BASE ",\"disks\":[{\"path\":\"/a\",\"format\":\"raw\",\"readonly\":\"no\"}]}",
      "disks[0].readonly: must be true or false" },
    { "{" BASE ",\"disks\":[{\"path\":\"/a\",\"format\":\"raw\"},{\"path\":\"/a\",\"format\":\"raw\"}]}",
      "disks[1].path: same file as disks[0]" },
    { "{" BASE ",\"disks\":[\"/a\"]}", "disks[0]: must be an object" },
    { "{" BASE ",\"disks\":[{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}]}",
      "disks: at most 16" },
    /* description */
    { "{" BASE ",\"description\":\"a\\u0001b\"}", "description" },
    { "{" BASE ",\"description\":\"a\\nb\"}", "description" },
};

static void test_parse_table(void)
{
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        kh_err err = KH_ERR_INIT;
        json_t *j = load(valid[i], 0);
        kh_vm_spec *s = kh_vm_spec_from_json(j, &err);
        CHECK(s != NULL);
        if (!s)
            printf("# valid[%zu] rejected: %s\n", i, err.msg);
        kh_vm_spec_free(s);
        json_decref(j);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        kh_err err = KH_ERR_INIT;
        json_t *j = load(invalid[i].json, JSON_DECODE_ANY);
        CHECK(j != NULL);
        kh_vm_spec *s = kh_vm_spec_from_json(j, &err);
        CHECK(s == NULL);
        CHECK(err.code == KH_E_INVALID);
        if (s || !strstr(err.msg, invalid[i].msg)) {
            kh_test_failures++;
            printf("# invalid[%zu] %s: got \"%s\", want \"%s\"\n", i, invalid[i].json,
                   s ? "(accepted)" : err.msg, invalid[i].msg);
        }
        kh_vm_spec_free(s);
        json_decref(j);
    }
}

static void test_defaults(void)
{
    kh_err err = KH_ERR_INIT;
    json_t *j = load("{" BASE ",\"disks\":[{\"path\":\"/d\",\"format\":\"raw\"}]}", 0);
    kh_vm_spec *s = kh_vm_spec_from_json(j, &err);
    CHECK(s != NULL);
    if (s) {
        CHECK_STR(s->name, "web1");
        CHECK(s->vcpus == 2 && s->memory_mib == 512);
        CHECK(s->machine == KH_MACHINE_Q35);
        CHECK(s->serial);
        CHECK(s->graphics == KH_GRAPHICS_NONE);
        CHECK(!s->kernel && !s->initrd && !s->cmdline && !s->description);
        CHECK(s->ndisks == 1 && !s->disks[0].readonly && s->disks[0].format == KH_DISK_RAW);
    }
    kh_vm_spec_free(s);
    json_decref(j);

    /* Only the name is required: 1 vCPU and 512 MiB otherwise. */
    j = load("{\"name\":\"tiny\",\"disks\":[{\"path\":\"/d\",\"format\":\"raw\"}]}", 0);
    s = kh_vm_spec_from_json(j, &err);
    CHECK(s != NULL && s->vcpus == 1 && s->memory_mib == 512);
    json_t *p3 = load("{\"vcpus\":3}", 0), *pnull = load("{\"vcpus\":null}", 0);
    CHECK(s && kh_vm_spec_patch(s, p3, &err) == 0 && s->vcpus == 3);
    /* null resets a key to its default */
    CHECK(s && kh_vm_spec_patch(s, pnull, &err) == 0 && s->vcpus == 1);
    json_decref(p3);
    json_decref(pnull);
    kh_vm_spec_free(s);
    json_decref(j);
    CHECK_STR(kh_machine_name(KH_MACHINE_MICROVM), "microvm");
    CHECK_STR(kh_disk_format_name(KH_DISK_QCOW2), "qcow2");
    CHECK_STR(kh_disk_format_name(KH_DISK_RAW), "raw");
}

/* NUL (case 3): jansson refuses "\u0000" by default; with JSON_ALLOW_NUL the
 * spec must still refuse it, or "/a\0/x" would be cut to "/a". */
static void test_nul(void)
{
    static const char *const texts[] = {
        "{\"name\":\"a\\u0000b\",\"vcpus\":1,\"memory_mib\":64}",
        "{" BASE ",\"disks\":[{\"path\":\"/a\\u0000/etc/shadow\",\"format\":\"raw\"}]}",
        "{" BASE ",\"boot\":{\"kernel\":\"/k\",\"cmdline\":\"a\\u0000b\"}}",
        "{" BASE ",\"disks\":[{\"path\":\"/a\",\"format\":\"raw\\u0000x\"}]}",
        "{" BASE ",\"description\":\"a\\u0000b\"}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_error_t jerr;
        CHECK(json_loads(texts[i], 0, &jerr) == NULL);
        json_t *j = load(texts[i], JSON_ALLOW_NUL);
        CHECK(j != NULL);
        kh_err err = KH_ERR_INIT;
        kh_vm_spec *s = kh_vm_spec_from_json(j, &err);
        CHECK(s == NULL && err.code == KH_E_INVALID);
        kh_vm_spec_free(s);
        json_decref(j);
    }
}

static bool spec_equal(const kh_vm_spec *a, const kh_vm_spec *b)
{
    json_t *ja = kh_vm_spec_to_json(a), *jb = kh_vm_spec_to_json(b);
    bool eq = json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return eq;
}

static void test_round_trip(void)
{
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        kh_err err = KH_ERR_INIT;
        json_t *j = load(valid[i], 0);
        kh_vm_spec *a = kh_vm_spec_from_json(j, &err);
        json_decref(j);
        CHECK(a != NULL);
        if (!a)
            continue;
        json_t *out = kh_vm_spec_to_json(a);
        kh_vm_spec *b = kh_vm_spec_from_json(out, &err);
        CHECK(b != NULL);
        if (b) {
            /* field by field, not only through JSON */
            CHECK_STR(a->name, b->name);
            CHECK(a->vcpus == b->vcpus && a->memory_mib == b->memory_mib);
            CHECK(a->machine == b->machine && a->serial == b->serial);
            CHECK(a->graphics == b->graphics && a->ndisks == b->ndisks);
            CHECK((!a->kernel && !b->kernel) || (a->kernel && b->kernel &&
                                                 strcmp(a->kernel, b->kernel) == 0));
            CHECK((!a->cmdline && !b->cmdline) || (a->cmdline && b->cmdline &&
                                                   strcmp(a->cmdline, b->cmdline) == 0));
            CHECK((!a->description && !b->description) ||
                  (a->description && b->description &&
                   strcmp(a->description, b->description) == 0));
            for (size_t d = 0; d < a->ndisks && d < b->ndisks; d++) {
                CHECK_STR(a->disks[d].path, b->disks[d].path);
                CHECK(a->disks[d].format == b->disks[d].format);
                CHECK(a->disks[d].readonly == b->disks[d].readonly);
            }
            json_t *out2 = kh_vm_spec_to_json(b);
            CHECK(json_equal(out, out2));
            json_decref(out2);
        }
        kh_vm_spec *c = kh_vm_spec_dup(a);
        CHECK(c != a && spec_equal(a, c));
        CHECK(a->ndisks == 0 || c->disks[0].path != a->disks[0].path);
        kh_vm_spec_free(c);
        kh_vm_spec_free(b);
        kh_vm_spec_free(a);
        json_decref(out);
    }
    kh_vm_spec_free(NULL);
    CHECK(kh_vm_spec_dup(NULL) == NULL);
}

static kh_vm_spec *make(const char *text)
{
    kh_err err = KH_ERR_INIT;
    json_t *j = load(text, 0);
    kh_vm_spec *s = kh_vm_spec_from_json(j, &err);
    json_decref(j);
    return s;
}

/* Apply patch text; returns the result and the message in msg. */
static int patch(kh_vm_spec *s, const char *text, kh_err *err)
{
    json_t *j = load(text, 0);
    int rc = kh_vm_spec_patch(s, j, err);
    json_decref(j);
    return rc;
}

static void test_patch(void)
{
    kh_vm_spec *s = make("{" BASE ",\"boot\":{\"kernel\":\"/k\",\"cmdline\":\"quiet\"},"
                         "\"disks\":[{\"path\":\"/d/a\",\"format\":\"raw\"}],"
                         "\"description\":\"old\"}");
    CHECK(s != NULL);
    if (!s)
        return;
    kh_err err = KH_ERR_INIT;
    CHECK(patch(s, "{\"vcpus\":4,\"memory_mib\":1024,\"description\":\"new\"}", &err) == 0);
    CHECK(s->vcpus == 4 && s->memory_mib == 1024);
    CHECK_STR(s->description, "new");
    CHECK_STR(s->name, "web1");
    CHECK_STR(s->kernel, "/k");
    CHECK(s->ndisks == 1);

    /* replace the disk list as a whole; null resets to the default */
    kh_err_clear(&err);
    CHECK(patch(s, "{\"disks\":[{\"path\":\"/d/b\",\"format\":\"qcow2\",\"readonly\":true},"
                   "{\"path\":\"/d/c\",\"format\":\"raw\"}],\"description\":null,"
                   "\"graphics\":\"vnc\",\"serial\":false}", &err) == 0);
    CHECK(s->ndisks == 2 && s->disks[0].format == KH_DISK_QCOW2 && s->disks[0].readonly);
    CHECK(s->description == NULL);
    CHECK(s->graphics == KH_GRAPHICS_VNC && !s->serial);
    kh_err_clear(&err);
    CHECK(patch(s, "{\"boot\":null}", &err) == 0);
    CHECK(s->kernel == NULL && s->cmdline == NULL);
    kh_err_clear(&err);
    CHECK(patch(s, "{}", &err) == 0);

    /* rejected patches leave the spec exactly as it was */
    static const struct {
        const char *json;
        const char *msg;
    } bad[] = {
        { "{\"name\":\"other\"}", "name cannot be changed" },
        { "{\"name\":\"web1\"}", "name cannot be changed" },
        { "{\"vcpus\":8,\"owner\":\"root\"}", "owner: unknown field" },
        { "{\"qemu_args\":\"-x\"}", "qemu_args: unknown field" },
        { "{\"id\":\"x\"}", "id: unknown field" },
        { "{\"state\":\"running\"}", "state: unknown field" },
        { "{\"vcpus\":8,\"memory_mib\":0}", "memory_mib" },
        { "{\"vcpus\":256}", "vcpus" },
        { "{\"vcpus\":2,\"disks\":[{\"path\":\"/x\"}]}", "disks[0].format is required" },
        { "{\"machine\":\"microvm\"}", "microvm" },
        { "{\"boot\":{\"initrd\":\"/i\"}}", "boot.initrd: requires boot.kernel" },
        { "[1]", "patch: must be a JSON object" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *before = kh_vm_spec_to_json(s);
        kh_err_clear(&err);
        CHECK(patch(s, bad[i].json, &err) < 0);
        CHECK(err.code == KH_E_INVALID);
        if (!strstr(err.msg, bad[i].msg)) {
            kh_test_failures++;
            printf("# patch %s: got \"%s\", want \"%s\"\n", bad[i].json, err.msg, bad[i].msg);
        }
        json_t *after = kh_vm_spec_to_json(s);
        CHECK(json_equal(before, after));
        json_decref(before);
        json_decref(after);
    }
    kh_vm_spec_free(s);
}

/* to_json always has every key, in the documented shape. */
static void test_to_json_shape(void)
{
    kh_vm_spec *s = make("{" BASE "}");
    CHECK(s != NULL);
    if (!s)
        return;
    json_t *j = kh_vm_spec_to_json(s);
    char *text = json_dumps(j, JSON_COMPACT);
    CHECK_STR(text, "{\"name\":\"web1\",\"vcpus\":2,\"memory_mib\":512,\"machine\":\"q35\","
                    "\"boot\":{},\"disks\":[],\"serial\":true,\"graphics\":\"none\","
                    "\"description\":\"\"}");
    free(text);
    json_decref(j);
    kh_vm_spec_free(s);
}

int main(void)
{
    RUN(test_parse_table);
    RUN(test_defaults);
    RUN(test_nul);
    RUN(test_round_trip);
    RUN(test_patch);
    RUN(test_to_json_shape);
    TEST_DONE();
}
