/* reattach.c - owns the adoption of instances after a daemon restart: is
 * the recorded process still the instance's (pid, start time, cmdline)?
 * Then strays in its cgroup go, the driver connects again and the runtime
 * files are read back; else the state is settled and the leftovers go. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "host/proc.h"
#include "instance/instance_int.h"
#include "util/log.h"

/* Kill any process left in the VM's cgroup that is not the recorded one. */
static void kill_strays(kh_inst *v)
{
    pid_t *pids = NULL;
    int n = kh_cgroups_vm_pids(v->mgr->cfg.cgroups, v->id, &pids, NULL);
    for (int i = 0; i < n; i++) {
        if (pids[i] == v->pid)
            continue;
        kh_log(KH_LOG_WARN, "vm.stray", "vm=%s pid=%d action=kill", v->spec->name, (int)pids[i]);
        kill(pids[i], SIGKILL);
    }
    free(pids);
}

void kh_reattach(kh_inst *v)
{
    kh_err err = KH_ERR_INIT;
    bool alive = v->pid > 0 && kh_proc_alive(v->pid, v->pid_start) &&
                 kh_proc_cmdline_has(v->pid, v->id);
    if (!alive) {
        bool had = v->pid > 0 || v->state != KH_INST_STOPPED;
        v->pid = 0;
        v->pid_start = 0;
        kill_strays(v);
        kh_runtime_cgroup_remove(v);
        kh_runtime_clear(v);
        if (had)
            kh_lifecycle_set_state(v, KH_INST_STOPPED,
                                   v->state == KH_INST_STARTING && !v->started_at
                                       ? "start interrupted by a daemon restart"
                                       : "QEMU exited while the daemon was down");
        return;
    }
    kill_strays(v);
    v->is_child = false;
    char *run = kh_runtime_run_path(v, NULL);
    int dirfd = open(run, O_PATH | O_DIRECTORY | O_CLOEXEC);
    free(run);
    if (kh_lifecycle_watch_pid(v, -1, &err) < 0 || dirfd < 0 || v->drv->reattach(v, dirfd, &err) < 0)
        goto fail;
    close(dirfd);
    kh_runtime_disk_nodes_load(v);
    kh_runtime_boot_load(v);
    kh_log(KH_LOG_INFO, "vm.reattach", "vm=%s pid=%d", v->spec->name, (int)v->pid);
    return;
fail:
    if (dirfd >= 0)
        close(dirfd);
    /* A process we cannot talk to is of no use and would hold the disks. */
    kh_log(KH_LOG_ERROR, "vm.reattach", "vm=%s pid=%d error=\"%s\" action=kill", v->spec->name,
           (int)v->pid, err.msg);
    kh_lifecycle_going_down(v, "killed: could not reattach after a daemon restart");
    v->drv->kill(v);
    if (v->pidfd < 0)
        kh_lifecycle_process_ended(v, -1);
}
