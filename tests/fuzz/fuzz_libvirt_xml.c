/* fuzz_libvirt_xml.c - libFuzzer target: a libvirt domain XML sent to
 * POST /vms/import-libvirt (kh_libvirt_xml_parse, porting/libvirt_xml.c).
 * Properties: a refusal has a message and no warnings; an accepted domain
 * is a VM spec object whose warnings are an array of strings, whose disks
 * and NICs (when given) are arrays of objects, each disk naming a path,
 * and whose memory and vCPU counts (when given) are positive.
 */
#include <stdint.h>
#include <stdlib.h>

#include "porting/libvirt_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *warnings = NULL, *state = NULL;
    kh_err err = KH_ERR_INIT;
    json_t *spec = kh_libvirt_xml_parse((const char *)data, size, &warnings, &state, &err);
    if (!spec) {
        if (!err.msg[0] || warnings || state)
            abort();
        return 0;
    }
    if (!json_is_object(spec) || !json_is_array(warnings) || !json_is_object(state))
        abort();
    size_t i;
    json_t *v;
    json_array_foreach(warnings, i, v)
        if (!json_is_string(v))
            abort();
    json_t *disks = json_object_get(spec, "disks"), *nics = json_object_get(spec, "nics");
    if ((disks && !json_is_array(disks)) || (nics && !json_is_array(nics)))
        abort();
    json_array_foreach(disks, i, v)
        if (!json_is_object(v) || !json_is_string(json_object_get(v, "path")))
            abort();
    json_array_foreach(nics, i, v)
        if (!json_is_object(v))
            abort();
    json_t *mem = json_object_get(spec, "memory_mib"), *cpus = json_object_get(spec, "vcpus");
    if ((mem && json_integer_value(mem) <= 0) || (cpus && json_integer_value(cpus) <= 0))
        abort();
    json_t *nv = json_object_get(state, "nvram");
    if (nv && !json_is_string(nv))
        abort();
    json_decref(spec);
    json_decref(warnings);
    json_decref(state);
    return 0;
}
