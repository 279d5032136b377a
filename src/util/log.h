/* log.h - structured logs in logfmt (key=value) to stderr or a file.
 *
 *   kh_log(KH_LOG_INFO, "vm.start", "vm=%s pid=%d", name, pid);
 *   -> ts=2026-11-22T07:50:00.123Z level=info event=vm.start vm=web1 pid=42
 *
 * Values that may hold spaces are quoted by the caller with kh_log_quote().
 * Secrets (tokens, keys) are never passed to the log.
 */
#ifndef KH_UTIL_LOG_H
#define KH_UTIL_LOG_H

#include <stddef.h>

typedef enum kh_log_level {
    KH_LOG_DEBUG,
    KH_LOG_INFO,
    KH_LOG_WARN,
    KH_LOG_ERROR,
} kh_log_level;

/* Open the destination (NULL = stderr) and the minimum level. */
int kh_log_init(const char *path, kh_log_level min);
void kh_log_set_level(kh_log_level min);
int kh_log_level_parse(const char *s, kh_log_level *out);
void kh_log(kh_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Quote a value for logfmt into buf ("a b" -> "\"a b\""); returns buf. */
const char *kh_log_quote(char *buf, size_t size, const char *value);

#endif
