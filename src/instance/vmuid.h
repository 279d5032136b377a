/* vmuid.h - the uid (and gid of the same number) each VM's QEMU runs as.
 *
 * With a range configured (kh_manager_config.uid_first/uid_count, the
 * daemon's --qemu-uid-range), a VM gets the lowest free uid of the range at
 * its first start (uids that name a user or group on the host are skipped),
 * recorded in the vm_uids table (migration 23): it stays the VM's across
 * restarts, reattaches and stops, and is freed with the VM's row at delete,
 * once the files still owned by it were handed back to root. Without a
 * range (--qemu-user, or a daemon not run as root) every QEMU shares
 * cfg.uid/cfg.gid as before.
 */
#ifndef KH_INSTANCE_VMUID_H
#define KH_INSTANCE_VMUID_H

#include <stdbool.h>
#include <sys/types.h>

#include "instance/manager.h"
#include "util/err.h"

/* The identity QEMU of VM vm_id runs as: uid, gid, supplementary groups
 * (at most 4; kvm's group for /dev/kvm). Allocates on first use. 0, or -1
 * with err set (KH_E_UNAVAILABLE when the range is used up). */
typedef struct kh_vmuid_identity {
    uid_t uid;
    gid_t gid;
    gid_t groups[4];
    size_t ngroups;
    bool per_vm;      /* from the range (files of the VM are chowned to it) */
} kh_vmuid_identity;
int kh_vmuid_identity_get(kh_manager *mgr, const char *vm_id, kh_vmuid_identity *out,
                          kh_err *err);

/* The recorded uid of vm_id, or 0 when it has none. */
uid_t kh_vmuid_lookup(kh_manager *mgr, const char *vm_id);

/* fd is a file the VM's QEMU gets (a writable disk, its log): a regular
 * file is given to the VM's uid/gid, mode 0600 (the daemon, root, still
 * reaches it; other VMs' uids do not). Devices and shared read-only
 * layers stay as they are. Best effort: logs a failure. */
void kh_vmuid_own_fd(const kh_vmuid_identity *id, int fd, const char *what);

/* A file leaves the VM (detach, delete): if path is a regular file owned by
 * uid, it goes back to root:root, so the uid can be given to another VM. */
void kh_vmuid_disown_path(uid_t uid, const char *path);

/* Disk d leaves VM vm_id (detach): its file or volume, when writable and
 * owned by the VM's uid, goes back to root. */
void kh_vmuid_disown_disk(kh_manager *mgr, const char *vm_id, const kh_disk_spec *d);
/* Before VM vm_id is deleted: the writable disks of spec (files and
 * volumes) owned by its uid go back to root. */
void kh_vmuid_release(kh_manager *mgr, const char *vm_id, const kh_vm_spec *spec);

#endif
