/* log.c - owns the structured logs in logfmt (key=value) to stderr or
 * a file (util/log.h). */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static FILE *log_fp;
static kh_log_level log_min = KH_LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

int kh_log_init(const char *path, kh_log_level min)
{
    log_min = min;
    if (!path) {
        log_fp = stderr;
        return 0;
    }
    FILE *fp = fopen(path, "ae");
    if (!fp)
        return -1;
    setvbuf(fp, NULL, _IOLBF, 0);
    log_fp = fp;
    return 0;
}

void kh_log_set_level(kh_log_level min) { log_min = min; }

int kh_log_level_parse(const char *s, kh_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (kh_log_level)i;
            return 0;
        }
    }
    return -1;
}

void kh_log(kh_log_level level, const char *event, const char *fmt, ...)
{
    if (level < log_min)
        return;
    FILE *fp = log_fp ? log_fp : stderr;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

    char line[2048];
    int n = snprintf(line, sizeof(line), "ts=%s.%03ldZ level=%s event=%s", when,
                     ts.tv_nsec / 1000000, level_names[level], event);
    if (n < 0)
        return;
    if (fmt && *fmt && (size_t)n < sizeof(line) - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    /* One line per entry: a newline inside a value must not forge an entry. */
    for (int i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, fp);
    fflush(fp);
}

const char *kh_log_quote(char *buf, size_t size, const char *value)
{
    size_t o = 0;
    if (size < 3) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const char *p = value ? value : ""; *p && o + 3 < size; p++) {
        if (*p == '"' || *p == '\\')
            buf[o++] = '\\';
        buf[o++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
