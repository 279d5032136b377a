/* imginfo.c - what an image must be before a volume takes it (import and
 * upload), judged from `qemu-img info --output=json` about a file the user
 * supplied: the format asked for, an integer virtual size within
 * KH_VOLUME_SIZE_MAX, no backing file, no external data file, not
 * encrypted (kvmhost would not have its key). Pure: the fuzz target
 * tests/fuzz/fuzz_qimg_info.c feeds it any text.
 */
#include "storage/storage.h"

#include <stdbool.h>
#include <string.h>

#include <jansson.h>

/* A VMDK of one of the single-file kinds, every extent of which is the
 * file itself: a descriptor naming other host files (monolithicFlat with
 * "/etc/shadow" as its extent) would copy them into the volume. */
static bool vmdk_self_contained(json_t *info, json_t *fsd)
{
    const char *ct = json_string_value(json_object_get(fsd, "create-type"));
    const char *self = json_string_value(json_object_get(info, "filename"));
    if (!ct || !self || (strcmp(ct, "streamOptimized") != 0 && strcmp(ct, "monolithicSparse") != 0))
        return false;
    json_t *ext = json_object_get(fsd, "extents");
    /* a window of a bigger file (an OVA: json:{"driver": "vmdk", "file":
     * {"driver": "raw", "offset", "size", "file": ...}}): the extent must be
     * exactly that window */
    json_t *top = strncmp(self, "json:", 5) == 0 ? json_loads(self + 5, 0, NULL) : NULL;
    json_t *window = json_object_get(top, "file");
    bool ok = json_array_size(ext) > 0;
    size_t i;
    json_t *e;
    json_array_foreach(ext, i, e) {
        const char *f = json_string_value(json_object_get(e, "filename"));
        if (f && strcmp(f, self) == 0)
            continue;
        json_t *mine = f && window && strncmp(f, "json:", 5) == 0 ? json_loads(f + 5, 0, NULL)
                                                                   : NULL;
        if (!mine || !json_equal(mine, window))
            ok = false;
        json_decref(mine);
    }
    json_decref(top);
    return ok;
}

int kh_imginfo_check(const char *info_text, const char *format, const char *what,
                     uint64_t *vsize_out, int64_t *actual_out, kh_err *err)
{
    json_t *info = info_text ? json_loads(info_text, 0, NULL) : NULL;
    const char *fmt = json_string_value(json_object_get(info, "format"));
    json_t *vsize = json_object_get(info, "virtual-size");
    json_t *fsd = json_object_get(json_object_get(info, "format-specific"), "data");
    json_t *actual = json_object_get(info, "actual-size");
    int rc = -1;
    if (!fmt || !format || strcmp(fmt, format) != 0 || !json_is_integer(vsize) ||
        json_integer_value(vsize) < 0)
        kh_err_set(err, KH_E_INVALID, "%s is not a %s image", what, format ? format : "?");
    else if (json_object_get(info, "backing-filename") ||
             json_object_get(info, "full-backing-filename"))
        kh_err_set(err, KH_E_INVALID, "%s has a backing file; images that name other files "
                                      "are refused", what);
    else if (json_object_get(fsd, "data-file") ||
             json_is_true(json_object_get(fsd, "data-file-raw")))
        kh_err_set(err, KH_E_INVALID, "%s has an external data file; images that name other "
                                      "files are refused", what);
    else if (strcmp(format, "vmdk") == 0 && !vmdk_self_contained(info, fsd))
        kh_err_set(err, KH_E_INVALID, "%s is a VMDK whose data is not inside the file "
                                      "(only monolithicSparse and streamOptimized are taken)",
                   what);
    else if (json_object_get(fsd, "encrypt"))
        kh_err_set(err, KH_E_INVALID, "%s is encrypted: not accepted (kvmhost would not have "
                                      "its key)", what);
    else if ((uint64_t)json_integer_value(vsize) > KH_VOLUME_SIZE_MAX)
        kh_err_set(err, KH_E_TOOLARGE, "%s claims %" JSON_INTEGER_FORMAT " bytes, over the "
                                       "maximum volume size", what, json_integer_value(vsize));
    else
        rc = 0;
    if (rc == 0) {
        *vsize_out = (uint64_t)json_integer_value(vsize);
        *actual_out = json_is_integer(actual) ? (int64_t)json_integer_value(actual) : -1;
    }
    json_decref(info);
    return rc;
}
