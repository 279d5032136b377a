/* router.c - the path matcher: split a raw path into %-decoded segments,
 * match it against route patterns, find the route (and the Allow list for
 * a 405), and check a route table at start-up. Pure: no server state.
 */
#include "http/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"
#include "util/check.h"
#include "util/misc.h"

/* %XX-decode s[0..n) into a new string; NULL when an escape is malformed
 * or the result holds a NUL. '+' stays '+' (this is a path). */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            if (s[i] == '\0')
                goto bad;
            *o++ = s[i];
            continue;
        }
        if (i + 2 >= n)
            goto bad;
        int h = kh_hex_digit((unsigned char)s[i + 1]);
        int l = kh_hex_digit((unsigned char)s[i + 2]);
        if (h < 0 || l < 0 || (h == 0 && l == 0))
            goto bad;
        *o++ = (char)(h * 16 + l);
        i += 2;
    }
    *o = '\0';
    return out;
bad:
    free(out);
    return NULL;
}
void kh_router_path_clear(kh_router_path *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free(ps->seg[i]);
    ps->n = 0;
}

int kh_router_split(const char *path, kh_router_path *ps)
{
    ps->n = 0;
    if (path[0] != '/')
        return -1;
    if (path[1] == '\0')
        return 0; /* "/" has no segments */
    const char *p = path + 1;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (ps->n == KH_ROUTER_MAX_SEGMENTS)
            goto bad;
        char *d = pct_decode(p, len);
        if (!d)
            goto bad;
        ps->seg[ps->n++] = d;
        if (!e)
            return 0;
        p = e + 1;
    }
bad:
    kh_router_path_clear(ps);
    return -1;
}

bool kh_router_match(const char *pattern, const kh_router_path *ps, kh_router_param *params,
                     size_t *nparams)
{
    const char *p = pattern;
    if (*p != '/')
        return false;
    size_t i = 0;
    if (p[1] == '\0')
        return ps->n == 0;
    p++;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (i >= ps->n)
            return false;
        const char *s = ps->seg[i];
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            if (s[0] == '\0')
                return false;
            if (params && *nparams < KH_ROUTER_MAX_PARAMS) {
                kh_router_param *rp = &params[(*nparams)++];
                rp->name = p + 1;
                rp->name_len = len - 2;
                rp->value = xstrdup(s);
            }
        } else if (strlen(s) != len || memcmp(s, p, len) != 0) {
            return false;
        }
        i++;
        if (!e)
            break;
        p = e + 1;
    }
    return i == ps->n;
}
const kh_route *kh_router_find(const kh_route *routes, size_t n, const kh_router_path *ps,
                               const char *method, bool *path_known, char *allow,
                               size_t allowsz)
{
    *path_known = false;
    if (allowsz)
        allow[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const kh_route *r = &routes[i];
        if (!kh_router_match(r->path, ps, NULL, NULL))
            continue;
        *path_known = true;
        if (strcmp(r->method, method) == 0)
            return r;
        size_t used = strlen(allow);
        if (used < allowsz)
            snprintf(allow + used, allowsz - used, "%s%s", used ? ", " : "", r->method);
    }
    return NULL;
}

int kh_router_check(const kh_route *routes, size_t n, kh_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const kh_route *r = &routes[i];
        if (!r->method || !r->path || r->path[0] != '/' || !r->handler) {
            kh_err_set(err, KH_E_INTERNAL, "route %zu is incomplete", i);
            return -1;
        }
        size_t params = 0;
        for (const char *p = r->path; (p = strchr(p, '{')) != NULL; p++)
            params++;
        if (params > KH_ROUTER_MAX_PARAMS) {
            kh_err_set(err, KH_E_INTERNAL, "route %s has too many parameters", r->path);
            return -1;
        }
    }
    return 0;
}
