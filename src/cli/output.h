/* output.h - formatting for people: tables, key: value blocks, wrapped
 * text, sizes, durations, the progress bar. Pure (strings in, strings out)
 * except the few *_print helpers, so that the unit tests can check layout.
 */
#ifndef KH_CLI_OUTPUT_H
#define KH_CLI_OUTPUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* An aligned table: a header row and cells added left to right, top to
 * bottom. Columns are separated by two spaces and padded to the widest
 * cell (counted in UTF-8 characters); the last column is not padded. */
typedef struct cli_table cli_table;

cli_table *cli_table_new(size_t ncols, const char *const *headers);
void cli_table_free(cli_table *t);
/* Append one cell (a copy of s; NULL prints as "-"); rows fill in order. */
void cli_table_add(cli_table *t, const char *s);
void cli_table_addf(cli_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The rendered table, one line per row, each ending in '\n'. Caller frees. */
char *cli_table_render(const cli_table *t);

/* A "key: value" block; values are aligned after the longest key. A value
 * with '\n' continues on the following lines at the same column. */
typedef struct cli_kv cli_kv;

cli_kv *cli_kv_new(void);
void cli_kv_free(cli_kv *kv);
void cli_kv_add(cli_kv *kv, const char *key, const char *value);
void cli_kv_addf(cli_kv *kv, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Add every scalar of a JSON object, nested objects as "outer.inner",
 * arrays of scalars joined with ", ". Keys listed in skip (NULL-terminated,
 * may be NULL) are left out. */
void cli_kv_add_json(cli_kv *kv, const char *prefix, const json_t *obj,
                     const char *const *skip);
char *cli_kv_render(const cli_kv *kv);

/* A JSON scalar for people: strings as is, null "-", true/false "yes"/"no",
 * numbers plainly. Caller frees. NULL for objects and arrays. */
char *cli_json_scalar(const json_t *v);

/* Word-wrap text to width columns, each line indented by indent spaces.
 * '\n' in text starts a new line; an empty line is kept. A line whose
 * first character is a space is copied verbatim (for examples). */
void cli_wrap(FILE *f, const char *text, int indent, int width);

/* "256MiB", "2GiB", "1.5GiB", "1TiB". */
void cli_fmt_mib(int64_t mib, char *buf, size_t size);
/* A duration for people: "12s", "5m12s", "2h05m", "3d04h". */
void cli_fmt_duration(double seconds, char *buf, size_t size);
/* A span for people, to the minute: "3d 4h 12m", "4h 0m", "52m", "12s". */
void cli_fmt_span(double seconds, char *buf, size_t size);
/* When something expires, seen at now (both seconds since the epoch):
 * "in 52m", "3m ago", "never" (expires 0: dnsmasq's infinite lease). */
void cli_fmt_expiry(double expires, double now, char *buf, size_t size);
/* Bytes in one human style everywhere: "512 B", "196.0 KiB", "20.0 GiB". */
void cli_fmt_bytes(int64_t n, char *buf, size_t size);
/* A load-average array ([0.52, 0.4, 0.31]) as "0.52 0.40 0.31"; "-" if empty. */
void cli_fmt_load(const json_t *loads, char *buf, size_t size);
/* Parse an RFC 3339 time ("2026-11-22T07:50:00Z", fractions and
 * "+hh:mm" allowed) into seconds since the epoch; -1 if malformed. */
int cli_parse_time(const char *s, double *out);
/* The progress line, without '\r': "[#####     ]  40% waiting for QEMU",
 * cut to width columns. */
void cli_fmt_progress(int percent, const char *message, int width, char *buf, size_t size);

/* Print JSON pretty (2-space indent, order kept) followed by '\n'. */
void cli_print_json(FILE *f, const json_t *j);

#endif
