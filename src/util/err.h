/* err.h - the one error type of kvmhost.
 *
 * An error is set once, where it happens, with a code and a message meant
 * for the person who made the request. Callers that merely pass it along
 * return -1 (or NULL) and do not touch it. The code decides the HTTP status
 * through one table (kh_code_http_status) and the CLI exit code.
 */
#ifndef KH_UTIL_ERR_H
#define KH_UTIL_ERR_H

#include <stdbool.h>

typedef enum kh_code {
    KH_OK = 0,
    KH_E_INVALID,      /* bad input: 400 */
    KH_E_UNAUTHORIZED, /* no or bad credentials: 401 */
    KH_E_FORBIDDEN,    /* authenticated but not allowed: 403 */
    KH_E_NOTFOUND,     /* no such object: 404 */
    KH_E_METHOD,       /* route exists, method does not: 405 */
    KH_E_CONFLICT,     /* state forbids it now (running, busy, exists): 409 */
    KH_E_TOOLARGE,     /* body or size over the limit: 413 */
    KH_E_UNSUPPORTED,  /* media type / feature not supported: 415 */
    KH_E_BUSY,         /* too many requests / queue full: 429 */
    KH_E_INTERNAL,     /* a bug or an unexpected host failure: 500 */
    KH_E_QEMU,         /* QEMU refused or died: 502 */
    KH_E_UNAVAILABLE,  /* host cannot do it now (no KVM, shutting down): 503 */
    KH_E_TIMEOUT,      /* gave up waiting: 504 */
    KH_E_NOSPACE,      /* a pool's file system is full: 507 */
    KH_CODE__COUNT
} kh_code;

typedef struct kh_err {
    kh_code code;
    char msg[512];
} kh_err;

#define KH_ERR_INIT { KH_OK, { 0 } }

/* Set the error unless err is NULL or already set (the first cause wins). */
void kh_err_set(kh_err *err, kh_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As kh_err_set, appending ": strerror(errnum)". */
void kh_err_errno(kh_err *err, kh_code code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prefix an already set message with context ("starting vm x: ..."). */
void kh_err_prefix(kh_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kh_err_clear(kh_err *err);
void kh_err_copy(kh_err *dst, const kh_err *src);
static inline bool kh_err_isset(const kh_err *err) { return err && err->code != KH_OK; }

/* The one table: code -> stable name ("invalid", "not_found", ...). */
const char *kh_code_name(kh_code code);
/* The one table: code -> HTTP status. */
int kh_code_http_status(kh_code code);
/* Inverse of kh_code_name, KH_E_INTERNAL for unknown names (used by the CLI). */
kh_code kh_code_from_name(const char *name);
/* CLI exit code for an error code (0 for KH_OK). */
int kh_code_exit_status(kh_code code);

#endif
