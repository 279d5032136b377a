/* qcow2.h - a look at a qcow2 image's header (no qemu-img). */
#ifndef KH_STORAGE_QCOW2_H
#define KH_STORAGE_QCOW2_H

#include <stdbool.h>

/* 0 when path starts with a qcow2 header, *backing telling whether it
 * names a backing file; -1 when it cannot be read or is no qcow2. */
int kh_qcow2_probe(const char *path, bool *backing);

#endif
