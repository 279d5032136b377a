/* libvirt_xml.c - a libvirt domain XML (as `virsh dumpxml` writes it) read
 * with libxml2 into a kvmhost VM spec: name, memory/currentMemory (units),
 * vcpu, os (machine, loader/nvram: UEFI and Secure Boot, direct kernel
 * boot), cpu (model and features: cpu_model), disks (file sources, raw or
 * qcow2: used in place), interfaces (network name, MAC), serial/console,
 * tpm, graphics. Everything else is
 * named in the warnings list: nothing is dropped silently. Pure (no host
 * access): the caller checks host paths and network names, and reads the
 * host state the domain names (<nvram>, the TPM's state: libvirt_state.c). */
#include "porting/libvirt_xml.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "conf/vm_spec.h"
#include "util/mem.h"

static bool is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

static char *prop(const xmlNode *n, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(n, (const xmlChar *)name);
    char *s = v ? xstrdup((const char *)v) : NULL;
    xmlFree(v);
    return s;
}

static char *text(const xmlNode *n)
{
    xmlChar *v = xmlNodeGetContent(n);
    char *s = xstrdup(v ? (const char *)v : "");
    xmlFree(v);
    size_t l = strlen(s);
    while (l > 0 && strchr(" \n\t\r", s[l - 1]))
        s[--l] = '\0';
    size_t k = strspn(s, " \n\t\r");
    memmove(s, s + k, l - k + 1);
    return s;
}

static const xmlNode *child(const xmlNode *n, const char *name)
{
    for (const xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (is(c, name))
            return c;
    return NULL;
}

/* buf, cut at a byte limit, may end inside a UTF-8 character: its bytes
 * go (json_string refuses invalid UTF-8: the warning would be lost). */
static json_t *cut_string(char *buf)
{
    size_t l = strlen(buf);
    json_t *s = json_string(buf);
    while (!s && l > 0) {
        buf[--l] = '\0';
        s = json_string(buf);
    }
    return s;
}

static void warn(json_t *w, const char *fmt, const char *a, const char *b)
{
    char buf[256];
    snprintf(buf, sizeof(buf), fmt, a ? a : "", b ? b : "");
    json_array_append_new(w, cut_string(buf));
}

/* <cpu>: a custom model with its required/disabled features becomes
 * cpu_model "MODEL,+f,-g" (QEMU's -cpu); maximum becomes "max";
 * host-passthrough and host-model get kvmhost's default (the host's CPU
 * under KVM, which both are there). Topology, NUMA cells, cache and
 * optional features are named in the warnings. */
static void parse_cpu(const xmlNode *cpu, json_t *spec, json_t *w)
{
    char *mode = prop(cpu, "mode");
    const xmlNode *model = child(cpu, "model");
    if (mode && strcmp(mode, "maximum") == 0) {
        json_object_set_new(spec, "cpu_model", json_string("max"));
    } else if (mode && (strcmp(mode, "host-passthrough") == 0 ||
                        strcmp(mode, "host-model") == 0)) {
        warn(w, "cpu mode %s: the VM gets kvmhost's default CPU (the host's under KVM, "
                "x86-64-v2-AES under TCG)%s", mode, NULL);
    } else if (model) {
        char *name = text(model);
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "%s", name);
        for (const xmlNode *f = cpu->children; f && n > 0 && (size_t)n < sizeof(buf);
             f = f->next) {
            if (f->type != XML_ELEMENT_NODE || !is(f, "feature"))
                continue;
            char *pol = prop(f, "policy"), *fname = prop(f, "name");
            const char *sign = !pol || strcmp(pol, "require") == 0 ||
                                       strcmp(pol, "force") == 0 ? "+"
                               : strcmp(pol, "disable") == 0 || strcmp(pol, "forbid") == 0
                                   ? "-" : NULL;
            if (sign && fname)
                n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",%s%s", sign, fname);
            else
                warn(w, "cpu feature %s (policy %s) is not imported", fname ? fname : "?",
                     pol ? pol : "?");
            free(pol);
            free(fname);
        }
        if (n > 0 && (size_t)n < sizeof(buf) && kh_vm_cpu_model_valid(buf))
            json_object_set_new(spec, "cpu_model", json_string(buf));
        else
            warn(w, "cpu model %.64s is not imported (not a QEMU model and feature list): "
                    "the VM gets kvmhost's default CPU%s", name, NULL);
        free(name);
    }
    for (const xmlNode *c = cpu->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && !is(c, "model") && !is(c, "feature") &&
            !is(c, "vendor"))
            warn(w, "cpu/%s is not imported (kvmhost gives the VM its vcpus as sockets)%s",
                 (const char *)c->name, NULL);
    free(mode);
}

/* A libvirt memory value in MiB: unit KiB (the default), b/bytes, KB,
 * k/KiB, MB, M/MiB, GB, G/GiB, TB, T/TiB. 0 when not understood. */
static uint64_t mem_mib(const xmlNode *n)
{
    char *v = text(n), *u = prop(n, "unit");
    uint64_t out = 0;
    char *end = NULL;
    unsigned long long x = strtoull(v, &end, 10);
    if (*v && end && *end == '\0') {
        const char *unit = u ? u : "KiB";
        double f = 0;
        if (!strcmp(unit, "b") || !strcmp(unit, "bytes"))
            f = 1.0 / 1048576;
        else if (!strcmp(unit, "KB"))
            f = 1000.0 / 1048576;
        else if (!strcmp(unit, "k") || !strcmp(unit, "KiB"))
            f = 1.0 / 1024;
        else if (!strcmp(unit, "MB"))
            f = 1e6 / 1048576;
        else if (!strcmp(unit, "M") || !strcmp(unit, "MiB"))
            f = 1;
        else if (!strcmp(unit, "GB"))
            f = 1e9 / 1048576;
        else if (!strcmp(unit, "G") || !strcmp(unit, "GiB"))
            f = 1024;
        else if (!strcmp(unit, "TB"))
            f = 1e12 / 1048576;
        else if (!strcmp(unit, "T") || !strcmp(unit, "TiB"))
            f = 1024.0 * 1024;
        double mib = (double)x * f;
        if (mib >= 1 && mib < 1e12)
            out = (uint64_t)mib;
    }
    free(v);
    free(u);
    return out;
}

/* <nvram template='T'>PATH</nvram>, or (libvirt >= 8.5) <nvram type='file'
 * template='T'><source file='PATH'/></nvram>: the store's path in state. */
static void parse_nvram(const xmlNode *n, json_t *state, json_t *w)
{
    char *type = prop(n, "type"), *tmpl = prop(n, "template");
    const xmlNode *src = child(n, "source");
    if (type && strcmp(type, "file") != 0) {
        warn(w, "os/nvram of type %s is not imported: the VM gets a fresh UEFI variable "
                "store%s", type, NULL);
    } else {
        char *path = src ? prop(src, "file") : text(n);
        if (path && *path) {
            json_object_set_new(state, "nvram", json_string(path));
            if (tmpl)
                json_object_set_new(state, "nvram_template", json_string(tmpl));
        }
        free(path);
    }
    free(type);
    free(tmpl);
}

static int parse_os(const xmlNode *os, json_t *spec, json_t *state, json_t *w, kh_err *err)
{
    char *fw = prop(os, "firmware");
    if (fw && strcmp(fw, "efi") == 0)
        json_object_set_new(spec, "firmware", json_string("uefi"));
    free(fw);
    json_t *boot = json_object();
    for (const xmlNode *c = os->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (is(c, "type")) {
            char *m = prop(c, "machine"), *arch = prop(c, "arch"), *t = text(c);
            if (strcmp(t, "hvm") != 0) {
                kh_err_set(err, KH_E_INVALID, "libvirt: os type %.32s: only hvm guests are "
                                              "imported", t);
            } else if (arch && strcmp(arch, "x86_64") != 0 && strcmp(arch, "i686") != 0) {
                kh_err_set(err, KH_E_INVALID, "libvirt: arch %.32s: only x86_64 guests are "
                                              "imported", arch);
            } else if (m && !strstr(m, "q35")) {
                warn(w, "machine %s: kvmhost runs q35 (the i440fx 'pc' machine is not "
                        "offered)%s", m, NULL);
            }
            free(m);
            free(arch);
            free(t);
            if (kh_err_isset(err)) {
                json_decref(boot);
                return -1;
            }
        } else if (is(c, "loader")) {
            char *type = prop(c, "type"), *secure = prop(c, "secure");
            json_object_set_new(spec, "firmware", json_string("uefi"));
            if (secure && strcmp(secure, "yes") == 0)
                json_object_set_new(spec, "secure_boot", json_true());
            if (!type || strcmp(type, "pflash") != 0)
                warn(w, "os/loader of type %s: kvmhost uses its own OVMF (pflash)%s", type,
                     NULL);
            free(type);
            free(secure);
        } else if (is(c, "firmware")) {
            /* <os firmware='efi'> auto-selection: Secure Boot is a feature */
            for (const xmlNode *f = c->children; f; f = f->next) {
                char *name = is(f, "feature") ? prop(f, "name") : NULL;
                char *on = name ? prop(f, "enabled") : NULL;
                if (name && on && strcmp(name, "secure-boot") == 0)
                    json_object_set_new(spec, "secure_boot",
                                        json_boolean(strcmp(on, "yes") == 0));
                free(name);
                free(on);
            }
        } else if (is(c, "nvram")) {
            parse_nvram(c, state, w);
        } else if (is(c, "kernel") || is(c, "initrd") || is(c, "cmdline")) {
            char *t = text(c);
            json_object_set_new(boot, (const char *)c->name, json_string(t));
            free(t);
        } else if (is(c, "boot") || is(c, "bootmenu") || is(c, "smbios")) {
            warn(w, "os/%s is not imported (the first disk boots)%s", (const char *)c->name,
                 NULL);
        } else {
            warn(w, "os/%s is not imported%s", (const char *)c->name, NULL);
        }
    }
    if (json_object_size(boot))
        json_object_set_new(spec, "boot", boot);
    else
        json_decref(boot);
    return 0;
}

static int parse_disk(const xmlNode *d, json_t *disks, json_t *w, kh_err *err)
{
    char *type = prop(d, "type"), *device = prop(d, "device");
    const xmlNode *src = child(d, "source"), *drv = child(d, "driver");
    char *file = src ? prop(src, "file") : NULL;
    char *fmt = drv ? prop(drv, "type") : NULL;
    int rc = 0;
    if (device && strcmp(device, "disk") != 0 && strcmp(device, "cdrom") != 0) {
        warn(w, "disk device %s is not imported%s", device, NULL);
    } else if (!type || strcmp(type, "file") != 0) {
        kh_err_set(err, KH_E_INVALID, "libvirt: a disk of type %.32s: only file disks are "
                                      "imported", type ? type : "?");
        rc = -1;
    } else if (!file) {
        if (device && strcmp(device, "cdrom") == 0)
            warn(w, "an empty CD-ROM drive is not imported%s%s", NULL, NULL);
        else {
            kh_err_set(err, KH_E_INVALID, "libvirt: a disk without a source file");
            rc = -1;
        }
    } else if (!fmt || (strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0)) {
        kh_err_set(err, KH_E_INVALID, "libvirt: disk %.200s: driver type %.16s; only raw and "
                                      "qcow2 are imported", file, fmt ? fmt : "(none)");
        rc = -1;
    } else {
        json_t *j = json_pack("{s:s, s:s}", "path", file, "format", fmt);
        if ((device && strcmp(device, "cdrom") == 0) || child(d, "readonly"))
            json_object_set_new(j, "readonly", json_true());
        json_array_append_new(disks, j);
        for (const xmlNode *c = d->children; c; c = c->next)
            if (c->type == XML_ELEMENT_NODE && !is(c, "source") && !is(c, "driver") &&
                !is(c, "target") && !is(c, "address") && !is(c, "readonly") &&
                !is(c, "alias"))
                warn(w, "disk %s: <%s> is not imported", file, (const char *)c->name);
    }
    free(type);
    free(device);
    free(file);
    free(fmt);
    return rc;
}

static int parse_interface(const xmlNode *i, json_t *nics, json_t *w, kh_err *err)
{
    char *type = prop(i, "type");
    const xmlNode *src = child(i, "source"), *mac = child(i, "mac");
    char *net = src ? prop(src, "network") : NULL;
    char *addr = mac ? prop(mac, "address") : NULL;
    int rc = 0;
    if (!type || strcmp(type, "network") != 0 || !net) {
        kh_err_set(err, KH_E_INVALID, "libvirt: an interface of type %.32s: only interfaces "
                                      "on a network (<source network='NAME'/>) are imported",
                   type ? type : "?");
        rc = -1;
    } else {
        json_t *n = json_pack("{s:s}", "network", net);
        if (addr)
            json_object_set_new(n, "mac", json_string(addr));
        json_array_append_new(nics, n);
        const xmlNode *model = child(i, "model");
        char *m = model ? prop(model, "type") : NULL;
        if (m && strcmp(m, "virtio") != 0)
            warn(w, "interface model %s: attached as virtio%s", m, NULL);
        free(m);
    }
    free(type);
    free(net);
    free(addr);
    return rc;
}

/* <tpm><backend type='emulator' version='2.0'>: where libvirt keeps its
 * swtpm's state (a <source type='dir' path=...>, else libvirt's default
 * under the domain's uuid) and whether libvirt encrypted it. */
static void parse_tpm(const xmlNode *t, json_t *state)
{
    const xmlNode *be = child(t, "backend");
    char *type = be ? prop(be, "type") : NULL, *version = be ? prop(be, "version") : NULL;
    if (type && strcmp(type, "emulator") == 0) {
        json_t *j = json_pack("{s:s, s:b}", "version", version ? version : "",
                              "encrypted", child(be, "encryption") != NULL);
        const xmlNode *src = child(be, "source");
        char *st = src ? prop(src, "type") : NULL, *path = src ? prop(src, "path") : NULL;
        if (st && path)
            json_object_set_new(j, strcmp(st, "dir") == 0 ? "dir" : "other",
                                json_string(path));
        free(st);
        free(path);
        json_object_set_new(state, "tpm", j);
    }
    free(type);
    free(version);
}

static int parse_devices(const xmlNode *devs, json_t *spec, json_t *state, json_t *w,
                         kh_err *err)
{
    json_t *disks = json_array(), *nics = json_array();
    bool serial = false;
    int rc = 0;
    for (const xmlNode *c = devs->children; c && rc == 0; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (is(c, "disk")) {
            rc = parse_disk(c, disks, w, err);
        } else if (is(c, "interface")) {
            rc = parse_interface(c, nics, w, err);
        } else if (is(c, "serial") || is(c, "console")) {
            serial = true;
        } else if (is(c, "tpm")) {
            char *model = prop(c, "model");
            json_object_set_new(spec, "tpm", json_true());
            parse_tpm(c, state);
            if (model && strcmp(model, "tpm-crb") != 0 && strcmp(model, "tpm-tis") != 0)
                warn(w, "tpm model %s: a TPM 2.0 is attached%s", model, NULL);
            free(model);
        } else if (is(c, "graphics")) {
            char *type = prop(c, "type");
            if (type && strcmp(type, "vnc") == 0)
                json_object_set_new(spec, "graphics", json_string("vnc"));
            else
                warn(w, "graphics %s is not imported (VNC is offered)%s", type, NULL);
            free(type);
        } else if (is(c, "emulator")) {
            /* kvmhost runs its own QEMU */
        } else if (is(c, "controller") || is(c, "input") || is(c, "video") ||
                   is(c, "memballoon") || is(c, "channel") || is(c, "rng") ||
                   is(c, "sound") || is(c, "redirdev") || is(c, "watchdog") ||
                   is(c, "hostdev") || is(c, "filesystem") || is(c, "smartcard") ||
                   is(c, "panic")) {
            char *type = prop(c, "type");
            warn(w, "device <%s%s> is not imported (kvmhost chooses its own)",
                 (const char *)c->name, type ? type : "");
            free(type);
        } else {
            warn(w, "device <%s> is not imported%s", (const char *)c->name, NULL);
        }
    }
    json_object_set_new(spec, "serial", json_boolean(serial));
    if (json_array_size(disks))
        json_object_set_new(spec, "disks", json_incref(disks));
    if (json_array_size(nics))
        json_object_set_new(spec, "nics", json_incref(nics));
    json_decref(disks);
    json_decref(nics);
    return rc;
}

json_t *kh_libvirt_xml_parse(const char *xml, size_t len, json_t **warnings, json_t **state,
                             kh_err *err)
{
    *warnings = NULL;
    *state = NULL;
    if (len == 0 || len > KH_LIBVIRT_XML_MAX) {
        kh_err_set(err, KH_E_INVALID, "libvirt: the body must be a domain XML of at most 1 MiB");
        return NULL;
    }
    *warnings = json_array();
    *state = json_object();
    xmlDoc *doc = xmlReadMemory(xml, (int)len, "domain.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlNode *dom = doc ? xmlDocGetRootElement(doc) : NULL;
    json_t *spec = NULL;
    if (!is(dom, "domain")) {
        kh_err_set(err, KH_E_INVALID, "libvirt: not a domain XML (no <domain>)");
        goto out;
    }
    char *type = prop(dom, "type");
    if (type && strcmp(type, "kvm") != 0 && strcmp(type, "qemu") != 0)
        warn(*warnings, "domain type %s: kvmhost runs QEMU (KVM when it can)%s", type, NULL);
    free(type);
    spec = json_object();
    for (const xmlNode *c = dom->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        int rc = 0;
        if (is(c, "name")) {
            char *t = text(c);
            json_object_set_new(spec, "name", json_string(t));
            free(t);
        } else if (is(c, "memory")) {
            uint64_t m = mem_mib(c);
            if (!m) {
                kh_err_set(err, KH_E_INVALID, "libvirt: <memory> is not understood");
                rc = -1;
            } else {
                json_object_set_new(spec, "memory_mib", json_integer((json_int_t)m));
            }
        } else if (is(c, "currentMemory")) {
            json_t *m = json_object_get(spec, "memory_mib");
            if (m && (uint64_t)json_integer_value(m) != mem_mib(c))
                warn(*warnings, "currentMemory differs from memory: the VM gets all of its "
                                "memory (no balloon)%s%s", NULL, NULL);
        } else if (is(c, "vcpu")) {
            char *t = text(c), *cur = prop(c, "current");
            long n = strtol(t, NULL, 10);
            if (n < 1 || n > 255) {
                kh_err_set(err, KH_E_INVALID, "libvirt: <vcpu> %.16s is not understood", t);
                rc = -1;
            } else if (cur) {
                long k = strtol(cur, NULL, 10);
                json_object_set_new(spec, "vcpus", json_integer(k >= 1 && k <= n ? k : n));
                json_object_set_new(spec, "max_vcpus", json_integer(n));
            } else {
                json_object_set_new(spec, "vcpus", json_integer(n));
            }
            free(t);
            free(cur);
        } else if (is(c, "os")) {
            rc = parse_os(c, spec, *state, *warnings, err);
        } else if (is(c, "cpu")) {
            parse_cpu(c, spec, *warnings);
        } else if (is(c, "devices")) {
            rc = parse_devices(c, spec, *state, *warnings, err);
        } else if (is(c, "description")) {
            char *t = text(c);
            if (strlen(t) < 1024)
                json_object_set_new(spec, "description", json_string(t));
            free(t);
        } else if (is(c, "uuid")) {
            char *t = text(c); /* the VM gets its own id; libvirt's names the TPM's dir */
            json_object_set_new(*state, "uuid", json_string(t));
            free(t);
        } else if (is(c, "metadata") || is(c, "title")) {
            /* the VM gets its own id */
        } else if (is(c, "features")) {
            for (const xmlNode *f = c->children; f; f = f->next)
                if (f->type == XML_ELEMENT_NODE && !is(f, "acpi") && !is(f, "apic"))
                    warn(*warnings, "feature <%s> is not imported%s", (const char *)f->name,
                         NULL);
        } else {
            warn(*warnings, "<%s> is not imported%s", (const char *)c->name, NULL);
        }
        if (rc < 0) {
            json_decref(spec);
            spec = NULL;
            goto out;
        }
    }
    if (!json_object_get(spec, "name")) {
        kh_err_set(err, KH_E_INVALID, "libvirt: the domain has no <name>");
        json_decref(spec);
        spec = NULL;
    }
out:
    xmlFreeDoc(doc);
    if (!spec) {
        json_decref(*warnings);
        *warnings = NULL;
        json_decref(*state);
        *state = NULL;
    }
    return spec;
}
