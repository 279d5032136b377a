/* test_openapi.c - the OpenAPI document made from a route table
 * (kh_http_openapi): paths, parameters, bodies, replies, schemas. Pure: no
 * server runs (the routes are http_harness.h's).
 */
#include "http_harness.h"

/* ---- OpenAPI ---- */

/* j["a"]["b"]... for "a|b|..." */
static json_t *jget(json_t *j, const char *keys)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", keys);
    char *save = NULL;
    for (char *k = strtok_r(buf, "|", &save); k && j; k = strtok_r(NULL, "|", &save))
        j = json_object_get(j, k);
    return j;
}

static void test_openapi(void)
{
    json_t *schemas = json_pack("{s:{s:s},s:{s:s},s:{s:s}}", "Hello", "type", "object", "Item",
                                "type", "object", "ItemSpec", "type", "object");
    json_t *doc = kh_http_openapi(routes, nroutes, schemas, "1.2.3");
    CHECK(doc != NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "openapi")), "3.0.3");
    CHECK_STR(json_string_value(json_object_get(json_object_get(doc, "info"), "title")), "kvmhost");
    CHECK_STR(json_string_value(json_object_get(json_object_get(doc, "info"), "version")), "1.2.3");
    json_t *paths = json_object_get(doc, "paths");
    CHECK(json_object_size(paths) == 10);
    json_t *item = json_object_get(paths, "/api/v1/items/{name}");
    json_t *get = json_object_get(item, "get");
    CHECK(get && json_object_get(item, "delete"));
    json_t *p0 = json_array_get(json_object_get(get, "parameters"), 0);
    CHECK_STR(json_string_value(json_object_get(p0, "name")), "name");
    CHECK_STR(json_string_value(json_object_get(p0, "in")), "path");
    CHECK(json_is_true(json_object_get(p0, "required")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(p0, "schema"), "type")), "string");
    CHECK_STR(json_string_value(json_object_get(get, "summary")), "one item");
    json_t *gresp = json_object_get(get, "responses");
    CHECK(json_object_get(gresp, "404") && json_object_get(gresp, "401"));
    CHECK_STR(json_string_value(jget(gresp, "200|content|application/json|schema|$ref")),
              "#/components/schemas/Item");
    json_t *post = json_object_get(json_object_get(paths, "/api/v1/items"), "post");
    CHECK_STR(json_string_value(jget(post, "requestBody|content|application/json|schema|$ref")),
              "#/components/schemas/ItemSpec");
    CHECK(json_object_get(json_object_get(post, "responses"), "413") != NULL);
    CHECK(json_object_get(json_object_get(post, "responses"), "415") != NULL);
    /* Security: global bearer, public routes opt out. */
    json_t *sec = json_array_get(json_object_get(doc, "security"), 0);
    CHECK(json_object_get(sec, "bearer") != NULL);
    json_t *pub = json_object_get(json_object_get(paths, "/api/v1/public"), "get");
    CHECK(json_is_array(json_object_get(pub, "security")) &&
          json_array_size(json_object_get(pub, "security")) == 0);
    CHECK(json_object_get(get, "security") == NULL);
    CHECK(json_object_get(json_object_get(pub, "responses"), "401") == NULL);
    json_t *comp = json_object_get(doc, "components");
    CHECK(json_object_get(json_object_get(comp, "schemas"), "Error") != NULL);
    CHECK(json_object_get(json_object_get(comp, "schemas"), "ItemSpec") != NULL);
    CHECK_STR(json_string_value(jget(comp, "securitySchemes|bearer|scheme")), "bearer");
    json_t *ws = json_object_get(json_object_get(paths, "/api/v1/ws"), "get");
    CHECK(json_object_get(json_object_get(ws, "responses"), "101") != NULL);
    CHECK(json_object_get(ws, "description") != NULL);
    json_t *ev = json_object_get(json_object_get(paths, "/api/v1/events"), "get");
    CHECK(jget(ev, "responses|200|content|text/event-stream") != NULL);
    /* Every $ref resolves. */
    char *s1 = json_dumps(doc, JSON_COMPACT);
    for (const char *p = s1; (p = strstr(p, "\"$ref\":\"#/components/")) != NULL; p++) {
        const char *q = p + strlen("\"$ref\":\"#/components/");
        char kind[64], name[64];
        CHECK(sscanf(q, "%63[^/]/%63[^\"]", kind, name) == 2);
        CHECK(json_object_get(json_object_get(comp, kind), name) != NULL);
    }
    /* Deterministic. */
    json_t *doc2 = kh_http_openapi(routes, nroutes, schemas, "1.2.3");
    char *s2 = json_dumps(doc2, JSON_COMPACT);
    CHECK(strcmp(s1, s2) == 0);
    free(s1);
    free(s2);
    json_decref(doc2);
    json_decref(doc);
    json_decref(schemas);
}

int main(void)
{
    test_openapi();
    printf("ok test_openapi\n");
    TEST_DONE();
}
