/* migrate_fsm.c - owns the live-migration phase machine: one table of
 * (role, phase, event, guards) -> (next phase, actions), read top to
 * bottom, first match wins. Pure: no I/O (instance/migrate.c runs it).
 *
 * The rules the table keeps (tests/unit/instance/test_migrate_fsm.c checks
 * them against a simulator with a failure or a kill -9 injected at every
 * step):
 *  - Before `switch` the owner is the source (the owner txn is only sent in
 *    switch): every failure, cancel or restart rolls back without reading
 *    etcd; the source resumes its guest, the target kills its QEMU and
 *    deletes the disks it made. This holds even when the source's QEMU
 *    already completed in `memory` (shared storage migrates without
 *    pause-before-switchover): no txn was sent, so the target can never be
 *    committed and the source's copy is the only one that may run.
 *  - In `switch` only the owner decides. The source sends the owner txn
 *    after QEMU says completed; a restart or a failure fences (below) and
 *    the answer decides: T -> finish (forward), S -> roll back, unknown ->
 *    fence again later, never resume nor kill while unknown.
 *  - The fence (KH_MIG_A_FENCE_TXN) marks the migration aborted in etcd
 *    with a CAS that the owner txn also compares: once fenced the owner txn
 *    can no longer win, so a side that rolls back after reading "owner S"
 *    cannot be overtaken by a late txn. Its answer comes back as
 *    KH_MIG_EV_OWNER (S: fenced, T: the owner moved first).
 *  - The target resumes the guest (T_CONT) only after a commit or a
 *    restart that read owner T; the source resumes only on the rollback
 *    path, which after switch is entered only with owner S and fenced.
 */
#include "instance/migrate_fsm.h"

#include <stddef.h>
#include <string.h>

#include "util/mem.h"

/* Guards: 0 = any. */
enum { ANY = 0, YES, NO };
enum { OWN_ANY = 0, OWN_UNKNOWN, OWN_S, OWN_T, OWN_OTHER };

typedef struct row {
    kh_mig_role role;
    kh_mig_phase phase;
    kh_mig_event ev;
    unsigned char owner;  /* OWN_* */
    unsigned char local;  /* facts.local_disks */
    unsigned char sent;   /* facts.owner_txn_sent */
    unsigned char alive;  /* facts.qemu_alive */
    kh_mig_phase next;
    uint32_t actions;
} row;

#define S KH_MIG_SOURCE
#define T KH_MIG_TARGET
#define EV KH_MIG_A_EVENT
#define FAIL KH_MIG_A_REPORT_FAIL
#define LATER KH_MIG_A_RETRY_LATER

/* The source's way back before the commit: stop what runs toward the
 * target, resume the guest, tell the target to clean up. */
#define SRC_BACK (KH_MIG_A_MIRROR_CANCEL | KH_MIG_A_MIGRATE_CANCEL | KH_MIG_A_NBD_DEL | \
                  KH_MIG_A_RESUME | KH_MIG_A_T_ABORT | EV)
/* The source's way forward after the commit: let the target run, drop
 * the source's QEMU and definition (local disk copies: one more bit). */
#define SRC_FWD (KH_MIG_A_T_COMMIT | KH_MIG_A_KILL | KH_MIG_A_FORGET | EV)
/* The target's way back: its QEMU, the disks it made, the definition. */
#define TGT_BACK (KH_MIG_A_KILL | KH_MIG_A_DISKS_DELETE | KH_MIG_A_FORGET | EV)
/* The target's way forward: stop serving NBD, run, take the VM over. */
#define TGT_FWD (KH_MIG_A_T_NBD_STOP | KH_MIG_A_T_CONT | KH_MIG_A_T_RECONCILE | EV)

static const row table[] = {
    /* ---- source: the way forward ---- */
    /* the dirty-rate measurement and the target's prepare run side by
     * side; migrate.c feeds PREPARED once both are in (DIRTY_OK alone
     * changes nothing; DIRTY_HIGH rolls back, which aborts the target) */
    { S, KH_MIG_NONE, KH_MIG_EV_START, 0, 0, 0, 0, KH_MIG_PREPARE,
      KH_MIG_A_DIRTY_RATE | KH_MIG_A_T_PREPARE | EV },
    { S, KH_MIG_PREPARE, KH_MIG_EV_DIRTY_OK, 0, 0, 0, 0, KH_MIG_PREPARE, 0 },
    { S, KH_MIG_PREPARE, KH_MIG_EV_DIRTY_HIGH, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_PREPARE, KH_MIG_EV_PREPARED, 0, YES, 0, 0, KH_MIG_DISKS,
      KH_MIG_A_NBD_ADD | KH_MIG_A_MIRROR | EV },
    { S, KH_MIG_PREPARE, KH_MIG_EV_PREPARED, 0, NO, 0, 0, KH_MIG_MEMORY, KH_MIG_A_MIGRATE | EV },
    { S, KH_MIG_DISKS, KH_MIG_EV_DISKS_READY, 0, 0, 0, 0, KH_MIG_MEMORY, KH_MIG_A_MIGRATE | EV },
    { S, KH_MIG_MEMORY, KH_MIG_EV_PRESWITCHOVER, 0, YES, 0, 0, KH_MIG_SWITCH,
      KH_MIG_A_MIRROR_CANCEL | KH_MIG_A_CONTINUE | EV },
    { S, KH_MIG_MEMORY, KH_MIG_EV_PRESWITCHOVER, 0, NO, 0, 0, KH_MIG_SWITCH,
      KH_MIG_A_CONTINUE | EV },
    /* shared storage: no pause before the switch-over, QEMU completes on
     * its own (the target stays paused until the commit): the owner txn at
     * once, nothing else in the guest's downtime */
    { S, KH_MIG_MEMORY, KH_MIG_EV_COMPLETED, 0, NO, 0, 0, KH_MIG_SWITCH,
      KH_MIG_A_OWNER_TXN | EV },
    { S, KH_MIG_SWITCH, KH_MIG_EV_COMPLETED, 0, 0, NO, 0, KH_MIG_SWITCH, KH_MIG_A_OWNER_TXN },
    /* ---- source: the commit point and its outcomes ---- */
    { S, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_T, YES, 0, 0, KH_MIG_FINISH,
      SRC_FWD | KH_MIG_A_DISKS_DELETE },
    { S, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_T, NO, 0, 0, KH_MIG_FINISH, SRC_FWD },
    { S, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_S, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_UNKNOWN, 0, 0, 0, KH_MIG_SWITCH,
      KH_MIG_A_FENCE_TXN | LATER },
    { S, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_OTHER, 0, 0, 0, KH_MIG_ROLLBACK,
      KH_MIG_A_KILL | KH_MIG_A_T_ABORT | EV | FAIL },
    /* a failure in switch: fence first (a txn may be in flight), the
     * answer (EV_OWNER) decides */
    { S, KH_MIG_SWITCH, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_SWITCH, KH_MIG_A_FENCE_TXN },
    { S, KH_MIG_FINISH, KH_MIG_EV_DONE, 0, 0, 0, 0, KH_MIG_DONE, EV },
    { S, KH_MIG_FINISH, KH_MIG_EV_FAILED, 0, YES, 0, 0, KH_MIG_FINISH,
      SRC_FWD | KH_MIG_A_DISKS_DELETE | LATER },
    { S, KH_MIG_FINISH, KH_MIG_EV_FAILED, 0, NO, 0, 0, KH_MIG_FINISH, SRC_FWD | LATER },
    /* ---- source: failures and cancel before the commit ---- */
    { S, KH_MIG_PREPARE, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_DISKS, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_MEMORY, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_PREPARE, KH_MIG_EV_CANCEL, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_DISKS, KH_MIG_EV_CANCEL, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_MEMORY, KH_MIG_EV_CANCEL, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    /* (cancel in switch or later: too late, ignored) */
    { S, KH_MIG_ROLLBACK, KH_MIG_EV_DONE, 0, 0, 0, 0, KH_MIG_ABORTED, EV },
    { S, KH_MIG_ROLLBACK, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL | LATER },
    /* ---- source: restarted with the migration pending ---- */
    { S, KH_MIG_PREPARE, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_DISKS, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_MEMORY, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },
    { S, KH_MIG_SWITCH, KH_MIG_EV_RESTART, OWN_T, YES, 0, 0, KH_MIG_FINISH,
      SRC_FWD | KH_MIG_A_DISKS_DELETE },
    { S, KH_MIG_SWITCH, KH_MIG_EV_RESTART, OWN_T, NO, 0, 0, KH_MIG_FINISH, SRC_FWD },
    { S, KH_MIG_SWITCH, KH_MIG_EV_RESTART, OWN_S, 0, 0, 0, KH_MIG_SWITCH, KH_MIG_A_FENCE_TXN },
    { S, KH_MIG_SWITCH, KH_MIG_EV_RESTART, OWN_UNKNOWN, 0, 0, 0, KH_MIG_SWITCH,
      KH_MIG_A_FENCE_TXN | LATER },
    { S, KH_MIG_SWITCH, KH_MIG_EV_RESTART, OWN_OTHER, 0, 0, 0, KH_MIG_ROLLBACK,
      KH_MIG_A_KILL | KH_MIG_A_T_ABORT | EV | FAIL },
    { S, KH_MIG_FINISH, KH_MIG_EV_RESTART, 0, YES, 0, 0, KH_MIG_FINISH,
      SRC_FWD | KH_MIG_A_DISKS_DELETE },
    { S, KH_MIG_FINISH, KH_MIG_EV_RESTART, 0, NO, 0, 0, KH_MIG_FINISH, SRC_FWD },
    { S, KH_MIG_ROLLBACK, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_ROLLBACK, SRC_BACK | FAIL },

    /* ---- target: the way forward ---- */
    { T, KH_MIG_NONE, KH_MIG_EV_INCOMING, 0, YES, 0, 0, KH_MIG_PREPARE,
      KH_MIG_A_T_DISKS | KH_MIG_A_T_INCOMING | KH_MIG_A_T_EXPORT | EV },
    { T, KH_MIG_NONE, KH_MIG_EV_INCOMING, 0, NO, 0, 0, KH_MIG_PREPARE,
      KH_MIG_A_T_INCOMING | EV },
    { T, KH_MIG_PREPARE, KH_MIG_EV_READY, 0, 0, 0, 0, KH_MIG_MEMORY, KH_MIG_A_T_REPLY | EV },
    { T, KH_MIG_MEMORY, KH_MIG_EV_COMPLETED, 0, 0, 0, 0, KH_MIG_SWITCH, EV },
    { T, KH_MIG_MEMORY, KH_MIG_EV_COMMIT, 0, 0, 0, 0, KH_MIG_FINISH, TGT_FWD },
    { T, KH_MIG_SWITCH, KH_MIG_EV_COMMIT, 0, 0, 0, 0, KH_MIG_FINISH, TGT_FWD },
    { T, KH_MIG_FINISH, KH_MIG_EV_COMMIT, 0, 0, 0, 0, KH_MIG_FINISH, 0 }, /* repeated */
    { T, KH_MIG_FINISH, KH_MIG_EV_DONE, 0, 0, 0, 0, KH_MIG_DONE, EV },
    { T, KH_MIG_FINISH, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_FINISH, TGT_FWD | LATER },
    { T, KH_MIG_DONE, KH_MIG_EV_COMMIT, 0, 0, 0, 0, KH_MIG_DONE, 0 },     /* repeated */
    /* ---- target: the way back ---- */
    { T, KH_MIG_PREPARE, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_ROLLBACK,
      TGT_BACK | FAIL },
    { T, KH_MIG_PREPARE, KH_MIG_EV_ABORT, 0, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
    /* once QEMU may have received everything, fence before going back */
    { T, KH_MIG_MEMORY, KH_MIG_EV_ABORT, 0, 0, 0, 0, KH_MIG_MEMORY, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_SWITCH, KH_MIG_EV_ABORT, 0, 0, 0, 0, KH_MIG_SWITCH, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_MEMORY, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_MEMORY, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_SWITCH, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_SWITCH, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_MEMORY, KH_MIG_EV_TIMEOUT, 0, 0, 0, 0, KH_MIG_MEMORY, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_SWITCH, KH_MIG_EV_TIMEOUT, 0, 0, 0, 0, KH_MIG_SWITCH, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_PREPARE, KH_MIG_EV_TIMEOUT, 0, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
    /* the fence's (or a read's) answer */
    { T, KH_MIG_MEMORY, KH_MIG_EV_OWNER, OWN_S, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
    { T, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_S, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
    { T, KH_MIG_MEMORY, KH_MIG_EV_OWNER, OWN_OTHER, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
    { T, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_OTHER, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
    { T, KH_MIG_MEMORY, KH_MIG_EV_OWNER, OWN_T, 0, 0, 0, KH_MIG_FINISH, TGT_FWD },
    { T, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_T, 0, 0, 0, KH_MIG_FINISH, TGT_FWD },
    { T, KH_MIG_MEMORY, KH_MIG_EV_OWNER, OWN_UNKNOWN, 0, 0, 0, KH_MIG_MEMORY,
      KH_MIG_A_FENCE_TXN | LATER },
    { T, KH_MIG_SWITCH, KH_MIG_EV_OWNER, OWN_UNKNOWN, 0, 0, 0, KH_MIG_SWITCH,
      KH_MIG_A_FENCE_TXN | LATER },
    { T, KH_MIG_ROLLBACK, KH_MIG_EV_DONE, 0, 0, 0, 0, KH_MIG_ABORTED, EV },
    { T, KH_MIG_ROLLBACK, KH_MIG_EV_FAILED, 0, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK | LATER },
    { T, KH_MIG_ROLLBACK, KH_MIG_EV_ABORT, 0, 0, 0, 0, KH_MIG_ROLLBACK, 0 },  /* repeated */
    { T, KH_MIG_ABORTED, KH_MIG_EV_ABORT, 0, 0, 0, 0, KH_MIG_ABORTED, 0 },    /* repeated */
    { T, KH_MIG_NONE, KH_MIG_EV_ABORT, 0, 0, 0, 0, KH_MIG_NONE, 0 },          /* unknown: fine */
    /* ---- target: restarted with the migration pending ---- */
    { T, KH_MIG_PREPARE, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
    { T, KH_MIG_MEMORY, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_MEMORY, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_SWITCH, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_SWITCH, KH_MIG_A_FENCE_TXN },
    { T, KH_MIG_FINISH, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_FINISH, TGT_FWD },
    { T, KH_MIG_ROLLBACK, KH_MIG_EV_RESTART, 0, 0, 0, 0, KH_MIG_ROLLBACK, TGT_BACK },
};

#undef S
#undef T

static bool guard_ok(unsigned char g, bool v)
{
    return g == ANY || (g == YES) == v;
}

static bool owner_ok(unsigned char g, kh_mig_owner o)
{
    switch (g) {
    case OWN_ANY: return true;
    case OWN_UNKNOWN: return o == KH_MIG_OWNER_UNKNOWN;
    case OWN_S: return o == KH_MIG_OWNER_SOURCE;
    case OWN_T: return o == KH_MIG_OWNER_TARGET;
    case OWN_OTHER: return o == KH_MIG_OWNER_OTHER;
    default: return false;
    }
}

kh_mig_step kh_migrate_fsm_step(kh_mig_role role, kh_mig_phase phase, kh_mig_event ev,
                                const kh_mig_facts *facts)
{
    static const kh_mig_facts none = { 0 };
    if (!facts)
        facts = &none;
    for (size_t i = 0; i < KH_ARRAY_LEN(table); i++) {
        const row *r = &table[i];
        if (r->role == role && r->phase == phase && r->ev == ev &&
            owner_ok(r->owner, facts->owner) && guard_ok(r->local, facts->local_disks) &&
            guard_ok(r->sent, facts->owner_txn_sent) && guard_ok(r->alive, facts->qemu_alive))
            return (kh_mig_step){ .next = r->next, .actions = r->actions, .ignored = false };
    }
    return (kh_mig_step){ .next = phase, .actions = 0, .ignored = true };
}

static const char *const phase_names[KH_MIG_PHASES] = {
    "none", "prepare", "disks", "memory", "switch", "finish", "done", "rollback", "aborted",
};

static const char *const event_names[KH_MIG_EVENTS] = {
    "start", "dirty_ok", "dirty_high", "prepared", "disks_ready", "preswitchover",
    "completed", "owner", "cancel", "incoming", "ready", "commit", "abort", "timeout",
    "failed", "done", "restart",
};

static const char *const action_names[KH_MIG_ACTIONS] = {
    "dirty_rate", "target_prepare", "nbd_add", "mirror", "migrate", "mirror_cancel",
    "continue", "owner_txn", "migrate_cancel", "nbd_del", "resume",
    "target_abort", "target_commit", "kill", "disks_delete", "forget", "create_disks",
    "start_incoming", "export", "reply", "nbd_stop", "cont", "reconcile", "fence",
    "event", "report_fail", "retry_later",
};

const char *kh_migrate_fsm_phase_name(kh_mig_phase p)
{
    return (unsigned)p < KH_MIG_PHASES ? phase_names[p] : NULL;
}

const char *kh_migrate_fsm_event_name(kh_mig_event e)
{
    return (unsigned)e < KH_MIG_EVENTS ? event_names[e] : NULL;
}

const char *kh_migrate_fsm_action_name(uint32_t bit)
{
    for (unsigned i = 0; i < KH_MIG_ACTIONS; i++)
        if (bit == (1u << i))
            return action_names[i];
    return NULL;
}

int kh_migrate_fsm_phase_parse(const char *name)
{
    for (int i = 0; name && i < KH_MIG_PHASES; i++)
        if (strcmp(name, phase_names[i]) == 0)
            return i;
    return -1;
}

bool kh_migrate_fsm_terminal(kh_mig_phase p)
{
    return p == KH_MIG_DONE || p == KH_MIG_ABORTED;
}
