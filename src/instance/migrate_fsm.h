/* migrate_fsm.h - the live-migration phase machine as a pure function:
 * (role, phase, event, facts) -> (next phase, actions). No I/O, no clock,
 * no allocation: instance/migrate.c persists the next phase, then runs the
 * actions in the order of their bits, and feeds what happened back in as
 * events. The table in migrate_fsm.c is the whole behaviour; the design is
 * in docs/migration.md and the invariants in the cluster design note.
 *
 * Phases (both sides keep their own, persisted before the actions run):
 *
 *   none -> prepare -> disks -> memory -> switch -> finish -> done
 *                 \________\________\________\--> rollback -> aborted
 *
 * The owner transaction (/kvmhost/vms/<id>/owner: source -> target, in
 * etcd) is the commit point and happens only in `switch`: before it every
 * failure rolls back (the source keeps or resumes the guest, the target's
 * QEMU and copied disks go); after it every path goes forward (the target
 * runs the guest, the source's QEMU and local disks go). A daemon that
 * restarts with a migration pending feeds KH_MIG_EV_RESTART with the owner
 * it reads: the rows for it decide, on either side, which single QEMU may
 * run (owner S: the source's; owner T: the target's; unknown: nobody
 * starts or resumes anything, the read is retried).
 */
#ifndef KH_INSTANCE_MIGRATE_FSM_H
#define KH_INSTANCE_MIGRATE_FSM_H

#include <stdbool.h>
#include <stdint.h>

typedef enum kh_mig_role {
    KH_MIG_SOURCE,
    KH_MIG_TARGET,
} kh_mig_role;

typedef enum kh_mig_phase {
    KH_MIG_NONE,
    KH_MIG_PREPARE,
    KH_MIG_DISKS,
    KH_MIG_MEMORY,
    KH_MIG_SWITCH,
    KH_MIG_FINISH,
    KH_MIG_DONE,      /* terminal: the VM runs on the target */
    KH_MIG_ROLLBACK,
    KH_MIG_ABORTED,   /* terminal: the VM stays on the source */
} kh_mig_phase;
#define KH_MIG_PHASES 9

typedef enum kh_mig_event {
    /* source */
    KH_MIG_EV_START,          /* the user asked for a migration */
    KH_MIG_EV_DIRTY_OK,       /* calc-dirty-rate predicts convergence */
    KH_MIG_EV_DIRTY_HIGH,     /* it predicts none within the limits: refuse */
    KH_MIG_EV_PREPARED,       /* the target answered prepare (QEMU incoming, exports) */
    KH_MIG_EV_DISKS_READY,    /* every mirror job is ready */
    KH_MIG_EV_PRESWITCHOVER,  /* migration status pre-switchover (guest paused) */
    KH_MIG_EV_COMPLETED,      /* the source QEMU says completed (RAM all sent) */
    KH_MIG_EV_OWNER,          /* the owner was read or the txn answered: see facts */
    KH_MIG_EV_CANCEL,         /* the user cancelled */
    /* target */
    KH_MIG_EV_INCOMING,       /* the source asked prepare */
    KH_MIG_EV_READY,          /* QEMU listens for the migration, disks exported */
    KH_MIG_EV_COMMIT,         /* the source says: the owner txn went to us */
    KH_MIG_EV_ABORT,          /* the source says: roll back */
    KH_MIG_EV_TIMEOUT,        /* no word from the source for too long */
    /* both */
    KH_MIG_EV_FAILED,         /* the step in progress failed (QMP, HTTP, QEMU died) */
    KH_MIG_EV_DONE,           /* the actions of finish/rollback all ran */
    KH_MIG_EV_RESTART,        /* the daemon restarted with this migration pending */
} kh_mig_event;
#define KH_MIG_EVENTS 17

/* Who owns the VM in etcd, as far as this host knows. */
typedef enum kh_mig_owner {
    KH_MIG_OWNER_UNKNOWN,     /* etcd not reachable, or the txn outcome is unknown */
    KH_MIG_OWNER_SOURCE,
    KH_MIG_OWNER_TARGET,
    KH_MIG_OWNER_OTHER,       /* a third host: neither side may run it */
} kh_mig_owner;

/* What the machine needs to know besides the event. */
typedef struct kh_mig_facts {
    kh_mig_owner owner;       /* KH_MIG_EV_OWNER, KH_MIG_EV_RESTART, KH_MIG_EV_TIMEOUT */
    bool local_disks;         /* some disk is not on a shared pool: NBD mirror */
    bool owner_txn_sent;      /* source: the owner txn was sent in this switch */
    bool qemu_alive;          /* RESTART: this side's QEMU still runs */
} kh_mig_facts;

/* Actions, run in the order of their bits (lowest first). */
enum {
    /* source */
    KH_MIG_A_DIRTY_RATE = 1u << 0,   /* calc-dirty-rate, then query-dirty-rate */
    KH_MIG_A_T_PREPARE = 1u << 1,    /* POST the target's prepare */
    KH_MIG_A_NBD_ADD = 1u << 2,      /* blockdev-add the target's NBD exports */
    KH_MIG_A_MIRROR = 1u << 3,       /* blockdev-mirror each local disk */
    KH_MIG_A_MIGRATE = 1u << 4,      /* caps + params, migrate */
    KH_MIG_A_MIRROR_CANCEL = 1u << 5,/* block-job-cancel the mirrors (consistent) */
    KH_MIG_A_CONTINUE = 1u << 6,     /* migrate-continue */
    KH_MIG_A_OWNER_TXN = 1u << 7,    /* owner source -> target (the commit point) */
    KH_MIG_A_MIGRATE_CANCEL = 1u << 8,/* migrate_cancel */
    KH_MIG_A_NBD_DEL = 1u << 9,     /* blockdev-del the NBD nodes */
    KH_MIG_A_RESUME = 1u << 10,      /* cont the source's guest (it may be paused) */
    KH_MIG_A_T_ABORT = 1u << 11,     /* POST the target's abort */
    KH_MIG_A_T_COMMIT = 1u << 12,    /* POST the target's commit (retried) */
    KH_MIG_A_KILL = 1u << 13,        /* this side's QEMU goes (SIGKILL) */
    KH_MIG_A_DISKS_DELETE = 1u << 14,/* this side's copy of the local disks goes */
    KH_MIG_A_FORGET = 1u << 15,      /* this side's VM definition goes */
    /* target */
    KH_MIG_A_T_DISKS = 1u << 16,     /* create the empty disks */
    KH_MIG_A_T_INCOMING = 1u << 17,  /* start QEMU -incoming defer, migrate-incoming */
    KH_MIG_A_T_EXPORT = 1u << 18,    /* nbd-server-start, block-export-add */
    KH_MIG_A_T_REPLY = 1u << 19,     /* answer the source's prepare */
    KH_MIG_A_T_NBD_STOP = 1u << 20,  /* nbd-server-stop */
    KH_MIG_A_T_CONT = 1u << 21,      /* cont: the guest runs here */
    KH_MIG_A_T_RECONCILE = 1u << 22, /* NIC rules, metrics, consoles: the VM is ours */
    KH_MIG_A_FENCE_TXN = 1u << 23,   /* mark the migration aborted in etcd unless
                                      * the owner already moved (a CAS the owner txn
                                      * also compares); the answer is EV_OWNER */
    /* both */
    KH_MIG_A_EVENT = 1u << 24,       /* publish vm.migration with the new phase */
    KH_MIG_A_REPORT_FAIL = 1u << 25, /* the task fails with the error at hand */
    KH_MIG_A_RETRY_LATER = 1u << 26, /* run the other actions after a delay, not now */
};
#define KH_MIG_ACTIONS 27

typedef struct kh_mig_step {
    kh_mig_phase next;
    uint32_t actions;
    bool ignored;             /* the event means nothing in this phase (no change) */
} kh_mig_step;

/* The transition. Never fails: an event a phase does not expect is
 * ignored (step.ignored, next == phase, no actions). */
kh_mig_step kh_migrate_fsm_step(kh_mig_role role, kh_mig_phase phase, kh_mig_event ev,
                                const kh_mig_facts *facts);

/* Names for logs, events and the store ("prepare", ...); NULL if out of range. */
const char *kh_migrate_fsm_phase_name(kh_mig_phase p);
const char *kh_migrate_fsm_event_name(kh_mig_event e);
const char *kh_migrate_fsm_action_name(uint32_t bit);
/* The phase called name, or -1. */
int kh_migrate_fsm_phase_parse(const char *name);
/* done or aborted. */
bool kh_migrate_fsm_terminal(kh_mig_phase p);

#endif
