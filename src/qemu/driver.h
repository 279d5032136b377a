/* driver.h - the QEMU driver of the instance layer (instance/driver.h):
 * VMs run as QEMU processes spoken to over QMP. */
#ifndef KH_QEMU_DRIVER_H
#define KH_QEMU_DRIVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "instance/driver.h"
#include "qemu/qmp.h"

extern const kh_driver kh_qemu_driver;

/* ---- between qemu/driver.c and qemu/launch.c ---- */

typedef struct kh_launch_job kh_launch_job;
typedef struct qmp_link qmp_link;

/* What the driver holds for one VM (kh_inst.drv_state). */
typedef struct kh_qemu_vm {
    kh_qmp *qmp;
    qmp_link *qlink;
    kh_launch_job *job;    /* kernel preparation in the thread pool */
    pid_t *vcpu_tids;      /* from the last query-cpus-fast (pinning) */
    size_t nvcpu_tids;
    bool pinned_others;    /* emulator/iothread pinning applied: undo it when unset */
    bool reattaching;
    bool shutdown_seen;    /* QMP SHUTDOWN: QEMU is expected to go away */
} kh_qemu_vm;

/* v's driver state, made on first use. */
kh_qemu_vm *kh_qemu_driver_vm(kh_inst *v);
/* Connect QMP over the qmp.sock in the run dir (dirfd). */
int kh_qemu_driver_connect(kh_inst *v, int dirfd, kh_err *err);

#endif
