/* host_routes.c - GET /api/v1/host and the OpenAPI document (built on
 * first request, then kept as text). */
#include <malloc.h>
#include <string.h>
#include <sys/sysinfo.h>

#include "api/api.h"
#include "host/proc.h"
#include "kh_config.h"
#include "util/misc.h"

void kh_host_routes_get(kh_http_req *req, void *app)
{
    kh_api *api = app;
    json_t *j = json_deep_copy(api->host);
    unsigned total, running;
    kh_manager_counts(api->mgr, &total, &running);
    json_object_set_new(j, "vms", json_pack("{s:i, s:i}", "total", total, "running", running));
    struct sysinfo si;
    if (sysinfo(&si) == 0) {
        json_object_set_new(j, "memory_mib",
                            json_integer((json_int_t)((unsigned long long)si.totalram *
                                                      si.mem_unit / (1024 * 1024))));
        json_object_set_new(j, "memory_free_mib",
                            json_integer((json_int_t)((unsigned long long)si.freeram *
                                                      si.mem_unit / (1024 * 1024))));
        double ram, avail;
        kh_proc_meminfo(&ram, &avail);
        json_object_set_new(j, "memory_available_mib",
                            json_integer((json_int_t)(avail / (1024 * 1024))));
        json_object_set_new(j, "load_average",
                            json_pack("[f, f, f]", si.loads[0] / 65536.0, si.loads[1] / 65536.0,
                                      si.loads[2] / 65536.0));
    }
    json_object_set_new(j, "uptime_seconds", json_real(kh_wall_time() - api->started_at));
    kh_http_reply_json(req, 200, j);
}

void kh_host_routes_openapi(kh_http_req *req, void *app)
{
    kh_api *api = app;
    if (!api->openapi) {
        /* The schemas' trees are ten times the text: parsed for this, then
         * freed and the heap trimmed, so the idle daemon carries neither. */
        size_t nroutes;
        const kh_route *routes = kh_routes_table(&nroutes);
        json_t *schemas = kh_routes_schemas();
        json_t *doc = kh_http_openapi(routes, nroutes, schemas, KH_VERSION);
        api->openapi = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        json_decref(schemas);
        malloc_trim(0);
    }
    kh_http_reply_data(req, 200, "application/json", api->openapi, strlen(api->openapi));
}
