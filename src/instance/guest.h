/* guest.h - what the daemon asks a running guest through its agent
 * (qemu-guest-agent, qemu/qga.h): the OS, hostname and addresses the VM
 * view shows, and the filesystem freeze around disk-only copies. The agent
 * is asked in the libuv thread pool (it may never answer: a guest without
 * the agent), with a deadline.
 *
 * The VM view (GET /api/v1/vms/{name}) carries the last answer as "guest"
 * (GuestView: os, hostname, addresses, updated_at) while the VM runs: a
 * poller asks each running q35 VM's agent once a minute (one VM at a time),
 * and every kh_guest_info() refreshes it. */
#ifndef KH_INSTANCE_GUEST_H
#define KH_INSTANCE_GUEST_H

#include <jansson.h>

#include "instance/manager.h"
#include "util/err.h"

#define KH_GUEST_AGENT_TIMEOUT_MS 5000
#define KH_GUEST_FREEZE_TIMEOUT_MS 30000

/* info: a new reference (GuestInfo.json), NULL with err. */
typedef void (*kh_guest_info_cb)(json_t *info, const kh_err *err, void *opaque);

/* Ask the guest of running VM name; cb runs once, later, on the loop
 * thread. -1 with err (404 no such VM, 409 not running or no agent
 * channel) and no callback. */
int kh_guest_info(kh_manager *mgr, const char *name, kh_guest_info_cb cb, void *opaque,
                  kh_err *err);

/* count: the filesystems the agent froze (freeze) or thawed (thaw), or -1
 * with err (the agent did not answer in time, or refused). */
typedef void (*kh_guest_freeze_cb)(int count, const kh_err *err, void *opaque);

/* guest-fsfreeze-freeze through running VM name's agent, within timeout_ms
 * (0: KH_GUEST_FREEZE_TIMEOUT_MS) after the agent answered a sync (5 s);
 * cb (may be NULL) runs once, later, on the loop thread. -1 with err (404,
 * 409 not running) and no callback.
 * The caller MUST call kh_guest_thaw() afterwards whatever cb says - also
 * when the freeze failed or timed out: the guest may have frozen anyway. A
 * thaw of a guest that is not frozen is harmless (count 0). Both log
 * vm.fsfreeze / vm.fsthaw. Used by snapshots (instance/snapshot.c: live
 * disk-only snapshots) and meant for backups. */
int kh_guest_freeze(kh_manager *mgr, const char *name, unsigned timeout_ms,
                    kh_guest_freeze_cb cb, void *opaque, kh_err *err);
int kh_guest_thaw(kh_manager *mgr, const char *name, kh_guest_freeze_cb cb, void *opaque,
                  kh_err *err);

#endif
