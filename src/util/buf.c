/* buf.c - owns kh_buf, the growing NUL-terminated byte buffer (buf.h). */
#include "util/buf.h"

#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

void kh_buf_add(kh_buf *b, const void *data, size_t n)
{
    if (!b->p || b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void kh_buf_reset(kh_buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

void kh_buf_release(kh_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

size_t kh_buf_curl_write(char *data, size_t size, size_t n, void *buf)
{
    kh_buf_add(buf, data, size * n);
    return size * n;
}
