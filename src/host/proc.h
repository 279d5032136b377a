/* proc.h - facts about host processes from /proc. */
#ifndef KH_HOST_PROC_H
#define KH_HOST_PROC_H

#include <stdbool.h>
#include <stddef.h>
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

/* I/O counters of one whole block device (/proc/diskstats). */
typedef struct kh_proc_disk {
    char name[32];
    unsigned long long reads, read_bytes, writes, write_bytes, io_ms;
} kh_proc_disk;
/* The whole disks (those in /sys/block; partitions are not) except loop,
 * ram and floppy devices. *out gets a new array (the caller frees it);
 * returns its length, 0 when none or unreadable. */
size_t kh_proc_diskstats(kh_proc_disk **out);

/* Counters of one network interface (/proc/net/dev, this namespace). */
typedef struct kh_proc_netdev {
    char name[32];
    unsigned long long rx_bytes, rx_packets, rx_errs, rx_drop;
    unsigned long long tx_bytes, tx_packets, tx_errs, tx_drop;
} kh_proc_netdev;
/* Every interface, lo included. *out as for kh_proc_diskstats. */
size_t kh_proc_netdevs(kh_proc_netdev **out);

/* Huge pages of size kib (2048: 2 MiB) free and not reserved, from
 * /sys/kernel/mm/hugepages; 0 when that size does not exist. */
unsigned long kh_proc_hugepages_free(unsigned kib);

/* Host RAM total and available (MemTotal, MemAvailable of /proc/meminfo),
 * in bytes; 0 when unknown. "Used" is total - available everywhere
 * (dashboard, history, /metrics): page cache the kernel can drop is free. */
void kh_proc_meminfo(double *total, double *avail);

/* Size of the filesystem holding path, and its bytes used and available
 * to unprivileged users (statvfs). False when path cannot be examined. */
bool kh_proc_fs_usage(const char *path, double *size, double *used, double *avail);

#endif
