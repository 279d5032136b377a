/* fuzz_ovf.c - libFuzzer target: the OVF descriptor of an uploaded OVA
 * (kh_ovf_parse, porting/ovf.c), the first thing read of a hostile archive.
 * Properties: a refusal has a message; an accepted descriptor keeps its
 * bounds (files, disks, NICs), every file name is one plain component
 * (no '/', no leading '.'), disks and files point at each other
 * consistently, a VM name is one kvmhost accepts; and what kh_ovf_write
 * makes of it parses back to the same VM (export -> import).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "porting/ovf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const kh_ovf *o)
{
    if (o->nfiles > KH_OVF_FILES_MAX || o->ndisks > KH_OVF_DISKS_MAX ||
        o->nnics > KH_OVF_NICS_MAX || !json_is_array(o->warnings))
        abort();
    for (size_t i = 0; i < o->nfiles; i++) {
        const char *h = o->files[i].href;
        if (!h[0] || h[0] == '.' || strchr(h, '/') || strchr(h, '\\'))
            abort();
        if (o->files[i].disk >= (int)o->ndisks ||
            (o->files[i].disk >= 0 && o->disks[o->files[i].disk].file != (int)i))
            abort();
    }
    for (size_t i = 0; i < o->ndisks; i++)
        if (o->disks[i].file < 0 || (size_t)o->disks[i].file >= o->nfiles ||
            o->files[o->disks[i].file].disk != (int)i)
            abort();
    if (o->name[0] == '-' || o->name[0] == '.' || strlen(o->name) > 64)
        abort();
    for (const char *p = o->name; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.", *p))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kh_ovf o;
    kh_err err = KH_ERR_INIT;
    if (kh_ovf_parse((const char *)data, size, &o, &err) < 0) {
        if (!err.msg[0] || o.warnings)
            abort();
        return 0;
    }
    check(&o);
    if (o.vcpus && o.memory_mib) {
        char *text = kh_ovf_write(&o);
        kh_ovf back;
        kh_err err2 = KH_ERR_INIT;
        if (kh_ovf_parse(text, strlen(text), &back, &err2) < 0)
            abort();
        check(&back);
        if (back.vcpus != o.vcpus || back.memory_mib != o.memory_mib || back.uefi != o.uefi ||
            back.secure_boot != o.secure_boot || back.tpm != o.tpm ||
            back.ndisks != o.ndisks || back.nnics != o.nnics || strcmp(back.name, o.name) != 0)
            abort();
        for (size_t i = 0; i < o.ndisks; i++)
            if (back.disks[i].capacity != o.disks[i].capacity ||
                strcmp(back.files[back.disks[i].file].href, o.files[o.disks[i].file].href) != 0)
                abort();
        for (size_t i = 0; i < o.nnics; i++)
            if (strcmp(back.macs[i], o.macs[i]) != 0)
                abort();
        kh_ovf_clear(&back);
        free(text);
    }
    kh_ovf_clear(&o);
    return 0;
}
