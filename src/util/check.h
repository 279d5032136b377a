/* check.h - validation of user strings, in one place.
 *
 * Every string that comes from a request and ends up in a path, a QEMU
 * option, a log line or a database key passes one of these first.
 */
#ifndef KH_UTIL_CHECK_H
#define KH_UTIL_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

#define KH_NAME_MAX 64

/* Object names (VMs, pools, volumes, networks): letters, digits, '-', '_',
 * '.'; not starting with '.' or '-'; 1..KH_NAME_MAX bytes. `what` names the
 * field in the message ("vm name"). */
int kh_check_name(const char *name, const char *what, kh_err *err);
/* A free-text field (kernel cmdline, description): no NUL/newline/control
 * characters, at most max bytes, valid UTF-8. */
int kh_check_text(const char *s, size_t max, const char *what, kh_err *err);
/* An absolute host path: starts with '/', no control characters, no "/../"
 * or "/./" components, at most 4095 bytes. Existence is not checked. */
int kh_check_abs_path(const char *path, const char *what, kh_err *err);
/* The value of one hex digit (0-15), or -1 when c is not one. */
int kh_hex_digit(int c);
/* A hex string of exactly len characters (hashes from elsewhere). */
bool kh_check_hex(const char *s, size_t len);
/* A canonical lowercase UUID string. */
bool kh_check_uuid(const char *s);

#endif
