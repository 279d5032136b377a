/* vm_spec.h - what a VM is, as the user defines it.
 *
 * The spec is the user's part of a VM: it is parsed and validated from
 * request JSON here (pure: no file-system access), stored as JSON, and is
 * the input of the QEMU argv builder. Runtime facts (id, state, pid) live in
 * the instance (instance/instance_int.h; its JSON view is
 * instance/manager.c), not here.
 *
 * JSON form (also the flattened user part of the API's VM object):
 *   { "name": "web1", "vcpus": 2, "max_vcpus": 4, "memory_mib": 512,
 *     "machine": "q35" | "microvm",
 *     "boot": { "kernel": "/abs", "initrd": "/abs", "cmdline": "console=ttyS0" },
 *     "disks": [ { "path": "/abs/img.qcow2", "format": "qcow2" | "raw",
 *                  "readonly": false }
 *              | { "volume": "pool/name", "readonly": false } ],
 *     "serial": true,
 *     "graphics": "none" | "vnc",
 *     "description": "free text",
 *     "nics": [ { "network": "net1", "mac": "52:54:00:..", "ip": "10.0.0.5",
 *                "security_groups": ["web"], "link": "up" | "down" } ],
 *     "limits": { ... } }      (conf/limits.h; PATCH merges it key by key)
 * Only name is required: vcpus defaults to 1, memory_mib to 512.
 * max_vcpus (q35 only, >= vcpus; absent = vcpus) is how far vCPUs can be
 * hot-plugged while the VM runs (instance/hotplug.h).
 * "hugepages": true backs guest RAM with 2 MiB huge pages, allocated at
 * start (memory_mib a multiple of 2; the start fails with 409 when the host
 * has too few free).
 * `boot` absent or without `kernel` = boot from the first disk (q35 only).
 * Real guest operating systems (q35 only):
 *   "firmware": "bios" (SeaBIOS, default) | "uefi" (OVMF, qemu/firmware.h),
 *   "secure_boot": true (uefi only: Microsoft keys enrolled, SMM),
 *   "tpm": true (a TPM 2.0 from swtpm, qemu/tpm.h),
 *   "cloud_init": { ... } (src/schema/CloudInit.json; kept as validated
 *   JSON and rendered into a NoCloud seed by qemu/cidata.h).
 */
#ifndef KH_CONF_VM_SPEC_H
#define KH_CONF_VM_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define KH_VM_VCPUS_MAX 255
#define KH_VM_VCPUS_DEFAULT 1
#define KH_VM_MEMORY_DEFAULT_MIB 512ULL
#define KH_VM_MEMORY_MIN_MIB 16ULL
#define KH_VM_MEMORY_MAX_MIB (16ULL * 1024 * 1024) /* 16 TiB */
#define KH_VM_DISKS_MAX 16
#define KH_DISK_BACKING_MAX 8 /* backing layers below a disk's top image */
#define KH_VM_CMDLINE_MAX 4096
#define KH_VM_DESCRIPTION_MAX 1024
#define KH_VM_NICS_MAX 8
#define KH_VM_HUGEPAGE_KIB 2048 /* the huge page size "hugepages" uses */

typedef enum kh_machine {
    KH_MACHINE_Q35,
    KH_MACHINE_MICROVM,
} kh_machine;

typedef enum kh_disk_format {
    KH_DISK_RAW,
    KH_DISK_QCOW2,
} kh_disk_format;

typedef enum kh_firmware {
    KH_FIRMWARE_BIOS,
    KH_FIRMWARE_UEFI,
} kh_firmware;

typedef enum kh_graphics {
    KH_GRAPHICS_NONE,
    KH_GRAPHICS_VNC,
} kh_graphics;

/* One backing layer of a disk, below the top image (runtime only). */
typedef struct kh_disk_layer {
    char *path;
    kh_disk_format format;
    bool encrypted; /* LUKS-encrypted qcow2, with its own secret */
} kh_disk_layer;

typedef struct kh_disk_spec {
    char *path;            /* absolute host path; NULL for an unresolved volume */
    kh_disk_format format; /* given by the user, never guessed */
    bool readonly;
    char *volume;          /* "pool/name" instead of path+format, or NULL */
    /* Runtime only (never parsed from or written to JSON): the backing
     * chain of a resolved volume, nearest first, filled by the VM manager
     * from the storage records. */
    kh_disk_layer *backing;
    size_t nbacking;
    bool encrypted;        /* runtime only: the top image is LUKS-encrypted qcow2 */
    bool direct;           /* runtime only: every layer's file takes O_DIRECT (cache=none) */
} kh_disk_spec;

/* A NIC on a network (net/netmgr.h). mac is filled by the VM manager when
 * the user gave none (stable per VM and index); ip is an optional static
 * DHCP reservation. */
typedef struct kh_nic_spec {
    char *network;
    char *mac; /* canonical lowercase, or NULL until assigned */
    char *ip;  /* dotted quad, or NULL */
    char *security_groups; /* group names joined by ',', or NULL */
    bool link_down;        /* "link": "down": the guest sees no carrier */
} kh_nic_spec;

typedef struct kh_vm_spec {
    char *name;
    unsigned vcpus;
    unsigned max_vcpus; /* 0 = vcpus (no hot-plug) */
    uint64_t memory_mib;
    bool hugepages;     /* guest RAM from 2 MiB huge pages (memfd hugetlb) */
    kh_machine machine;
    char *cpu_model; /* QEMU's -cpu; NULL: the accelerator's default (qemu/argv.h) */
    char *kernel;   /* NULL: boot from disk */
    char *initrd;   /* optional, only with kernel */
    char *cmdline;  /* optional, only with kernel */
    kh_firmware firmware;
    bool secure_boot;   /* UEFI Secure Boot (firmware uefi only) */
    bool tpm;           /* TPM 2.0 through swtpm */
    json_t *cloud_init; /* the validated "cloud_init" object (owned), or NULL */
    kh_disk_spec *disks;
    size_t ndisks;
    bool serial;
    kh_graphics graphics;
    char *description; /* may be NULL */
    kh_nic_spec *nics;
    size_t nnics;
    struct kh_limits *limits; /* conf/limits.h; NULL = no limits */
} kh_vm_spec;

/* Parse and validate a spec from a JSON object. Unknown keys are rejected
 * (no mass assignment); every message names the field. Returns NULL with
 * err set (KH_E_INVALID) on any problem. */
kh_vm_spec *kh_vm_spec_from_json(const json_t *obj, kh_err *err);
/* The JSON form above (a new reference). */
json_t *kh_vm_spec_to_json(const kh_vm_spec *spec);
/* Apply a PATCH object: only the allow-listed keys vcpus, memory_mib,
 * machine, boot, disks, serial, graphics, description; "name" and any
 * other key is rejected. Validates the result as a whole; on error the spec
 * is unchanged. */
int kh_vm_spec_patch(kh_vm_spec *spec, const json_t *patch, kh_err *err);
kh_vm_spec *kh_vm_spec_dup(const kh_vm_spec *spec);
/* Free a disk's resolved backing layers (the runtime-only part). */
void kh_disk_spec_clear_backing(kh_disk_spec *d);
void kh_vm_spec_free(kh_vm_spec *spec);

/* A guest CPU as QEMU's -cpu takes it (cpu_model, or a migration source's):
 * a model name and +/-feature names, 1..127 characters of [A-Za-z0-9_.,+-]
 * starting with a letter or digit: nothing QEMU could read as another
 * option or a path. */
bool kh_vm_cpu_model_valid(const char *cpu);
const char *kh_machine_name(kh_machine m);
const char *kh_disk_format_name(kh_disk_format f);
const char *kh_firmware_name(kh_firmware f);

#endif
