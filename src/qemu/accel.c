/* accel.c - decide between KVM and TCG by running a tiny guest.
 *
 * A child process opens the device, creates a VM with one vCPU and runs
 * the test guest in two phases on that vCPU:
 *
 *  1. Real mode: the guest installs IVT entry 6 (#UD) itself, executes
 *     ud2, and the handler pops the IP the CPU pushed and writes
 *     IP ^ 0xa5a5 to port 0x510. Only an exception delivered through the
 *     guest's own table gives that value.
 *  2. Long mode with paging (what a kernel runs in): the guest writes one
 *     word into each 4 KiB page of 8 MiB, spins 50 million times around a
 *     dec/jnz loop, then takes #UD through a 64-bit IDT gate; the handler
 *     writes RIP ^ 0xa5a5 to port 0x511. Hardware does that in tens of
 *     ms. A KVM that emulates instructions (a paravirtual one, seen in
 *     sandboxes: about a million instructions a second; it passes phase 1
 *     and then a Linux guest crawls through clearing its BSS) cannot finish
 *     it in time, and the reason says how far it got.
 *
 * The child reports a fixed-size verdict through a pipe; the guest run is
 * bounded by an interval timer in the child (PROBE_RUN_MS) and the child
 * as a whole by the parent (PROBE_TIMEOUT_MS, then SIGKILL). The child does
 * not allocate: it is forked from a threaded daemon.
 */
#include "qemu/accel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/misc.h"

#define PROBE_TIMEOUT_MS 1500 /* the whole child, from fork */
#define PROBE_RUN_MS 1000     /* the long-mode phase inside the child */
#define PROBE_XOR 0xa5a5

/* Guest physical layout. */
#define GPA_GDT 0x0500
#define GPA_PML4 0x1000
#define GPA_PDPT 0x2000
#define GPA_PD 0x3000
#define GPA_IDT 0x4000
#define GPA_CODE64 0x6000
#define GPA_HANDLER64 0x6100
#define GPA_STACK64 0x8000
#define GPA_CODE16 0x9000
#define GPA_HANDLER16 0x9100
#define GPA_STACK16 0xa000
#define GPA_TOUCH 0x100000
#define TOUCH_PAGES 2048 /* 8 MiB */
#define MEM_SIZE (GPA_TOUCH + TOUCH_PAGES * 4096)

#define PORT16 0x0510
#define PORT64 0x0511
#define UD2_16 (GPA_CODE16 + 12)
#define UD2_64 (GPA_CODE64 + 35)
#define PAGE_LOOP_START (GPA_CODE64 + 12)
#define SPIN_LOOP_START (GPA_CODE64 + 26)
#define SPIN_LOOPS 50000000u /* dec+jnz: tens of ms on hardware */

/* What the child writes to the pipe. */
typedef struct verdict {
    int32_t kvm; /* 1: KVM works */
    char reason[200];
} verdict;

static const unsigned char code16[] = {
    0xc7, 0x06, 0x18, 0x00, 0x00, 0x91, /* mov word [0x18], 0x9100 */
    0xc7, 0x06, 0x1a, 0x00, 0x00, 0x00, /* mov word [0x1a], 0x0000 */
    0x0f, 0x0b,                         /* ud2 (UD2_16) */
    0xf4,                               /* hlt */
};

static const unsigned char handler16[] = {
    0x58,             /* pop ax: the pushed IP */
    0x35, 0xa5, 0xa5, /* xor ax, 0xa5a5 */
    0xba, 0x10, 0x05, /* mov dx, 0x510 */
    0xef,             /* out dx, ax */
    0xf4,             /* hlt */
};

static const unsigned char code64[] = {
    0x48, 0xc7, 0xc7, 0x00, 0x00, 0x10, 0x00, /* mov rdi, GPA_TOUCH */
    0xb9, 0x00, 0x08, 0x00, 0x00,             /* mov ecx, TOUCH_PAGES */
    0x48, 0x89, 0x3f,                         /* 1: mov [rdi], rdi    (+12) */
    0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, /*    add rdi, 4096 */
    0xff, 0xc9,                               /*    dec ecx */
    0x75, 0xf2,                               /*    jnz 1b */
    0xb9, 0x80, 0xf0, 0xfa, 0x02,             /* mov ecx, SPIN_LOOPS  (+26) */
    0xff, 0xc9,                               /* 2: dec ecx           (+31) */
    0x75, 0xfc,                               /*    jnz 2b */
    0x0f, 0x0b,                               /* ud2 (UD2_64)         (+35) */
    0xf4,                                     /* hlt */
};

static const unsigned char handler64[] = {
    0x48, 0x8b, 0x04, 0x24, /* mov rax, [rsp]: the pushed RIP */
    0x66, 0x35, 0xa5, 0xa5, /* xor ax, 0xa5a5 */
    0x66, 0xba, 0x11, 0x05, /* mov dx, 0x511 */
    0x66, 0xef,             /* out dx, ax */
    0xf4,                   /* hlt */
};

static volatile sig_atomic_t run_expired;

static void on_alarm(int sig)
{
    (void)sig;
    run_expired = 1;
}

static void vset(verdict *v, int kvm, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void vset(verdict *v, int kvm, const char *fmt, ...)
{
    va_list ap;
    v->kvm = kvm;
    va_start(ap, fmt);
    vsnprintf(v->reason, sizeof(v->reason), fmt, ap);
    va_end(ap);
}

/* strerrordesc_np returns a static string: safe after fork. */
static const char *errdesc(int e)
{
    const char *s = strerrordesc_np(e);
    return s ? s : "unknown error";
}

static const char *exit_name(uint32_t reason)
{
    switch (reason) {
    case KVM_EXIT_UNKNOWN: return "UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "EXCEPTION";
    case KVM_EXIT_IO: return "IO";
    case KVM_EXIT_HLT: return "HLT";
    case KVM_EXIT_MMIO: return "MMIO";
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    default: return "other";
    }
}

static void seg(struct kvm_segment *s, uint16_t selector, uint8_t type, int mode64)
{
    memset(s, 0, sizeof(*s));
    s->selector = selector;
    s->type = type;
    s->present = 1;
    s->s = 1;
    if (mode64) {
        s->limit = 0xffffffff;
        s->g = 1;
        s->l = selector == 0x08;
        s->db = selector != 0x08;
    } else {
        s->limit = 0xffff;
    }
}

/* One KVM_RUN, expecting a 16-bit OUT of `want` on `port`. 0 if so; -1
 * with v set; -2 when the run timer expired first. */
static int run_expect(int vcpu, struct kvm_run *run, int run_size, uint16_t port,
                      uint16_t want, const char *phase, verdict *v)
{
    int r;
    do {
        r = ioctl(vcpu, KVM_RUN, 0);
    } while (r < 0 && (errno == EINTR || errno == EAGAIN) && !run_expired);
    if (r < 0 && run_expired)
        return -2; /* the caller says how far the guest got */
    if (r < 0) {
        vset(v, 0, "KVM_RUN failed in %s: %s", phase, errdesc(errno));
        return -1;
    }
    if (run->exit_reason != KVM_EXIT_IO) {
        vset(v, 0, "test guest did not deliver an exception in %s (exit reason %u, %s)",
             phase, run->exit_reason, exit_name(run->exit_reason));
        return -1;
    }
    uint16_t value = 0;
    if (run->io.size == 2 && run->io.count == 1 && run->io.data_offset + 2 <= (uint64_t)run_size)
        memcpy(&value, (unsigned char *)run + run->io.data_offset, 2);
    if (run->io.port != port || run->io.direction != KVM_EXIT_IO_OUT || value != want) {
        vset(v, 0,
             "test guest did not deliver an exception in %s (port I/O %s 0x%x size %u "
             "value 0x%x)",
             phase, run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in", run->io.port,
             run->io.size, value);
        return -1;
    }
    return 0;
}
/* Phase 1: real mode, the guest installs its IVT entry. */
static int phase_real(int vcpu, struct kvm_run *run, int run_size, unsigned char *mem,
                      verdict *v)
{
    memcpy(mem + GPA_CODE16, code16, sizeof(code16));
    memcpy(mem + GPA_HANDLER16, handler16, sizeof(handler16));
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) {
        vset(v, 0, "KVM_GET_SREGS failed: %s", errdesc(errno));
        return -1;
    }
    seg(&sregs.cs, 0, 0xb, 0);
    seg(&sregs.ds, 0, 0x3, 0);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.idt.base = 0;
    sregs.idt.limit = 0x3ff;
    sregs.cr0 &= ~(uint64_t)0x80000001; /* PE, PG off */
    struct kvm_regs regs;
    memset(&regs, 0, sizeof(regs));
    regs.rip = GPA_CODE16;
    regs.rsp = GPA_STACK16;
    regs.rflags = 0x2;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0) {
        vset(v, 0, "cannot set up real mode: %s", errdesc(errno));
        return -1;
    }
    int r = run_expect(vcpu, run, run_size, PORT16, UD2_16 ^ PROBE_XOR, "real mode", v);
    if (r == -2)
        vset(v, 0, "test guest hung in real mode");
    return r < 0 ? -1 : 0;
}

/* Phase 2: long mode with paging, touching TOUCH_PAGES pages. */
static int phase_long(int vcpu, struct kvm_run *run, int run_size, unsigned char *mem,
                      verdict *v)
{
    uint64_t *pml4 = (uint64_t *)(void *)(mem + GPA_PML4);
    uint64_t *pdpt = (uint64_t *)(void *)(mem + GPA_PDPT);
    uint64_t *pd = (uint64_t *)(void *)(mem + GPA_PD);
    pml4[0] = GPA_PDPT | 0x3; /* present, writable */
    pdpt[0] = GPA_PD | 0x3;
    for (uint64_t i = 0; i < (MEM_SIZE + (2u << 20) - 1) / (2u << 20); i++)
        pd[i] = (i << 21) | 0x83; /* 2 MiB pages */
    static const uint64_t gdt[] = { 0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL };
    memcpy(mem + GPA_GDT, gdt, sizeof(gdt));
    unsigned char *gate = mem + GPA_IDT + 6 * 16; /* #UD: interrupt gate to 0x08:handler */
    memset(gate, 0, 16);
    gate[0] = GPA_HANDLER64 & 0xff;
    gate[1] = (GPA_HANDLER64 >> 8) & 0xff;
    gate[2] = 0x08;
    gate[5] = 0x8e;
    memcpy(mem + GPA_CODE64, code64, sizeof(code64));
    memcpy(mem + GPA_HANDLER64, handler64, sizeof(handler64));

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) {
        vset(v, 0, "KVM_GET_SREGS failed: %s", errdesc(errno));
        return -1;
    }
    seg(&sregs.cs, 0x08, 0xb, 1);
    seg(&sregs.ds, 0x10, 0x3, 1);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.gdt.base = GPA_GDT;
    sregs.gdt.limit = sizeof(gdt) - 1;
    sregs.idt.base = GPA_IDT;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr3 = GPA_PML4;
    sregs.cr4 = 0x20;          /* PAE */
    sregs.cr0 = 0x80050033;    /* PG, AM, WP, NE, ET, MP, PE */
    sregs.efer = 0x500;        /* LMA, LME */
    struct kvm_regs regs;
    memset(&regs, 0, sizeof(regs));
    regs.rip = GPA_CODE64;
    regs.rsp = GPA_STACK64;
    regs.rflags = 0x2;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0) {
        vset(v, 0, "cannot set up long mode: %s", errdesc(errno));
        return -1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm; /* no SA_RESTART: KVM_RUN returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigprocmask(SIG_UNBLOCK, &alrm, NULL); /* the daemon may block it */
    struct itimerval it = { { 0, 0 }, { PROBE_RUN_MS / 1000, (PROBE_RUN_MS % 1000) * 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    int r = run_expect(vcpu, run, run_size, PORT64, UD2_64 ^ PROBE_XOR, "long mode", v);
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    if (r == -2) {
        struct kvm_regs now;
        if (ioctl(vcpu, KVM_GET_REGS, &now) < 0)
            memset(&now, 0, sizeof(now));
        uint32_t left = (uint32_t)now.rcx;
        if (now.rip >= SPIN_LOOP_START && left <= SPIN_LOOPS)
            vset(v, 0,
                 "test guest too slow: %u of %u loop iterations in %.1f s (hardware: tens "
                 "of ms); this KVM cannot run full guests at speed",
                 SPIN_LOOPS - left, SPIN_LOOPS, PROBE_RUN_MS / 1000.0);
        else if (now.rip >= PAGE_LOOP_START && left <= TOUCH_PAGES)
            vset(v, 0,
                 "test guest too slow: it wrote %u of %u pages in %.1f s; this KVM cannot "
                 "run full guests at speed",
                 TOUCH_PAGES - left, TOUCH_PAGES, PROBE_RUN_MS / 1000.0);
        else
            vset(v, 0, "test guest too slow: not done after %.1f s (rip 0x%llx)",
                 PROBE_RUN_MS / 1000.0, (unsigned long long)now.rip);
        return -1;
    }
    if (r < 0)
        return -1;
    uint64_t first, last;
    memcpy(&first, mem + GPA_TOUCH, sizeof(first));
    memcpy(&last, mem + GPA_TOUCH + (TOUCH_PAGES - 1) * 4096, sizeof(last));
    if (first != GPA_TOUCH || last != GPA_TOUCH + (TOUCH_PAGES - 1) * 4096ULL) {
        vset(v, 0, "test guest memory writes did not reach host memory");
        return -1;
    }
    return 0;
}

/* Give the vCPU the host's supported CPUID (long mode among it), as QEMU
 * does; without it some kernels refuse EFER.LME. Best effort: a failure
 * shows up as a failed phase. Static buffer: no allocation in the child. */
static void set_cpuid(int kvm, int vcpu)
{
    enum { MAX_ENTRIES = 256 };
    /* kvm_cpuid2 ends in a flexible array: back it with aligned storage. */
    static union {
        struct kvm_cpuid2 head;
        unsigned char bytes[sizeof(struct kvm_cpuid2) +
                            MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2)];
    } cpuid;
    memset(&cpuid, 0, sizeof(cpuid));
    cpuid.head.nent = MAX_ENTRIES;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) == 0)
        ioctl(vcpu, KVM_SET_CPUID2, &cpuid);
}

/* Run the test guest; fills v. Runs in the child. */
static void probe_child(const char *dev, verdict *v)
{
    int kvm = open(dev, O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        int e = errno;
        if (e == ENOENT || e == ENODEV || e == ENXIO)
            vset(v, 0, "%s not present", dev);
        else if (e == EACCES || e == EPERM)
            vset(v, 0, "permission denied opening %s", dev);
        else
            vset(v, 0, "cannot open %s: %s", dev, errdesc(e));
        return;
    }
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        vset(v, 0, "%s: KVM API version %d, expected %d", dev, api, KVM_API_VERSION);
        return;
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        vset(v, 0, "KVM_CREATE_VM failed: %s", errdesc(errno));
        return;
    }
    unsigned char *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        vset(v, 0, "cannot map guest memory: %s", errdesc(errno));
        return;
    }
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = MEM_SIZE,
        .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        vset(v, 0, "KVM_SET_USER_MEMORY_REGION failed: %s", errdesc(errno));
        return;
    }
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) {
        vset(v, 0, "KVM_CREATE_VCPU failed: %s", errdesc(errno));
        return;
    }
    set_cpuid(kvm, vcpu);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run)) {
        vset(v, 0, "KVM_GET_VCPU_MMAP_SIZE failed: %s", errdesc(errno));
        return;
    }
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                               vcpu, 0);
    if (run == MAP_FAILED) {
        vset(v, 0, "cannot map kvm_run: %s", errdesc(errno));
        return;
    }
    if (phase_real(vcpu, run, run_size, mem, v) < 0 ||
        phase_long(vcpu, run, run_size, mem, v) < 0)
        return;
    vset(v, 1, "KVM runs guests: the test guest took #UD through its IVT and its 64-bit "
               "IDT, wrote %u MiB and ran %u M loop iterations at speed", TOUCH_PAGES / 256,
         SPIN_LOOPS / 1000000);
}

static void result(kh_accel_probe *out, kh_accel a, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void result(kh_accel_probe *out, kh_accel a, const char *fmt, ...)
{
    va_list ap;
    out->accel = a;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
}

/* Read the verdict, waiting until deadline (monotonic ms). 1: got it; 0:
 * timed out; -1: the child closed the pipe without a verdict. */
static int read_verdict(int fd, verdict *v, uint64_t deadline)
{
    size_t got = 0;
    while (got < sizeof(*v)) {
        uint64_t now = kh_now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd pfd = { fd, POLLIN, 0 };
        int pr = poll(&pfd, 1, (int)(deadline - now));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return pr == 0 ? 0 : -1;
        ssize_t n = read(fd, (char *)v + got, sizeof(*v) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 1;
}

void kh_accel_probe_run(const char *dev, kh_accel_probe *out)
{
    if (!dev)
        dev = "/dev/kvm";
    const char *force = getenv("KVMHOST_ACCEL");
    if (force && strcmp(force, "tcg") == 0) {
        result(out, KH_ACCEL_TCG, "forced by KVMHOST_ACCEL=tcg");
        return;
    }
    if (force && strcmp(force, "kvm") == 0) {
        result(out, KH_ACCEL_KVM, "forced by KVMHOST_ACCEL=kvm");
        return;
    }
    char prefix[96] = "";
    if (force && *force)
        snprintf(prefix, sizeof(prefix), "KVMHOST_ACCEL=%.40s ignored (not tcg or kvm); ", force);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        result(out, KH_ACCEL_TCG, "%scannot probe KVM: pipe: %s", prefix, strerror(errno));
        return;
    }
    uint64_t start = kh_now_ms();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        result(out, KH_ACCEL_TCG, "%scannot probe KVM: fork: %s", prefix, strerror(e));
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        verdict v;
        memset(&v, 0, sizeof(v));
        probe_child(dev, &v);
        ssize_t w = write(fds[1], &v, sizeof(v));
        _exit(w == (ssize_t)sizeof(v) ? 0 : 1);
    }
    close(fds[1]);
    verdict v;
    memset(&v, 0, sizeof(v));
    int got = read_verdict(fds[0], &v, start + PROBE_TIMEOUT_MS);
    close(fds[0]);
    int status = 0;
    if (got != 1)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    uint64_t ms = kh_now_ms() - start;
    v.reason[sizeof(v.reason) - 1] = '\0';
    if (got == 1)
        result(out, v.kvm == 1 ? KH_ACCEL_KVM : KH_ACCEL_TCG, "%s%s (probe %llu ms)", prefix,
               v.reason, (unsigned long long)ms);
    else if (got == 0)
        result(out, KH_ACCEL_TCG, "%stest guest hung for %.1f s", prefix,
               PROBE_TIMEOUT_MS / 1000.0);
    else if (WIFSIGNALED(status))
        result(out, KH_ACCEL_TCG, "%sKVM probe process died of signal %d", prefix,
               WTERMSIG(status));
    else
        result(out, KH_ACCEL_TCG, "%sKVM probe process exited (%d) without a verdict", prefix,
               WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}
