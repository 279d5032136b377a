/* console.h - a running VM's serial console: log and viewers.
 *
 * The daemon is the one client of QEMU's serial chardev socket. Output goes
 * to a bounded log file (console.log, at most log_max bytes: when it grows
 * past that the older half is dropped) and to every viewer; input from any
 * viewer goes to the guest. After a daemon restart the console is attached
 * again to the same QEMU socket. Output while no daemon listens is lost
 * (QEMU drops it; the guest never blocks), and the log says so: on
 * reattach a line "[kvmhost: console output from T1 to T2 UTC was not
 * captured: the daemon was not running]" (T1: the log's last write, T2:
 * now). Not QEMU's chardev logfile= instead: QEMU writes that file without
 * any bound (a chatty guest fills the disk), and after a daemon crash the
 * daemon could not tell which of its bytes the ring already holds.
 */
#ifndef KH_VM_CONSOLE_H
#define KH_VM_CONSOLE_H

#include <stddef.h>
#include <time.h>
#include <uv.h>

#include "util/err.h"

typedef struct kh_console kh_console;
typedef struct kh_console_viewer kh_console_viewer;

typedef struct kh_console_viewer_cbs {
    void (*on_output)(const void *data, size_t len, void *opaque);
    /* The console went away (VM stopped); the viewer is freed after. */
    void (*on_closed)(void *opaque);
} kh_console_viewer_cbs;

kh_console *kh_console_new(uv_loop_t *loop, const char *log_path, size_t log_max);
/* Close the chardev connection, tell viewers (on_closed), free. */
void kh_console_free(kh_console *con);
/* Take a connected socket to QEMU's serial chardev (the console owns it). */
int kh_console_attach_fd(kh_console *con, int fd, kh_err *err);
/* Append a line of our own to the log (not sent to the guest). */
void kh_console_note(kh_console *con, const char *text);
/* After a daemon restart (before any new output): append the line that
 * says output from the log's last write until now was not captured. */
void kh_console_note_gap(kh_console *con, time_t now);
/* That line, for the times given (UTC; the date too when they are on
 * different days), with CR LF around it. */
void kh_console_gap_text(char *buf, size_t size, time_t from, time_t to);
/* Send input to the guest. Dropped (with -1) when not attached or when over
 * 64 KiB are already waiting. */
int kh_console_write(kh_console *con, const void *data, size_t len);
kh_console_viewer *kh_console_add_viewer(kh_console *con, const kh_console_viewer_cbs *cbs,
                                         void *opaque);
/* Safe from inside a viewer callback. */
void kh_console_remove_viewer(kh_console *con, kh_console_viewer *v);
unsigned kh_console_viewer_count(const kh_console *con);

/* Read the last `tail` bytes (0: all) of a console log file. */
char *kh_console_log_read(const char *log_path, size_t tail, size_t *len, kh_err *err);

#endif
