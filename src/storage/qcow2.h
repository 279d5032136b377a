/* qcow2.h - a look into qcow2 images: the header (no qemu-img), the
 * internal snapshot table (qemu-img info). */
#ifndef KH_STORAGE_QCOW2_H
#define KH_STORAGE_QCOW2_H

#include <jansson.h>
#include <stdbool.h>

#include "util/err.h"

/* 0 when path starts with a qcow2 header, *backing telling whether it
 * names a backing file; -1 when it cannot be read or is no qcow2. */
int kh_qcow2_probe(const char *path, bool *backing);
/* The internal snapshots of the qcow2 image at path, as an object
 * {name: vm-state-size in bytes} (0 for a disk-only one), read with
 * qemu_img (absolute path) "info -U": synchronous, a few ms; also while a
 * QEMU has the image open. NULL with err set when it cannot be read. */
json_t *kh_qcow2_snapshots(const char *qemu_img, const char *path, kh_err *err);

#endif
