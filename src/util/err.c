/* err.c - owns the one error type, kh_err: setting, prefixing, codes
 * and their names and HTTP statuses (util/err.h). */
#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int http;
    int exit;
} code_table[KH_CODE__COUNT] = {
    [KH_OK] = { "ok", 200, 0 },
    [KH_E_INVALID] = { "invalid", 400, 2 },
    [KH_E_UNAUTHORIZED] = { "unauthorized", 401, 3 },
    [KH_E_FORBIDDEN] = { "forbidden", 403, 3 },
    [KH_E_NOTFOUND] = { "not_found", 404, 4 },
    [KH_E_METHOD] = { "method_not_allowed", 405, 2 },
    [KH_E_CONFLICT] = { "conflict", 409, 5 },
    [KH_E_TOOLARGE] = { "too_large", 413, 2 },
    [KH_E_UNSUPPORTED] = { "unsupported", 415, 2 },
    [KH_E_BUSY] = { "busy", 429, 6 },
    [KH_E_INTERNAL] = { "internal", 500, 1 },
    [KH_E_QEMU] = { "qemu", 502, 1 },
    [KH_E_UNAVAILABLE] = { "unavailable", 503, 7 },
    [KH_E_TIMEOUT] = { "timeout", 504, 8 },
    [KH_E_NOSPACE] = { "no_space", 507, 7 },
};

static void vset(kh_err *err, kh_code code, int errnum, const char *fmt, va_list ap)
{
    if (!err || err->code != KH_OK)
        return;
    err->code = code == KH_OK ? KH_E_INTERNAL : code;
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    if (n < 0)
        err->msg[0] = '\0';
    if (errnum) {
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", strerror(errnum));
    }
}

void kh_err_set(kh_err *err, kh_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, 0, fmt, ap);
    va_end(ap);
}

void kh_err_errno(kh_err *err, kh_code code, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, errnum, fmt, ap);
    va_end(ap);
}

void kh_err_prefix(kh_err *err, const char *fmt, ...)
{
    if (!err || err->code == KH_OK)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* Truncation is fine: messages are for people, the start matters most. */
    char old[sizeof(err->msg)];
    memcpy(old, err->msg, sizeof(old));
    size_t plen = strlen(prefix), cap = sizeof(err->msg) - 1;
    if (plen > cap)
        plen = cap;
    memcpy(err->msg, prefix, plen);
    size_t o = plen;
    if (o + 2 <= cap) {
        memcpy(err->msg + o, ": ", 2);
        o += 2;
    }
    size_t olen = strlen(old);
    if (olen > cap - o)
        olen = cap - o;
    memcpy(err->msg + o, old, olen);
    err->msg[o + olen] = '\0';
}

void kh_err_clear(kh_err *err)
{
    if (!err)
        return;
    err->code = KH_OK;
    err->msg[0] = '\0';
}

void kh_err_copy(kh_err *dst, const kh_err *src)
{
    if (!dst || !src)
        return;
    *dst = *src;
}

const char *kh_code_name(kh_code code)
{
    if ((unsigned)code >= KH_CODE__COUNT)
        return "internal";
    return code_table[code].name;
}

int kh_code_http_status(kh_code code)
{
    if ((unsigned)code >= KH_CODE__COUNT)
        return 500;
    return code_table[code].http;
}

int kh_code_exit_status(kh_code code)
{
    if ((unsigned)code >= KH_CODE__COUNT)
        return 1;
    return code_table[code].exit;
}

kh_code kh_code_from_name(const char *name)
{
    if (!name)
        return KH_E_INTERNAL;
    for (int i = 0; i < KH_CODE__COUNT; i++)
        if (strcmp(code_table[i].name, name) == 0)
            return (kh_code)i;
    return KH_E_INTERNAL;
}
