/* prom.c - owns the builder for the Prometheus text exposition format
 * (util/prom.h). */
#include "util/prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

struct kh_prom {
    char *buf;
    size_t len, cap;
};

kh_prom *kh_prom_new(void)
{
    kh_prom *p = xcalloc(1, sizeof(*p));
    p->cap = 4096;
    p->buf = xmalloc(p->cap);
    p->buf[0] = '\0';
    return p;
}

void kh_prom_free(kh_prom *p)
{
    if (!p)
        return;
    free(p->buf);
    free(p);
}

static void put(kh_prom *p, const char *s, size_t n)
{
    if (p->len + n + 1 > p->cap) {
        while (p->len + n + 1 > p->cap)
            p->cap *= 2;
        p->buf = xrealloc(p->buf, p->cap);
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
}

static void puts_(kh_prom *p, const char *s)
{
    put(p, s, strlen(s));
}

/* Escape backslash and newline (and double quote in label values). */
static void put_escaped(kh_prom *p, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(p, "\\\\", 2);
        else if (*s == '\n')
            put(p, "\\n", 2);
        else if (quote && *s == '"')
            put(p, "\\\"", 2);
        else
            put(p, s, 1);
    }
}

void kh_prom_family(kh_prom *p, const char *name, const char *type, const char *help)
{
    puts_(p, "# HELP ");
    puts_(p, name);
    puts_(p, " ");
    put_escaped(p, help, 0);
    puts_(p, "\n# TYPE ");
    puts_(p, name);
    puts_(p, " ");
    puts_(p, type);
    puts_(p, "\n");
}

void kh_prom_format_value(double v, char out[32])
{
    if (isnan(v))
        snprintf(out, 32, "NaN");
    else if (isinf(v))
        snprintf(out, 32, "%s", v > 0 ? "+Inf" : "-Inf");
    else if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(long long)v)
        snprintf(out, 32, "%lld", (long long)v);
    else {
        /* The shortest of %.15g..%.17g that reads back exactly. */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, 32, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

static void put_labels(kh_prom *p, const char *const *labels, const char *le)
{
    int any = 0;
    for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        puts_(p, any ? "," : "{");
        puts_(p, labels[i]);
        puts_(p, "=\"");
        put_escaped(p, labels[i + 1], 1);
        puts_(p, "\"");
        any = 1;
    }
    if (le) {
        puts_(p, any ? "," : "{");
        puts_(p, "le=\"");
        puts_(p, le);
        puts_(p, "\"");
        any = 1;
    }
    if (any)
        puts_(p, "}");
}

void kh_prom_sample(kh_prom *p, const char *name, const char *const *labels, double value)
{
    char v[32];
    kh_prom_format_value(value, v);
    puts_(p, name);
    put_labels(p, labels, NULL);
    puts_(p, " ");
    puts_(p, v);
    puts_(p, "\n");
}

void kh_prom_histogram(kh_prom *p, const char *name, const char *const *labels,
                       const double *bounds, const uint64_t *counts, size_t nbounds, double sum)
{
    char n[160], le[32], v[32];
    uint64_t cum = 0;
    snprintf(n, sizeof(n), "%s_bucket", name);
    for (size_t i = 0; i <= nbounds; i++) {
        cum += counts[i];
        if (i < nbounds)
            kh_prom_format_value(bounds[i], le);
        else
            snprintf(le, sizeof(le), "+Inf");
        /* le values are floats in the format: "1" is fine, promtool accepts it. */
        puts_(p, n);
        put_labels(p, labels, le);
        kh_prom_format_value((double)cum, v);
        puts_(p, " ");
        puts_(p, v);
        puts_(p, "\n");
    }
    snprintf(n, sizeof(n), "%s_sum", name);
    kh_prom_sample(p, n, labels, sum);
    snprintf(n, sizeof(n), "%s_count", name);
    kh_prom_sample(p, n, labels, (double)cum);
}

const char *kh_prom_text(const kh_prom *p, size_t *len)
{
    if (len)
        *len = p->len;
    return p->buf;
}

char *kh_prom_steal(kh_prom *p, size_t *len)
{
    char *s = p->buf;
    if (len)
        *len = p->len;
    free(p);
    return s;
}
