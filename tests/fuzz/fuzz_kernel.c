/* fuzz_kernel.c - libFuzzer target: a kernel file a user names for direct
 * boot, through the bzImage setup-header / payload / ELF PVH-note parser
 * (kh_kernel_resolve_ex). The input is written to a file; the vmlinux
 * bound is 8 MiB so that decompression bombs end quickly.
 * Properties: the answer is the input's own path (booted as is) or a
 * cache file that exists and is an ELF; a reason is always given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu/kernel.h"
#include "util/fs.h"
#include "util/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[] = "/tmp/kh-fuzz-kernel.XXXXXX";
    static char *path, *cache;
    if (!path) {
        if (!mkdtemp(dir))
            abort();
        path = xasprintf("%s/bzImage", dir);
        cache = xasprintf("%s/cache", dir);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    char reason[256] = "";
    kh_err err = KH_ERR_INIT;
    char *out = kh_kernel_resolve_ex(path, cache, (size_t)8 << 20, reason, sizeof(reason), &err);
    if (!out)
        abort(); /* the file is readable, the cache writable */
    if (!reason[0])
        abort();
    if (strcmp(out, path) != 0) {
        FILE *e = fopen(out, "rb");
        unsigned char m[4] = { 0 };
        if (!e || fread(m, 1, 4, e) != 4 || memcmp(m, "\177ELF", 4) != 0)
            abort();
        fclose(e);
        unlink(out);
    }
    free(out);
    return 0;
}
