/* devbpf.h - the device allow-list of a cgroup v2: an eBPF program of type
 * BPF_PROG_TYPE_CGROUP_DEVICE attached to the VM's cgroup (cgroup v2 has
 * no devices.allow file; the kernel asks the attached programs instead).
 *
 * The program is built here, a few instructions per allowed node (as
 * systemd, crun and runc do), loaded and attached with libbpf's low-level
 * calls (bpf_prog_load, bpf_prog_attach with BPF_F_ALLOW_MULTI, so a
 * program of a parent cgroup still applies too). Every access (open,
 * mknod) of a device node not in the list is EPERM for the processes of
 * that cgroup, whatever the file's mode.
 */
#ifndef KH_HOST_DEVBPF_H
#define KH_HOST_DEVBPF_H

#include <stddef.h>

#include <linux/bpf.h>

#include "util/err.h"

typedef struct kh_devbpf_rule {
    char type; /* 'c' character, 'b' block */
    unsigned major, minor;
} kh_devbpf_rule;

/* The program allowing exactly the nodes of rules (any access) into out
 * (max instructions). Pure. The instruction count, or 0 when max is too
 * small. */
size_t kh_devbpf_build(const kh_devbpf_rule *rules, size_t n, struct bpf_insn *out, size_t max);

/* Load the program of rules and attach it to the cgroup directory dir
 * (a cgroup v2 one), then detach the device programs attached there
 * before (a VM's cgroup made again keeps one program). Returns 0, or -1
 * with err (the verifier's log when it refuses the program). */
int kh_devbpf_attach(const char *dir, const kh_devbpf_rule *rules, size_t n, kh_err *err);

/* The ids of the device programs attached to dir itself, into ids (max);
 * their count, or -1 with err. */
int kh_devbpf_query(const char *dir, unsigned *ids, size_t max, kh_err *err);

#endif
