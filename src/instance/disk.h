/* disk.h - attach and detach a VM's disks, hot-plugged when it runs.
 *
 * A disk is a volume reference ("pool/name"). On a stopped VM attach and
 * detach edit the spec. On a running q35 VM they go through QMP:
 *
 *   attach: query-pci (a free hot-plug port among hp0..hp3: disks get
 *   those, NICs hp4..hp7) and query-named-block-nodes (a free node index
 *   N); then every layer of the volume's chain is opened here and passed
 *   as an fd (add-fd with SCM_RIGHTS into fd set 10000 + 16N + j), the
 *   chain is built bottom-up with blockdev-add (the same nodes as a
 *   cold-plugged disk: qemu/argv.h), an encrypted top layer gets a secret
 *   object read from an inherited memfd, an iothread "iothread-disk<N>"
 *   and a virtio-blk-pci "disk<N>-dev" on the free port. Any failure
 *   undoes what was added, in reverse. Success appends the disk to the
 *   spec (so the next start has it as an ordinary disk) and records the
 *   node index of every disk in RUN_DIR/vms/<id>/disks.json (the spec
 *   index and the QEMU node differ after a hot-unplug; a daemon restart
 *   reads it back).
 *
 *   detach: only a hot-plugged disk (on a hot-plug port; pcie.0 takes no
 *   hot-unplug). device_del, then DEVICE_DELETED from the guest within the
 *   timeout, then blockdev-del of every node, object-del, remove-fd, and
 *   the disk leaves the spec. A guest that does not release the disk in
 *   time gets KH_E_TIMEOUT and the disk stays attached and in the spec
 *   (a later detach finishes the job).
 *
 *   after a daemon restart (KH_MANAGER_EVENT_REATTACHED): nodes "disk<N>...",
 *   "iothread-disk<N>", secrets and fd sets 10000 + 16N + j of a node N no
 *   spec disk uses (an attach the kill interrupted) are removed.
 *
 * Refusals (nothing changes): 409 for a volume another VM uses when either
 * side writes, a read-only base (template) or the base of other volumes
 * attached writable, a volume the VM already has, a VM that is busy,
 * starting or stopping, no free port, a running microvm; 404 for an
 * unknown volume or disk index; 400 for a malformed body.
 */
#ifndef KH_VM_DISK_H
#define KH_VM_DISK_H

#include <jansson.h>
#include <uv.h>

#include "qemu/argv.h"
#include "storage/storage.h"
#include "util/err.h"
#include "instance/manager.h"

typedef struct kh_disks kh_disks;

/* result (the VM object) is stolen; err is set when result is NULL. */
typedef void (*kh_disk_cb)(json_t *result, const kh_err *err, void *opaque);

kh_disks *kh_disks_new(uv_loop_t *loop, kh_manager *mgr, kh_storage *st,
                       const kh_qemu_caps *caps);
void kh_disks_free(kh_disks *d);

/* body {"volume": "pool/name", "readonly": false}. Returns 0 and calls cb
 * exactly once later, or -1 with err set and cb never called. */
int kh_disk_attach(kh_disks *d, const char *vm, const json_t *body, kh_disk_cb cb, void *opaque,
                   kh_err *err);
/* Detach disk `index`; timeout_s bounds the wait for the guest (0: 30 s). */
int kh_disk_detach(kh_disks *d, const char *vm, const char *index, unsigned timeout_s,
                   kh_disk_cb cb, void *opaque, kh_err *err);

#endif
