/* libvirt_xml.h - a libvirt domain XML turned into a kvmhost VM spec. */
#ifndef KH_PORTING_LIBVIRT_XML_H
#define KH_PORTING_LIBVIRT_XML_H

#include <jansson.h>
#include <stddef.h>

#include "util/err.h"

#define KH_LIBVIRT_XML_MAX (1u << 20)

/* A new VM spec (disks as host paths, NICs by network name: the caller
 * checks both) and *warnings, a new array of strings naming what is not
 * imported; NULL with err set (KH_E_INVALID) and *warnings NULL when the
 * XML is not a domain or asks for what cannot be done. */
json_t *kh_libvirt_xml_parse(const char *xml, size_t len, json_t **warnings, kh_err *err);

#endif
