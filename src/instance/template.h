/* template.h - templates and clones of VMs.
 *
 * A template is a stopped VM whose disks are all volumes; making it one
 * turns its volumes into read-only bases and forbids starting it. A clone
 * is a new VM with the template's spec and, per disk, a new volume: a
 * qcow2 overlay on the base (linked: O(1), qemu-img create) or a full copy
 * (qemu-img convert, as a task with progress). Read-only disks of the
 * template are shared as they are. Clones run concurrently: each only
 * creates its own volumes, and nothing is locked.
 */
#ifndef KH_VM_TEMPLATE_H
#define KH_VM_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>

#include "storage/storage.h"
#include "util/err.h"
#include "instance/manager.h"
#include "instance/task.h"

/* Make VM `name` a template; returns the VM object. KH_E_CONFLICT unless
 * it is stopped, KH_E_INVALID when a disk is not a volume. reset_identity:
 * first empty /etc/machine-id and remove the SSH host keys in its writable
 * volumes (kh_storage_identity_reset), so that clones get their own at
 * first boot; KH_E_INVALID when none holds an ext2/3/4 root filesystem,
 * and nothing changes on a failure. */
json_t *kh_template_make(kh_manager *mgr, kh_storage *st, const char *name, bool reset_identity,
                         kh_err *err);
/* The templates: a JSON array of VM objects. */
json_t *kh_template_list(kh_manager *mgr);

/* Called once with the new VM (linked) or the finished task (full). */
typedef void (*kh_template_clone_cb)(json_t *vm, const kh_err *err, void *opaque);

/* Create a VM from body (CloneSpec.json: {"name", "from_template", "clone":
 * "linked"|"full", and overrides: "vcpus", "max_vcpus", "memory_mib",
 * "hugepages", "serial", "graphics", "description", "nics", "limits"}): the
 * template's whole spec, its NICs with new MACs and no static ip. A linked clone calls cb when the
 * VM exists. A full clone returns its task in *task (cb is then never
 * called): the task's result is the VM. -1 with err set, and nothing
 * made, when the request is refused at once. */
int kh_template_clone(kh_manager *mgr, kh_storage *st, kh_tasks *tasks, const json_t *body,
                      kh_template_clone_cb cb, void *opaque, kh_task **task, kh_err *err);

#endif
