/* strv.c - owns the growable, NULL-terminated vector of owned strings
 * (util/strv.h). */
#include "util/strv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

kh_strv *kh_strv_new(void)
{
    kh_strv *sv = xcalloc(1, sizeof(*sv));
    sv->cap = 16;
    sv->v = xcalloc(sv->cap, sizeof(char *));
    return sv;
}

void kh_strv_free(kh_strv *sv)
{
    if (!sv)
        return;
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    free(sv);
}

void kh_strv_add_steal(kh_strv *sv, char *s)
{
    if (sv->n + 2 > sv->cap) {
        sv->cap *= 2;
        sv->v = xreallocarray(sv->v, sv->cap, sizeof(char *));
    }
    sv->v[sv->n++] = s;
    sv->v[sv->n] = NULL;
}

void kh_strv_add(kh_strv *sv, const char *s)
{
    kh_strv_add_steal(sv, xstrdup(s));
}

void kh_strv_addf(kh_strv *sv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    kh_strv_add_steal(sv, s);
}

char *kh_strv_join(const kh_strv *sv, const char *sep)
{
    size_t seplen = strlen(sep), len = 1;
    for (size_t i = 0; i < sv->n; i++)
        len += strlen(sv->v[i]) + seplen;
    char *out = xmalloc(len), *p = out;
    for (size_t i = 0; i < sv->n; i++) {
        if (i) {
            memcpy(p, sep, seplen);
            p += seplen;
        }
        size_t l = strlen(sv->v[i]);
        memcpy(p, sv->v[i], l);
        p += l;
    }
    *p = '\0';
    return out;
}

char **kh_strv_steal(kh_strv *sv)
{
    char **v = sv->v;
    free(sv);
    return v;
}

void kh_strv_array_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}
