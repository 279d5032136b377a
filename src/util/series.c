/* series.c - owns the fixed-size ring of timestamped samples behind
 * metric history (util/series.h). */
#include "util/series.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

struct kh_series {
    size_t cap, width;
    size_t head; /* next slot to write */
    size_t n;
    double *t;
    double *v;   /* cap * width */
};

kh_series *kh_series_new(size_t capacity, size_t width)
{
    kh_series *s = xcalloc(1, sizeof(*s));
    s->cap = capacity ? capacity : 1;
    s->width = width ? width : 1;
    s->t = xcalloc(s->cap, sizeof(double));
    s->v = xcalloc(s->cap * s->width, sizeof(double));
    return s;
}

void kh_series_free(kh_series *s)
{
    if (!s)
        return;
    free(s->t);
    free(s->v);
    free(s);
}

void kh_series_push(kh_series *s, double t, const double *values)
{
    s->t[s->head] = t;
    memcpy(s->v + s->head * s->width, values, s->width * sizeof(double));
    s->head = (s->head + 1) % s->cap;
    if (s->n < s->cap)
        s->n++;
}

size_t kh_series_count(const kh_series *s)
{
    return s->n;
}

size_t kh_series_width(const kh_series *s)
{
    return s->width;
}

const double *kh_series_at(const kh_series *s, size_t i, double *t)
{
    if (i >= s->n)
        return NULL;
    size_t slot = (s->head + s->cap - s->n + i) % s->cap;
    if (t)
        *t = s->t[slot];
    return s->v + slot * s->width;
}

size_t kh_series_first_since(const kh_series *s, double since)
{
    /* Times are pushed in order: binary search. */
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        double t = 0;
        (void)kh_series_at(s, mid, &t); /* mid < n: always found */
        if (t < since)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
