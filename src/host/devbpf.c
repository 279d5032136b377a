/* devbpf.c - owns the cgroup v2 device programs (devbpf.h): building the
 * allow-list program, loading it and attaching it to a VM's cgroup with
 * libbpf, replacing the one attached before. */
#include "host/devbpf.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_INSNS 256
#define MAX_OLD 64

static struct bpf_insn insn(__u8 code, __u8 dst, __u8 src, __s16 off, __s32 imm)
{
    struct bpf_insn i = { .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm };
    return i;
}

/* struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32
 * major; u32 minor; } is in r1. r2 = type, r4 = major, r5 = minor; per
 * rule: three compares that skip to the next rule, then return 1. Return 0
 * after the last rule. */
size_t kh_devbpf_build(const kh_devbpf_rule *rules, size_t n, struct bpf_insn *out, size_t max)
{
    size_t need = 4 + 5 * n + 2;
    if (need > max)
        return 0;
    size_t k = 0;
    out[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_2, BPF_REG_1, 0, 0);
    out[k++] = insn(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xffff);
    out[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_4, BPF_REG_1, 4, 0);
    out[k++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_5, BPF_REG_1, 8, 0);
    for (size_t i = 0; i < n; i++) {
        __s32 type = rules[i].type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR;
        out[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, 4, type);
        out[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_4, 0, 3, (__s32)rules[i].major);
        out[k++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_5, 0, 2, (__s32)rules[i].minor);
        out[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1);
        out[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    }
    out[k++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
    out[k++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    return k;
}

static int open_dir(const char *dir, kh_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot open cgroup %s", dir);
    return fd;
}

static int query_fd(int cg, const char *dir, __u32 *ids, __u32 *cnt, kh_err *err)
{
    __u32 flags = 0;
    if (bpf_prog_query(cg, BPF_CGROUP_DEVICE, 0, &flags, ids, cnt) < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot list the device programs of %s", dir);
        return -1;
    }
    return 0;
}

int kh_devbpf_query(const char *dir, unsigned *ids, size_t max, kh_err *err)
{
    int cg = open_dir(dir, err);
    if (cg < 0)
        return -1;
    __u32 got[MAX_OLD];
    __u32 cnt = MAX_OLD;
    int rc = query_fd(cg, dir, got, &cnt, err);
    close(cg);
    if (rc < 0)
        return -1;
    for (__u32 i = 0; i < cnt && i < max; i++)
        ids[i] = got[i];
    return (int)(cnt < max ? cnt : max);
}

int kh_devbpf_attach(const char *dir, const kh_devbpf_rule *rules, size_t n, kh_err *err)
{
    struct bpf_insn prog[MAX_INSNS];
    size_t len = kh_devbpf_build(rules, n, prog, MAX_INSNS);
    if (!len) {
        kh_err_set(err, KH_E_INTERNAL, "too many device rules for one program");
        return -1;
    }
    int cg = open_dir(dir, err);
    if (cg < 0)
        return -1;
    __u32 old[MAX_OLD];
    __u32 nold = MAX_OLD;
    if (query_fd(cg, dir, old, &nold, err) < 0) {
        close(cg);
        return -1;
    }
    char log[4096] = "";
    /* LIBBPF_OPTS() would do this with a GNU statement expression (C11 here) */
    struct bpf_prog_load_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.sz = sizeof(opts);
    opts.log_buf = log;
    opts.log_size = sizeof(log);
    int pfd = bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE, "kh_devices", "GPL", prog, len, &opts);
    if (pfd < 0) {
        int e = errno;
        if (!log[0]) { /* the log is filled only when asked for: load again with it */
            opts.log_level = 1;
            int again = bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE, "kh_devices", "GPL", prog,
                                      len, &opts);
            if (again >= 0)
                close(again);
        }
        log[sizeof(log) - 1] = '\0';
        kh_err_errno(err, KH_E_INTERNAL, e, "cannot load the device program for %s%s%.300s",
                     dir, log[0] ? ": " : "", log);
        close(cg);
        return -1;
    }
    int rc = bpf_prog_attach(pfd, cg, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI);
    if (rc < 0) {
        kh_err_errno(err, KH_E_INTERNAL, errno, "cannot attach the device program to %s", dir);
    } else {
        for (__u32 i = 0; i < nold; i++) { /* the ones attached before this */
            int ofd = bpf_prog_get_fd_by_id(old[i]);
            if (ofd < 0)
                continue;
            if (bpf_prog_detach2(ofd, cg, BPF_CGROUP_DEVICE) < 0 && errno != ENOENT)
                rc = -1;
            close(ofd);
            if (rc < 0) {
                kh_err_errno(err, KH_E_INTERNAL, errno,
                             "cannot detach an old device program from %s", dir);
                break;
            }
        }
    }
    close(pfd); /* an attached program stays while the cgroup exists */
    close(cg);
    return rc < 0 ? -1 : 0;
}
