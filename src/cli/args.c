/* args.c - owns the parsing of CLI argument values (--disk specs, paths,
 * integers, sizes): pure, no I/O (cli/args.h). */
#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/mem.h"
#include "util/strv.h"

void cli_disk_clear(cli_disk *d)
{
    if (!d)
        return;
    KH_FREE(d->path);
    KH_FREE(d->format);
    KH_FREE(d->volume);
    d->readonly = false;
}

/* Split spec at single commas; ",," is a literal comma. Returns the items
 * (owned by the vector, empty items kept so that the caller can reject them). */
static kh_strv *split_items(const char *spec)
{
    kh_strv *items = kh_strv_new();
    size_t cap = strlen(spec) + 1, n = 0;
    char *cur = xmalloc(cap);
    for (const char *p = spec;; p++) {
        if (*p == ',' && p[1] == ',') {
            cur[n++] = ',';
            p++;
        } else if (*p == ',' || *p == '\0') {
            cur[n] = '\0';
            kh_strv_add(items, cur);
            n = 0;
            if (*p == '\0')
                break;
        } else {
            cur[n++] = *p;
        }
    }
    free(cur);
    return items;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "1" };
    static const char *const no[] = { "off", "no", "false", "0" };
    for (size_t i = 0; i < KH_ARRAY_LEN(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int cli_disk_parse(const char *spec, const char *cwd, cli_disk *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!spec || !*spec) {
        kh_err_set(err, KH_E_INVALID, "--disk needs a value: PATH,format=raw|qcow2[,readonly]");
        return -1;
    }
    kh_strv *items = split_items(spec);
    const char *path = NULL, *format = NULL, *volume = NULL;
    bool have_ro = false;
    int rc = -1;
    for (size_t i = 0; i < items->n; i++) {
        const char *it = items->v[i];
        if (!*it) {
            kh_err_set(err, KH_E_INVALID,
                       "--disk '%s': empty option (a ',' in a path is written ',,')", spec);
            goto out;
        }
        if (starts_with(it, "volume=")) {
            if (volume) {
                kh_err_set(err, KH_E_INVALID, "--disk '%s': volume= is given twice", spec);
                goto out;
            }
            volume = it + 7;
        } else if (starts_with(it, "path=")) {
            if (path) {
                kh_err_set(err, KH_E_INVALID, "--disk '%s': the path is given twice", spec);
                goto out;
            }
            path = it + 5;
        } else if (starts_with(it, "format=")) {
            if (format) {
                kh_err_set(err, KH_E_INVALID, "--disk '%s': format= is given twice", spec);
                goto out;
            }
            format = it + 7;
            if (strcmp(format, "raw") != 0 && strcmp(format, "qcow2") != 0) {
                kh_err_set(err, KH_E_INVALID,
                           "--disk '%s': unknown format '%s' (use format=raw or format=qcow2)",
                           spec, format);
                goto out;
            }
        } else if (strcmp(it, "readonly") == 0 || starts_with(it, "readonly=")) {
            if (have_ro) {
                kh_err_set(err, KH_E_INVALID, "--disk '%s': readonly is given twice", spec);
                goto out;
            }
            have_ro = true;
            out->readonly = true;
            if (it[8] == '=' && parse_bool(it + 9, &out->readonly) < 0) {
                kh_err_set(err, KH_E_INVALID,
                           "--disk '%s': readonly takes on or off, not '%s'", spec, it + 9);
                goto out;
            }
        } else if (i == 0) {
            path = it;
        } else {
            kh_err_set(err, KH_E_INVALID,
                       "--disk '%s': unknown option '%s' (expected format=, readonly or "
                       "path=; a ',' in a path is written ',,')",
                       spec, it);
            goto out;
        }
    }
    if (volume) {
        if (path || format || !*volume) {
            kh_err_set(err, KH_E_INVALID,
                       "--disk '%s': give volume=POOL/NAME alone, or a path with format=", spec);
            goto out;
        }
        out->volume = xstrdup(volume);
        rc = 0;
        goto out;
    }
    if (!path || !*path) {
        kh_err_set(err, KH_E_INVALID, "--disk '%s': no path (PATH,format=raw|qcow2)", spec);
        goto out;
    }
    if (!format) {
        kh_err_set(err, KH_E_INVALID,
                   "--disk needs format=raw|qcow2 in '%s' (formats are never guessed)", spec);
        goto out;
    }
    out->path = cli_path_absolute(path, cwd);
    out->format = xstrdup(format);
    rc = 0;
out:
    kh_strv_free(items);
    if (rc < 0)
        cli_disk_clear(out);
    return rc;
}

char *cli_path_absolute(const char *path, const char *cwd)
{
    char *joined = path[0] == '/' ? xstrdup(path) : xasprintf("%s/%s", cwd ? cwd : "/", path);
    size_t len = strlen(joined);
    char *out = xmalloc(len + 2);
    size_t o = 0;
    /* Walk the components; out always holds "/a/b" (no trailing slash). */
    const char *p = joined;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 1 && p[0] == '.') {
            /* nothing */
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* the slash before the removed component */
        } else {
            out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    free(joined);
    return out;
}

int cli_parse_int(const char *s, int64_t min, int64_t max, const char *what, int64_t *out,
                  kh_err *err)
{
    if (!s || !*s || !((*s >= '0' && *s <= '9') || *s == '-')) {
        kh_err_set(err, KH_E_INVALID, "%s needs a number, not '%s'", what, s ? s : "");
        return -1;
    }
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || errno) {
        kh_err_set(err, KH_E_INVALID, "%s needs a number, not '%s'", what, s);
        return -1;
    }
    if (v < min || v > max) {
        kh_err_set(err, KH_E_INVALID, "%s must be between %lld and %lld, not %lld", what,
                   (long long)min, (long long)max, v);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_mib(const char *s, const char *what, int64_t *out, kh_err *err)
{
    if (!s || !(*s >= '0' && *s <= '9')) {
        kh_err_set(err, KH_E_INVALID, "%s needs a size in MiB (512, 512M, 2G), not '%s'", what,
                   s ? s : "");
        return -1;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    int64_t mult = 0;
    if (!*end || strcasecmp(end, "m") == 0 || strcasecmp(end, "mib") == 0)
        mult = 1;
    else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gib") == 0)
        mult = 1024;
    if (errno || !mult) {
        kh_err_set(err, KH_E_INVALID, "%s needs a size in MiB (512, 512M, 2G), not '%s'", what,
                   s);
        return -1;
    }
    if (v == 0 || v > (unsigned long long)(INT64_MAX / 1024)) {
        kh_err_set(err, KH_E_INVALID, "%s: size '%s' is out of range", what, s);
        return -1;
    }
    *out = (int64_t)v * mult;
    return 0;
}

int cli_parse_seconds(const char *s, const char *what, double *out, kh_err *err)
{
    if (!s || !((*s >= '0' && *s <= '9') || *s == '.')) {
        kh_err_set(err, KH_E_INVALID, "%s needs a number of seconds, not '%s'", what,
                   s ? s : "");
        return -1;
    }
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v) || v < 0 || v > 1e9) {
        kh_err_set(err, KH_E_INVALID, "%s needs a number of seconds, not '%s'", what, s);
        return -1;
    }
    *out = v;
    return 0;
}
