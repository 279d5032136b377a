/* fuzz_qimg_info.c - libFuzzer target: `qemu-img info --output=json` about
 * an image the user supplied (import, upload) through kh_imginfo_check.
 * The first byte picks the format asked for.
 * Properties: an image accepted is of that format, names no backing or
 * data file, is not encrypted, and its virtual size is the JSON's and at
 * most KH_VOLUME_SIZE_MAX; a refusal always has a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "storage/storage.h"
#include "util/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *format = data[0] & 1 ? "qcow2" : "raw";
    char *text = xmalloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    uint64_t vsize = 0;
    int64_t actual = 0;
    kh_err err = KH_ERR_INIT;
    if (kh_imginfo_check(text, format, "upload: the image", &vsize, &actual, &err) == 0) {
        json_t *j = json_loads(text, 0, NULL);
        json_t *fsd = json_object_get(json_object_get(j, "format-specific"), "data");
        if (!j || strcmp(json_string_value(json_object_get(j, "format")), format) != 0 ||
            json_object_get(j, "backing-filename") || json_object_get(fsd, "data-file") ||
            json_object_get(fsd, "encrypt") || vsize > KH_VOLUME_SIZE_MAX ||
            (uint64_t)json_integer_value(json_object_get(j, "virtual-size")) != vsize)
            abort();
        json_decref(j);
    } else if (!err.msg[0]) {
        abort();
    }
    free(text);
    return 0;
}
