/* lifecycle.h - the actions on an instance and its state machine.
 *
 * State machine (one action at a time per VM; kill is always accepted while
 * a process exists):
 *
 *   stopped --start--> starting --QMP ready + cont--> running
 *   running --pause--> paused --resume--> running
 *   running|paused --stop--> stopping --(guest powers off | timeout: kill)--> stopped
 *   any but stopped --kill--> stopped
 *   QEMU exits for any reason --> stopped (state_reason says why)
 *
 * Actions are tasks (instance/task.h); what differs between a VM and a
 * container is done by the instance's driver (instance/driver.h).
 */
#ifndef KH_INSTANCE_LIFECYCLE_H
#define KH_INSTANCE_LIFECYCLE_H

#include <jansson.h>
#include <sys/types.h>

#include "instance/manager.h"
#include "instance/task.h"
#include "qemu/accel.h"
#include "util/err.h"

typedef enum kh_vm_action {
    KH_ACTION_START,
    KH_ACTION_STOP,
    KH_ACTION_KILL,
    KH_ACTION_REBOOT,
    KH_ACTION_PAUSE,
    KH_ACTION_RESUME,
} kh_vm_action;

/* Check and begin an action. opts may hold "timeout" (stop). Returns the
 * running task, or NULL with err set (KH_E_CONFLICT when the state forbids
 * it, KH_E_NOTFOUND, KH_E_INVALID for bad opts) and nothing changed. */
kh_task *kh_lifecycle_action(kh_manager *mgr, const char *name, kh_vm_action action,
                             const json_t *opts, kh_err *err);
/* "vm.start", "vm.stop", ... (the task kinds). */
const char *kh_lifecycle_action_name(kh_vm_action action);

/* The accelerator probe finished: starts that waited for it go on. */
void kh_lifecycle_set_accel(kh_manager *mgr, kh_accel accel);
/* A child process ended (the daemon's SIGCHLD reaper calls this). */
void kh_lifecycle_child_exited(kh_manager *mgr, pid_t pid, int status);

#endif
