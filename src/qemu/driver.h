/* driver.h - the QEMU driver of the instance layer (instance/driver.h):
 * VMs run as QEMU processes spoken to over QMP. */
#ifndef KH_QEMU_DRIVER_H
#define KH_QEMU_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "instance/driver.h"
#include "qemu/qmp.h"

extern const kh_driver kh_qemu_driver;

/* ---- between qemu/driver.c and qemu/launch.c ---- */

typedef struct kh_launch_job kh_launch_job;
typedef struct qmp_link qmp_link;

/* The steps of a start, timed for the vm.start_steps debug line: the
 * monotonic microsecond each was reached (0: not reached). */
typedef enum kh_launch_step {
    KH_LAUNCH_BEGIN,   /* the driver's start */
    KH_LAUNCH_KERNEL,  /* the boot file known (memo or resolved) */
    KH_LAUNCH_RUNDIR,  /* run dir made, boot.json written */
    KH_LAUNCH_FDS,     /* sockets, kernel, disks, taps open */
    KH_LAUNCH_ARGV,
    KH_LAUNCH_CGROUP,  /* cgroup made, limits written */
    KH_LAUNCH_SPAWN,   /* exec done */
    KH_LAUNCH_PERSIST, /* pid recorded */
    KH_LAUNCH_CONNECT, /* QMP and console connected */
    KH_LAUNCH_QMP,     /* qmp_capabilities answered */
    KH_LAUNCH_CONT,    /* cont answered */
    KH_LAUNCH_STEPS
} kh_launch_step;

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
    unsigned stop_requests; /* power-down requests of this stop; the 2nd asks the agent too */
    uint64_t stop_last_ms;  /* loop time of the last one: a gap means a new stop */
    uint64_t t[KH_LAUNCH_STEPS]; /* start timing */
} kh_qemu_vm;

/* v's driver state, made on first use. */
kh_qemu_vm *kh_qemu_driver_vm(kh_inst *v);
/* Connect QMP over the qmp.sock in the run dir (dirfd). */
int kh_qemu_driver_connect(kh_inst *v, int dirfd, kh_err *err);
/* Step reached now (start timing). */
void kh_qemu_driver_step(kh_inst *v, kh_launch_step step);

#endif
