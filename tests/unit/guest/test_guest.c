/* test_guest.c - the pure and file-level parts of real guest support:
 * the cloud-init seed rendering (qemu/cidata.h), the cidata ISO (written by
 * the real genisoimage/xorriso, read back with xorriso), the UEFI firmware
 * choice from descriptor files (qemu/firmware.h), and the VARS copy. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kh_test.h"
#include "qemu/cidata.h"
#include "qemu/firmware.h"
#include "util/fs.h"
#include "util/mem.h"

#define ID "8a6e0804-2bd0-4672-b79d-d97027f1f86b"

static json_t *parse(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    CHECK(j != NULL);
    return j;
}

static void test_render_keys(void)
{
    /* hostile text stays inside JSON strings: no YAML key can be added */
    json_t *ci = parse("{\"hostname\":\"h1\",\"ssh_authorized_keys\":[\"ssh-ed25519 AAA k\\nruncmd: [x]\"],"
                       "\"users\":[{\"name\":\"ops\",\"sudo\":true}],\"packages\":[\"nginx\"],"
                       "\"runcmd\":[\"echo '#x' : y\"],\"reprovision\":4,"
                       "\"network_config\":{\"version\":2,\"ethernets\":{\"e\":{\"dhcp4\":true}}}}");
    kh_cidata c;
    kh_cidata_render(ci, ID, "web1", &c);
    json_t *meta = parse(c.meta_data);
    CHECK_STR(json_string_value(json_object_get(meta, "instance-id")), ID "-4");
    CHECK_STR(json_string_value(json_object_get(meta, "local-hostname")), "h1");
    CHECK(strncmp(c.user_data, "#cloud-config\n", 14) == 0);
    json_t *ud = parse(c.user_data + 14);
    CHECK_STR(json_string_value(json_object_get(ud, "hostname")), "h1");
    CHECK(json_array_size(json_object_get(ud, "ssh_authorized_keys")) == 1);
    CHECK(json_object_get(ud, "runcmd") && !json_object_get(ud, "bogus"));
    json_t *users = json_object_get(ud, "users");
    CHECK(json_array_size(users) == 2);
    CHECK_STR(json_string_value(json_array_get(users, 0)), "default");
    CHECK_STR(json_string_value(json_object_get(json_array_get(users, 1), "sudo")),
              "ALL=(ALL) NOPASSWD:ALL");
    CHECK(json_is_true(json_object_get(json_array_get(users, 1), "lock_passwd")));
    json_t *nc = parse(c.network_config);
    CHECK(json_integer_value(json_object_get(nc, "version")) == 2);
    CHECK(c.vendor_data == NULL);
    json_decref(nc);
    json_decref(ud);
    json_decref(meta);
    kh_cidata_clear(&c);
    json_decref(ci);
}

static void test_render_defaults_and_raw(void)
{
    json_t *ci = parse("{\"user_data\":\"#!/bin/sh\\necho hi\\n\",\"vendor_data\":\"#cloud-config\\n\"}");
    kh_cidata c;
    /* the VM name is the hostname when it is one; not "my_vm" */
    kh_cidata_render(ci, ID, "vm-1", &c);
    CHECK_STR(c.user_data, "#!/bin/sh\necho hi\n");
    CHECK_STR(c.vendor_data, "#cloud-config\n");
    CHECK(c.network_config == NULL);
    json_t *meta = parse(c.meta_data);
    CHECK_STR(json_string_value(json_object_get(meta, "instance-id")), ID "-0");
    CHECK_STR(json_string_value(json_object_get(meta, "local-hostname")), "vm-1");
    json_decref(meta);
    kh_cidata_clear(&c);
    kh_cidata_render(ci, ID, "my_vm", &c);
    meta = parse(c.meta_data);
    CHECK(json_object_get(meta, "local-hostname") == NULL);
    json_decref(meta);
    kh_cidata_clear(&c);
    json_decref(ci);
}

static void test_iso(void)
{
    if (access("/usr/bin/xorriso", X_OK) != 0) {
        printf("# skip: no xorriso to read the ISO back\n");
        return;
    }
    char dir[] = "/tmp/kh-test-cidata-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    json_t *ci = parse("{\"hostname\":\"iso1\"}");
    kh_cidata c;
    kh_cidata_render(ci, ID, "x", &c);
    char *iso = xasprintf("%s/cidata.iso", dir);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_cidata_write_iso(&c, iso, 0644, &err) == 0);
    struct stat st;
    CHECK(stat(iso, &st) == 0 && (st.st_mode & 0777) == 0644);
    char *cmd = xasprintf("xorriso -osirrox on -indev %s -extract / %s/x >/dev/null 2>&1 && "
                          "xorriso -indev %s -pvd_info 2>/dev/null | grep -q 'Volume Id *: cidata'",
                          iso, dir, iso);
    CHECK(system(cmd) == 0);
    free(cmd);
    char *p = xasprintf("%s/x/meta-data", dir);
    char *text = kh_fs_read(p, 4096, NULL, NULL);
    CHECK(text && strstr(text, ID "-0") && strstr(text, "iso1"));
    free(text);
    free(p);
    p = xasprintf("%s/x/network-config", dir);
    CHECK(access(p, F_OK) != 0); /* none given: no file */
    free(p);
    /* no leftovers beside the ISO */
    p = xasprintf("%s/cidata.iso.d", dir);
    CHECK(access(p, F_OK) != 0);
    free(p);
    free(iso);
    kh_cidata_clear(&c);
    json_decref(ci);
    p = xasprintf("rm -rf %s", dir);
    CHECK(system(p) == 0);
    free(p);
}

static void put(const char *dir, const char *name, const char *text)
{
    char *p = xasprintf("%s/%s", dir, name);
    CHECK(kh_fs_write_atomic(p, text, strlen(text), 0644, NULL) == 0);
    free(p);
}

#define DESC(code, vars, machines, feats)                                                      \
    "{\"interface-types\":[\"uefi\"],\"mapping\":{\"device\":\"flash\","                       \
    "\"executable\":{\"filename\":\"" code "\",\"format\":\"raw\"},"                           \
    "\"nvram-template\":{\"filename\":\"" vars "\",\"format\":\"raw\"}},"                      \
    "\"targets\":[{\"architecture\":\"x86_64\",\"machines\":[" machines "]}],"                 \
    "\"features\":[" feats "]}"

static void test_firmware_select(void)
{
    char a[] = "/tmp/kh-test-fw-a-XXXXXX", b[] = "/tmp/kh-test-fw-b-XXXXXX";
    CHECK(mkdtemp(a) && mkdtemp(b));
    put(b, "30-i440fx-only.json", DESC("/x/i440.fd", "/x/v.fd", "\"pc-i440fx-*\"", ""));
    put(b, "40-sb.json", DESC("/x/sb.fd", "/x/sbvars.fd", "\"pc-q35-*\"",
                              "\"enrolled-keys\",\"requires-smm\",\"secure-boot\""));
    put(b, "50-sb-noenroll.json", DESC("/x/sbn.fd", "/x/v.fd", "\"pc-q35-*\"",
                                       "\"requires-smm\",\"secure-boot\""));
    put(b, "60-plain.json", DESC("/x/plain.fd", "/x/plainvars.fd", "\"pc-q35-*\"", "\"acpi-s3\""));
    put(b, "10-broken.json", "{not json");
    const char *const dirs[] = { a, b, NULL };
    kh_firmware_choice c;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_firmware_select(dirs, true, &c, &err) == 0);
    CHECK_STR(c.code, "/x/sb.fd");
    CHECK_STR(c.vars_template, "/x/sbvars.fd");
    CHECK(c.smm && c.secure_boot);
    kh_firmware_choice_clear(&c);
    /* without Secure Boot: never the enrolled one; firmware without Secure
     * Boot (60) before the non-enrolled SB one (50) */
    CHECK(kh_firmware_select(dirs, false, &c, &err) == 0);
    CHECK_STR(c.code, "/x/plain.fd");
    CHECK(!c.secure_boot && !c.smm);
    kh_firmware_choice_clear(&c);
    /* an empty file of the same name in the first dir disables it: then
     * the SB-capable one, not enforcing */
    put(a, "60-plain.json", "");
    CHECK(kh_firmware_select(dirs, false, &c, &err) == 0);
    CHECK_STR(c.code, "/x/sbn.fd");
    CHECK(c.smm && !c.secure_boot);
    kh_firmware_choice_clear(&c);
    put(a, "40-sb.json", "");
    CHECK(kh_firmware_select(dirs, true, &c, &err) == -1 && err.code == KH_E_UNSUPPORTED);
    kh_firmware_choice_clear(&c);

    /* the VARS copy: made once from the template, then kept */
    char *tmpl = xasprintf("%s/VARS.fd", a);
    CHECK(kh_fs_write_atomic(tmpl, "template", 8, 0644, NULL) == 0);
    kh_firmware_choice v = { .vars_template = tmpl, .secure_boot = true };
    int fd = kh_firmware_vars_open(&v, b, false, 0, 0, &err);
    CHECK(fd >= 0);
    CHECK(fd < 0 || write(fd, "guest", 5) == 5);
    if (fd >= 0)
        close(fd);
    fd = kh_firmware_vars_open(&v, b, false, 0, 0, &err);
    char buf[16] = { 0 };
    CHECK(fd >= 0 && read(fd, buf, sizeof(buf) - 1) == 8);
    CHECK_STR(buf, "guestate"); /* the guest's write stayed */
    if (fd >= 0)
        close(fd);
    char *p = xasprintf("%s/uefi-vars-sb.fd", b);
    CHECK(access(p, F_OK) == 0);
    free(p);
    free(tmpl);
    char *rm = xasprintf("rm -rf %s %s", a, b);
    CHECK(system(rm) == 0);
    free(rm);
}

/* The host's own descriptors (Debian's ovmf), when installed. */
static void test_firmware_host(void)
{
    kh_firmware_choice c;
    kh_err err = KH_ERR_INIT;
    if (access("/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json", F_OK) != 0) {
        printf("# skip: no ovmf descriptors\n");
        return;
    }
    CHECK(kh_firmware_select(NULL, true, &c, &err) == 0);
    CHECK(c.code && strstr(c.code, "OVMF_CODE") && c.smm);
    CHECK(c.vars_template && strstr(c.vars_template, ".ms.fd"));
    kh_firmware_choice_clear(&c);
    CHECK(kh_firmware_select(NULL, false, &c, &err) == 0);
    CHECK(c.code && !strstr(c.code, ".ms.") && !c.secure_boot);
    kh_firmware_choice_clear(&c);
}

int main(void)
{
    RUN(test_render_keys);
    RUN(test_render_defaults_and_raw);
    RUN(test_iso);
    RUN(test_firmware_select);
    RUN(test_firmware_host);
    TEST_DONE();
}
