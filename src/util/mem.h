/* mem.h - allocation that never returns NULL.
 *
 * Out of memory aborts the process (the Redis/SQLite-in-daemon choice): no
 * caller checks for NULL after these. Every *_free in kvmhost accepts NULL.
 */
#ifndef KH_UTIL_MEM_H
#define KH_UTIL_MEM_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Grow an array of nmemb elements to at least want elements (doubling). */
void *xreallocarray(void *ptr, size_t nmemb, size_t size);
char *xstrdup(const char *s);  /* NULL in, NULL out */
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* Free *pp and set it to NULL. */
#define KH_FREE(p) do { free(p); (p) = NULL; } while (0)
#define KH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
