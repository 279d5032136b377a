/* live.c - owns the limits applied on the host side to a live instance
 * (cgroup values, tap rates) and their undo: a change is all or nothing,
 * and one that may not stay (the store refused it) is put back. The limits
 * the driver applies itself (disk I/O, pinning, balloon) follow through
 * its limits_changed operation once the change is stored. */
#include "instance/instance_int.h"
#include "instance/quota.h"
#include "util/log.h"

int kh_live_apply(kh_inst *v, const kh_limits *old, const kh_limits *next, kh_err *err)
{
    const kh_cgroups *cg = v->mgr->cfg.cgroups;
    if (kh_quota_apply_cgroup(cg, v->id, next, err) < 0 ||
        kh_bindings_nic_rates(v, old, next, err) < 0) {
        /* Put back what was there. */
        kh_live_undo(v, next, old);
        return -1;
    }
    return 0;
}

void kh_live_undo(kh_inst *v, const kh_limits *applied, const kh_limits *old)
{
    kh_quota_apply_cgroup(v->mgr->cfg.cgroups, v->id, old, NULL);
    kh_err e = KH_ERR_INIT;
    if (kh_bindings_nic_rates(v, applied, old, &e) < 0)
        kh_log(KH_LOG_WARN, "vm.limits", "vm=%s undo=\"%s\"", v->spec->name, e.msg);
}
