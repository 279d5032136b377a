/* fuzz_qmp_parser.c - libFuzzer target for the QMP line parser.
 *
 * The input is the byte stream a QEMU monitor would send. It is parsed
 * twice: in one feed, and in chunks whose sizes come from a PRNG seeded
 * with a hash of the input (1 byte up to a few KiB). Both runs must give
 * the same messages, all of them objects, and fail at the same point.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "qemu/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct run {
    json_t *msgs;   /* array of the messages, in order */
    int rc;
} run;

static void take(kh_qmp_parser *p, json_t *out)
{
    json_t *m;
    while ((m = kh_qmp_parser_next(p))) {
        if (!json_is_object(m))
            abort();
        json_array_append_new(out, m);
    }
}

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static run parse(const uint8_t *data, size_t size, uint64_t seed)
{
    run r = { json_array(), 0 };
    kh_qmp_parser *p = kh_qmp_parser_new();
    kh_err err = KH_ERR_INIT;
    static const size_t ranges[] = { 1, 3, 16, 256, 4096 };
    size_t off = 0;
    while (off < size && r.rc == 0) {
        size_t n = size - off;
        if (seed) {
            size_t range = ranges[next_rand(&seed) % (sizeof(ranges) / sizeof(ranges[0]))];
            size_t want = 1 + (size_t)(next_rand(&seed) % range);
            if (want < n)
                n = want;
        }
        r.rc = kh_qmp_parser_feed(p, (const char *)data + off, n, &err);
        if (r.rc < 0 && (!kh_err_isset(&err) || err.code != KH_E_QEMU))
            abort();
        if (r.rc == 0 && kh_err_isset(&err))
            abort();
        take(p, r.msgs); /* also interleave takes with feeds */
        off += n;
    }
    take(p, r.msgs);
    /* Once broken, it stays broken. */
    if (r.rc < 0) {
        kh_err err2 = KH_ERR_INIT;
        if (kh_qmp_parser_feed(p, "{}\n", 3, &err2) != -1 || kh_qmp_parser_next(p))
            abort();
    }
    kh_qmp_parser_free(p);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    if (h == 0)
        h = 1;

    run whole = parse(data, size, 0);
    run chunked = parse(data, size, h);
    if (whole.rc != chunked.rc || !json_equal(whole.msgs, chunked.msgs)) {
        fprintf(stderr, "whole rc=%d n=%zu, chunked rc=%d n=%zu\n", whole.rc,
                json_array_size(whole.msgs), chunked.rc, json_array_size(chunked.msgs));
        abort();
    }
    json_decref(whole.msgs);
    json_decref(chunked.msgs);
    return 0;
}
