/* guest.h - what the daemon asks a running guest through its agent
 * (qemu-guest-agent, qemu/qga.h): the OS, hostname and addresses the VM
 * view shows, and the filesystem freeze and thaw around a backup's point
 * in time. The agent is asked in the libuv thread pool (it may never
 * answer: a guest without the agent), with a deadline. */
#ifndef KH_INSTANCE_GUEST_H
#define KH_INSTANCE_GUEST_H

#include <jansson.h>
#include <stdbool.h>

#include "instance/manager.h"
#include "util/err.h"

#define KH_GUEST_AGENT_TIMEOUT_MS 5000

/* info: a new reference (GuestInfo.json), NULL with err. */
typedef void (*kh_guest_info_cb)(json_t *info, const kh_err *err, void *opaque);

/* Ask the guest of running VM name; cb runs once, later, on the loop
 * thread. -1 with err (404 no such VM, 409 not running or no agent
 * channel) and no callback. */
int kh_guest_info(kh_manager *mgr, const char *name, kh_guest_info_cb cb, void *opaque,
                  kh_err *err);

/* count: the filesystems frozen or thawed (err NULL), else err. */
typedef void (*kh_guest_fs_cb)(int count, const kh_err *err, void *opaque);

/* guest-fsfreeze-freeze (freeze) or guest-fsfreeze-thaw in the guest of
 * running VM name, bounded by timeout_ms; cb runs once, later, on the loop
 * thread. -1 with err (404, 409 not running or no agent channel) and no
 * callback. A guest frozen stays so until thawed: the caller thaws. */
int kh_guest_fsfreeze(kh_manager *mgr, const char *name, bool freeze, unsigned timeout_ms,
                      kh_guest_fs_cb cb, void *opaque, kh_err *err);

#endif
