/* ratelimit.c - per-caller request rate limits: one token bucket per
 * caller (the principal the application's hook names, else the client
 * address), refilled at rate_limit per second up to rate_burst. A request
 * finding its bucket empty is answered 429 with Retry-After before its
 * handler runs. Routes flagged KH_ROUTE_PRIORITY (stop, kill) draw from a
 * second bucket of their own, so a caller's flood of ordinary requests
 * never delays them. The unix socket is not limited (root only).
 *
 * Memory is bounded: at most RL_MAX_KEYS buckets; when the table is full,
 * buckets refilled to the brim (idle callers) are dropped, and if none is,
 * new callers share one overflow bucket.
 */
#include "http/internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"
#include "util/misc.h"

#define RL_SLOTS 1024u
#define RL_MAX_KEYS 4096u
#define RL_KEY_MAX 160u

typedef struct rl_bucket rl_bucket;
struct rl_bucket {
    char key[RL_KEY_MAX];
    double tokens, prio_tokens;
    uint64_t last_ms;
    rl_bucket *next;
};

struct kh_ratelimit {
    double rate, burst;
    rl_bucket *slots[RL_SLOTS];
    unsigned n;
    rl_bucket overflow;
    uint64_t last_purge_ms;
};

kh_ratelimit *kh_ratelimit_new(unsigned rate, unsigned burst)
{
    kh_ratelimit *rl = xcalloc(1, sizeof(*rl));
    rl->rate = rate;
    rl->burst = burst ? burst : rate;
    snprintf(rl->overflow.key, sizeof(rl->overflow.key), "*");
    rl->overflow.tokens = rl->overflow.prio_tokens = rl->burst;
    return rl;
}

void kh_ratelimit_free(kh_ratelimit *rl)
{
    if (!rl)
        return;
    for (unsigned i = 0; i < RL_SLOTS; i++) {
        while (rl->slots[i]) {
            rl_bucket *b = rl->slots[i];
            rl->slots[i] = b->next;
            free(b);
        }
    }
    free(rl);
}

static uint32_t key_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void refill(kh_ratelimit *rl, rl_bucket *b, uint64_t now)
{
    if (now > b->last_ms) {
        double add = rl->rate * (double)(now - b->last_ms) / 1000.0;
        b->tokens = b->tokens + add > rl->burst ? rl->burst : b->tokens + add;
        b->prio_tokens = b->prio_tokens + add > rl->burst ? rl->burst : b->prio_tokens + add;
    }
    b->last_ms = now;
}

/* Drop the buckets of callers idle long enough to be full again. */
static void purge(kh_ratelimit *rl, uint64_t now)
{
    rl->last_purge_ms = now;
    for (unsigned i = 0; i < RL_SLOTS; i++) {
        rl_bucket **pp = &rl->slots[i];
        while (*pp) {
            rl_bucket *b = *pp;
            refill(rl, b, now);
            if (b->tokens >= rl->burst && b->prio_tokens >= rl->burst) {
                *pp = b->next;
                free(b);
                rl->n--;
            } else {
                pp = &b->next;
            }
        }
    }
}

static rl_bucket *lookup(kh_ratelimit *rl, const char *key, uint64_t now)
{
    uint32_t slot = key_hash(key) % RL_SLOTS;
    for (rl_bucket *b = rl->slots[slot]; b; b = b->next)
        if (strcmp(b->key, key) == 0)
            return b;
    if (rl->n >= RL_MAX_KEYS && now - rl->last_purge_ms >= 1000)
        purge(rl, now);
    if (rl->n >= RL_MAX_KEYS)
        return &rl->overflow;
    rl_bucket *b = xcalloc(1, sizeof(*b));
    snprintf(b->key, sizeof(b->key), "%s", key);
    b->tokens = b->prio_tokens = rl->burst;
    b->last_ms = now;
    b->next = rl->slots[slot];
    rl->slots[slot] = b;
    rl->n++;
    return b;
}

unsigned kh_ratelimit_take(kh_ratelimit *rl, const char *key, bool priority, uint64_t now)
{
    if (!rl || rl->rate <= 0)
        return 0;
    rl_bucket *b = lookup(rl, key, now);
    refill(rl, b, now);
    double *t = priority ? &b->prio_tokens : &b->tokens;
    if (*t >= 1.0) {
        *t -= 1.0;
        return 0;
    }
    double wait = (1.0 - *t) / rl->rate;
    unsigned s = (unsigned)wait + 1;
    return s;
}

/* The caller's key: "p:" + the principal the auth hook set on the request
 * (kh_http_req_set_principal), else "a:" + the client address (no port). */
void kh_ratelimit_key(const kh_http_req *req, char *buf, size_t size)
{
    const char *p = kh_http_req_principal(req);
    if (p && *p) {
        snprintf(buf, size, "p:%s", p);
        return;
    }
    char addr[INET6_ADDRSTRLEN] = "?";
    const union MHD_ConnectionInfo *ci =
        req->conn ? MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS)
                  : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, addr,
                  sizeof(addr));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, addr,
                  sizeof(addr));
    snprintf(buf, size, "a:%s", addr);
}
