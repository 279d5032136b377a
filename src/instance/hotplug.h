/* hotplug.h - vCPU hot-plug and unplug on a running q35 VM.
 *
 * The VM starts with -smp vcpus,maxcpus=max_vcpus. Plugging asks QEMU for
 * its free CPU slots (query-hotpluggable-cpus) and adds a CPU device to the
 * lowest ones (device_add, id "vcpu-S-C-T"); the guest sees them present
 * at once (it may need to online them). Unplugging asks QEMU to remove the
 * CPUs plugged while running, newest first (device_del); the guest must
 * agree (ACPI eject), so QEMU is polled until they are gone or the timeout
 * passes. The CPUs QEMU started with cannot be unplugged.
 *
 * The count that is really present at the end is what the spec records
 * (kh_config_set_live_vcpus), so it never claims more or fewer vCPUs than
 * the guest has. Everything runs on the loop thread.
 */
#ifndef KH_VM_HOTPLUG_H
#define KH_VM_HOTPLUG_H

#include <jansson.h>
#include <uv.h>

#include "util/err.h"
#include "instance/manager.h"

/* vm: the VM object after the change (stolen), or NULL with err: the
 * target was not reached (KH_E_TIMEOUT when the guest did not release its
 * CPUs in time, KH_E_QEMU when QEMU refused); the spec then holds the count
 * that is present. */
typedef void (*kh_hotplug_cb)(json_t *vm, const kh_err *err, void *opaque);

/* Begin changing a running VM's vCPU count to target. -1 with err and no
 * callback when it cannot start: KH_E_NOTFOUND, KH_E_CONFLICT (not running,
 * a change already under way, not q35, target above max_vcpus: stop it
 * first), KH_E_INVALID (target 0, or a CPU cap more vCPUs would need). timeout_s bounds the wait for an unplug. */
int kh_hotplug_vcpus(kh_manager *mgr, uv_loop_t *loop, const char *name, unsigned target,
                     double timeout_s, kh_hotplug_cb cb, void *opaque, kh_err *err);

/* Before any other device_add into a running VM (disk, NIC): 0, or -1 with
 * a 409 when a vCPU was unplugged from its QEMU, which QEMU 7.2 under TCG
 * does not survive (SIGSEGV at the next device_add, seen for vCPUs and
 * NICs). what names the device in the message ("a disk"). */
int kh_hotplug_device_check(kh_manager *mgr, const char *name, const char *what, kh_err *err);

#endif
