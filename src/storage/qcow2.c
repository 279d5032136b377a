/* qcow2.c - owns the qcow2 header check of plain disk files: magic and
 * backing-file offset, read directly (the spec check needs no qemu-img). */
#include "storage/qcow2.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

int kh_qcow2_probe(const char *path, bool *backing)
{
    unsigned char hdr[24];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread(fd, hdr, sizeof(hdr), 0) : -1;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof(hdr) || memcmp(hdr, "QFI\xfb", 4) != 0)
        return -1;
    uint64_t off = 0;
    for (int b = 8; b < 16; b++)
        off = (off << 8) | hdr[b];
    *backing = off != 0;
    return 0;
}
