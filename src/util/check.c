/* check.c - owns the validation of user strings (names, free text, absolute
 * paths, hex, UUIDs) in one place (util/check.h). */
#include "util/check.h"

#include <ctype.h>
#include <string.h>

int kh_check_name(const char *name, const char *what, kh_err *err)
{
    if (!name || !*name) {
        kh_err_set(err, KH_E_INVALID, "%s is required", what);
        return -1;
    }
    size_t len = strlen(name);
    if (len > KH_NAME_MAX) {
        kh_err_set(err, KH_E_INVALID, "%s is longer than %d characters", what, KH_NAME_MAX);
        return -1;
    }
    if (name[0] == '.' || name[0] == '-') {
        kh_err_set(err, KH_E_INVALID, "%s must not start with '%c'", what, name[0]);
        return -1;
    }
    for (const char *p = name; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!(isascii(c) && (isalnum(c) || c == '-' || c == '_' || c == '.'))) {
            if (c < 0x20 || c >= 0x7f)
                /* Named by value: the message itself must stay valid UTF-8. */
                kh_err_set(err, KH_E_INVALID,
                           "%s may only contain letters, digits, '-', '_' and '.' "
                           "(found byte 0x%02x)", what, c);
            else
                kh_err_set(err, KH_E_INVALID,
                           "%s may only contain letters, digits, '-', '_' and '.' (found '%c')",
                           what, c);
            return -1;
        }
    }
    return 0;
}

/* Length of the UTF-8 sequence at p, or 0 when invalid. */
static size_t utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    size_t n;
    unsigned min;
    unsigned cp;
    if ((p[0] & 0xe0) == 0xc0) { n = 2; cp = p[0] & 0x1f; min = 0x80; }
    else if ((p[0] & 0xf0) == 0xe0) { n = 3; cp = p[0] & 0x0f; min = 0x800; }
    else if ((p[0] & 0xf8) == 0xf0) { n = 4; cp = p[0] & 0x07; min = 0x10000; }
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

int kh_check_text(const char *s, size_t max, const char *what, kh_err *err)
{
    if (!s) {
        kh_err_set(err, KH_E_INVALID, "%s is required", what);
        return -1;
    }
    size_t len = strlen(s);
    if (len > max) {
        kh_err_set(err, KH_E_INVALID, "%s is longer than %zu bytes", what, max);
        return -1;
    }
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x20 || *p == 0x7f) {
            kh_err_set(err, KH_E_INVALID, "%s must not contain control characters", what);
            return -1;
        }
        size_t n = utf8_len(p);
        if (!n) {
            kh_err_set(err, KH_E_INVALID, "%s is not valid UTF-8", what);
            return -1;
        }
        p += n;
    }
    return 0;
}

int kh_check_abs_path(const char *path, const char *what, kh_err *err)
{
    if (kh_check_text(path, 4095, what, err) < 0)
        return -1;
    if (path[0] != '/') {
        kh_err_set(err, KH_E_INVALID, "%s must be an absolute path", what);
        return -1;
    }
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        const char *end = strchrnul(p, '/');
        size_t n = (size_t)(end - p);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
            kh_err_set(err, KH_E_INVALID, "%s must not contain '.' or '..' components", what);
            return -1;
        }
        p = end;
    }
    return 0;
}

bool kh_check_hex(const char *s, size_t len)
{
    if (!s || strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

bool kh_check_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

int kh_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
