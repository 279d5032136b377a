/* jsontext.h - the JSON view of this host's VMs as text, cached per VM:
 * GET /api/v1/vms serialises each VM again only when something the view
 * shows changed (jsontext.c). */
#ifndef KH_INSTANCE_JSONTEXT_H
#define KH_INSTANCE_JSONTEXT_H

#include "instance/manager.h"
#include "util/buf.h"

/* Append every VM of mgr (name order) to b as compact JSON objects,
 * comma-separated, each with the member "host": host added (the same
 * object kh_manager_list_json gives, plus "host"). Returns how many. */
size_t kh_jsontext_list(kh_manager *mgr, const char *host, kh_buf *b);

#endif
