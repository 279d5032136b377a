/* check.c - the embedded schemas (kh_schema_get, kh_schema_all) and the one
 * structural checker of request bodies (kh_schema_check). See schema.h for
 * what is checked and how keys from the request are quoted in messages. */
#include "schema/schema.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 256
#define KEY_SHOWN 32 /* bytes of an odd key quoted before "..." */

/* {name: schema}, each parsed on first use: an idle daemon holds none of
 * them (all of them parsed are about 1 MiB of heap). Entries are never
 * removed, so a schema handed out stays valid. */
static json_t *parsed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* Under lock: the schema of file i, parsed now if not yet. */
static json_t *load_locked(size_t i)
{
    if (!parsed)
        parsed = json_object();
    json_t *j = json_object_get(parsed, kh_schema_files[i].name);
    if (j)
        return j;
    json_error_t jerr;
    j = json_loadb(kh_schema_files[i].text, kh_schema_files[i].len, 0, &jerr);
    if (!j) { /* embed.py parsed it already: this cannot happen */
        fprintf(stderr, "kvmhost: schema %s: %s\n", kh_schema_files[i].name, jerr.text);
        abort();
    }
    json_object_set_new(parsed, kh_schema_files[i].name, j);
    return j;
}

const json_t *kh_schema_get(const char *name)
{
    if (!name)
        return NULL;
    json_t *j = NULL;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < kh_schema_nfiles && !j; i++)
        if (strcmp(kh_schema_files[i].name, name) == 0)
            j = load_locked(i);
    pthread_mutex_unlock(&lock);
    return j;
}

json_t *kh_schema_all(void)
{
    /* A fresh parse, not the cache: the caller (the OpenAPI document)
     * wants them once and frees them. */
    json_t *all = json_object();
    for (size_t i = 0; i < kh_schema_nfiles; i++)
        json_object_set_new(all, kh_schema_files[i].name,
                            json_loadb(kh_schema_files[i].text, kh_schema_files[i].len, 0, NULL));
    return all;
}

static bool key_bare(const char *key, size_t len)
{
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++)
        if (key[i] <= 0x20 || key[i] >= 0x7f || key[i] == '"' || key[i] == '\\')
            return false;
    return true;
}

void kh_schema_quote_key(char *buf, size_t size, const char *key, size_t len)
{
    if (size == 0)
        return;
    if (key_bare(key, len)) {
        snprintf(buf, size, "%.*s", (int)len, key);
        return;
    }
    size_t o = 0;
    /* room for the closing quote, "..." and the NUL */
#define PUT(...) (o += (size_t)snprintf(buf + o, o < size ? size - o : 0, __VA_ARGS__))
    PUT("\"");
    size_t i = 0;
    for (; i < len && i < KEY_SHOWN && o + 12 < size; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c == '"' || c == '\\')
            PUT("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            PUT("\\u%04x", c);
        else if (c >= 0x80)
            PUT("\\x%02x", c);
        else
            PUT("%c", c);
    }
    PUT(i < len ? "\"..." : "\"");
#undef PUT
    if (o >= size)
        buf[size - 1] = '\0';
}

/* path + "." + key, or path + "[i]", into out. */
static void path_key(char *out, const char *path, const char *key, size_t len)
{
    char q[KEY_SHOWN * 6 + 8];
    kh_schema_quote_key(q, sizeof(q), key, len);
    snprintf(out, PATH_MAX_LEN, "%s%s%s", path, *path ? "." : "", q);
}

static const json_t *resolve(const json_t *s)
{
    for (int depth = 0; depth < 8; depth++) {
        const char *ref = json_string_value(json_object_get(s, "$ref"));
        static const char prefix[] = "#/components/schemas/";
        if (!ref || strncmp(ref, prefix, sizeof(prefix) - 1) != 0)
            return s;
        const json_t *t = kh_schema_get(ref + sizeof(prefix) - 1);
        if (!t)
            return s;
        s = t;
    }
    return s;
}

static bool has_type(const json_t *v, const char *t)
{
    if (strcmp(t, "object") == 0)
        return json_is_object(v);
    if (strcmp(t, "array") == 0)
        return json_is_array(v);
    if (strcmp(t, "string") == 0)
        return json_is_string(v);
    if (strcmp(t, "integer") == 0)
        return json_is_integer(v);
    if (strcmp(t, "number") == 0)
        return json_is_number(v);
    if (strcmp(t, "boolean") == 0)
        return json_is_boolean(v);
    if (strcmp(t, "null") == 0)
        return json_is_null(v);
    return true; /* an unknown type name constrains nothing */
}

/* What an array's items are called in messages: its "x-noun" ("disks",
 * "host CPU numbers"), else "objects" when they are objects, else NULL. */
static const char *noun(const json_t *s)
{
    const char *n = json_string_value(json_object_get(s, "x-noun"));
    if (n)
        return n;
    const char *it = json_string_value(json_object_get(resolve(json_object_get(s, "items")), "type"));
    return it && strcmp(it, "object") == 0 ? "objects" : NULL;
}

/* "must be an integer between 1 and 255", "must be an array of at most 16
 * objects", ...: what a value of schema s (of type t) must be. */
static void describe(char *out, size_t size, const json_t *s, const char *t, bool root)
{
    const json_t *min = json_object_get(s, "minimum"), *max = json_object_get(s, "maximum");
    long long maxn = json_integer_value(json_object_get(s, "maxItems"));
    long long maxl = json_integer_value(json_object_get(s, "maxLength"));
    if (strcmp(t, "object") == 0)
        snprintf(out, size, root ? "a JSON object" : "an object");
    else if (strcmp(t, "integer") == 0 && min && max)
        snprintf(out, size, "an integer between %.0f and %.0f", json_number_value(min),
                 json_number_value(max));
    else if (strcmp(t, "integer") == 0 && min)
        snprintf(out, size, "an integer of at least %.0f", json_number_value(min));
    else if (strcmp(t, "integer") == 0 && max)
        snprintf(out, size, "an integer of at most %.0f", json_number_value(max));
    else if (strcmp(t, "integer") == 0)
        snprintf(out, size, "an integer");
    else if (strcmp(t, "number") == 0 && min && max)
        snprintf(out, size, "a number from %g to %g", json_number_value(min),
                 json_number_value(max));
    else if (strcmp(t, "number") == 0)
        snprintf(out, size, "a number");
    else if (strcmp(t, "boolean") == 0)
        snprintf(out, size, "true or false");
    else if (strcmp(t, "string") == 0 && maxl > 0)
        snprintf(out, size, "a string of at most %lld characters", maxl);
    else if (strcmp(t, "string") == 0)
        snprintf(out, size, "a string");
    else if (strcmp(t, "array") == 0) {
        /* "an array", "an array of at most 16 disks", "a non-empty array of
         * host CPU numbers" */
        const char *n = noun(s);
        long long minn = json_integer_value(json_object_get(s, "minItems"));
        char most[32] = "";
        if (maxn > 0)
            snprintf(most, sizeof(most), "at most %lld ", maxn);
        if (maxn > 0 || n)
            snprintf(out, size, "%s array of %s%s", minn > 0 ? "a non-empty" : "an", most,
                     n ? n : "items");
        else
            snprintf(out, size, "%s array", minn > 0 ? "a non-empty" : "an");
    }
    else if (strcmp(t, "null") == 0)
        snprintf(out, size, "null");
    else
        snprintf(out, size, "%s", t);
}

static int fail(kh_err *err, const char *path, const char *fmt_what)
{
    if (*path)
        kh_err_set(err, KH_E_INVALID, "%s: must be %s", path, fmt_what);
    else
        kh_err_set(err, KH_E_INVALID, "must be %s", fmt_what);
    return -1;
}

static int check_type(const json_t *s, const json_t *v, const char *path, kh_err *err)
{
    const json_t *type = json_object_get(s, "type");
    if (!type || (json_is_null(v) && json_is_true(json_object_get(s, "nullable"))))
        return 0;
    if (json_is_string(type)) {
        if (has_type(v, json_string_value(type)))
            return 0;
        char what[160];
        describe(what, sizeof(what), s, json_string_value(type), !*path);
        return fail(err, path, what);
    }
    size_t i;
    const json_t *t;
    char what[400] = "";
    json_array_foreach(type, i, t) {
        if (has_type(v, json_string_value(t)))
            return 0;
        char one[160];
        describe(one, sizeof(one), s, json_string_value(t), !*path);
        size_t len = strlen(what);
        snprintf(what + len, sizeof(what) - len, "%s%s", i ? " or " : "", one);
    }
    return fail(err, path, what);
}

static int check_enum(const json_t *s, const json_t *v, const char *path, kh_err *err)
{
    const json_t *e = json_object_get(s, "enum");
    if (!json_is_array(e))
        return 0;
    size_t i, n = json_array_size(e);
    const json_t *x;
    json_array_foreach(e, i, x) {
        if (json_equal((json_t *)(uintptr_t)x, (json_t *)(uintptr_t)v))
            return 0;
    }
    /* "must be "a" or "b"", "must be "a", "b" or "c"" */
    char list[300] = "";
    json_array_foreach(e, i, x) {
        size_t len = strlen(list);
        char *one = json_dumps(x, JSON_ENCODE_ANY);
        snprintf(list + len, sizeof(list) - len, "%s%s", i == 0 ? "" : (i + 1 == n ? " or " : ", "),
                 one ? one : "?");
        free(one);
    }
    return fail(err, path, list);
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

static int check_value(const json_t *s, const json_t *v, const char *path, int depth,
                       kh_err *err);

static int check_object(const json_t *s, const json_t *v, const char *path, int depth,
                        kh_err *err)
{
    const json_t *props = json_object_get(s, "properties");
    bool closed = json_is_false(json_object_get(s, "additionalProperties"));
    const char *key;
    size_t len;
    json_t *val;
    char sub[PATH_MAX_LEN];
    json_object_keylen_foreach((json_t *)(uintptr_t)v, key, len, val) {
        /* a key with a NUL byte in it matches no property */
        const json_t *p = strlen(key) == len ? json_object_get(props, key) : NULL;
        path_key(sub, path, key, len);
        if (!p || json_is_true(json_object_get(p, "readOnly"))) {
            if (closed) {
                kh_err_set(err, KH_E_INVALID, "%s: unknown field", sub);
                return -1;
            }
            continue;
        }
        if (check_value(p, val, sub, depth + 1, err) < 0)
            return -1;
    }
    return 0;
}

static int check_value(const json_t *s, const json_t *v, const char *path, int depth,
                       kh_err *err)
{
    if (json_is_null(v) && json_is_true(json_object_get(s, "nullable")))
        return 0; /* before resolve: nullable may sit beside a $ref */
    s = resolve(s);
    if (!json_is_object(s) || depth > 32)
        return 0;
    const json_t *all = json_object_get(s, "allOf");
    size_t i;
    const json_t *x;
    json_array_foreach(all, i, x) {
        if (check_value(x, v, path, depth + 1, err) < 0)
            return -1;
    }
    if (check_type(s, v, path, err) < 0 || check_enum(s, v, path, err) < 0)
        return -1;
    if (json_is_number(v)) {
        const json_t *min = json_object_get(s, "minimum"), *max = json_object_get(s, "maximum");
        double d = json_number_value(v);
        if ((min && d < json_number_value(min)) || (max && d > json_number_value(max))) {
            const char *t = json_string_value(json_object_get(s, "type"));
            char what[160];
            describe(what, sizeof(what), s, t && strcmp(t, "number") == 0 ? "number" : "integer",
                     false);
            return fail(err, path, what);
        }
        /* doubles lose precision past 2^53: compare integers exactly */
        if (json_is_integer(v) && json_is_integer(max) &&
            json_integer_value(v) > json_integer_value(max)) {
            char what[160];
            describe(what, sizeof(what), s, "integer", false);
            return fail(err, path, what);
        }
    } else if (json_is_string(v)) {
        size_t n = utf8_chars(json_string_value(v), json_string_length(v));
        const json_t *maxl = json_object_get(s, "maxLength"), *minl = json_object_get(s, "minLength");
        if (json_is_integer(maxl) && n > (size_t)json_integer_value(maxl)) {
            kh_err_set(err, KH_E_INVALID, "%s%sat most %lld characters", path, *path ? ": " : "",
                       (long long)json_integer_value(maxl));
            return -1;
        }
        if (json_is_integer(minl) && n < (size_t)json_integer_value(minl)) {
            kh_err_set(err, KH_E_INVALID, "%s%sat least %lld characters", path, *path ? ": " : "",
                       (long long)json_integer_value(minl));
            return -1;
        }
    } else if (json_is_array(v)) {
        const json_t *maxn = json_object_get(s, "maxItems"), *minn = json_object_get(s, "minItems");
        if (json_is_integer(maxn) && json_array_size(v) > (size_t)json_integer_value(maxn)) {
            kh_err_set(err, KH_E_INVALID, "%s%sat most %lld %s (got %zu)", path, *path ? ": " : "",
                       (long long)json_integer_value(maxn), noun(s) ? noun(s) : "items",
                       json_array_size(v));
            return -1;
        }
        if (json_is_integer(minn) && json_array_size(v) < (size_t)json_integer_value(minn)) {
            char what[160];
            describe(what, sizeof(what), s, "array", false);
            return fail(err, path, what);
        }
        const json_t *items = json_object_get(s, "items");
        char sub[PATH_MAX_LEN];
        json_array_foreach(v, i, x) {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (items && check_value(items, x, sub, depth + 1, err) < 0)
                return -1;
        }
    } else if (json_is_object(v)) {
        return check_object(s, v, path, depth, err);
    }
    return 0;
}

int kh_schema_check(const char *name, const json_t *v, const char *path, kh_err *err)
{
    const json_t *s = kh_schema_get(name);
    if (!s) {
        kh_err_set(err, KH_E_INTERNAL, "no schema called %s", name ? name : "(null)");
        return -1;
    }
    return check_value(s, v, path ? path : "", 0, err);
}
