/* openapi.h - the OpenAPI 3.0 document of a route table (openapi.c). */
#ifndef KH_API_OPENAPI_H
#define KH_API_OPENAPI_H

#include <jansson.h>
#include <stddef.h>

#include "api/auth.h"
#include "http/router.h"

/* The OpenAPI 3.0 document for the routes; schemas (borrowed) becomes
 * components/schemas. A new reference. */
json_t *kh_http_openapi(const kh_route *routes, size_t nroutes, const json_t *schemas,
                        const char *version);

#endif
