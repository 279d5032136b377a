/* proc.h - facts about host processes from /proc. */
#ifndef KH_HOST_PROC_H
#define KH_HOST_PROC_H

#include <stdbool.h>
#include <sys/types.h>

/* The process start time (field 22 of /proc/PID/stat, clock ticks since
 * boot): with the pid it names one process for its whole life. 0 when the
 * process does not exist. */
unsigned long long kh_proc_start_time(pid_t pid);
/* True when the process exists, is not a zombie and has the start time. */
bool kh_proc_alive(pid_t pid, unsigned long long start_time);
/* True when /proc/PID/cmdline contains needle as one whole argument or
 * inside one (used to recognise our QEMU by its -uuid). */
bool kh_proc_cmdline_has(pid_t pid, const char *needle);
/* The host CPU's clock in kHz from /proc/cpuinfo ("cpu MHz"), 0 if unknown. */
unsigned kh_proc_cpu_khz(void);
/* Resident set size of a process in KiB (VmRSS), 0 if unknown. */
unsigned long kh_proc_rss_kib(pid_t pid);

#endif
