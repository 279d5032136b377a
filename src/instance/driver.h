/* driver.h - what runs an instance: the operations that differ between a VM
 * (qemu/driver.c) and, later, a container.
 *
 * The lifecycle (instance/lifecycle.c) owns the state machine and calls
 * these; a driver never sets a state itself: it reports what happened
 * through the kh_lifecycle_* notifications in instance/instance_int.h
 * (launched, started, start failed, action done, guest events, reattached)
 * and the process end is seen by the lifecycle's pidfd watch.
 *
 * All operations run on the loop thread. Asynchronous ones report later,
 * never from inside the call unless noted.
 */
#ifndef KH_INSTANCE_DRIVER_H
#define KH_INSTANCE_DRIVER_H

#include <jansson.h>
#include <stdbool.h>

#include "conf/limits.h"
#include "qemu/qmp.h"
#include "util/err.h"

typedef struct kh_manager kh_manager;
typedef struct kh_inst kh_inst;

typedef struct kh_driver {
    const char *name;
    /* Manager-wide state (caches): made before any instance loads, freed
     * after the last one. */
    int (*init)(kh_manager *mgr, kh_err *err);
    void (*fini)(kh_manager *mgr);

    /* The state is "starting": prepare, then spawn the instance's process.
     * Success is told by kh_lifecycle_launched() (the process runs) and
     * kh_lifecycle_started() (the guest runs); failure by
     * kh_lifecycle_start_fail(). */
    void (*start)(kh_inst *v);
    /* Ask the guest to power off (ACPI); when that request fails,
     * kh_lifecycle_stop_failed(). The process end completes the stop. */
    void (*stop)(kh_inst *v);
    /* SIGKILL the instance's process (no-op without one). Synchronous. */
    void (*kill)(kh_inst *v);
    /* Reboot, pause, resume: kh_lifecycle_action_done() with the outcome. */
    void (*reboot)(kh_inst *v);
    void (*pause)(kh_inst *v);
    void (*resume)(kh_inst *v);
    /* Connect again to the process of a live instance after a daemon
     * restart (its run dir is open as dirfd, its pid watched): -1 with err
     * when it cannot be talked to. Its state is told later by
     * kh_lifecycle_reattached(). */
    int (*reattach)(kh_inst *v, int dirfd, kh_err *err);
    /* Let go of everything the driver holds for v (process end, delete,
     * daemon shutdown); abandons work in flight. Synchronous, idempotent. */
    void (*release)(kh_inst *v);

    /* Live limits the driver applies itself (disk I/O, pinning, balloon):
     * old are the limits before (NULL: at start). */
    void (*limits_changed)(kh_inst *v, const kh_limits *old);
    /* The vCPU count changed (hot-plug): re-apply what depends on it. */
    void (*vcpus_changed)(kh_inst *v);
    /* The cloud-init config of a running instance changed: write the new
     * seed and swap the medium the guest sees. -1 with err when the seed
     * cannot be written (the swap itself is asynchronous and logged). */
    int (*cidata_changed)(kh_inst *v, kh_err *err);

    /* The instance's monitor (QMP for QEMU): a command with args (stolen)
     * and an optional fd (owned from the call on); the callback always
     * runs once when 0 is returned. ready: the monitor is connected;
     * rtt_us: its last round trip. */
    int (*command)(kh_inst *v, const char *cmd, json_t *args, int fd, kh_qmp_reply_cb cb,
                   void *opaque, kh_err *err);
    bool (*monitor_ready)(const kh_inst *v);
    unsigned long (*monitor_rtt_us)(const kh_inst *v);
} kh_driver;

#endif
