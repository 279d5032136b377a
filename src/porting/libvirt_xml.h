/* libvirt_xml.h - a libvirt domain XML turned into a kvmhost VM spec. */
#ifndef KH_PORTING_LIBVIRT_XML_H
#define KH_PORTING_LIBVIRT_XML_H

#include <jansson.h>
#include <stddef.h>

#include "util/err.h"

#define KH_LIBVIRT_XML_MAX (1u << 20)

/* A new VM spec (disks as host paths, NICs by network name: the caller
 * checks both), *warnings, a new array of strings naming what is not
 * imported, and *state, a new object naming the host state the domain
 * brings (each key optional): "nvram" (the UEFI variable store's path),
 * "nvram_template" (libvirt's template for it), "uuid" (libvirt's),
 * "tpm": {"version", "encrypted": libvirt encrypted its state, "dir": its
 * <source type='dir' path>, "other": a source of another type};
 * NULL with err set (KH_E_INVALID) and *warnings, *state NULL when the
 * XML is not a domain or asks for what cannot be done. */
json_t *kh_libvirt_xml_parse(const char *xml, size_t len, json_t **warnings, json_t **state,
                             kh_err *err);

#endif
