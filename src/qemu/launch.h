/* launch.h - starting a QEMU for an instance (qemu/launch.c). */
#ifndef KH_QEMU_LAUNCH_H
#define KH_QEMU_LAUNCH_H

#include "instance/driver.h"
#include "qemu/driver.h"
#include "util/err.h"

/* The kernel memo of the manager (driver init/fini). */
int kh_launch_init(kh_manager *mgr, kh_err *err);
void kh_launch_fini(kh_manager *mgr);
/* Prepare the kernel (thread pool, memo), then spawn QEMU. */
void kh_launch_start(kh_inst *v);
/* Render the VM's cloud-init seed (spec->cloud_init) into the ISO at path
 * (replaced atomically). */
int kh_launch_cidata_write(kh_inst *v, const char *path, kh_err *err);
/* Abandon a kernel preparation in flight (the job frees itself). */
void kh_launch_cancel(kh_launch_job *job);

#endif
