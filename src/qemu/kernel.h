/* kernel.h - faster direct kernel boot.
 *
 * QEMU boots an uncompressed ELF vmlinux through its PVH entry point with
 * no real-mode setup and no in-guest decompression (under TCG that is most
 * of a boot). Given a bzImage, kh_kernel_resolve() finds its payload
 * (setup header payload_offset/length), decompresses it (gzip, xz, lzma,
 * zstd), checks the ELF has a PVH note (XEN_ELFNOTE_PHYS32_ENTRY) and
 * caches it as cache_dir/<sha256 of the bzImage>.vmlinux (mode 0644), once.
 */
#ifndef KH_QEMU_KERNEL_H
#define KH_QEMU_KERNEL_H

#include <stddef.h>

#include "util/err.h"

/* Returns a new string: the cached vmlinux path when the kernel has a PVH
 * entry, else a copy of path (the bzImage is booted as is). NULL with err
 * set only when path cannot be read or the cache cannot be written. May
 * take a second on first use: call it off the event loop. */
char *kh_kernel_resolve(const char *path, const char *cache_dir, kh_err *err);

/* The largest vmlinux a payload may decompress to; past it the bzImage is
 * booted as is. */
#define KH_KERNEL_MAX_VMLINUX ((size_t)512 << 20)

/* kh_kernel_resolve with the decompressed size bounded by max_size (0:
 * KH_KERNEL_MAX_VMLINUX) and, when reason is not NULL, a sentence in reason
 * saying which PVH image is used or why the kernel is booted as is (e.g.
 * "payload is lz4-compressed; no decompressor here"). kh_kernel_resolve
 * logs that sentence instead. */
char *kh_kernel_resolve_ex(const char *path, const char *cache_dir, size_t max_size,
                           char *reason, size_t reason_size, kh_err *err);

#endif
