/* fuzz_ws.c - libFuzzer target: the WebSocket handshake's untrusted
 * strings and the text-frame UTF-8 check. The input is split at the first
 * two NULs into Origin, Host and a Sec-WebSocket-Key; all of it is also a
 * text frame's payload.
 * Properties: a key accepted is base64 of 16 bytes and gives a 28-char
 * base64 answer; UTF-8 agrees with a plain reference decoder, and two
 * valid strings stay valid concatenated; an Origin with a path, or without
 * "://", is never the same origin.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KH_HTTP_INTERNAL /* the server-side helpers of ws.h */
#include "http/req.h"
#include "http/ws.h"
#include "util/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reference: decode by the RFC 3629 table. */
static bool ref_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) n = 1;
        else if (c == 0xe0) { n = 2; lo = 0xa0; }
        else if (c >= 0xe1 && c <= 0xec) n = 2;
        else if (c == 0xed) { n = 2; hi = 0x9f; }
        else if (c >= 0xee && c <= 0xef) n = 2;
        else if (c == 0xf0) { n = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) n = 3;
        else if (c == 0xf4) { n = 3; hi = 0x8f; }
        else return false;
        if (len - i <= n)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return false;
        i += n + 1;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool v = kh_ws__utf8_valid(data, size);
    if (v != ref_utf8(data, size))
        abort();
    if (v) {
        unsigned char *twice = xmalloc(2 * size + 1);
        memcpy(twice, data, size);
        memcpy(twice + size, data, size);
        if (!kh_ws__utf8_valid(twice, 2 * size))
            abort();
        free(twice);
    }
    char *s = xmalloc(size + 3);
    memcpy(s, data, size);
    s[size] = s[size + 1] = s[size + 2] = '\0';
    const char *origin = s;
    const char *host = origin + strlen(origin) + 1;
    if (host > s + size)
        host = s + size;
    const char *key = host + strlen(host) + 1;
    if (key > s + size)
        key = s + size;
    bool same = kh_http_origin_same(origin, host);
    const char *p = strstr(origin, "://");
    if (same && !p)
        abort(); /* not a serialized origin */
    if (same) {
        const char *slash = strchr(p + 3, '/');
        if (slash && slash[1] != '\0')
            abort(); /* an Origin with a path is never the same origin */
        if (strlen(p + 3) - (slash ? 1 : 0) != strlen(host))
            abort();
    }
    char out[29];
    if (kh_ws__accept_key(key, out)) {
        if (strlen(key) != 24 || strlen(out) != 28)
            abort();
    }
    free(s);
    return 0;
}
