/* prom.h - a builder for the Prometheus text exposition format (0.0.4).
 *
 * Pure string building, no I/O: the caller names a family (HELP and TYPE
 * lines), then adds its samples; samples of one family must follow their
 * family line (the format requires families to be contiguous). Label values
 * and HELP text are escaped here (backslash, double quote, newline), so any
 * user string (a VM name) is safe as a label value.
 *
 *   kh_prom *p = kh_prom_new();
 *   kh_prom_family(p, "kvmhost_vms", "gauge", "VMs by state");
 *   const char *l[] = { "state", "running", NULL };
 *   kh_prom_sample(p, "kvmhost_vms", l, 3);
 *   char *text = kh_prom_steal(p, &len);   // p is freed
 */
#ifndef KH_UTIL_PROM_H
#define KH_UTIL_PROM_H

#include <stddef.h>
#include <stdint.h>

typedef struct kh_prom kh_prom;

kh_prom *kh_prom_new(void);
void kh_prom_free(kh_prom *p);
/* "# HELP name help" and "# TYPE name type" (counter, gauge, histogram). */
void kh_prom_family(kh_prom *p, const char *name, const char *type, const char *help);
/* One sample line. labels: NULL or a NULL-terminated list of key, value,
 * key, value ... (keys are fixed identifiers, values any text). */
void kh_prom_sample(kh_prom *p, const char *name, const char *const *labels, double value);
/* A histogram's samples: name_bucket{...,le="b"} for each upper bound
 * (cumulative counts computed here from the per-bucket counts; counts has
 * nbounds + 1 entries, the last one for +Inf), then name_sum and
 * name_count. */
void kh_prom_histogram(kh_prom *p, const char *name, const char *const *labels,
                       const double *bounds, const uint64_t *counts, size_t nbounds, double sum);
/* The text so far (borrowed, NUL-terminated). */
const char *kh_prom_text(const kh_prom *p, size_t *len);
/* Take the text (the caller frees it); p is freed. */
char *kh_prom_steal(kh_prom *p, size_t *len);
/* Format a sample value: integers exactly, NaN, +Inf, -Inf, else the
 * shortest %g form (15 to 17 digits) that reads back as the same double. */
void kh_prom_format_value(double v, char out[32]);

#endif
