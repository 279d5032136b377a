/* accel.h - can this host run a full guest under KVM?
 *
 * /dev/kvm opening is not enough: a paravirtual KVM (as in some sandboxes)
 * opens fine but cannot run ordinary guests. The probe creates a VM through
 * /dev/kvm, runs a tiny real-mode guest that takes an exception through its
 * interrupt table and reports the result through port I/O, in a child
 * process bounded by a timeout. KVM is used only if that works.
 */
#ifndef KH_QEMU_ACCEL_H
#define KH_QEMU_ACCEL_H

#include "qemu/argv.h"

typedef struct kh_accel_probe {
    kh_accel accel;
    char reason[256]; /* why, in words for the host view and the log */
} kh_accel_probe;

/* Probe dev (NULL: "/dev/kvm"). Blocks up to about 2 s. Never fails: the
 * result is TCG with a reason when KVM cannot be used. Honours
 * KVMHOST_ACCEL=tcg|kvm to force a choice (the reason says so). */
void kh_accel_probe_run(const char *dev, kh_accel_probe *out);

#endif
