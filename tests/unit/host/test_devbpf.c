/* host/devbpf.c and the cgroup v2 path of host/cgroup.c against the real
 * kernel: the program's shape, then (as root) a cgroup2 hierarchy mounted
 * in a private mount namespace, a VM cgroup made by kh_cgroups_vm_create
 * (which attaches the device program; made again, it still holds one), and
 * a child moved into it that opens device nodes made with mknod in a test
 * dir: the allowed ones open, a denied one (kmsg, c 1:11) is EPERM though
 * the same node opens outside the cgroup, and mknod of a denied node is
 * EPERM. Without the program the denied node would open: this fails. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kh_test.h"

#include "host/cgroup.h"
#include "host/devbpf.h"
#include "util/fs.h"

static void test_build(void)
{
    struct bpf_insn p[64];
    size_t n = kh_devbpf_build(kh_cgroups_devices, kh_cgroups_ndevices, p, 64);
    CHECK(n == 4 + 5 * kh_cgroups_ndevices + 2);
    /* ends "r0 = 0; exit": deny what no rule allowed */
    CHECK(p[n - 2].code == (BPF_ALU64 | BPF_MOV | BPF_K) && p[n - 2].imm == 0);
    CHECK(p[n - 1].code == (BPF_JMP | BPF_EXIT));
    /* the first rule: char 1:3, each compare skipping to the next rule */
    CHECK(p[4].imm == BPF_DEVCG_DEV_CHAR && p[4].off == 4);
    CHECK(p[5].imm == 1 && p[5].off == 3 && p[6].imm == 3 && p[6].off == 2);
    CHECK(p[7].imm == 1 && p[8].code == (BPF_JMP | BPF_EXIT));
    CHECK(kh_devbpf_build(kh_cgroups_devices, kh_cgroups_ndevices, p, 10) == 0);
}

static char tmp[] = "/tmp/kh-devbpf-XXXXXX";

/* In the child (in the VM cgroup): bit 1 null did not open, 2 kmsg opened
 * or not with EPERM, 4 mknod of a denied node was not EPERM, 8 the move
 * failed. */
static int child(const kh_cgroups *cg)
{
    if (kh_cgroups_vm_enter_self(cg, "t1") < 0)
        return 8;
    int bad = 0;
    char p[300];
    snprintf(p, sizeof(p), "%s/null", tmp);
    int fd = open(p, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        bad |= 1;
    else
        close(fd);
    snprintf(p, sizeof(p), "%s/kmsg", tmp);
    fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0 || errno != EPERM)
        bad |= 2;
    if (fd >= 0)
        close(fd);
    snprintf(p, sizeof(p), "%s/kmsg2", tmp);
    if (mknod(p, S_IFCHR | 0600, makedev(1, 11)) == 0 || errno != EPERM)
        bad |= 4;
    return bad;
}

static void test_cgroup2(void)
{
    if (geteuid() != 0) {
        printf("# skip: the cgroup2 part needs root\n");
        return;
    }
    CHECK(mkdtemp(tmp) != NULL);
    /* a private mount namespace: the cgroup2 mount ends with this process */
    CHECK(unshare(CLONE_NEWNS) == 0);
    CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
    char mnt[300], p[400];
    snprintf(mnt, sizeof(mnt), "%s/cg2", tmp);
    CHECK(mkdir(mnt, 0755) == 0);
    if (mount("none", mnt, "cgroup2", 0, NULL) != 0) {
        printf("not ok - mount cgroup2 at %s: %s\n", mnt, strerror(errno));
        CHECK(0);
        return;
    }
    char root[64];
    snprintf(root, sizeof(root), "kh-devbpf-%d", (int)getpid());
    kh_cgroups cg;
    kh_cgroups_detect(&cg, mnt, root);
    CHECK(cg.version == 2);
    kh_err err = KH_ERR_INIT;
    CHECK(kh_cgroups_vm_create(&cg, "t1", &err) == 0);
    if (err.code)
        printf("# %s\n", err.msg);
    char dir[600];
    CHECK(kh_cgroups_vm_dir(&cg, "t1", NULL, dir, sizeof(dir)) == 0);
    unsigned ids[8];
    CHECK(kh_devbpf_query(dir, ids, 8, &err) == 1);
    /* made again (a VM started again): the old program is replaced */
    unsigned first = ids[0];
    CHECK(kh_cgroups_vm_create(&cg, "t1", &err) == 0);
    CHECK(kh_devbpf_query(dir, ids, 8, &err) == 1 && ids[0] != first);

    snprintf(p, sizeof(p), "%s/null", tmp);
    CHECK(mknod(p, S_IFCHR | 0666, makedev(1, 3)) == 0);
    snprintf(p, sizeof(p), "%s/kmsg", tmp);
    CHECK(mknod(p, S_IFCHR | 0600, makedev(1, 11)) == 0);
    /* outside the cgroup the denied node opens: the refusal below is the
     * program's, not the file's or the mount's */
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);

    pid_t pid = fork();
    if (pid == 0)
        _exit(child(&cg));
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    int bad = WIFEXITED(st) ? WEXITSTATUS(st) : 255;
    CHECK((bad & 8) == 0); /* moved into the cgroup */
    CHECK((bad & 1) == 0); /* null (allowed) opens */
    CHECK((bad & 2) == 0); /* kmsg (denied) is EPERM */
    CHECK((bad & 4) == 0); /* mknod of a denied node is EPERM */

    CHECK(kh_cgroups_vm_remove(&cg, "t1", &err) == 0);
    snprintf(p, sizeof(p), "%s/%s", mnt, root);
    CHECK(rmdir(p) == 0);
    CHECK(umount2(mnt, MNT_DETACH) == 0);
    kh_fs_rm_rf(tmp, NULL);
}

int main(void)
{
    RUN(test_build);
    RUN(test_cgroup2);
    TEST_DONE();
}
