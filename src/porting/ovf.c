/* ovf.c - the OVF descriptor: parsed into kh_ovf with libxml2 (import) and
 * written from one (export). Names are matched by local name, so the
 * ovf:/rasd:/vssd:/vmw: prefixes of the different producers all work. */
#include "porting/ovf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "util/mem.h"

/* libxml2 names are const xmlChar *: BAD_CAST would drop the const */
#define XC (const xmlChar *)

static bool is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* An attribute by local name (any namespace), as a new string or NULL. */
static char *attr(const xmlNode *n, const char *name)
{
    for (const xmlAttr *a = n->properties; a; a = a->next) {
        if (strcmp((const char *)a->name, name) == 0) {
            xmlChar *v = xmlNodeGetContent((const xmlNode *)a);
            char *s = v ? xstrdup((const char *)v) : NULL;
            xmlFree(v);
            return s;
        }
    }
    return NULL;
}

/* The trimmed text of child element name of n, as a new string or NULL. */
static char *child_text(const xmlNode *n, const char *name)
{
    for (const xmlNode *c = n->children; c; c = c->next) {
        if (!is(c, name))
            continue;
        xmlChar *v = xmlNodeGetContent(c);
        if (!v)
            return NULL;
        const char *s = (const char *)v;
        while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
            s++;
        char *out = xstrdup(s);
        size_t l = strlen(out);
        while (l > 0 && strchr(" \n\t\r", out[l - 1]))
            out[--l] = '\0';
        xmlFree(v);
        return out;
    }
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

static void warn(kh_ovf *o, const char *fmt, const char *arg)
{
    char buf[256];
    snprintf(buf, sizeof(buf), fmt, arg ? arg : "");
    json_array_append_new(o->warnings, cut_string(buf));
}

/* "byte * 2^20", "byte*2^30", "byte", "KiloBytes", "MegaBytes",
 * "GigaBytes": the power of two, or -1. */
static int units_shift(const char *u)
{
    if (!u)
        return -1;
    char c[64];
    size_t k = 0;
    for (const char *p = u; *p && k + 1 < sizeof(c); p++)
        if (*p != ' ')
            c[k++] = *p;
    c[k] = '\0';
    if (strcmp(c, "byte") == 0 || strcmp(c, "bytes") == 0)
        return 0;
    if (strcmp(c, "KiloBytes") == 0 || strcmp(c, "KB") == 0)
        return 10;
    if (strcmp(c, "MegaBytes") == 0 || strcmp(c, "MB") == 0)
        return 20;
    if (strcmp(c, "GigaBytes") == 0 || strcmp(c, "GB") == 0)
        return 30;
    if (strncmp(c, "byte*2^", 7) == 0) {
        char *end;
        long n = strtol(c + 7, &end, 10);
        if (*end == '\0' && n >= 0 && n <= 50)
            return (int)n;
    }
    return -1;
}

/* A decimal number, or false. */
static bool number(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 19)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    *out = strtoull(s, NULL, 10);
    return true;
}

/* value << shift without overflow past 2^63, or false. */
static bool scaled(uint64_t value, int shift, uint64_t *out)
{
    if (shift < 0 || shift > 62 || (shift > 0 && value > (UINT64_C(1) << (63 - shift))))
        return false;
    *out = value << shift;
    return true;
}

/* A file name from the archive's point of view: one plain component. */
static bool plain_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= KH_OVF_HREF_MAX || s[0] == '.')
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

int kh_ovf_file_find(const kh_ovf *o, const char *href)
{
    for (size_t i = 0; i < o->nfiles; i++)
        if (strcmp(o->files[i].href, href) == 0)
            return (int)i;
    return -1;
}

static int parse_references(const xmlNode *refs, kh_ovf *o, kh_err *err)
{
    for (const xmlNode *f = refs->children; f; f = f->next) {
        if (!is(f, "File"))
            continue;
        if (o->nfiles == KH_OVF_FILES_MAX) {
            kh_err_set(err, KH_E_INVALID, "ovf: more than %d files in References",
                       KH_OVF_FILES_MAX);
            return -1;
        }
        char *id = attr(f, "id"), *href = attr(f, "href"), *size = attr(f, "size");
        int rc = 0;
        if (!id || !href || strlen(id) >= KH_OVF_HREF_MAX) {
            kh_err_set(err, KH_E_INVALID, "ovf: a File without id or href");
            rc = -1;
        } else if (!plain_name(href)) {
            kh_err_set(err, KH_E_INVALID, "ovf: file %.64s: only plain names (letters, digits, "
                                          ". - _) are accepted, no paths or URLs", href);
            rc = -1;
        } else if (kh_ovf_file_find(o, href) >= 0) {
            kh_err_set(err, KH_E_INVALID, "ovf: file %s is listed twice", href);
            rc = -1;
        } else {
            kh_ovf_file *fi = &o->files[o->nfiles++];
            snprintf(fi->id, sizeof(fi->id), "%s", id);
            snprintf(fi->href, sizeof(fi->href), "%s", href);
            fi->disk = -1;
            if (size && !number(size, &fi->size)) {
                kh_err_set(err, KH_E_INVALID, "ovf: file %s: size is not a number", href);
                rc = -1;
            }
        }
        free(id);
        free(href);
        free(size);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int parse_disks(const xmlNode *ds, kh_ovf *o, kh_err *err)
{
    for (const xmlNode *d = ds->children; d; d = d->next) {
        if (!is(d, "Disk"))
            continue;
        if (o->ndisks == KH_OVF_DISKS_MAX) {
            kh_err_set(err, KH_E_INVALID, "ovf: more than %d disks", KH_OVF_DISKS_MAX);
            return -1;
        }
        char *id = attr(d, "diskId"), *ref = attr(d, "fileRef"), *cap = attr(d, "capacity");
        char *units = attr(d, "capacityAllocationUnits");
        int rc = -1;
        int fi = -1;
        for (size_t i = 0; ref && i < o->nfiles; i++)
            if (strcmp(o->files[i].id, ref) == 0)
                fi = (int)i;
        uint64_t c = 0;
        if (!id || strlen(id) >= KH_OVF_HREF_MAX)
            kh_err_set(err, KH_E_INVALID, "ovf: a Disk without diskId");
        else if (fi < 0)
            kh_err_set(err, KH_E_INVALID, "ovf: disk %s: no file (blank disks are not "
                                          "imported)", id);
        else if (o->files[fi].disk >= 0)
            kh_err_set(err, KH_E_INVALID, "ovf: disk %s: its file is another disk's", id);
        else if (!number(cap, &c) || !scaled(c, units ? units_shift(units) : 0, &c))
            kh_err_set(err, KH_E_INVALID, "ovf: disk %s: capacity is not understood", id);
        else
            rc = 0;
        if (rc == 0) {
            kh_ovf_disk *dk = &o->disks[o->ndisks];
            snprintf(dk->id, sizeof(dk->id), "%s", id);
            dk->file = fi;
            dk->capacity = c;
            o->files[fi].disk = (int)o->ndisks++;
        }
        free(id);
        free(ref);
        free(cap);
        free(units);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int parse_item(const xmlNode *it, kh_ovf *o, kh_err *err)
{
    char *type = child_text(it, "ResourceType");
    char *qty = child_text(it, "VirtualQuantity");
    char *units = child_text(it, "AllocationUnits");
    char *label = child_text(it, "ElementName");
    uint64_t t = 0, q = 0;
    int rc = 0;
    char *sub = child_text(it, "ResourceSubType");
    if (!number(type, &t)) {
        warn(o, "hardware item %s: no ResourceType, ignored", label);
    } else if (t == 1 && sub && strcmp(sub, "vmware.vtpm") == 0) {
        o->tpm = true;
    } else if (t == 3) {
        if (!number(qty, &q) || q == 0 || q > 256) {
            kh_err_set(err, KH_E_INVALID, "ovf: the CPU count is not understood");
            rc = -1;
        } else {
            o->vcpus = (unsigned)q;
        }
    } else if (t == 4) {
        int sh = units ? units_shift(units) : 20;
        uint64_t bytes = 0;
        if (!units)
            warn(o, "memory: no AllocationUnits, MiB assumed%s", NULL);
        if (!number(qty, &q) || !scaled(q, sh, &bytes) || bytes < (1u << 20)) {
            kh_err_set(err, KH_E_INVALID, "ovf: the memory size is not understood");
            rc = -1;
        } else {
            o->memory_mib = bytes >> 20;
        }
    } else if (t == 10) {
        if (o->nnics == KH_OVF_NICS_MAX) {
            warn(o, "more than 8 NICs: the others are not imported%s", NULL);
        } else {
            char *mac = child_text(it, "Address");
            snprintf(o->macs[o->nnics++], 18, "%s", mac && strlen(mac) == 17 ? mac : "");
            free(mac);
        }
    } else if (t == 17) {
        /* the disk itself comes from DiskSection; nothing more here */
    } else if (t == 5 || t == 6 || t == 20) {
        warn(o, "disk controller %s: the disks are attached as virtio disks", label);
    } else {
        char what[160];
        snprintf(what, sizeof(what), "%s (ResourceType %" PRIu64 ")", label ? label : "item",
                 t);
        warn(o, "hardware %s is not imported", what);
    }
    free(type);
    free(qty);
    free(units);
    free(label);
    free(sub);
    return rc;
}

static void parse_config(const xmlNode *c, kh_ovf *o)
{
    char *key = attr(c, "key"), *value = attr(c, "value");
    if (key && strcmp(key, "firmware") == 0)
        o->uefi = value && strcmp(value, "efi") == 0;
    if (key && strcmp(key, "bootOptions.efiSecureBootEnabled") == 0)
        o->secure_boot = value && strcmp(value, "true") == 0;
    free(key);
    free(value);
}

static int parse_system(const xmlNode *vs, kh_ovf *o, kh_err *err)
{
    char *name = child_text(vs, "Name");
    if (!name)
        name = attr(vs, "id");
    if (name) {
        /* a VM name kvmhost accepts: other characters become '-' */
        size_t k = 0;
        for (const char *p = name; *p && k < 64; p++) {
            char c = *p;
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '_' || (k > 0 && (c == '-' || c == '.'));
            o->name[k++] = ok ? c : '-';
        }
        o->name[k] = '\0';
        if (o->name[0] == '-')
            o->name[0] = '_';
        free(name);
    }
    for (const xmlNode *s = vs->children; s; s = s->next) {
        if (!is(s, "VirtualHardwareSection"))
            continue;
        char *fw = attr(s, "firmware");
        if (fw && strcmp(fw, "efi") == 0)
            o->uefi = true;
        free(fw);
        for (const xmlNode *it = s->children; it; it = it->next) {
            if (is(it, "Item") || is(it, "StorageItem") || is(it, "EthernetPortItem")) {
                if (parse_item(it, o, err) < 0)
                    return -1;
            } else if (is(it, "Config") || is(it, "ExtraConfig")) {
                parse_config(it, o);
            }
        }
    }
    return 0;
}

int kh_ovf_parse(const char *text, size_t len, kh_ovf *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    out->warnings = json_array();
    if (len > KH_OVF_TEXT_MAX) {
        kh_err_set(err, KH_E_INVALID, "ovf: the descriptor is larger than 1 MiB");
        return -1;
    }
    /* no network, no entity expansion, no DTD: only the text given */
    xmlDoc *doc = xmlReadMemory(text, (int)len, "descriptor.ovf", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    int rc = -1;
    if (!root || !is(root, "Envelope")) {
        kh_err_set(err, KH_E_INVALID, "ovf: not an OVF descriptor (no Envelope)");
        goto out;
    }
    const xmlNode *vs = NULL;
    for (const xmlNode *c = root->children; c; c = c->next) {
        if (is(c, "References") && parse_references(c, out, err) < 0)
            goto out;
    }
    for (const xmlNode *c = root->children; c; c = c->next) {
        if (is(c, "DiskSection") && parse_disks(c, out, err) < 0)
            goto out;
        if (is(c, "VirtualSystem")) {
            if (vs) {
                kh_err_set(err, KH_E_INVALID, "ovf: more than one VirtualSystem (collections "
                                              "are not imported)");
                goto out;
            }
            vs = c;
        }
        if (is(c, "VirtualSystemCollection")) {
            kh_err_set(err, KH_E_INVALID, "ovf: a VirtualSystemCollection is not imported; "
                                          "import each system on its own");
            goto out;
        }
    }
    if (!vs) {
        kh_err_set(err, KH_E_INVALID, "ovf: no VirtualSystem");
        goto out;
    }
    if (parse_system(vs, out, err) < 0)
        goto out;
    if (out->secure_boot && !out->uefi) {
        warn(out, "Secure Boot without EFI firmware: not imported%s", NULL);
        out->secure_boot = false;
    }
    rc = 0;
out:
    xmlFreeDoc(doc);
    if (rc < 0)
        kh_ovf_clear(out);
    return rc;
}

void kh_ovf_clear(kh_ovf *o)
{
    json_decref(o->warnings);
    memset(o, 0, sizeof(*o));
}

/* ---- export ---- */

#define NS_OVF "http://schemas.dmtf.org/ovf/envelope/1"
#define NS_RASD "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
#define NS_VSSD "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
#define NS_VMW "http://www.vmware.com/schema/ovf"

static void rasd_item(xmlNode *hw, xmlNs *rasd, unsigned id, const char *label, unsigned type,
                      const char *qty, const char *units, const char *host_resource,
                      const char *address)
{
    char buf[32];
    xmlNode *it = xmlNewChild(hw, NULL, XC "Item", NULL);
    if (units)
        xmlNewChild(it, rasd, XC "AllocationUnits", XC units);
    if (address)
        xmlNewChild(it, rasd, XC "Address", XC address);
    xmlNewChild(it, rasd, XC "ElementName", XC label);
    if (host_resource)
        xmlNewChild(it, rasd, XC "HostResource", XC host_resource);
    snprintf(buf, sizeof(buf), "%u", id);
    xmlNewChild(it, rasd, XC "InstanceID", XC buf);
    snprintf(buf, sizeof(buf), "%u", type);
    xmlNewChild(it, rasd, XC "ResourceType", XC buf);
    if (qty)
        xmlNewChild(it, rasd, XC "VirtualQuantity", XC qty);
}

static void vmw_config(xmlNode *hw, xmlNs *ovf, xmlNs *vmw, const char *key, const char *value)
{
    xmlNode *c = xmlNewChild(hw, vmw, XC "Config", NULL);
    xmlNewNsProp(c, ovf, XC "required", XC "false");
    xmlNewNsProp(c, vmw, XC "key", XC key);
    xmlNewNsProp(c, vmw, XC "value", XC value);
}

char *kh_ovf_write(const kh_ovf *o)
{
    char buf[64];
    xmlDoc *doc = xmlNewDoc(XC "1.0");
    xmlNode *env = xmlNewNode(NULL, XC "Envelope");
    xmlDocSetRootElement(doc, env);
    xmlNs *ovf = xmlNewNs(env, XC NS_OVF, XC "ovf");
    xmlNs *rasd = xmlNewNs(env, XC NS_RASD, XC "rasd");
    xmlNs *vssd = xmlNewNs(env, XC NS_VSSD, XC "vssd");
    xmlNs *vmw = xmlNewNs(env, XC NS_VMW, XC "vmw");
    xmlSetNs(env, xmlNewNs(env, XC NS_OVF, NULL));
    xmlNewNsProp(env, ovf, XC "version", XC "1.0");

    xmlNode *refs = xmlNewChild(env, NULL, XC "References", NULL);
    for (size_t i = 0; i < o->nfiles; i++) {
        xmlNode *f = xmlNewChild(refs, NULL, XC "File", NULL);
        xmlNewNsProp(f, ovf, XC "href", XC o->files[i].href);
        xmlNewNsProp(f, ovf, XC "id", XC o->files[i].id);
        snprintf(buf, sizeof(buf), "%" PRIu64, o->files[i].size);
        xmlNewNsProp(f, ovf, XC "size", XC buf);
    }
    xmlNode *ds = xmlNewChild(env, NULL, XC "DiskSection", NULL);
    xmlNewChild(ds, NULL, XC "Info", XC "Virtual disk information");
    for (size_t i = 0; i < o->ndisks; i++) {
        xmlNode *d = xmlNewChild(ds, NULL, XC "Disk", NULL);
        snprintf(buf, sizeof(buf), "%" PRIu64, o->disks[i].capacity);
        xmlNewNsProp(d, ovf, XC "capacity", XC buf);
        xmlNewNsProp(d, ovf, XC "capacityAllocationUnits", XC "byte");
        xmlNewNsProp(d, ovf, XC "diskId", XC o->disks[i].id);
        xmlNewNsProp(d, ovf, XC "fileRef", XC o->files[o->disks[i].file].id);
        xmlNewNsProp(d, ovf, XC "format",
                     XC "http://www.vmware.com/interfaces/specifications/"
                              "vmdk.html#streamOptimized");
    }
    xmlNode *ns = xmlNewChild(env, NULL, XC "NetworkSection", NULL);
    xmlNewChild(ns, NULL, XC "Info", XC "Logical networks");
    if (o->nnics > 0) {
        xmlNode *n = xmlNewChild(ns, NULL, XC "Network", NULL);
        xmlNewNsProp(n, ovf, XC "name", XC "default");
        xmlNewChild(n, NULL, XC "Description", XC "The default network");
    }

    xmlNode *vs = xmlNewChild(env, NULL, XC "VirtualSystem", NULL);
    xmlNewNsProp(vs, ovf, XC "id", XC o->name);
    xmlNewChild(vs, NULL, XC "Info", XC "A virtual machine exported by kvmhost");
    xmlNewChild(vs, NULL, XC "Name", XC o->name);
    xmlNode *hw = xmlNewChild(vs, NULL, XC "VirtualHardwareSection", NULL);
    xmlNewChild(hw, NULL, XC "Info", XC "Virtual hardware requirements");
    xmlNode *sys = xmlNewChild(hw, NULL, XC "System", NULL);
    xmlNewChild(sys, vssd, XC "ElementName", XC "Virtual Hardware Family");
    xmlNewChild(sys, vssd, XC "InstanceID", XC "0");
    xmlNewChild(sys, vssd, XC "VirtualSystemIdentifier", XC o->name);
    xmlNewChild(sys, vssd, XC "VirtualSystemType", XC "vmx-14");
    unsigned id = 1;
    snprintf(buf, sizeof(buf), "%u", o->vcpus ? o->vcpus : 1);
    rasd_item(hw, rasd, id++, "virtual CPUs", 3, buf, "hertz * 10^6", NULL, NULL);
    snprintf(buf, sizeof(buf), "%" PRIu64, o->memory_mib);
    rasd_item(hw, rasd, id++, "memory", 4, buf, "byte * 2^20", NULL, NULL);
    unsigned ctrl = id;
    rasd_item(hw, rasd, id++, "SCSI controller 0", 6, NULL, NULL, NULL, "0");
    for (size_t i = 0; i < o->ndisks; i++) {
        char hr[KH_OVF_HREF_MAX + 16], label[48], parent[32];
        snprintf(hr, sizeof(hr), "ovf:/disk/%s", o->disks[i].id);
        snprintf(label, sizeof(label), "disk %zu", i);
        rasd_item(hw, rasd, id++, label, 17, NULL, NULL, hr, NULL);
        xmlNode *last = xmlGetLastChild(hw);
        snprintf(parent, sizeof(parent), "%u", ctrl);
        xmlNewChild(last, rasd, XC "Parent", XC parent);
        snprintf(parent, sizeof(parent), "%zu", i);
        xmlNewChild(last, rasd, XC "AddressOnParent", XC parent);
    }
    for (size_t i = 0; i < o->nnics; i++) {
        char label[48];
        snprintf(label, sizeof(label), "network adapter %zu", i);
        rasd_item(hw, rasd, id++, label, 10, NULL, NULL, NULL, o->macs[i][0] ? o->macs[i] : NULL);
        xmlNode *last = xmlGetLastChild(hw);
        xmlNewChild(last, rasd, XC "Connection", XC "default");
        xmlNewChild(last, rasd, XC "ResourceSubType", XC "VirtioNet");
    }
    if (o->tpm) {
        rasd_item(hw, rasd, id++, "Virtual TPM", 1, NULL, NULL, NULL, NULL);
        xmlNode *last = xmlGetLastChild(hw);
        xmlNewChild(last, rasd, XC "ResourceSubType", XC "vmware.vtpm");
        xmlNewNsProp(last, ovf, XC "required", XC "false");
    }
    if (o->uefi)
        vmw_config(hw, ovf, vmw, "firmware", "efi");
    if (o->uefi && o->secure_boot)
        vmw_config(hw, ovf, vmw, "bootOptions.efiSecureBootEnabled", "true");
    xmlChar *mem = NULL;
    int size = 0;
    xmlDocDumpFormatMemoryEnc(doc, &mem, &size, "UTF-8", 1);
    char *s = xstrdup(mem ? (const char *)mem : "");
    xmlFree(mem);
    xmlFreeDoc(doc);
    return s;
}
