/* proc.c - owns the facts about host processes read from /proc: start
 * times and liveness, command lines, RSS, CPU clock, disk statistics (host/proc.h). */
#include "host/proc.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "util/mem.h"

/* Read /proc/PID/stat; returns the state char and start time. */
static int read_stat(pid_t pid, char *state, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* comm may hold spaces and parens: parse from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    *state = *p;
    /* Fields after comm start at 3 (state); starttime is field 22. */
    int field = 3;
    while (*p && field < 22) {
        if (*p == ' ')
            field++;
        p++;
    }
    if (field != 22)
        return -1;
    *start = strtoull(p, NULL, 10);
    return 0;
}

unsigned long long kh_proc_start_time(pid_t pid)
{
    char st;
    unsigned long long start;
    if (pid <= 0 || read_stat(pid, &st, &start) < 0)
        return 0;
    return start;
}

bool kh_proc_alive(pid_t pid, unsigned long long start_time)
{
    char st;
    unsigned long long start;
    if (pid <= 0 || read_stat(pid, &st, &start) < 0)
        return false;
    return st != 'Z' && st != 'X' && start == start_time;
}

bool kh_proc_cmdline_has(pid_t pid, const char *needle)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    static char buf[65536];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
        if (strstr(buf + i, needle))
            return true;
    return false;
}

unsigned long kh_proc_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "re");
    if (!fp)
        return 0;
    unsigned long kib = 0;
    while (fgets(line, sizeof(line), fp)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtoul(line + 6, NULL, 10);
            break;
        }
    }
    fclose(fp);
    return kib;
}

unsigned kh_proc_cpu_khz(void)
{
    FILE *fp = fopen("/proc/cpuinfo", "re");
    if (!fp)
        return 0;
    char line[256];
    unsigned khz = 0;
    while (fgets(line, sizeof(line), fp)) {
        if (strncmp(line, "cpu MHz", 7) == 0) {
            const char *colon = strchr(line, ':');
            double mhz = colon ? strtod(colon + 1, NULL) : 0;
            if (mhz > 0 && mhz < 100000)
                khz = (unsigned)(mhz * 1000.0);
            break;
        }
    }
    fclose(fp);
    return khz;
}

/* diskstats names may hold '/', which /sys/block spells '!'. */
static bool whole_disk(const char *name)
{
    static const char *const skip[] = { "loop", "ram", "fd" };
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strncmp(name, skip[i], strlen(skip[i])) == 0)
            return false;
    char path[96];
    snprintf(path, sizeof(path), "/sys/block/%s", name);
    for (char *p = path + 11; *p; p++)
        if (*p == '/')
            *p = '!';
    return access(path, F_OK) == 0;
}

size_t kh_proc_diskstats(kh_proc_disk **out)
{
    *out = NULL;
    FILE *fp = fopen("/proc/diskstats", "re");
    if (!fp)
        return 0;
    char line[512];
    size_t n = 0, cap = 0;
    kh_proc_disk *v = NULL;
    while (fgets(line, sizeof(line), fp)) {
        kh_proc_disk d = { 0 };
        unsigned long long rsec = 0, wsec = 0;
        /* major minor name reads merged sectors ms writes merged sectors ms
         * in-flight io_ms ... (sectors are 512 bytes whatever the device) */
        if (sscanf(line, " %*u %*u %31s %llu %*u %llu %*u %llu %*u %llu %*u %*u %llu", d.name,
                   &d.reads, &rsec, &d.writes, &wsec, &d.io_ms) != 6 ||
            !whole_disk(d.name))
            continue;
        d.read_bytes = rsec * 512;
        d.write_bytes = wsec * 512;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[n++] = d;
    }
    fclose(fp);
    *out = v;
    return n;
}

size_t kh_proc_netdevs(kh_proc_netdev **out)
{
    *out = NULL;
    FILE *fp = fopen("/proc/net/dev", "re");
    if (!fp)
        return 0;
    char line[512];
    size_t n = 0, cap = 0;
    kh_proc_netdev *v = NULL;
    while (fgets(line, sizeof(line), fp)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue; /* the two header lines */
        *colon = '\0';
        const char *name = line;
        while (*name == ' ')
            name++;
        kh_proc_netdev d = { 0 };
        if (!*name || strlen(name) >= sizeof(d.name))
            continue;
        memcpy(d.name, name, strlen(name) + 1);
        if (sscanf(colon + 1, "%llu %llu %llu %llu %*u %*u %*u %*u %llu %llu %llu %llu",
                   &d.rx_bytes, &d.rx_packets, &d.rx_errs, &d.rx_drop, &d.tx_bytes,
                   &d.tx_packets, &d.tx_errs, &d.tx_drop) != 8)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[n++] = d;
    }
    fclose(fp);
    *out = v;
    return n;
}

bool kh_proc_fs_usage(const char *path, double *size, double *used, double *avail)
{
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return false;
    double bs = (double)sv.f_frsize;
    *size = (double)sv.f_blocks * bs;
    *used = (double)(sv.f_blocks - sv.f_bfree) * bs;
    *avail = (double)sv.f_bavail * bs;
    return true;
}

static unsigned long read_ulong(const char *path)
{
    FILE *fp = fopen(path, "re");
    unsigned long v = 0;
    if (!fp)
        return 0;
    if (fscanf(fp, "%lu", &v) != 1)
        v = 0;
    fclose(fp);
    return v;
}

void kh_proc_meminfo(double *total, double *avail)
{
    *total = *avail = 0;
    FILE *fp = fopen("/proc/meminfo", "re");
    if (!fp)
        return;
    char line[256];
    unsigned long long kib;
    while (fgets(line, sizeof(line), fp)) {
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            *total = (double)kib * 1024;
        else if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            *avail = (double)kib * 1024;
    }
    fclose(fp);
}

unsigned long kh_proc_hugepages_free(unsigned kib)
{
    char p[128];
    snprintf(p, sizeof(p), "/sys/kernel/mm/hugepages/hugepages-%ukB/free_hugepages", kib);
    unsigned long free_pages = read_ulong(p);
    snprintf(p, sizeof(p), "/sys/kernel/mm/hugepages/hugepages-%ukB/resv_hugepages", kib);
    unsigned long resv = read_ulong(p);
    return free_pages > resv ? free_pages - resv : 0;
}
