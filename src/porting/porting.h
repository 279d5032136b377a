/* porting.h - VMs brought in from elsewhere and taken out: OVA import
 * (ova.c, with the descriptor in ovf.c), libvirt domain XML import
 * (libvirt_xml.c, with the UEFI variables it names: libvirt_state.c) and
 * OVA export (export.c).
 *
 * The layer sits between api/ and instance/ + storage/: it makes pool
 * volumes (storage) and then the VM (instance/config), and undoes the
 * volumes when a later step fails. Long work runs as a task.
 */
#ifndef KH_PORTING_PORTING_H
#define KH_PORTING_PORTING_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "instance/manager.h"
#include "instance/task.h"
#include "storage/storage.h"
#include "util/err.h"

/* The parts an import uses (copied: may live on the caller's stack). */
typedef struct kh_porting {
    uv_loop_t *loop;
    kh_storage *storage;
    kh_manager *mgr;
    kh_tasks *tasks;
} kh_porting;

/* The caller's say on an import (each may be NULL): admit is asked once
 * the OVF is read, before anything is made, with the new VM's size
 * {"vcpus"?, "memory_mib"? (absent: not in the OVF), "disk_bytes": the
 * capacities of its disks} (-1 with err refuses the import, nothing made);
 * made is told the new VM (its disks name the volumes made); done frees
 * opaque: called exactly once by kh_ova_import_*, whatever happens. */
typedef struct kh_ova_owner {
    int (*admit)(void *opaque, const json_t *size, kh_err *err);
    void (*made)(void *opaque, const json_t *vm);
    void (*done)(void *opaque);
    void *opaque;
} kh_ova_owner;

/* What an import makes; names are checked by the callee. */
typedef struct kh_ova_opts {
    const char *name;    /* the VM's name, or NULL: the OVF's */
    const char *pool;    /* the pool for its volumes, or NULL: "default" */
    const char *network; /* the network of its NICs, or NULL: NICs are not imported */
    const kh_ova_owner *owner; /* or NULL (copied) */
} kh_ova_opts;

/* An archive uploaded as a request body is first spooled into the target
 * pool (a "<uuid>.part" file: removed at restart if left). */
typedef struct kh_ova_spool kh_ova_spool;
kh_ova_spool *kh_ova_spool_begin(kh_porting *pt, const char *pool, uint64_t expected,
                                 kh_err *err);
int kh_ova_spool_write(kh_ova_spool *s, const void *data, size_t len, kh_err *err);
void kh_ova_spool_abort(kh_ova_spool *s);

/* Start an import task of the spooled archive (s is taken, also on
 * error) or of the host file path (already allowed by the caller). The
 * task's result: {"vm": VM, "warnings": [...]}. NULL with err set when the
 * options are refused at once (nothing was made). */
kh_task *kh_ova_import_spool(kh_porting *pt, kh_ova_spool *s, const kh_ova_opts *o,
                             kh_err *err);
kh_task *kh_ova_import_path(kh_porting *pt, const char *path, const kh_ova_opts *o,
                            kh_err *err);

/* The host state a libvirt domain brings (libvirt_state.c), from the state
 * object of kh_libvirt_xml_parse() and the VM spec made of the same XML.
 * tpm_file: where libvirt keeps its swtpm's permanent state for a VM with
 * a TPM (<source type='dir' path> or /var/lib/libvirt/swtpm/UUID/tpm2/,
 * + tpm2-00.permall; a new string), or NULL with a warning saying why not
 * (libvirt encrypted it, TPM 1.2, ...). The caller allows it as a host
 * path and sets it as "tpm_file" in state. read reads and checks both
 * before the VM is made: the UEFI variable store ("nvram") must be a
 * regular file - no symlink, device or FIFO - of the size of the chosen
 * firmware's VARS template and a firmware volume like it, the TPM state a
 * regular unencrypted swtpm state file, else NULL with err KH_E_INVALID;
 * one that does not exist is a fresh store or TPM, named in warnings.
 * write puts them into the new VM's state dir (STATE/vms/<id>) before its
 * first start, the TPM state encrypted with the VM's key (storage NULL:
 * none, as the launcher then runs swtpm without one). */
typedef struct kh_libvirt_state kh_libvirt_state;
char *kh_libvirt_state_tpm_file(const json_t *state, const json_t *spec, json_t *warnings);
kh_libvirt_state *kh_libvirt_state_read(const json_t *state, const json_t *spec,
                                        json_t *warnings, kh_err *err);
int kh_libvirt_state_write(const kh_libvirt_state *s, kh_manager *mgr, kh_storage *storage,
                           const char *vm_id, kh_err *err);
void kh_libvirt_state_free(kh_libvirt_state *s);

/* Export the stopped VM name as an OVA (export.c): cb gets, later, an fd
 * open on the finished archive (an unlinked file: the callee owns it)
 * and its size, or -1 and the error. -1 with err at once (KH_E_CONFLICT:
 * not stopped, an encrypted volume; KH_E_NOTFOUND). */
typedef void (*kh_ova_export_cb)(int fd, uint64_t size, const kh_err *err, void *opaque);
int kh_ova_export(kh_porting *pt, const char *name, kh_ova_export_cb cb, void *opaque,
                  kh_err *err);

#endif
