/* kh_test.h - the few macros our unit tests need. TAP output. */
#ifndef KH_TEST_H
#define KH_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int kh_test_failures;
static int kh_test_count;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        kh_test_count++;                                                               \
        if (!(cond)) {                                                                 \
            kh_test_failures++;                                                        \
            printf("not ok %d - %s:%d: %s\n", kh_test_count, __FILE__, __LINE__, #cond); \
        }                                                                              \
    } while (0)

#define CHECK_STR(a, b)                                                                \
    do {                                                                               \
        const char *a_ = (a), *b_ = (b);                                               \
        kh_test_count++;                                                               \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                       \
            kh_test_failures++;                                                        \
            printf("not ok %d - %s:%d: \"%s\" != \"%s\"\n", kh_test_count, __FILE__,     \
                   __LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                  \
        }                                                                              \
    } while (0)

#define RUN(fn)                                                                        \
    do {                                                                               \
        setvbuf(stdout, NULL, _IOLBF, 0);                                              \
        int before_ = kh_test_failures;                                                \
        fn();                                                                          \
        printf("%s %s\n", kh_test_failures == before_ ? "ok" : "not ok", #fn);          \
    } while (0)

#define TEST_DONE()                                                                    \
    do {                                                                               \
        printf("# %d checks, %d failed\n", kh_test_count, kh_test_failures);           \
        return kh_test_failures ? 1 : 0;                                               \
    } while (0)

#endif
