/* args.h - pure parsing of CLI argument values (no I/O, no daemon).
 *
 * Everything here is a function from strings to values, tested in
 * tests/unit/cli. Errors are KH_E_INVALID with a message that names the
 * option, ready to print after "kvmhost: error: ".
 */
#ifndef KH_CLI_ARGS_H
#define KH_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

/* One --disk value, parsed. */
typedef struct cli_disk {
    char *path;      /* owned, absolute and lexically normalised */
    char *format;    /* owned, "raw" or "qcow2" */
    bool readonly;
    char *volume;    /* owned, "pool/name" (volume=...): then path and format are NULL */
} cli_disk;

/* Parse a --disk SPEC (grammar in the help of `vm create`):
 *
 *   SPEC := ITEM[,ITEM]...    ITEM := PATH | path=PATH | format=raw|qcow2
 *                                   | readonly[=on|off|yes|no|true|false]
 *                                   | volume=POOL/NAME (instead of a path and format)
 *
 * A bare PATH is allowed only as the first item and is taken literally
 * ('=' included) unless it starts with "path=", "format=" or "readonly".
 * A ',' inside PATH is written ",," (the QEMU convention). format= is
 * required: formats are never guessed. Relative paths are made absolute
 * against cwd (which must be absolute). On success fills *out (release it
 * with cli_disk_clear) and returns 0; else -1 with err set. */
int cli_disk_parse(const char *spec, const char *cwd, cli_disk *out, kh_err *err);
void cli_disk_clear(cli_disk *d);

/* Make path absolute against cwd (when relative) and normalise it
 * lexically: "//" and "/./" collapse, "x/.." removes x (symlinks are not
 * looked at, as `realpath -s`), a trailing '/' goes. Never fails for a
 * non-empty path; the caller frees. */
char *cli_path_absolute(const char *path, const char *cwd);

/* A decimal integer in [min, max], all of s. `what` names the option in
 * the message ("--vcpus"). */
int cli_parse_int(const char *s, int64_t min, int64_t max, const char *what, int64_t *out,
                  kh_err *err);
/* A memory size in MiB: "512", "512M", "512MiB", "2G", "2GiB" (case-insensitive
 * suffix); the result is in MiB and at least 1. */
int cli_parse_mib(const char *s, const char *what, int64_t *out, kh_err *err);
/* Seconds as a decimal number >= 0 ("2", "0.5"). */
int cli_parse_seconds(const char *s, const char *what, double *out, kh_err *err);

#endif
