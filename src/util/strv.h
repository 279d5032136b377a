/* strv.h - a growable, NULL-terminated vector of owned strings (argv). */
#ifndef KH_UTIL_STRV_H
#define KH_UTIL_STRV_H

#include <stddef.h>

typedef struct kh_strv {
    char **v;   /* always NULL-terminated */
    size_t n;
    size_t cap;
} kh_strv;

kh_strv *kh_strv_new(void);
void kh_strv_free(kh_strv *sv);
/* Append a copy of s. */
void kh_strv_add(kh_strv *sv, const char *s);
/* Append s, taking ownership. */
void kh_strv_add_steal(kh_strv *sv, char *s);
void kh_strv_addf(kh_strv *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Join with sep; the caller frees. */
char *kh_strv_join(const kh_strv *sv, const char *sep);
/* Take the char** out; the vector is freed. */
char **kh_strv_steal(kh_strv *sv);
void kh_strv_array_free(char **v);

#endif
