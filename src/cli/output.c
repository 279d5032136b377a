/* output.c - owns formatting for people: tables, key: value blocks,
 * wrapping, sizes and times (cli/output.h). */
#include "cli/output.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/mem.h"
#include "util/strv.h"

/* ---- tables ---- */

struct cli_table {
    size_t ncols;
    kh_strv *cells; /* headers first, then rows, row-major */
};

cli_table *cli_table_new(size_t ncols, const char *const *headers)
{
    cli_table *t = xcalloc(1, sizeof(*t));
    t->ncols = ncols;
    t->cells = kh_strv_new();
    for (size_t i = 0; i < ncols; i++)
        kh_strv_add(t->cells, headers[i]);
    return t;
}

void cli_table_free(cli_table *t)
{
    if (!t)
        return;
    kh_strv_free(t->cells);
    free(t);
}

void cli_table_add(cli_table *t, const char *s)
{
    kh_strv_add(t->cells, s ? s : "-");
}

void cli_table_addf(cli_table *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    kh_strv_add_steal(t->cells, s);
}

/* Display width: UTF-8 characters (continuation bytes do not count). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

char *cli_table_render(const cli_table *t)
{
    size_t ncols = t->ncols, ncells = t->cells->n;
    if (ncols == 0)
        return xstrdup("");
    size_t *width = xcalloc(ncols ? ncols : 1, sizeof(*width));
    for (size_t i = 0; i < ncells; i++) {
        size_t w = text_width(t->cells->v[i]);
        if (w > width[i % ncols])
            width[i % ncols] = w;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    for (size_t i = 0; i < ncells; i++) {
        size_t col = i % ncols;
        const char *s = t->cells->v[i];
        bool last = col == ncols - 1 || i == ncells - 1;
        fputs(s, f);
        if (last) {
            fputc('\n', f);
        } else {
            for (size_t pad = width[col] - text_width(s) + 2; pad > 0; pad--)
                fputc(' ', f);
        }
    }
    fclose(f);
    free(width);
    return buf;
}

/* ---- key: value ---- */

struct cli_kv {
    kh_strv *keys;
    kh_strv *values;
};

cli_kv *cli_kv_new(void)
{
    cli_kv *kv = xcalloc(1, sizeof(*kv));
    kv->keys = kh_strv_new();
    kv->values = kh_strv_new();
    return kv;
}

void cli_kv_free(cli_kv *kv)
{
    if (!kv)
        return;
    kh_strv_free(kv->keys);
    kh_strv_free(kv->values);
    free(kv);
}

void cli_kv_add(cli_kv *kv, const char *key, const char *value)
{
    kh_strv_add(kv->keys, key);
    kh_strv_add(kv->values, value ? value : "-");
}

void cli_kv_addf(cli_kv *kv, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    kh_strv_add(kv->keys, key);
    kh_strv_add_steal(kv->values, s);
}

char *cli_json_scalar(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return xstrdup(json_string_value(v));
    case JSON_INTEGER:
        return xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL: {
        double d = json_real_value(v);
        return xasprintf("%.15g", d);
    }
    case JSON_TRUE:
        return xstrdup("yes");
    case JSON_FALSE:
        return xstrdup("no");
    case JSON_NULL:
        return xstrdup("-");
    default:
        return NULL;
    }
}

static bool in_list(const char *s, const char *const *list)
{
    for (; list && *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

void cli_kv_add_json(cli_kv *kv, const char *prefix, const json_t *obj,
                     const char *const *skip)
{
    const char *key;
    json_t *v;
    /* json_object_foreach wants a non-const object; it does not modify it. */
    json_t *o = (json_t *)(uintptr_t)obj;
    json_object_foreach(o, key, v) {
        if (in_list(key, skip))
            continue;
        char *full = prefix ? xasprintf("%s.%s", prefix, key) : xstrdup(key);
        if (json_is_object(v)) {
            if (json_object_size(v) == 0)
                cli_kv_add(kv, full, "-");
            else
                cli_kv_add_json(kv, full, v, NULL);
        } else if (json_is_array(v)) {
            kh_strv *parts = kh_strv_new();
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) {
                char *s = cli_json_scalar(e);
                if (!s) {
                    char *dump = json_dumps(e, JSON_COMPACT);
                    s = dump ? xstrdup(dump) : xstrdup("?");
                    free(dump);
                }
                kh_strv_add_steal(parts, s);
            }
            char *joined = parts->n ? kh_strv_join(parts, ", ") : xstrdup("-");
            cli_kv_add(kv, full, joined);
            free(joined);
            kh_strv_free(parts);
        } else {
            char *s = cli_json_scalar(v);
            cli_kv_add(kv, full, s);
            free(s);
        }
        free(full);
    }
}

char *cli_kv_render(const cli_kv *kv)
{
    size_t w = 0;
    for (size_t i = 0; i < kv->keys->n; i++) {
        size_t kw = text_width(kv->keys->v[i]);
        if (kw > w)
            w = kw;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    for (size_t i = 0; i < kv->keys->n; i++) {
        const char *key = kv->keys->v[i];
        const char *val = kv->values->v[i];
        fprintf(f, "%s:", key);
        size_t pad = w - text_width(key) + 1;
        bool first = true;
        do {
            const char *nl = strchr(val, '\n');
            size_t n = nl ? (size_t)(nl - val) : strlen(val);
            if (!first)
                pad = w + 2;
            if (n > 0)
                fprintf(f, "%*s%.*s", (int)pad, "", (int)n, val);
            fputc('\n', f);
            first = false;
            val = nl ? nl + 1 : NULL;
        } while (val && *val);
    }
    fclose(f);
    return buf;
}

/* ---- wrapped text ---- */

void cli_wrap(FILE *f, const char *text, int indent, int width)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n == 0) {
            fputc('\n', f);
        } else if (p[0] == ' ') {
            fprintf(f, "%*s%.*s\n", indent, "", (int)n, p);
        } else {
            /* Greedy fill of the words of this line. */
            int col = 0;
            const char *w = p, *end = p + n;
            while (w < end) {
                while (w < end && *w == ' ')
                    w++;
                if (w >= end)
                    break;
                const char *we = w;
                while (we < end && *we != ' ')
                    we++;
                int wl = (int)(we - w);
                if (col > 0 && indent + col + 1 + wl > width) {
                    fputc('\n', f);
                    col = 0;
                }
                if (col == 0)
                    fprintf(f, "%*s", indent, "");
                else {
                    fputc(' ', f);
                    col++;
                }
                fwrite(w, 1, (size_t)wl, f);
                col += wl;
                w = we;
            }
            fputc('\n', f);
        }
        if (!nl)
            break;
        p = nl + 1;
    }
}

/* ---- sizes, durations, times ---- */

void cli_fmt_mib(int64_t mib, char *buf, size_t size)
{
    static const char *const units[] = { "MiB", "GiB", "TiB" };
    double v = (double)mib;
    size_t u = 0;
    while (u + 1 < KH_ARRAY_LEN(units) && v >= 1024) {
        v /= 1024;
        u++;
    }
    if (v == floor(v))
        snprintf(buf, size, "%.0f%s", v, units[u]);
    else
        snprintf(buf, size, "%.1f%s", v, units[u]);
}

void cli_fmt_duration(double seconds, char *buf, size_t size)
{
    if (!(seconds >= 0))
        seconds = 0;
    unsigned long long s = (unsigned long long)seconds;
    unsigned long long d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
    if (d)
        snprintf(buf, size, "%llud%02lluh", d, h);
    else if (h)
        snprintf(buf, size, "%lluh%02llum", h, m);
    else if (m)
        snprintf(buf, size, "%llum%02llus", m, sec);
    else
        snprintf(buf, size, "%llus", sec);
}

void cli_fmt_span(double seconds, char *buf, size_t size)
{
    if (!(seconds >= 0))
        seconds = 0;
    unsigned long long s = (unsigned long long)seconds;
    unsigned long long d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;
    if (d)
        snprintf(buf, size, "%llud %lluh %llum", d, h, m);
    else if (h)
        snprintf(buf, size, "%lluh %llum", h, m);
    else if (m)
        snprintf(buf, size, "%llum", m);
    else
        snprintf(buf, size, "%llus", s);
}

void cli_fmt_expiry(double expires, double now, char *buf, size_t size)
{
    char span[48];
    if (expires <= 0) {
        snprintf(buf, size, "never");
    } else if (expires >= now) {
        cli_fmt_span(expires - now, span, sizeof(span));
        snprintf(buf, size, "in %s", span);
    } else {
        cli_fmt_span(now - expires, span, sizeof(span));
        snprintf(buf, size, "%s ago", span);
    }
}

void cli_fmt_bytes(int64_t n, char *buf, size_t size)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < KH_ARRAY_LEN(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%lld B", (long long)n);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
}

void cli_fmt_load(const json_t *loads, char *buf, size_t size)
{
    size_t len = 0, i;
    json_t *v;
    buf[0] = '\0';
    json_array_foreach(loads, i, v) {
        int w = snprintf(buf + len, size - len, "%s%.2f", i ? " " : "", json_number_value(v));
        if (w < 0 || (size_t)w >= size - len)
            break;
        len += (size_t)w;
    }
    if (!len)
        snprintf(buf, size, "-");
}

int cli_parse_time(const char *s, double *out)
{
    if (!s)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 || n == 0)
        return -1;
    const char *p = s + n;
    double frac = 0;
    if (*p == '.') {
        double scale = 0.1;
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9') {
            frac += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    long offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5)
            return -1;
        offset = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 1 + k;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (double)t - (double)offset + frac;
    return 0;
}

void cli_fmt_progress(int percent, const char *message, int width, char *buf, size_t size)
{
    enum { BAR = 20 };
    if (percent < 0)
        percent = 0;
    if (percent > 100)
        percent = 100;
    char bar[BAR + 1];
    int fill = percent * BAR / 100;
    for (int i = 0; i < BAR; i++)
        bar[i] = i < fill ? '#' : ' ';
    bar[BAR] = '\0';
    snprintf(buf, size, "[%s] %3d%% %s", bar, percent, message ? message : "");
    if (width > 0 && (size_t)width < size) {
        /* Cut at width characters, not inside a UTF-8 sequence. */
        size_t chars = 0, i = 0;
        for (; buf[i]; i++) {
            if (((unsigned char)buf[i] & 0xc0) != 0x80) {
                if (chars == (size_t)width)
                    break;
                chars++;
            }
        }
        buf[i] = '\0';
    }
}

void cli_print_json(FILE *f, const json_t *j)
{
    json_dumpf(j, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', f);
}
