/* hostpath.c - policies for what on the host a caller may name: host
 * files (confined to allowed directories) and outbound URLs (no loopback,
 * link-local or metadata addresses unless allowed). See auth.h. */
#include "auth/auth.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "util/mem.h"

/* The canonical form of path: realpath of its longest existing prefix with
 * the rest appended (".." in the rest is refused). NULL if unresolvable. */
static char *resolve(const char *path)
{
    if (!path || path[0] != '/' || strlen(path) >= PATH_MAX)
        return NULL;
    char *head = xstrdup(path);
    char *tail = NULL;
    char *r = NULL;
    for (;;) {
        r = realpath(head, NULL);
        if (r)
            break;
        char *slash = strrchr(head, '/');
        if (!slash || slash == head) {
            r = xstrdup("/");
            free(tail);
            tail = xstrdup(path + 1);
            break;
        }
        free(tail);
        tail = xstrdup(path + (slash - head) + 1);
        *slash = '\0';
    }
    free(head);
    if (tail) {
        /* the missing part must not climb */
        if (strstr(tail, "..")) {
            free(tail);
            free(r);
            return NULL;
        }
        char *full = xasprintf("%s%s%s", r, strcmp(r, "/") == 0 ? "" : "/", tail);
        free(tail);
        free(r);
        r = full;
    }
    return r;
}

static bool inside(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n == 1 && dir[0] == '/')
        return true;
    return strncmp(dir, path, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

int kh_hostpath_check(const char *const *allowed, size_t n, const char *path, const char *what,
                      kh_err *err)
{
    char *r = resolve(path);
    bool ok = false;
    for (size_t i = 0; r && i < n && !ok; i++) {
        char *d = resolve(allowed[i]);
        ok = d && inside(d, r);
        free(d);
    }
    free(r);
    if (ok)
        return 0;
    char list[1024] = "";
    size_t off = 0;
    for (size_t i = 0; i < n && off < sizeof(list); i++) {
        int w = snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "", allowed[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    kh_err_set(err, KH_E_FORBIDDEN, "%s: %s is outside the directories allowed for host "
               "paths (%s; daemon option --host-path-allow)", what, path ? path : "(none)",
               n ? list : "none");
    return -1;
}

static bool v4_internal(uint32_t a)
{
    return (a >> 24) == 127 || (a >> 24) == 0 || (a >> 16) == 0xa9fe /* 169.254/16 */ ||
           a == 0xffffffffu || (a >> 28) == 0xe /* multicast */;
}

static bool v6_internal(const struct in6_addr *a)
{
    if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LINKLOCAL(a) ||
        IN6_IS_ADDR_MULTICAST(a))
        return true;
    if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
        uint32_t v4;
        memcpy(&v4, &a->s6_addr[12], 4);
        return v4_internal(ntohl(v4));
    }
    /* fd00:ec2::254, the EC2 metadata service over IPv6 */
    static const unsigned char ec2[16] = { 0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0,
                                           0,    0, 0,    0,    0, 0, 0x02, 0x54 };
    return memcmp(a->s6_addr, ec2, 16) == 0;
}

bool kh_hostpath_addr_internal(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        return v4_internal(ntohl(a4.s_addr));
    if (inet_pton(AF_INET6, addr, &a6) == 1)
        return v6_internal(&a6);
    return false;
}

int kh_hostpath_url_check(const char *host, bool allow_internal, kh_err *err)
{
    if (allow_internal)
        return 0;
    char h[256];
    snprintf(h, sizeof(h), "%s", host ? host : "");
    size_t len = strlen(h);
    if (len >= 2 && h[0] == '[' && h[len - 1] == ']') { /* [v6] */
        memmove(h, h + 1, len - 2);
        h[len - 2] = '\0';
    }
    bool bad = kh_hostpath_addr_internal(h) || strcasecmp(h, "localhost") == 0 ||
               (len > 10 && strcasecmp(h + len - 10, ".localhost") == 0);
    if (!bad) {
        /* a name: every address it resolves to now must be outside */
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
        if (getaddrinfo(h, NULL, &hints, &res) == 0) {
            for (struct addrinfo *ai = res; ai && !bad; ai = ai->ai_next) {
                if (ai->ai_family == AF_INET)
                    bad = v4_internal(ntohl(
                        ((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr.s_addr));
                else if (ai->ai_family == AF_INET6)
                    bad = v6_internal(
                        &((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr);
            }
            freeaddrinfo(res);
        }
    }
    if (bad) {
        kh_err_set(err, KH_E_INVALID, "webhook.url: %s is a loopback, link-local or metadata "
                   "address (refused unless the daemon runs with --webhook-allow-internal)",
                   h);
        return -1;
    }
    return 0;
}
