/* caps.h - what the host's QEMU binary can do. */
#ifndef KH_QEMU_CAPS_H
#define KH_QEMU_CAPS_H

#include "qemu/argv.h"
#include "util/err.h"

/* The oldest QEMU the argv builder targets (caps->version encoding). */
#define KH_QEMU_MIN_VERSION 70200

/* Find the binary (NULL: $KVMHOST_QEMU, else qemu-system-x86_64 in PATH)
 * and fill caps by running it (`-version`, and a `-sandbox` check). Returns
 * the absolute binary path (caller frees) or NULL with err set. */
char *kh_qemu_caps_probe(const char *binary, kh_qemu_caps *caps, kh_err *err);

#endif
