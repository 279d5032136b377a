/* misc.h - time and identifiers. */
#ifndef KH_UTIL_MISC_H
#define KH_UTIL_MISC_H

#include <stdint.h>

/* Milliseconds on the monotonic clock. */
uint64_t kh_now_ms(void);
/* Microseconds on the monotonic clock. */
uint64_t kh_now_us(void);
/* Seconds since the epoch, as a double with millisecond precision. */
double kh_wall_time(void);
/* RFC 3339 UTC time for a wall time in seconds ("2026-11-22T07:50:00Z"). */
void kh_time_format(double t, char out[32]);
/* A random version-4 UUID, lowercase, into out[37]. */
void kh_uuid_generate(char out[37]);
/* Random bytes from the kernel; aborts if the kernel cannot give them. */
void kh_random_bytes(void *buf, uint32_t len);

#endif
