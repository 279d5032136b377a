/* buf.h - a growing byte buffer, always NUL-terminated: what HTTP reply
 * bodies (libcurl write callbacks), SSE lines and stream pieces are
 * collected in. A zeroed kh_buf is empty and ready. */
#ifndef KH_UTIL_BUF_H
#define KH_UTIL_BUF_H

#include <stddef.h>

typedef struct kh_buf {
    char *p;      /* NULL until the first add; then NUL-terminated */
    size_t len;   /* bytes held, the NUL not counted */
    size_t cap;
} kh_buf;

/* Append n bytes (out of memory aborts, as xmalloc). */
void kh_buf_add(kh_buf *b, const void *data, size_t n);
/* Empty it, keeping its memory for the next use. */
void kh_buf_reset(kh_buf *b);
/* Free its memory; b is empty and usable again. */
void kh_buf_release(kh_buf *b);
/* A libcurl CURLOPT_WRITEFUNCTION that appends to the kh_buf given as
 * CURLOPT_WRITEDATA (no libcurl needed to link it). */
size_t kh_buf_curl_write(char *data, size_t size, size_t n, void *buf);

#endif
