/* ovf.h - the OVF descriptor of an OVA: read (import) and written (export).
 *
 * Only what kvmhost can use is kept: the virtual system's name, CPUs
 * (RASD ResourceType 3), memory (4, with AllocationUnits), disks (17,
 * through DiskSection and References), NICs (10, their MAC when given), the
 * firmware (VMware's firmware="efi" config), Secure Boot (VMware's
 * bootOptions.efiSecureBootEnabled config) and a TPM (VMware's vTPM item:
 * ResourceType 1, ResourceSubType vmware.vtpm). What is not understood is
 * listed in warnings, never dropped silently. Parsing is libxml2 with no
 * network, no entity substitution, no DTD loading; the text is bounded by
 * the caller (KH_OVF_TEXT_MAX).
 */
#ifndef KH_PORTING_OVF_H
#define KH_PORTING_OVF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define KH_OVF_TEXT_MAX (1u << 20) /* the .ovf: at most 1 MiB */
#define KH_OVF_FILES_MAX 16
#define KH_OVF_DISKS_MAX 16
#define KH_OVF_NICS_MAX 8
#define KH_OVF_HREF_MAX 128

typedef struct kh_ovf_file {
    char id[KH_OVF_HREF_MAX];
    char href[KH_OVF_HREF_MAX]; /* a plain file name (checked) */
    uint64_t size;              /* declared size in bytes, 0 when not given */
    int disk;                   /* index in disks, or -1: not a disk */
} kh_ovf_file;

typedef struct kh_ovf_disk {
    char id[KH_OVF_HREF_MAX];
    int file; /* index in files */
    uint64_t capacity;
} kh_ovf_disk;

typedef struct kh_ovf {
    char name[65];
    unsigned vcpus;      /* 0: not given */
    uint64_t memory_mib; /* 0: not given */
    bool uefi;
    bool secure_boot; /* only with uefi */
    bool tpm;
    size_t nfiles, ndisks, nnics;
    kh_ovf_file files[KH_OVF_FILES_MAX];
    kh_ovf_disk disks[KH_OVF_DISKS_MAX]; /* in the order the hardware section attaches them */
    char macs[KH_OVF_NICS_MAX][18];      /* "" when the NIC names none */
    json_t *warnings;                    /* array of strings (owned) */
} kh_ovf;

/* Parse text (len bytes). 0 and *out filled (free with kh_ovf_clear), or
 * -1 with err set (KH_E_INVALID: the message says what is wrong). */
int kh_ovf_parse(const char *text, size_t len, kh_ovf *out, kh_err *err);
void kh_ovf_clear(kh_ovf *o);
/* The index of the file called href, or -1. */
int kh_ovf_file_find(const kh_ovf *o, const char *href);

/* Export: an OVF 1.0 descriptor for a VM (name, vcpus, memory_mib, uefi)
 * and its disks (files[i].href, .size, disks[i].capacity). A new string
 * (free()). */
char *kh_ovf_write(const kh_ovf *o);

#endif
