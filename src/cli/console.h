/* console.h - the serial console of a VM over the daemon's WebSocket
 * (GET /api/v1/vms/{name}/console), client side, with wslay.
 *
 * Interactive (stdin is a tty): raw terminal, Ctrl-] detaches, the terminal
 * is restored on every exit path and on SIGINT/SIGTERM/SIGHUP/SIGQUIT.
 * Scripted (stdin is not a tty): stdin is forwarded verbatim until EOF,
 * output is copied to stdout until the server closes, a signal arrives or
 * the timeout passes. Read-only (`vm log --follow`): no stdin at all.
 * Plain http only: an https --url is refused (no TLS in the console).
 */
#ifndef KH_CLI_CONSOLE_H
#define KH_CLI_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>

#include "cli/client.h"
#include "util/err.h"

typedef struct cli_console_opts {
    const char *vm;   /* the VM name (not escaped) */
    bool read_only;   /* never read stdin, no banner, no raw mode */
    double timeout;   /* seconds; 0 = no limit */
} cli_console_opts;

/* Run a console session. Returns 0 when it ended normally (detach, server
 * closed, signal, timeout, stdout closed), -1 with err when the session
 * could not be set up (connect, handshake, error answer) or broke. */
int cli_console_run(cli_client *c, const cli_console_opts *o, kh_err *err);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2), into
 * out (at least 29 bytes). Pure; unit-tested. */
void cli_ws_accept_for_key(const char *key, char *out, size_t size);

/* The escape byte that detaches an interactive session: Ctrl-]. */
#define CLI_CONSOLE_ESCAPE 0x1d

#endif
