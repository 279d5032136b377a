/* openapi.c - the OpenAPI 3.0.3 document, generated from the route table.
 *
 * The table the router serves is the only source, so the document cannot
 * disagree with the server. Output depends only on the arguments (jansson
 * keeps insertion order; the table order is kept), so it is deterministic.
 */
#include "api/openapi.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "util/err.h"
#include "util/mem.h"

static json_t *schema_ref(const char *name)
{
    char *ref = xasprintf("#/components/schemas/%s", name);
    json_t *j = json_pack("{s:s}", "$ref", ref);
    free(ref);
    return j;
}

static json_t *json_content(json_t *schema /* stolen */)
{
    return json_pack("{s:{s:o}}", "application/json", "schema", schema);
}

static json_t *error_response_obj(const char *description)
{
    return json_pack("{s:s,s:o}", "description", description, "content",
                     json_content(schema_ref("Error")));
}

/* The standard error responses, referred to by the operations. */
static const struct {
    const char *status, *name, *description;
} std_errors[] = {
    { "400", "BadRequest", "invalid input: malformed JSON, wrong type, bad value or name" },
    { "401", "Unauthorized", "missing or wrong bearer token (TCP listener)" },
    { "404", "NotFound", "no such object or route" },
    { "409", "Conflict", "the object's state forbids it now" },
    { "413", "TooLarge", "request body over the limit" },
    { "415", "UnsupportedMediaType", "the request body is not application/json" },
};

static void add_std_error(json_t *responses, size_t i)
{
    char *ref = xasprintf("#/components/responses/%s", std_errors[i].name);
    json_object_set_new(responses, std_errors[i].status, json_pack("{s:s}", "$ref", ref));
    free(ref);
}

static char *operation_id(const char *method, const char *path)
{
    size_t n = strlen(method) + strlen(path) + 2;
    char *id = xmalloc(n), *o = id;
    for (const char *p = method; *p; p++)
        *o++ = (char)tolower((unsigned char)*p);
    for (const char *p = path; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (isalnum(c)) {
            *o++ = (char)c;
        } else if (c == '/' || c == '-' || c == '.' || c == '_') {
            if (o[-1] != '_')
                *o++ = '_';
        }
    }
    while (o > id && o[-1] == '_')
        o--;
    *o = '\0';
    return id;
}

/* Path parameters of a pattern, as OpenAPI parameter objects; the count. */
static size_t path_params(const char *path, json_t *out)
{
    size_t n = 0;
    for (const char *p = path; (p = strchr(p, '{')) != NULL;) {
        const char *e = strchr(p, '}');
        if (!e)
            break;
        char *name = xstrndup(p + 1, (size_t)(e - p - 1));
        json_array_append_new(out, json_pack("{s:s,s:s,s:b,s:{s:s}}", "name", name, "in", "path",
                                             "required", 1, "schema", "type", "string"));
        free(name);
        n++;
        p = e + 1;
    }
    return n;
}

/* "vms" for "/api/v1/vms/{name}/start": the first segment after the version. */
static json_t *route_tags(const char *path)
{
    const char *p = path;
    if (strncmp(p, "/api/", 5) == 0) {
        p += 5;
        const char *s = strchr(p, '/');
        p = s ? s + 1 : p + strlen(p);
    } else if (*p == '/') {
        p++;
    }
    size_t len = strcspn(p, "/");
    if (len == 0 || *p == '{')
        return NULL;
    char *tag = xstrndup(p, len);
    json_t *j = json_pack("[s]", tag);
    free(tag);
    return j;
}

static bool method_has_body(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

static json_t *operation(const kh_route *r)
{
    json_t *op = json_object();
    if (r->summary)
        json_object_set_new(op, "summary", json_string(r->summary));
    char *id = operation_id(r->method, r->path);
    json_object_set_new(op, "operationId", json_string(id));
    free(id);
    json_t *tags = route_tags(r->path);
    if (tags)
        json_object_set_new(op, "tags", tags);
    json_t *params = json_array();
    size_t nparams = path_params(r->path, params);
    if (nparams)
        json_object_set_new(op, "parameters", params);
    else
        json_decref(params);

    json_t *responses = json_object();
    bool body = false;
    if (r->flags & KH_ROUTE_WEBSOCKET) {
        json_object_set_new(op, "description",
                            json_string("WebSocket (RFC 6455): send a GET with the upgrade "
                                        "headers; messages flow both ways after the 101."));
        json_object_set_new(responses, "101",
                            json_pack("{s:s}", "description", "Switching Protocols to WebSocket"));
    } else if (r->flags & KH_ROUTE_SSE) {
        json_object_set_new(op, "description",
                            json_string("Server-sent events (text/event-stream); each event "
                                        "carries an id, a type and JSON data."));
        json_object_set_new(responses, "200",
                            json_pack("{s:s,s:{s:{s:{s:s}}}}", "description", "an event stream",
                                      "content", "text/event-stream", "schema", "type", "string"));
    } else {
        if (r->flags & KH_ROUTE_RAW) {
            if (method_has_body(r->method)) {
                json_object_set_new(op, "requestBody",
                                    json_pack("{s:{s:{s:{s:s,s:s}}}}", "content",
                                              "application/octet-stream", "schema", "type",
                                              "string", "format", "binary"));
                body = true;
            }
        } else if (r->request_schema) {
            json_object_set_new(op, "requestBody",
                                json_pack("{s:b,s:o}", "required", 1, "content",
                                          json_content(schema_ref(r->request_schema))));
            body = true;
        } else if (method_has_body(r->method)) {
            json_object_set_new(op, "requestBody",
                                json_pack("{s:b,s:o}", "required", 0, "content",
                                          json_content(json_pack("{s:s}", "type", "object"))));
            body = true;
        }
        const char *ok = strcmp(r->method, "DELETE") == 0 && !r->response_schema ? "204"
                         : (r->flags & KH_ROUTE_STREAM) ? "201" /* a streamed upload creates */
                                                        : "200";
        json_t *resp = json_pack("{s:s}", "description", "success");
        if (r->response_schema)
            json_object_set_new(resp, "content", json_content(schema_ref(r->response_schema)));
        json_object_set_new(responses, ok, resp);
    }
    if (body || nparams)
        add_std_error(responses, 0);
    if (!(r->flags & KH_ROUTE_PUBLIC))
        add_std_error(responses, 1);
    if (nparams)
        add_std_error(responses, 2);
    if (strcmp(r->method, "GET") != 0)
        add_std_error(responses, 3);
    if (body) {
        add_std_error(responses, 4);
        if (!(r->flags & KH_ROUTE_RAW))
            add_std_error(responses, 5);
    }
    json_object_set_new(responses, "default", error_response_obj("an error"));
    json_object_set_new(op, "responses", responses);
    if (r->flags & KH_ROUTE_PUBLIC)
        json_object_set_new(op, "security", json_array());
    /* the route's access column: the privilege and the ACL path it is
     * checked on ({project}: ?project= or the caller's default project) */
    if (r->priv && r->acl_path)
        json_object_set_new(op, "x-kvmhost-privilege",
                            json_pack("{s:s,s:s}", "privilege", r->priv, "path", r->acl_path));
    return op;
}

json_t *kh_http_openapi(const kh_route *routes, size_t nroutes, const json_t *schemas,
                        const char *version)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "openapi", json_string("3.0.3"));
    json_object_set_new(
        doc, "info",
        json_pack("{s:s,s:s,s:s}", "title", "kvmhost", "version", version ? version : "0",
                  "description",
                  "REST API of kvmhostd. Over the unix socket no credentials are needed (its "
                  "file mode is the access control); over TCP every operation that is not "
                  "marked public needs a bearer token."));

    json_t *paths = json_object();
    for (size_t i = 0; i < nroutes; i++) {
        const kh_route *r = &routes[i];
        if (!r->method || !r->path)
            continue;
        json_t *item = json_object_get(paths, r->path);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, r->path, item);
        }
        char method[16];
        size_t k = 0;
        for (; r->method[k] && k + 1 < sizeof(method); k++)
            method[k] = (char)tolower((unsigned char)r->method[k]);
        method[k] = '\0';
        json_object_set_new(item, method, operation(r));
    }
    json_object_set_new(doc, "paths", paths);

    json_t *comp = json_object();
    json_t *sch = json_is_object(schemas) ? json_deep_copy(schemas) : json_object();
    if (!json_object_get(sch, "Error"))
        json_object_set_new(
            sch, "Error",
            json_pack("{s:s,s:[s],s:{s:{s:s,s:[s,s],s:{s:{s:s},s:{s:s}}}}}", "type", "object",
                      "required", "error", "properties", "error", "type", "object", "required",
                      "code", "message", "properties", "code", "type", "string", "message",
                      "type", "string"));
    json_object_set_new(comp, "schemas", sch);
    json_t *resps = json_object();
    for (size_t i = 0; i < KH_ARRAY_LEN(std_errors); i++)
        json_object_set_new(resps, std_errors[i].name,
                            error_response_obj(std_errors[i].description));
    json_object_set_new(comp, "responses", resps);
    json_object_set_new(comp, "securitySchemes",
                        json_pack("{s:{s:s,s:s}}", "bearer", "type", "http", "scheme", "bearer"));
    json_object_set_new(doc, "components", comp);
    json_object_set_new(doc, "security", json_pack("[{s:[]}]", "bearer"));
    return doc;
}
