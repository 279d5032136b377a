/* series.h - a fixed-size ring of timestamped samples (metric history).
 *
 * Each sample is a time and `width` values. When full, a push overwrites
 * the oldest sample. Memory is allocated once at creation: with 360 slots
 * (an hour at one sample per 10 s) and 8 values a series costs about 26 KiB.
 */
#ifndef KH_UTIL_SERIES_H
#define KH_UTIL_SERIES_H

#include <stddef.h>

typedef struct kh_series kh_series;

kh_series *kh_series_new(size_t capacity, size_t width);
void kh_series_free(kh_series *s);
void kh_series_push(kh_series *s, double t, const double *values);
size_t kh_series_count(const kh_series *s);
size_t kh_series_width(const kh_series *s);
/* The i-th sample, 0 = oldest; *t gets its time. NULL when i is out of
 * range. The values stay valid until the next push. */
const double *kh_series_at(const kh_series *s, size_t i, double *t);
/* Index of the first sample with time >= since (count when none). */
size_t kh_series_first_since(const kh_series *s, double since);

#endif
